"""A UR e-Series controller in simulation: the UR5e twin's physics behind what ur_rtde talks to.

`doubles/ur_rtde.py` wraps this in the three ur_rtde classes; tests reach it to inject faults.
What it emulates, and how:

- **Time.** Physics advances in 1 ms MuJoCo steps, one control cycle (2 ms at 500 Hz) per
  `RTDEControlInterface.waitPeriod` — the call every cycle of a client makes. With `clock="sim"`
  (stepped runtimes) nothing sleeps and time is the simulation's; with `clock="wall"` waitPeriod
  first runs the physics up to the period's end, then sleeps until it, as the real controller's
  cycle runs while its client waits. The Robotiq double's socket and the backend's gripper
  worker run in wall time, so in simulated time a gripper request lands a few ticks late and
  runs are not bit-reproducible.
- **directTorque** applies the torques to the twin's motors; the arm's weight is compensated by
  MuJoCo's gravcomp, as we assume UR's direct-torque mode does. The friction-compensation scales
  are accepted, not modelled (the twin has viscous joint damping only).
- **servoL / servoJ** emulate UR's position servo: the target pose becomes a joint target by
  damped least squares from the previous joint target (one Gauss-Newton iteration per cycle: the
  target moves little in 2 ms; the joint speed limit caps how far it moves), tracked by a stiff,
  critically damped joint PD with velocity feed-forward. `gain` and `lookahead_time` are
  range-checked as on the controller, not modelled.
- **Stops hold.** Without a running program, after servoStop, a protective or emergency stop, or a
  watchdog trip, the arm is braked: a stiff joint PD holds the joints where the stop found them.
- **Watchdog.** Once `setWatchdog(f)` is called, a running program stops (the arm brakes) when no
  input arrives for 1/f s; every command and `kickWatchdog` counts as input, as every ur_rtde
  command writes the input register the script's watchdog watches.
- **Safety.** A robot contact force above `force_limit_n` (UR's default tool force limit, 150 N)
  triggers a protective stop. Protective stop (also `triggerProtectiveStop` or
  `inject_protective_stop`): the program stops until the dashboard's `unlockProtectiveStop`
  (refused for `unlock_delay_s` after the stop; 5 s on the real controller) and a script re-upload.
  Emergency stop (`inject_emergency_stop`): the program stops and the arm powers off; after the
  button is released the dashboard's `powerOn` and `brakeRelease` bring it back.
- **Communication loss** (`inject_communication_loss`): both RTDE interfaces report
  `isConnected() == False`, their getters return the last data, commands raise RuntimeError as
  ur_rtde's do on a dead socket, and the watchdog sees no input.

Threading: one owner thread (the control loop's) makes every call, except the Robotiq socket
double, which sets the gripper target and reads `gripper_width_m` (single float attributes).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import mujoco
import numpy as np

from robot_rl.control import rotations
from robot_rl.twin import scene as sc
from robot_rl.twin.arm import TwinArm

log = logging.getLogger(__name__)

ROBOT_MODE_POWER_OFF = 3
ROBOT_MODE_IDLE = 5
ROBOT_MODE_RUNNING = 7
SAFETY_MODE_NORMAL = 1
SAFETY_MODE_PROTECTIVE_STOP = 3
SAFETY_MODE_ROBOT_EMERGENCY_STOP = 7
# getSafetyStatusBits: 0 normal, 1 reduced, 2 protective stopped, 3 recovery, 4 safeguard stopped,
# 5 system emergency stopped, 6 robot emergency stopped, 7 emergency stopped, 8 violation, 9 fault,
# 10 stopped due to safety.
BIT_NORMAL, BIT_PROTECTIVE, BIT_ROBOT_ESTOP, BIT_ESTOP, BIT_STOPPED_BY_SAFETY = 1 << 0, 1 << 2, 1 << 6, 1 << 7, 1 << 10
# getRobotStatus: bit 0 power on, bit 1 program running.
STATUS_POWER_ON, STATUS_PROGRAM_RUNNING = 1 << 0, 1 << 1

HOLD_STIFFNESS_RAD = 0.02
"""The servo's and brakes' joint PD reaches the joint's torque limit at this error [rad]."""


@dataclass
class ReceiveData:
    """What RTDE's output recipe carries, as of the last control cycle."""

    timestamp_s: float
    q_rad: list[float]
    dq_rad_per_s: list[float]
    tcp_pose: list[float]
    """`[x y z rx ry rz]` (m, rotation vector), base frame, at the controller's TCP."""
    tcp_speed: list[float]
    tcp_force: list[float]
    """External force [N] and torque [N·m] on the tool, base frame, at the model's tcp site."""


class SimulatedURController:
    """One simulated UR controller at `hostname`, driving `arm` (a UR5e `TwinArm`).

    Args:
        arm: the twin arm (its model and data hold the whole scene).
        hostname: the address clients connect to (`doubles/ur_rtde.py` looks it up by this name).
        clock: "sim" (stepped runtimes: no sleeping, simulated time) or "wall" (real time).
        remote_control: what the dashboard's `isInRemoteControl` says.
        unlock_delay_s: `unlockProtectiveStop` is refused this long after a protective stop.
        force_limit_n: robot contact force that triggers a protective stop.
    """

    def __init__(self, arm: TwinArm, *, hostname: str, clock: Literal["sim", "wall"] = "sim",
                 remote_control: bool = True, unlock_delay_s: float = 0.0, force_limit_n: float = 150.0) -> None:
        if clock not in ("sim", "wall"):
            raise ValueError(f"clock must be 'sim' or 'wall', got {clock!r}")
        self.arm, self.hostname, self.clock = arm, hostname, clock
        self.model, self.data = arm.model, arm.data
        self.remote_control = remote_control
        self.unlock_delay_s = unlock_delay_s
        self.force_limit_n = force_limit_n
        self.n = arm.spec.n_joints
        self.period_s = 0.002
        self._dt = float(self.model.opt.timestep)
        self._qadr = np.array([self.model.jnt_qposadr[self.model.joint(j).id] for j in sc.arm_joint_names(self.n)])
        self._dadr = np.array([self.model.jnt_dofadr[self.model.joint(j).id] for j in sc.arm_joint_names(self.n)])
        self._hand = self.model.body(sc.HAND_BODY).id
        self._tau_max = np.asarray(arm.spec.torque_limit_nm)
        self._dq_max = np.asarray(arm.spec.dq_max_rad_per_s)
        self._kp = self._tau_max / HOLD_STIFFNESS_RAD
        inertia = self._joint_inertia()
        self._kd = 2.0 * np.sqrt(self._kp * inertia)  # critically damped on each joint's own inertia
        self._scratch = mujoco.MjData(self.model)  # servo IK; never the live scene
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))
        # Controller state.
        self.powered = True
        self._brakes_released = True
        self.program_running = False
        self.protective_stop = False
        self.estop_pressed = False
        self.comm_lost = False
        self.rtde_clients = 0
        self.mode: Literal["idle", "torque", "servo"] = "idle"
        self.tcp_offset = [0.0] * 6
        """`setTcp`'s offset `[x y z rx ry rz]` of the TCP in the flange frame (default: the flange)."""
        self.watchdog_min_hz: float | None = None
        self.watchdog_trips = 0
        self.physics_ns = 0
        """Wall time [ns] spent simulating (physics, servo, sampling): benchmarks subtract it."""
        self.servo_joint_commands = 0
        """servoJ commands that reached the controller (tests read it)."""
        self.commands_received = 0
        """Motion commands and kicks that reached the controller, refused ones included (tests read it)."""
        self.protective_stops = 0
        self._stop_time_s = 0.0
        self._last_input_s = 0.0
        self._tau = np.zeros(self.n)
        self._q_hold = self.q().copy()
        self._q_servo = self._q_hold.copy()
        self._dq_servo = np.zeros(self.n)
        self._servo_pose: np.ndarray | None = None
        self._servo_q: np.ndarray | None = None
        self._wall_anchor_s = time.monotonic()
        self._sim_anchor_s = float(self.data.time)
        self.gripper_width_m = 0.0
        self.received = self._sample()

    # ---- fault injection (tests) ---------------------------------------------------------------

    def inject_protective_stop(self) -> None:
        """As if the controller's safety system tripped a protective stop."""
        self._protective_stop("injected")

    def inject_emergency_stop(self, pressed: bool) -> None:
        """Press (True) or release (False) the emergency stop. Pressing stops the program and powers
        the arm off; after release the dashboard's powerOn and brakeRelease bring it back."""
        if pressed and not self.estop_pressed:
            log.warning("UR double %s: emergency stop pressed", self.hostname)
            self._stop_program()
            self.powered = False
        self.estop_pressed = pressed

    def inject_communication_loss(self, lost: bool) -> None:
        """Cut (True) or restore (False) the RTDE link; restoring needs the clients' reconnect()."""
        self.comm_lost = lost
        if lost:
            self.rtde_clients = 0

    # ---- what the ur_rtde facades call ---------------------------------------------------------

    def now_s(self) -> float:
        """The controller's clock [s] (RTDE `timestamp`)."""
        return float(self.data.time)

    def robot_mode(self) -> int:
        if not self.powered:
            return ROBOT_MODE_POWER_OFF
        return ROBOT_MODE_RUNNING if self._brakes_released else ROBOT_MODE_IDLE

    def safety_mode(self) -> int:
        if self.estop_pressed:
            return SAFETY_MODE_ROBOT_EMERGENCY_STOP
        return SAFETY_MODE_PROTECTIVE_STOP if self.protective_stop else SAFETY_MODE_NORMAL

    def safety_status_bits(self) -> int:
        if self.estop_pressed:
            return BIT_ROBOT_ESTOP | BIT_ESTOP | BIT_STOPPED_BY_SAFETY
        if self.protective_stop:
            return BIT_PROTECTIVE | BIT_STOPPED_BY_SAFETY
        return BIT_NORMAL

    def robot_status(self) -> int:
        return (STATUS_POWER_ON if self.powered else 0) | (STATUS_PROGRAM_RUNNING if self.program_running else 0)

    def start_program(self) -> bool:
        """Upload and start the ur_rtde control script; refused while stopped by safety or unpowered."""
        if self.protective_stop or self.estop_pressed or not self.powered or not self._brakes_released:
            return False
        self.program_running = True
        self.mode = "idle"
        self._hold_here()
        self._last_input_s = self._watch_clock_s()
        self.watchdog_min_hz = None  # a fresh script has no watchdog until setWatchdog
        return True

    def stop_program(self) -> None:
        self._stop_program()

    def input_arrived(self) -> None:
        """Any command or kick: the watchdog's input register was written."""
        self.commands_received += 1
        self._last_input_s = self._watch_clock_s()

    def command_torque(self, tau_nm: list[float]) -> bool:
        self.input_arrived()
        if not self.program_running:
            return False
        if self.mode != "torque":
            self.mode = "torque"
        self._tau = np.clip(np.asarray(tau_nm, dtype=np.float64), -self._tau_max, self._tau_max)
        return True

    def command_servo_pose(self, pose: list[float]) -> bool:
        self.input_arrived()
        if not self.program_running:
            return False
        self._enter_servo()
        self._servo_pose = np.asarray(pose, dtype=np.float64)
        self._servo_q = None
        return True

    def command_servo_joints(self, q_rad: list[float]) -> bool:
        self.input_arrived()
        self.servo_joint_commands += 1
        if not self.program_running:
            return False
        self._enter_servo()
        self._servo_q = np.asarray(q_rad, dtype=np.float64)
        self._servo_pose = None
        return True

    def servo_stop(self) -> bool:
        self.input_arrived()
        if not self.program_running:
            return False
        self.mode = "idle"
        self._hold_here()
        return True

    def unlock_protective_stop(self) -> None:
        """Dashboard `unlock protective stop`.

        Raises:
            RuntimeError: too soon after the stop (the real dashboard's refusal).
        """
        if not self.protective_stop:
            return
        waited = self.now_s() - self._stop_time_s
        if waited < self.unlock_delay_s:
            raise RuntimeError(f"Unlock protective stop failure: Cannot unlock protective stop until "
                               f"{self.unlock_delay_s:g}s after occurrence")
        self.protective_stop = False
        self._hold_here()

    def power_on(self) -> None:
        if not self.estop_pressed:
            self.powered = True
            self._brakes_released = False

    def brake_release(self) -> None:
        if self.powered:
            self._brakes_released = True

    def tcp_pose_of(self, q_rad: np.ndarray) -> np.ndarray:
        """`[x y z rx ry rz]` of the controller's TCP at joint positions q (forward kinematics)."""
        s = self._scratch
        s.qpos[self._qadr] = q_rad
        mujoco.mj_kinematics(self.model, s)
        return self._tcp_pose(s)

    # ---- time --------------------------------------------------------------------------------

    def wait_period(self, t_start_s: float) -> None:
        """End of a client's control cycle: advance the physics to the cycle's end, then (wall
        clock) sleep until then, as the controller's cycle runs while the client waits."""
        if self.clock == "sim":
            self._advance(max(1, int(round(self.period_s / self._dt))))
            return
        end = t_start_s + self.period_s
        behind_s = end - self._wall_anchor_s - (self.data.time - self._sim_anchor_s)
        steps = int(round(behind_s / self._dt))
        if steps > 50:  # the client stalled (≥ 50 ms): the physics skips the gap rather than bursting
            log.warning("UR double %s: the client stalled %.0f ms; physics skips the gap", self.hostname,
                        behind_s * 1e3)
            self._wall_anchor_s = end - self._dt
            self._sim_anchor_s = float(self.data.time)
            steps = 1
        self._advance(max(steps, 0))
        remaining = end - time.monotonic()
        if remaining > 0.0003:
            time.sleep(remaining - 0.0003)  # sleep overshoots by ~0.1 ms: spin the rest
        while time.monotonic() < end:
            pass

    # ---- physics -----------------------------------------------------------------------------

    def q(self) -> np.ndarray:
        return self.data.qpos[self._qadr]

    def resync(self) -> None:
        """The arm was placed elsewhere (a teleport): hold it there, re-read the outputs."""
        self._hold_here()
        self.received = self._sample()

    def _advance(self, steps: int) -> None:
        t0 = time.perf_counter_ns()
        for i in range(steps):
            self._check_watchdog()
            if i == 0 and self.mode == "servo" and self.program_running:
                self._update_servo_target(steps * self._dt)
            self.arm.write_torque(self._torque())
            force = self.arm.last_robot_contact_force_n
            if force > self.force_limit_n and self.program_running:
                self._protective_stop(f"robot contact force {force:.0f} N above the {self.force_limit_n:.0f} N limit")
        if steps:
            self.received = self._sample()
        self.physics_ns += time.perf_counter_ns() - t0

    def _torque(self) -> np.ndarray:
        d = self.data
        q, dq = d.qpos[self._qadr], d.qvel[self._dadr]
        if self.program_running and self.mode == "torque":
            return self._tau
        if self.program_running and self.mode == "servo":
            tau = self._kp * (self._q_servo - q) + self._kd * (self._dq_servo - dq)
        else:
            tau = self._kp * (self._q_hold - q) - self._kd * dq
        return np.clip(tau, -self._tau_max, self._tau_max)

    def _update_servo_target(self, cycle_s: float) -> None:
        """Move the servo's joint target toward the commanded pose (or joints), speed-limited."""
        if self._servo_q is not None:
            goal = self._servo_q
        elif self._servo_pose is not None:
            goal = self._ik(self._servo_pose, self._q_servo)
        else:
            return
        step = np.clip(goal - self._q_servo, -self._dq_max * cycle_s, self._dq_max * cycle_s)
        self._q_servo = self._q_servo + step
        self._dq_servo = step / cycle_s

    def _ik(self, pose: np.ndarray, q_start: np.ndarray, iterations: int = 1) -> np.ndarray:
        m, s = self.model, self._scratch
        q = q_start.copy()
        goal_quat = rotations.rotvec_to_quat(pose[3:])
        for _ in range(iterations):
            s.qpos[self._qadr] = q
            mujoco.mj_kinematics(m, s)
            mujoco.mj_comPos(m, s)
            here = self._tcp_pose(s)
            err = np.concatenate((pose[:3] - here[:3],
                                  rotations.orientation_error(goal_quat, rotations.rotvec_to_quat(here[3:]))))
            point = here[:3]
            mujoco.mj_jac(m, s, self._jacp, self._jacr, point, self._hand)
            jac = np.vstack((self._jacp[:, self._dadr], self._jacr[:, self._dadr]))
            q = q + jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(6), err)
        return q

    def _tcp_pose(self, d: mujoco.MjData) -> np.ndarray:
        """`[x y z rx ry rz]` of the TCP (`tcp_offset` in the hand, i.e. flange, frame) in `d`."""
        rot = d.xmat[self._hand].reshape(3, 3)
        off = self.tcp_offset
        pos = d.xpos[self._hand] + rot @ np.asarray(off[:3])
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, d.xmat[self._hand])
        if off[3] or off[4] or off[5]:
            mujoco.mju_mulQuat(quat, quat.copy(), rotations.rotvec_to_quat(np.asarray(off[3:])))
        return np.concatenate((pos, rotations.quat_to_rotvec(quat)))

    def _sample(self) -> ReceiveData:
        reading = self.arm.read()  # kinematics of the current state; the next step reuses it
        self.gripper_width_m = reading.gripper_width_m
        d = self.data
        pose = self._tcp_pose(d)
        mujoco.mj_jac(self.model, d, self._jacp, self._jacr, pose[:3], self._hand)
        dq = d.qvel[self._dadr]
        speed = np.concatenate((self._jacp[:, self._dadr] @ dq, self._jacr[:, self._dadr] @ dq))
        return ReceiveData(self.now_s(), reading.q_rad.tolist(), reading.dq_rad_per_s.tolist(), pose.tolist(),
                           speed.tolist(), reading.wrench_ext_base.tolist())

    # ---- internals ---------------------------------------------------------------------------

    def _joint_inertia(self) -> np.ndarray:
        scratch = mujoco.MjData(self.model)
        scratch.qpos[self._qadr] = self.arm.spec.q_home_rad
        mujoco.mj_forward(self.model, scratch)
        full = np.zeros((self.model.nv, self.model.nv))
        mujoco.mj_fullM(self.model, scratch, full)
        return np.diag(full)[self._dadr]

    def _enter_servo(self) -> None:
        if self.mode != "servo":
            self.mode = "servo"
            self._q_servo = self.q().copy()
            self._dq_servo = np.zeros(self.n)

    def _hold_here(self) -> None:
        self._q_hold = self.q().copy()
        self._q_servo = self._q_hold.copy()
        self._dq_servo = np.zeros(self.n)
        self._tau = np.zeros(self.n)

    def _stop_program(self) -> None:
        if self.program_running:
            self.program_running = False
        self.mode = "idle"
        self._hold_here()

    def _protective_stop(self, why: str) -> None:
        if not self.protective_stop:
            log.warning("UR double %s: protective stop (%s)", self.hostname, why)
            self.protective_stops += 1
        self.protective_stop = True
        self._stop_time_s = self.now_s()
        self._stop_program()

    def _watch_clock_s(self) -> float:
        """The watchdog's clock: simulated time, or the wall clock in real time (a stalled client
        is silent in wall time even while the physics skips the stall)."""
        return self.now_s() if self.clock == "sim" else time.monotonic()

    def _check_watchdog(self) -> None:
        hz = self.watchdog_min_hz
        if hz is None or not self.program_running:
            return
        silent_s = self._watch_clock_s() - self._last_input_s
        if silent_s > 1.0 / hz + 1e-9:
            log.warning("UR double %s: RTDE watchdog: no input for %.0f ms (minimum %.0f Hz); stopping the program",
                        self.hostname, silent_s * 1e3, hz)
            self.watchdog_trips += 1
            self._stop_program()

