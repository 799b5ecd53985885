"""Franka arms over FCI through pylibfranka: `FrankaArm` (the `ArmBackend`) and `FrankaBackend` (its factory).

The arm runs in libfranka's torque control at 1 kHz, paced by the robot's state packets: `read()`
blocks in `readOnce()` until the next one and `write()` answers it with the torques of robot_rl's
own impedance law (computed by the control core, as on the twin). The robot compensates gravity
(`gravity_nm` is zero); pose is `O_T_EE`, the jacobian, mass matrix and coriolis come from
libfranka's model, the external wrench is `O_F_ext_hat_K` (acting on the end effector, base frame,
at the EE frame's origin) and the twist is J·q̇. Task poses are therefore poses of the EE frame
configured in Desk (the Franka Hand's default puts it between the fingertips).

The vendor module is a parameter: the real `pylibfranka` (imported only when a physical arm is
built, so this module imports without the `franka` extra) or the pylibfranka double's namespace
(`robot_rl/twin/doubles/pylibfranka.py`, twin physics): the same code drives both.

Faults: a libfranka exception never leaves `read()`/`write()`. `NetworkException` becomes
`ArmFault.COMMUNICATION`, any other (`ControlException`: reflexes, limit violations, missed
packets) `ArmFault.REFLEX`; the core then holds in REFLEX. The vendor's message is logged once.
While faulted, `read()` returns the last known state refreshed by `Robot.read_once()` (which blocks
until the next packet, so the loop keeps its pace; when even that fails it sleeps one period) and
`write()` sends nothing. `recover()` (the core's `clear_error`) reconnects after a communication
loss, runs `automatic_error_recovery()` and lets the next `read()` start torque control afresh.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from itertools import chain

import numpy as np

from robot_rl.arms.franka_hand import FrankaHand, HandProcess
from robot_rl.arms.gripper_worker import GripperWorker
from robot_rl.control.snapshot import SnapshotLayout
from robot_rl.drivers.arm import ArmCommand, ArmFault, ArmReading, ArmSpec
from robot_rl.errors import ConfigError, DependencyMissing, DeviceNotFound
from robot_rl.task_spec import TaskSpec
from robot_rl.twin.arm_models import PANDA

log = logging.getLogger(__name__)

CONNECT_PROBE_S = 1.5
"""Deadline of the connection probe made before `Robot(ip)`. libfranka itself waits 60 s for an
address that accepts TCP but does not answer (measured with pylibfranka 0.21.3 behind a proxy),
holding the GIL all along; a robot on a direct link answers within milliseconds."""
_PROBE = """
import json, os, sys
try:
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # not the control loop's FIFO priority
except (AttributeError, OSError):
    pass
try:
    import pylibfranka as f
    f.Robot(sys.argv[1], f.RealtimeConfig.kIgnore)
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}", "missing": isinstance(e, ImportError)}))
else:
    print(json.dumps({}))
"""
CONTACT_FORCE_MARGIN = 1.25
"""The robot's own collision reflex trips at this multiple of the task's `max_contact_force_n`."""
LEVER_ARM_M = (0.9, 0.9, 0.6, 0.6, 0.3, 0.2, 0.1)
"""Largest distance [m] from each Panda joint axis to the end effector in the tasks' workspaces:
a force F there loads joint i with at most F·LEVER_ARM_M[i]."""
TORQUE_LEVER_M = 0.1
"""Cartesian torque thresholds: the force threshold acting 10 cm from the end effector."""


def collision_thresholds(max_contact_force_n: float, torque_limit_nm: tuple[float, ...]
                         ) -> tuple[list[float], list[float], list[float], list[float]]:
    """`set_collision_behavior` arguments for a task's contact-force limit.

    The task's limits are outer bounds and robot_rl's own reflex enforces `max_contact_force_n`
    every tick (the norm of the external force). The robot's collision reflex sits above it, at
    `CONTACT_FORCE_MARGIN`·max_contact_force_n per Cartesian force axis, so the software reflex
    trips first with a clean hold and the robot's catches what a 1 kHz loop cannot (impacts, a
    dead loop). Cartesian torques: that force `TORQUE_LEVER_M` away. Joint torques: that force at
    each joint's lever arm, capped at the joint's torque limit. Lower thresholds (contact flags
    only, no reflex) are half the upper ones.

    Returns:
        (lower joint torques [N·m] (7), upper joint torques (7), lower Cartesian [N, N·m] (6), upper (6)).
    """
    force = CONTACT_FORCE_MARGIN * max_contact_force_n
    upper_cart = [force] * 3 + [force * TORQUE_LEVER_M] * 3
    upper_joint = [min(limit, force * lever) for limit, lever in zip(torque_limit_nm, LEVER_ARM_M)]
    return [0.5 * t for t in upper_joint], upper_joint, [0.5 * f for f in upper_cart], upper_cart


def probe_fci(robot_ip: str, timeout_s: float = CONNECT_PROBE_S) -> None:
    """Connect to the robot once in a child process that is killed at `timeout_s`: fail fast, with
    the fix, when the address does not answer, FCI is off or another client holds the robot.

    Raises:
        DeviceNotFound: no answer within `timeout_s`, or libfranka refused (its message is quoted).
        DependencyMissing: pylibfranka is not installed.
    """
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE, robot_ip], capture_output=True, text=True,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise DeviceNotFound(f"no answer from a Franka at {robot_ip} within {timeout_s} s: is the robot switched on "
                             f"and reachable (ping {robot_ip}), is this PC's interface on the robot's subnet (FCI "
                             f"default 172.16.0.0/24) and FCI activated in Desk? Nothing moved.") from exc
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {"error": f"the probe exited with code {out.returncode}: "
                                                           f"{out.stderr.strip()[-300:]}"}
    if result.get("missing"):
        raise DependencyMissing(f"the franka backend needs pylibfranka ({result['error']}): pip install -e '.[franka]'")
    if "error" in result:
        raise DeviceNotFound(f"could not connect to the Franka at {robot_ip} ({result['error']}): is FCI activated "
                             f"in Desk (unlock the joints, then 'Activate FCI'), is the robot reachable (ping "
                             f"{robot_ip}), and is no other program connected to it? Nothing moved.")


def import_pylibfranka():
    try:
        import pylibfranka
    except ImportError as exc:
        raise DependencyMissing("the franka backend needs pylibfranka: pip install -e '.[franka]'") from exc
    return pylibfranka


def _quat_wxyz(t: list[float]) -> tuple[float, float, float, float]:
    """Unit quaternion (w ≥ 0) of the rotation of a column-major 4×4 transform (Shepperd), in
    scalars: a numpy version costs several times more at this size, every tick."""
    r00, r10, r20, r01, r11, r21, r02, r12, r22 = t[0], t[1], t[2], t[4], t[5], t[6], t[8], t[9], t[10]
    tr = r00 + r11 + r22
    if tr > 0.0:
        s = 2.0 * math.sqrt(tr + 1.0)
        w, x, y, z = 0.25 * s, (r21 - r12) / s, (r02 - r20) / s, (r10 - r01) / s
    elif r00 > r11 and r00 > r22:
        s = 2.0 * math.sqrt(1.0 + r00 - r11 - r22)
        w, x, y, z = (r21 - r12) / s, 0.25 * s, (r01 + r10) / s, (r02 + r20) / s
    elif r11 > r22:
        s = 2.0 * math.sqrt(1.0 + r11 - r00 - r22)
        w, x, y, z = (r02 - r20) / s, (r01 + r10) / s, 0.25 * s, (r12 + r21) / s
    else:
        s = 2.0 * math.sqrt(1.0 + r22 - r00 - r11)
        w, x, y, z = (r10 - r01) / s, (r02 + r20) / s, (r12 + r21) / s, 0.25 * s
    n = math.sqrt(w * w + x * x + y * y + z * z)
    if w < 0.0:
        n = -n
    return w / n, x / n, y / n, z / n


class FrankaArm:
    """`ArmBackend` of a Franka in libfranka torque control. Owned by the control thread (all
    methods); the hand runs on a `GripperWorker` thread (and, on a physical arm, in its own process).

    Args:
        vendor: the `pylibfranka` module or the double's namespace.
        robot_ip: the robot's FCI address.
        spec: the arm's `ArmSpec` (Panda limits, 1 ms, paced by the hardware).
        thresholds: `collision_thresholds(...)`, handed to `set_collision_behavior`.
        clock: "monotonic" stamps readings with this PC's `time.monotonic_ns()` (real time);
            "robot" with the robot's own state time (the double in simulated time).
        hand: "process" (physical arm: pylibfranka's Gripper holds the GIL), "thread" (the double),
            or "none" (no Franka Hand).
        probe: fast reachability check run before every `Robot(ip)` (physical arms: `probe_fci`).
        enforce_realtime: libfranka's `RealtimeConfig.kEnforce` (needs a PREEMPT_RT kernel).

    Raises:
        DeviceNotFound: the robot (or its hand) cannot be reached; nothing moved.
        ConfigError: libfranka refuses this PC's real-time setup.
    """

    def __init__(self, vendor, robot_ip: str, *, spec: ArmSpec, thresholds: tuple, clock: str = "monotonic",
                 hand: str = "process", probe=None, enforce_realtime: bool = True) -> None:
        if clock not in ("monotonic", "robot") or hand not in ("process", "thread", "none"):
            raise ValueError(f"clock must be 'monotonic' or 'robot' and hand 'process', 'thread' or 'none'; "
                             f"got {clock!r}, {hand!r}")
        self.spec, self._vendor, self._ip = spec, vendor, robot_ip
        self._thresholds, self._probe = thresholds, probe
        self._realtime = vendor.RealtimeConfig.kEnforce if enforce_realtime else vendor.RealtimeConfig.kIgnore
        self._wall_clock = clock == "monotonic"
        self._period_ns = int(round(spec.period_s * 1e9))
        self._zeros = np.zeros(spec.n_joints)
        self._zeros.flags.writeable = False
        self._fault = ArmFault.NONE
        self._control = None
        self._last_tau = np.zeros(spec.n_joints)
        self._hand_process: HandProcess | None = None
        self._hand: GripperWorker | None = None
        self._connect()
        self._last = self._reading(self._wrap_connect(self._robot.read_once))
        try:
            if hand == "process":
                self._hand_process = HandProcess(robot_ip)
                self._hand = GripperWorker("franka-hand", self._hand_process.move, self._hand_process.read_width)
            elif hand == "thread":
                h = FrankaHand(self._wrap_connect(lambda: vendor.Gripper(robot_ip)))
                self._hand = GripperWorker("franka-hand", h.move, h.read_width)
        except BaseException:
            self.close()
            raise
        # Torque control starts at the first read(): the loop must answer its packets from then on.

    # ---- connection ----------------------------------------------------------------------------------

    def _wrap_connect(self, connect):
        vendor = self._vendor
        try:
            return connect()
        except vendor.NetworkException as exc:
            raise DeviceNotFound(f"could not connect to the Franka at {self._ip} ({exc}): is FCI activated in Desk, "
                                 f"is the robot at {self._ip} reachable (ping {self._ip}), is no other program "
                                 f"connected to it? Nothing moved.") from exc
        except vendor.RealtimeException as exc:
            raise ConfigError(f"libfranka refuses this PC's real-time setup ({exc}): run on a PREEMPT_RT kernel "
                              "(hardware/README.md), or pass --franka-realtime ignore to run without one (expect "
                              "communication_constraints_violation reflexes when this PC is busy)") from exc

    def _connect(self) -> None:
        if self._probe is not None:
            self._probe(self._ip)

        def connect():
            robot = self._vendor.Robot(self._ip, self._realtime)
            robot.set_collision_behavior(*self._thresholds)
            return robot, robot.load_model()

        self._robot, self._model = self._wrap_connect(connect)

    # ---- ArmBackend ------------------------------------------------------------------------------------

    def read(self) -> ArmReading:
        """The next packet's state (blocks until it arrives); the last known state while faulted."""
        if self._fault:
            return self._read_faulted()
        try:
            if self._control is None:
                self._control = self._robot.start_torque_control()
            state, _ = self._control.readOnce()
        except Exception as exc:  # libfranka's exceptions never leave the backend
            self._enter_fault(exc)
            return self._read_faulted()
        self._last = reading = self._reading(state)
        return reading

    def write(self, command: ArmCommand) -> None:
        """Answer this packet with the law's torques (gravity excluded: the robot adds it)."""
        if self._fault or self._control is None:
            return
        self._last_tau = command.tau_nm
        try:
            self._control.writeOnce(self._vendor.Torques(command.tau_nm.tolist()))
        except Exception as exc:
            self._enter_fault(exc)

    def set_gripper(self, width_m: float) -> None:
        """Non-blocking: the hand's worker grasps (closing) or moves (opening) off this thread."""
        if self._hand is not None:
            self._hand.set(width_m)

    def recover(self) -> None:
        """Clear a reflex (automatic_error_recovery), reconnecting first after a communication loss.
        Torque control restarts at the next `read()`. A failed attempt is logged and the fault stays."""
        if not self._fault:
            return
        try:
            if self._fault == ArmFault.COMMUNICATION:
                self._connect()
            self._robot.automatic_error_recovery()
        except Exception as exc:
            log.error("Franka at %s: recovery failed (%s: %s); the arm stays stopped: fix the cause, then "
                      "clear_error again", self._ip, type(exc).__name__, exc)
            return
        log.info("Franka at %s: error recovery done; torque control restarts", self._ip)
        self._fault = ArmFault.NONE

    def close(self) -> None:
        """End torque control cleanly (a last command with motion_finished), then release the hand."""
        if self._control is not None and not self._fault:
            try:
                self._control.readOnce()
                finish = self._vendor.Torques(self._last_tau.tolist())
                finish.motion_finished = True
                self._control.writeOnce(finish)
            except Exception as exc:
                log.warning("Franka at %s: ending torque control failed (%s: %s); the robot stops by itself "
                            "after 20 missed packets", self._ip, type(exc).__name__, exc)
        self._control = None
        if self._hand is not None:
            self._hand.close()
        if self._hand_process is not None:
            self._hand_process.close()

    # ---- internals -------------------------------------------------------------------------------------

    def _enter_fault(self, exc: Exception) -> None:
        self._fault = ArmFault.COMMUNICATION if isinstance(exc, self._vendor.NetworkException) else ArmFault.REFLEX
        self._control = None  # libfranka ends the motion with the exception
        log.error("Franka at %s stopped (%s): %s: %s", self._ip, self._fault.name, type(exc).__name__, exc)

    def _read_faulted(self) -> ArmReading:
        try:
            self._last = self._reading(self._robot.read_once())  # blocks until the next packet
        except Exception:
            if self._wall_clock:
                time.sleep(self.spec.period_s)  # no packets: keep the loop's pace rather than spin
            t = time.monotonic_ns() if self._wall_clock else self._last.t_capture_ns + self._period_ns
            self._last = self._last._replace(t_capture_ns=t)
        return self._last._replace(fault=int(self._fault))

    def _reading(self, state) -> ArmReading:
        model = self._model
        t = state.O_T_EE
        # Two conversions instead of eight (every tick): the vectors, then the model's matrices,
        # as views of one fresh array each (nothing is shared with the previous tick's reading);
        # fromiter over a chain is the fastest measured and takes lists and arrays alike.
        v = np.fromiter(chain(state.q, state.dq, model.coriolis(state), state.O_F_ext_hat_K, (t[12], t[13], t[14]),
                              _quat_wxyz(t)), np.float64, 34)
        m = np.fromiter(chain(model.zero_jacobian(state), model.mass(state)), np.float64, 91)
        dq = v[7:14]
        # libfranka's model returns column-major flat lists: a (7, 6) reshape is the transpose.
        jac = m[:42].reshape(7, 6).T
        return ArmReading(
            t_capture_ns=time.monotonic_ns() if self._wall_clock else round(state.time.to_sec() * 1e9),
            q_rad=v[:7],
            dq_rad_per_s=dq,
            pose_base_tcp=v[27:34],
            twist_base_tcp=jac @ dq,
            jacobian_base_tcp=jac,
            mass_matrix=m[42:].reshape(7, 7),  # symmetric: column- and row-major alike
            coriolis_nm=v[14:21],
            gravity_nm=self._zeros,
            wrench_ext_base=v[21:27],
            gripper_width_m=self._hand.width_m if self._hand is not None else 0.0,
        )


@dataclass(frozen=True)
class FrankaBackend:
    """`BackendFactory` of a Franka: the physical arm over pylibfranka, or the same backend code
    against the pylibfranka double (Panda twin physics). Picklable; builds in the control process."""

    task: TaskSpec
    robot_ip: str
    double: bool = False
    """Drive the pylibfranka double (twin physics, scene hooks) instead of pylibfranka."""
    initial_seed: int = 0
    """Scene layout of the double at start-up."""
    hand: bool = True
    """A Franka Hand is mounted."""
    enforce_realtime: bool = True
    """libfranka's RealtimeConfig.kEnforce (a PREEMPT_RT kernel); False: kIgnore."""

    @classmethod
    def for_choice(cls, choice, task: TaskSpec) -> FrankaBackend:
        """The backend `robot-rl serve --backend franka|franka-double` asks for (a `BackendChoice`).

        Raises:
            ConfigError: a twin arm other than the Panda, or a double for a task without a twin.
            DeviceNotFound: the physical arm does not answer (within `CONNECT_PROBE_S`).
        """
        if choice.arm not in (None, "panda"):
            raise ConfigError(f"--backend {choice.backend} drives a Franka (the Panda model); --arm {choice.arm} "
                              "is for the twin backend")
        if choice.backend == "franka":
            probe_fci(choice.robot_ip)  # here, in the serving process: a clear error before any loop starts
            return cls(task, choice.robot_ip, enforce_realtime=choice.franka_realtime == "enforce")
        from robot_rl.twin.doubles.franka_robot import ROBOT_IP

        backend = cls(task, choice.robot_ip or ROBOT_IP, double=True, initial_seed=choice.seed,
                      enforce_realtime=choice.franka_realtime == "enforce")
        backend.scene_source()  # a task without a twin fails now
        return backend

    def build(self, *, realtime: bool, resume_sim_state: np.ndarray | None = None):
        thresholds = collision_thresholds(self.task.limits.max_contact_force_n, PANDA.spec.torque_limit_nm)
        if not self.double:
            arm = FrankaArm(import_pylibfranka(), self.robot_ip, spec=self.arm_spec(), thresholds=thresholds,
                            hand="process" if self.hand else "none", probe=probe_fci,
                            enforce_realtime=self.enforce_realtime)
            return arm, None
        from robot_rl.twin.doubles.franka_robot import FrankaDouble

        double = FrankaDouble(self.task, realtime=realtime, seed=self.initial_seed, resume_sim_state=resume_sim_state)
        arm = FrankaArm(double.vendor, self.robot_ip, spec=self.arm_spec(), thresholds=thresholds,
                        clock="monotonic" if realtime else "robot", hand="thread" if self.hand else "none",
                        enforce_realtime=self.enforce_realtime)
        return arm, double

    def arm_spec(self) -> ArmSpec:
        """Panda limits (the twin's `PANDA`), 1 kHz, paced by libfranka's packets."""
        return replace(PANDA.arm_spec(), name="franka-double" if self.double else "franka",
                       gripper_max_width_m=PANDA.spec.gripper_max_width_m if self.hand else 0.0,
                       paced_by_hardware=True, period_s=0.001)

    def layout(self) -> SnapshotLayout:
        if not self.double:
            return SnapshotLayout(PANDA.spec.n_joints)
        from robot_rl.twin.backend import TwinBackend

        return TwinBackend(self.task, arm="panda").layout()  # the double's privileged state and sim_state

    def scene_source(self):
        """The double's scene files (for the twin renderers).

        Raises:
            ConfigError: a physical arm has no simulated scene, or the task has no twin.
        """
        if not self.double:
            raise ConfigError("a physical Franka has no simulated scene: pass real cameras with --cameras")
        from robot_rl.twin.backend import scene_source

        return scene_source(self.task, "panda")
