"""A simulated Franka behind the pylibfranka double: Panda twin physics with libfranka's timing and faults.

`FrankaDouble(task, realtime=...)` is one simulated Franka at `ROBOT_IP`; `double.vendor` is the
namespace the Franka backend takes in place of the `pylibfranka` module (the classes of
`twin/doubles/pylibfranka.py`, bound to this robot). The double also serves as the control core's
scene hooks (privileged state, scene resets, camera state).

Timing contract:
- `realtime=True`: state packets every 1 ms of wall time. `ActiveControlBase.readOnce()` blocks
  until the next packet; the command answering packet k must arrive (`writeOnce`) before packet
  k+1, or that cycle's command is lost, as is every cycle whose packet was never read. After
  `MAX_LOST_PACKETS` (20) lost cycles in a row, the robot stops in Reflex mode: the next call
  raises `ControlException(... "communication_constraints_violation" ...)`, until
  `automatic_error_recovery()`. A lost cycle reuses the previous torques.
  `control_command_success_rate` is the served fraction of the last 100 cycles.
- `realtime=False` (stepped runtime, simulated time): `readOnce()` returns at once, `writeOnce()`
  advances physics by 1 ms; nothing is ever lost.
Physics (MuJoCo) time, and the scene hooks' ground truth (which a physical arm does not have), is
summed in `physics_ns` (wall) and `physics_cpu_ns` (CPU), blocking waits for packets in `wait_ns`, so a benchmark can subtract both
from the backend's tick.

Injectable faults (any thread): `inject_reflex()` (the next `readOnce` raises a
`ControlException` naming "cartesian_reflex"; the arm stops and holds), `inject_communication_loss()`
(calls raise `NetworkException` until `restore_communication()`; in real time the first
`readOnce` blocks `udp_timeout_s` first, as libfranka's UDP receive does), and any IP other than
`ROBOT_IP` refuses `Robot(ip)` / `Gripper(ip)` with a `NetworkException` after
`connect_timeout_s`. External forces above the `set_collision_behavior` upper force/torque
thresholds raise a "cartesian_reflex" too. Outside torque control (idle, reflex) the robot holds
its joints with its own stiff joint controller.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from robot_rl.control.impedance import JointGains
from robot_rl.task_spec import TaskSpec
from robot_rl.twin import scene as sc
from robot_rl.twin.backend import TwinBackend
from robot_rl.twin.doubles import pylibfranka as vendor_types
from robot_rl.twin.doubles.pylibfranka import (
    ActiveControlBase,
    ControlException,
    Duration,
    GripperState,
    NetworkException,
    RealtimeException,
    RobotMode,
    RobotState,
    Torques,
)

ROBOT_IP = "172.16.0.2"
"""The double's address (Franka's default FCI address)."""
PERIOD_NS = 1_000_000
MAX_LOST_PACKETS = 20
"""Consecutive lost command cycles before the robot stops (libfranka/FCI documentation)."""
_SPIN_NS = 200_000
_GRIP_TOL_M = 0.001
_GRIP_STALL_S = 0.03
"""The fingers count as stopped on an object after this much simulated time below 2 mm/s."""
_GRIP_TIMEOUT_S = 10.0
_GRIP_POLL_S = 0.005
"""How often a blocking gripper call looks at the fingers: each look takes the GIL from the control loop."""



class FrankaDouble:
    """A simulated Franka behind `vendor` (see the module docstring); also the core's `SceneHooks`.

    Threads: the control thread makes the robot calls (and the scene-hook calls); a gripper
    thread may block in `Gripper.move/grasp`; tests may inject faults from any thread.

    Args:
        task: the twin task whose scene (with the Panda) the double simulates.
        realtime: 1 ms packets in wall time (True) or simulated time driven by `writeOnce` (False).
        seed: initial scene layout.
        resume_sim_state: start from a dead control loop's last snapshot state (at rest).
        realtime_kernel: whether the emulated robot PC runs a PREEMPT_RT kernel; without one,
            `Robot(ip, RealtimeConfig.kEnforce)` raises RealtimeException as libfranka does.
    """

    def __init__(self, task: TaskSpec, *, realtime: bool, seed: int = 0, resume_sim_state: np.ndarray | None = None,
                 ip: str = ROBOT_IP, connect_timeout_s: float = 1.0, udp_timeout_s: float = 1.0,
                 realtime_kernel: bool = True) -> None:
        self.arm, self._task = TwinBackend(task, initial_seed=seed, arm="panda").build(
            realtime=False, resume_sim_state=resume_sim_state)
        self.privileged_sizes = self._task.privileged_sizes
        self.sim_state_size = self._task.sim_state_size
        self.realtime, self.ip = realtime, ip
        self.realtime_kernel = realtime_kernel
        self.connect_timeout_s, self.udp_timeout_s = connect_timeout_s, udp_timeout_s
        m = self.arm.model
        self._tcp = m.site(sc.TCP_SITE).id
        self._finger_qadr = [m.jnt_qposadr[m.joint(n).id] for n in sc.FINGER_JOINTS]
        self._finger_dadr = [m.jnt_dofadr[m.joint(n).id] for n in sc.FINGER_JOINTS]
        self._hold_k, self._hold_d = JointGains().vectors()
        self._tau_limit = np.asarray(self.arm.spec.torque_limit_nm)
        self.vendor = SimpleNamespace(**{name: getattr(vendor_types, name) for name in vendor_types.VENDOR_NAMES})
        for name in ("Robot", "Gripper", "ActiveControlBase"):  # bound to this robot
            setattr(self.vendor, name, type(name, (getattr(vendor_types, name),), {"_double": self}))
        self.physics_ns = 0
        """Cumulative wall time [ns] of the double's MuJoCo work and scene hooks (not the backend's)."""
        self.physics_cpu_ns = 0
        """The same work's CPU time [ns] (`time.thread_time_ns`: without other processes' slices)."""
        self.wait_ns = 0
        """Cumulative wall time [ns] spent blocking for packets (real time only)."""
        self.lost_commands = 0
        """Command cycles lost since start (late or never written), real time only."""
        self.upper_force_thresholds: tuple[float, ...] = (1e9,) * 6
        self.mode = RobotMode.Idle
        self.error: str | None = None
        """libfranka's name of the error that stopped the robot ("cartesian_reflex", …), or None."""
        self._link_up = True
        self._pending: str | None = None
        self._control: ActiveControlBase | None = None
        self._tau = np.zeros(7)
        self._q_hold = self.arm.data.qpos[:7].copy()
        self._slot = 0  # physics time in packets (ms) since the clock's anchor
        self._t0_ns = time.monotonic_ns()
        self._read_slot = 0
        self._served = True
        self._lost_in_row = 0
        self._history = [True] * 100
        self._hist_i = 0
        self._served_count = 100
        self._grip_goal_m: float | None = None
        self._is_grasped = False
        self._reading = self._timed(self.arm.read)

    # ---- fault injection (any thread) -----------------------------------------------------------------

    def inject_reflex(self, error: str = "cartesian_reflex") -> None:
        """The robot's own reflex fires now (the next `readOnce` raises)."""
        self._pending = error

    def inject_communication_loss(self) -> None:
        """The network drops: every call raises NetworkException until `restore_communication()`;
        the robot, receiving no commands, stops with "communication_constraints_violation"."""
        self._link_up = False

    def restore_communication(self) -> None:
        self._link_up = True

    # ---- SceneHooks (control thread) ----------------------------------------------------------------

    def reset_scene(self, seed: int) -> None:
        self._task.reset_scene(seed)

    # Ground truth exists only in simulation (a physical arm has no scene hooks): its time counts
    # as the double's, not the backend's.
    def after_tick(self) -> None:
        self._timed(self._task.after_tick)

    def write_privileged(self, out: dict[str, np.ndarray]) -> None:
        self._timed(self._task.write_privileged, out)

    def write_sim_state(self, out: np.ndarray) -> None:
        self._timed(self._task.write_sim_state, out)

    def teleport_arm(self, pose_base_tcp: np.ndarray, gripper_width_m: float) -> None:
        self._task.teleport_arm(pose_base_tcp, gripper_width_m)
        self._q_hold = self.arm.data.qpos[:7].copy()
        self._reading = self._timed(self.arm.read)

    # ---- robot side ---------------------------------------------------------------------------------

    def _connect(self, ip: str, enforce_realtime: bool = False) -> None:
        if enforce_realtime and not self.realtime_kernel:
            # libfranka checks the kernel (/sys/kernel/realtime) before it connects.
            raise RealtimeException("libfranka: Running kernel does not have realtime capabilities.")
        if ip != self.ip or not self._link_up:
            time.sleep(self.connect_timeout_s)  # libfranka waits for the TCP connection to time out
            raise NetworkException("libfranka: TCP connection got interrupted.")

    def _check_link(self, *, wait: bool = False) -> None:
        if not self._link_up:
            if self._control is not None:  # no commands reach the robot: it stops itself
                self._stop("communication_constraints_violation")
            if wait and self.realtime:
                time.sleep(self.udp_timeout_s)
            raise NetworkException("libfranka: UDP receive: Timeout" if wait
                                   else "libfranka: TCP connection got interrupted.")

    def _timed(self, fn, *args):
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        out = fn(*args)
        self.physics_ns += time.perf_counter_ns() - t
        self.physics_cpu_ns += time.thread_time_ns() - c
        return out

    def _step(self, tau: np.ndarray) -> None:
        """One 1 ms physics step with `tau` (torque control) or the robot's own joint hold."""
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        if self._control is None:
            d = self.arm.data
            tau = np.clip(self._hold_k * (self._q_hold - d.qpos[:7]) - self._hold_d * d.qvel[:7],
                          -self._tau_limit, self._tau_limit)
        self.arm.write_torque(tau)
        self._reading = self.arm.read()
        self._slot += 1
        self.physics_ns += time.perf_counter_ns() - t
        self.physics_cpu_ns += time.thread_time_ns() - c
        if self._control is not None and self._pending is None:
            w, lim = self._reading.wrench_ext_base, self.upper_force_thresholds
            if any(abs(w[i]) > lim[i] for i in range(6)):
                self._pending = "cartesian_reflex"

    def _wall_slot(self) -> int:
        return (time.monotonic_ns() - self._t0_ns) // PERIOD_NS

    def _advance_to(self, slot: int) -> None:
        if slot - self._slot > 1000:  # idle for over a second: the held arm is at rest, skip the time
            self._slot = slot - 1000
        if slot - self._slot > 1:
            # Catching up after a stall: a real robot's physics costs the PC nothing, so the packet
            # clock waits while the double simulates the missed cycles (not the last one).
            t = time.monotonic_ns()
            while self._slot < slot - 1:
                self._step(self._tau)
            if self.realtime:
                self._t0_ns += time.monotonic_ns() - t
        if self._slot < slot:
            self._step(self._tau)

    def _wait_for(self, slot: int) -> None:
        deadline = self._t0_ns + slot * PERIOD_NS
        t = time.monotonic_ns()
        if deadline - t > _SPIN_NS:
            time.sleep((deadline - t - _SPIN_NS) / 1e9)
        while time.monotonic_ns() < deadline:
            pass
        self.wait_ns += time.monotonic_ns() - t

    def _stop(self, error: str | None) -> None:
        """Leave torque control; the joints are held where they are now (braking to rest)."""
        self._control = None
        self._q_hold = self.arm.data.qpos[:7].copy()
        self.mode = RobotMode.Reflex if error else RobotMode.Idle
        self.error = error

    def _abort_text(self) -> str:
        return (f'libfranka: Move command aborted: motion aborted by reflex! ["{self.error}"]\n'
                f"control_command_success_rate: {self._served_count / len(self._history):.2f}")

    def _packet(self) -> RobotState:
        r, d = self._reading, self.arm.data
        m = d.site_xmat[self._tcp].tolist()  # row-major 3×3
        p = r.pose_base_tcp
        s = RobotState()
        s.O_T_EE = [m[0], m[3], m[6], 0.0, m[1], m[4], m[7], 0.0, m[2], m[5], m[8], 0.0, p[0], p[1], p[2], 1.0]
        s.q, s.dq = r.q_rad.tolist(), r.dq_rad_per_s.tolist()
        s.O_F_ext_hat_K = r.wrench_ext_base.tolist()
        s.robot_mode = self.mode
        s.time = Duration(d.time)
        s.control_command_success_rate = self._served_count / len(self._history)
        s._jacobian = r.jacobian_base_tcp.T.ravel().tolist()  # column-major, as libfranka's model returns it
        s._mass = r.mass_matrix.T.ravel().tolist()
        s._coriolis = r.coriolis_nm.tolist()
        s._gravity = d.qfrc_gravcomp[:7].tolist()
        return s

    def _start_control(self) -> ActiveControlBase:
        self._check_link()
        if self.mode == RobotMode.Reflex:
            raise ControlException('libfranka: Move command rejected: command not possible in the current mode '
                                   f'("Reflex")! ["{self.error}"]; call automatic_error_recovery() first')
        if self.realtime:
            self._advance_to(self._wall_slot())
        self._tau[:] = 0.0
        self._control = self.vendor.ActiveControlBase()
        self.mode = RobotMode.Move
        self._read_slot, self._served, self._lost_in_row = self._slot, True, 0
        return self._control

    def _check_control(self, control: ActiveControlBase) -> None:
        if control is not self._control:
            raise ControlException(self._abort_text() if self.error else
                                   "libfranka: this control has finished; call start_torque_control() again")

    def _read_packet(self, control: ActiveControlBase) -> tuple[RobotState, Duration]:
        self._check_link(wait=True)
        self._check_control(control)
        if self.realtime:
            slot = max(self._read_slot + 1, self._wall_slot() + 1)
            self._count_cycles(slot)
            self._wait_for(slot)
            self._advance_to(slot)
            self._read_slot, self._served = slot, False
        if self._pending is not None:
            error, self._pending = self._pending, None
            self._stop(error)
            raise ControlException(self._abort_text())
        return self._packet(), Duration(PERIOD_NS / 1e9)

    def _count_cycles(self, slot: int) -> None:
        """Book the command cycles from the last packet read up to `slot` as served or lost."""
        lost_after = slot - self._read_slot - 1  # cycles whose packet was never read
        for served in [self._served] + [False] * min(lost_after, len(self._history)):
            self._hist_i = (self._hist_i + 1) % len(self._history)
            self._served_count += served - self._history[self._hist_i]
            self._history[self._hist_i] = served
        self._lost_in_row = (0 if self._served else self._lost_in_row + 1) + lost_after
        self.lost_commands += (not self._served) + lost_after
        if self._lost_in_row >= MAX_LOST_PACKETS and self._pending is None:
            self._pending = "communication_constraints_violation"

    def _write_command(self, control: ActiveControlBase, command: Torques) -> None:
        self._check_link()
        self._check_control(control)
        self._tau[:] = command.tau_J
        if command.motion_finished:
            self._stop(None)
            return
        if not self.realtime:
            self._step(self._tau)
        elif time.monotonic_ns() < self._t0_ns + (self._read_slot + 1) * PERIOD_NS and not self._served:
            self._served = True
            if self._slot == self._read_slot:
                self._step(self._tau)

    def _read_idle(self) -> RobotState:
        """`Robot.read_once`: the next packet, outside torque control."""
        self._check_link(wait=True)
        if self.realtime:
            slot = self._wall_slot() + 1
            self._wait_for(slot)
            self._advance_to(slot)
        else:
            self._step(self._tau)
        return self._packet()

    def _recover(self) -> None:
        self._check_link()
        if self.mode == RobotMode.Reflex:
            self.mode, self.error = RobotMode.Idle, None

    def _stop_motion(self) -> None:
        self._check_link()
        if self._control is not None:
            self._stop(None)

    # ---- gripper (its own thread) -------------------------------------------------------------------

    def _gripper_link(self) -> None:
        if not self._link_up:
            raise NetworkException("libfranka gripper: TCP connection got interrupted.")

    def _finger_width(self) -> float:
        q = self.arm.data.qpos
        return float(q[self._finger_qadr[0]] + q[self._finger_qadr[1]])

    def _grip(self, width_m: float, *, grasp: bool, tolerance: tuple[float, float] = (0.0, 0.0)) -> bool:
        """Drive the fingers toward `width_m` at the twin's finger speed; block (wall time) until
        they reach it or stop on an object (`_GRIP_STALL_S` of simulated time barely moving)."""
        self._gripper_link()
        width_m = float(np.clip(width_m, 0.0, self.arm.spec.gripper_max_width_m))
        self._is_grasped = False
        self._grip_goal_m = width_m
        self.arm.set_gripper(width_m)  # one float handed to the physics thread
        d = self.arm.data
        still_since = d.time
        t_end = time.monotonic() + _GRIP_TIMEOUT_S
        while time.monotonic() < t_end and self._grip_goal_m == width_m:
            width = self._finger_width()
            if abs(width - width_m) < _GRIP_TOL_M:
                break
            speed = abs(d.qvel[self._finger_dadr[0]]) + abs(d.qvel[self._finger_dadr[1]])
            if speed > 0.002:
                still_since = d.time
            elif d.time - still_since > _GRIP_STALL_S:
                break
            time.sleep(_GRIP_POLL_S)
        width = self._finger_width()
        ok = width_m - tolerance[0] <= width <= width_m + tolerance[1] if grasp else abs(width - width_m) < _GRIP_TOL_M
        self._is_grasped = grasp and ok
        return ok

    def _grip_stop(self) -> None:
        self._gripper_link()
        self._grip_goal_m = None
        self.arm.set_gripper(self._finger_width())
        self._is_grasped = False

    def _gripper_state(self) -> GripperState:
        self._gripper_link()
        s = GripperState()
        s.width, s.max_width, s.is_grasped = self._finger_width(), self.arm.spec.gripper_max_width_m, self._is_grasped
        s.time = Duration(self.arm.data.time)
        return s
