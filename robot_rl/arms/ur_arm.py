"""`URArm`: the `ArmBackend` of a UR e-Series arm over ur_rtde, at RTDE's 500 Hz.

Each 2 ms tick the control core calls `read()` then `write()`:

- `read()` ends the previous RTDE cycle (`waitPeriod`: the controller's cycle paces the loop,
  `ArmSpec.paced_by_hardware`), starts the next (`initPeriod`) and takes the joint state, TCP force,
  safety bits and program status from RTDEReceive's newest sample (non-blocking getters). Pose,
  jacobian, mass matrix and coriolis come from the arm's model on this PC (`ur_model.py`): no RTDE
  round trip.
- `write()` sends the tick's one command — the tick's only blocking RTDE round trip:
  *torque mode* `directTorque(command.tau_nm)` (PolyScope ≥ 5.22 e-Series with direct torque; the
  same impedance law as the Franka and the twins); *servo mode* `servoL` to the pose of a Cartesian
  admittance filter (`ur_admittance.py`) pulled toward the law's reference with the command's
  K, D and clip, pushed by the measured wrench, limited to the task's TCP speed and box. During
  joint-space reset phases servo mode sends `servoJ(command.q_target_rad)` (the joint segment is
  already speed-limited by the core) and re-seeds the admittance filter at the measured pose.

Watchdogs: the core's command watchdog, and RTDE's own (`setWatchdog(watchdog_min_hz)`): if this
process stops sending (a crash, a stall), the controller stops the program and the arm. Every
ur_rtde command writes `input_int_register_0`, the register the script's watchdog watches, so the
tick's command kicks it without a second round trip (`kick_every_tick` adds an explicit
`kickWatchdog()`); while faulted nothing is sent, so a program still running is stopped by it.

Faults never raise out of `read()`/`write()`: a lost connection, a protective or emergency stop,
a safety violation or fault, or a stopped control script becomes `ArmReading.fault`, and nothing
is commanded until `recover()` (the core's `clear_error`) brings the arm back: dashboard
`closeSafetyPopup` / `unlockProtectiveStop`, `powerOn` / `brakeRelease` after a released
emergency stop, `reconnect`, `reuploadScript`, the watchdog armed again.

Threading: the control thread makes every call. The gripper's socket is served by a
`GripperWorker` thread, so `set_gripper` never waits.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from robot_rl.arms.ur_admittance import AdmittanceLimits, AdmittanceParams, AdmittanceState, admittance_step
from robot_rl.arms.ur_connect import (
    Links,
    URVendor,
    check_tcp,
    close_links,
    open_dashboard,
    open_gripper,
    real_vendor,
    ur_to_quat,
)
from robot_rl.arms.ur_model import URModel
from robot_rl.control import rotations
from robot_rl.drivers.arm import ArmCommand, ArmFault, ArmReading, ArmSpec
from robot_rl.errors import ConfigError, DeviceNotFound

__all__ = ["URArm", "URArmConfig", "URVendor", "fault_of", "pose_to_ur", "real_vendor", "ur_to_quat"]

log = logging.getLogger(__name__)

# getSafetyStatusBits: 0 normal, 1 reduced, 2 protective stopped, 3 recovery, 4 safeguard stopped,
# 5 system emergency stopped, 6 robot emergency stopped, 7 emergency stopped, 8 violation, 9 fault,
# 10 stopped due to safety.
_ESTOP_BITS = (1 << 5) | (1 << 6) | (1 << 7)
_PROTECTIVE_BITS = (1 << 2) | (1 << 4)
_SAFETY_BITS = (1 << 3) | (1 << 8) | (1 << 9)
_PROGRAM_RUNNING = 1 << 1
"""getRobotStatus bit 1 (bit 0: power on)."""
_ROBOT_MODE_RUNNING = 7


def fault_of(connected: bool, safety_bits: int, robot_status: int) -> tuple[ArmFault, str]:
    """The `ArmFault` a controller status means (most severe first), and a sentence for the log."""
    if not connected:
        return ArmFault.COMMUNICATION, "the RTDE connection is down"
    if safety_bits & _ESTOP_BITS:
        return ArmFault.EMERGENCY_STOP, f"emergency stop (safety status bits {safety_bits:#x})"
    if safety_bits & _PROTECTIVE_BITS:
        return ArmFault.PROTECTIVE_STOP, f"protective or safeguard stop (safety status bits {safety_bits:#x})"
    if safety_bits & _SAFETY_BITS:
        return ArmFault.SAFETY, f"safety violation, fault or recovery mode (safety status bits {safety_bits:#x})"
    if not robot_status & _PROGRAM_RUNNING:
        return ArmFault.SAFETY, "the ur_rtde control script is not running (stopped on the pendant, or by the watchdog)"
    return ArmFault.NONE, ""


def pose_to_ur(pose_base_tcp: np.ndarray) -> list[float]:
    """`[x y z qw qx qy qz]` → UR's `[x y z rx ry rz]` (rotation vector)."""
    rx, ry, rz = rotations.qto_rotvec((pose_base_tcp[3], pose_base_tcp[4], pose_base_tcp[5], pose_base_tcp[6]))
    return [float(pose_base_tcp[0]), float(pose_base_tcp[1]), float(pose_base_tcp[2]), rx, ry, rz]


@dataclass(frozen=True)
class URArmConfig:
    """How the backend drives the arm. Defaults suit a UR5e with a Robotiq 2F-85."""

    mode: Literal["torque", "servo"] = "torque"
    """"torque": `directTorque` running the impedance law; "servo": admittance over `servoL`."""
    watchdog_min_hz: float = 25.0
    """RTDE watchdog: the controller stops the program after 1/f s (40 ms) without input — long
    enough for a scheduling hiccup at 500 Hz, short enough that a dead loop stops the arm."""
    add_gravity: bool = False
    """Add the model's gravity torques to the law's (`ArmReading.gravity_nm`). Off: we assume UR's
    direct-torque mode compensates the arm's weight itself, as Franka's firmware does. NOT
    verified on hardware: if the arm sags when the law commands zero torque, turn this on."""
    servo_lookahead_s: float = 0.05
    """servoL/servoJ lookahead_time in [0.03, 0.2] s: smaller follows the admittance filter more
    closely, larger is smoother. Not tuned on hardware."""
    servo_gain: float = 500.0
    """servoL/servoJ proportional gain in [100, 2000]. Not tuned on hardware."""
    admittance: AdmittanceParams = AdmittanceParams(force_deadband_n=2.0, torque_deadband_nm=0.2)
    """Virtual mass and the force deadband (UR's TCP force estimate drifts by a few N)."""
    max_tcp_speed_rad_per_s: float = 1.0
    """Servo mode's rotational speed limit (the law has none; the reset motion's rotation speed)."""
    max_lead_m: float = 0.03
    """Servo mode: how far the admittance pose may run ahead of the measured TCP."""
    tcp_check_m: float = 0.01
    tcp_check_rad: float = 0.03
    """At connect, the controller's TCP pose must agree with the model's this closely (UR's
    per-arm kinematic calibration moves it by a few mm)."""
    stale_after_s: float = 0.1
    """COMMUNICATION fault when RTDE's timestamp has not moved for this long."""
    stamp: Literal["robot_pc", "controller"] = "robot_pc"
    """Reading stamps: this PC's monotonic clock, or the controller's (the double's simulated time)."""
    gripper: bool = True
    """A Robotiq 2F gripper on the URCap socket."""
    gripper_host: str | None = None
    """Where the URCap's gripper socket answers; None: the robot's address."""
    gripper_port: int = 63352
    kick_every_tick: bool = False
    """Also call `kickWatchdog()` after each tick's command (one more RTDE send per tick): for a
    controller where commands do not count as watchdog input."""
    connect_timeout_s: float = 2.0
    """Dashboard connect timeout: an unknown address fails within it."""

    def __post_init__(self) -> None:
        if self.mode not in ("torque", "servo"):
            raise ConfigError(f"UR mode must be 'torque' or 'servo', got {self.mode!r}")
        if not 0.03 <= self.servo_lookahead_s <= 0.2:
            raise ConfigError(f"servo_lookahead_s must be in [0.03, 0.2] s (UR's range), got {self.servo_lookahead_s}")
        if not 100.0 <= self.servo_gain <= 2000.0:
            raise ConfigError(f"servo_gain must be in [100, 2000] (UR's range), got {self.servo_gain}")
        if not 1.0 <= self.watchdog_min_hz <= 500.0:
            raise ConfigError(f"watchdog_min_hz must be in [1, 500], got {self.watchdog_min_hz}")


class URArm:
    """See the module docstring. Build with `URArm.connect`."""

    def __init__(self, spec: ArmSpec, config: URArmConfig, model: URModel, links: Links,
                 limits: AdmittanceLimits, host: str) -> None:
        self.spec, self.config, self.model, self.host = spec, config, model, host
        self._links = links
        self._c, self._r, self._d = links.control, links.receive, links.dashboard
        self._limits = limits
        self._period_s = spec.period_s
        self._t_cycle = None
        self._fault = ArmFault.NONE
        self._fault_why = ""
        self._last: ArmReading | None = None
        self._last_stamp_s = -1.0
        self._stale_ticks = 0
        self._stale_limit = max(1, int(round(config.stale_after_s / spec.period_s)))
        self._clock: Callable[[], int] = (time.monotonic_ns if config.stamp == "robot_pc"
                                          else lambda: int(round(self._r.getTimestamp() * 1e9)))
        self._zeros = np.zeros(spec.n_joints)
        self._last = self._sample()
        self._admittance = AdmittanceState.at_rest(self._last.pose_base_tcp)

    # ---- connect -------------------------------------------------------------------------------

    @classmethod
    def connect(cls, vendor: URVendor, host: str, *, spec: ArmSpec, config: URArmConfig,
                limits: AdmittanceLimits, model: URModel | None = None, owned: tuple = ()) -> URArm:
        """Connect to the controller at `host`, set the TCP, check the model, arm the watchdog and
        activate the gripper. Nothing moves. `owned` objects are closed with the arm (or at once
        if connecting fails).

        Raises:
            DeviceNotFound: nothing answers at `host`, remote control is off, RTDE or the control
                script cannot start, or the gripper does not answer (each message says what to check).
            ConfigError: the controller's TCP pose disagrees with the arm model's.
        """
        model = model or URModel("ur5e", gravity=config.add_gravity)
        links = Links(owned=tuple(owned))
        try:
            links.dashboard = open_dashboard(vendor, host, config.connect_timeout_s)
            try:
                links.receive = vendor.rtde_receive.RTDEReceiveInterface(host, 1.0 / spec.period_s)
            except RuntimeError as exc:
                raise DeviceNotFound(
                    f"RTDE (port 30004) on the UR controller at {host} refused ({exc}): enable RTDE on the "
                    "pendant (Installation > Security > Services) and check no firewall blocks it") from exc
            try:
                links.control = vendor.rtde_control.RTDEControlInterface(host, 1.0 / spec.period_s)
            except RuntimeError as exc:
                raise DeviceNotFound(
                    f"the ur_rtde control script did not start on the UR controller at {host} ({exc}): the "
                    "pendant must be in Remote Control, the arm powered on with brakes released, no protective "
                    "or emergency stop, and no other program running") from exc
            links.control.setTcp(model.tcp_offset_flange())
            check_tcp(links.control, links.receive, model, config, host)
            if not links.control.setWatchdog(config.watchdog_min_hz):
                raise DeviceNotFound(f"the UR controller at {host} refused the RTDE watchdog "
                                     f"({config.watchdog_min_hz} Hz): is the control script running?")
            if config.gripper:
                links.gripper, links.worker = open_gripper(config, host)
            arm = cls(spec, config, model, links, limits, host)
        except BaseException:
            close_links(links)
            raise
        log.info("UR arm at %s connected (%s mode, 500 Hz, RTDE watchdog %.0f Hz)", host, config.mode,
                 config.watchdog_min_hz)
        return arm

    # ---- ArmBackend ------------------------------------------------------------------------------

    def read(self) -> ArmReading:
        """Wait for the next RTDE cycle and sample the arm; a fault is reported, never raised."""
        try:
            if self._t_cycle is not None:
                self._c.waitPeriod(self._t_cycle)
            self._t_cycle = self._c.initPeriod()
        except Exception as exc:  # a vendor call failing must not end the loop
            self._set_fault(ArmFault.COMMUNICATION, f"RTDE cycle timing failed: {type(exc).__name__}: {exc}")
            time.sleep(self._period_s)  # keep the loop's pace without the controller's
        try:
            reading = self._sample()
        except Exception as exc:
            self._set_fault(ArmFault.COMMUNICATION, f"reading the arm failed: {type(exc).__name__}: {exc}")
            reading = self._last._replace(t_capture_ns=time.monotonic_ns(), dq_rad_per_s=self._zeros,
                                          twist_base_tcp=np.zeros(6))
        self._last = reading
        if self._fault == ArmFault.NONE:
            self._check_status(reading)
        return reading._replace(fault=int(self._fault))

    def write(self, command: ArmCommand) -> None:
        """Send the tick's command; nothing while faulted. Never raises."""
        if self._fault != ArmFault.NONE:
            return
        c = self._c
        try:
            if self.config.mode == "torque":
                sent = c.directTorque(command.tau_nm.tolist())
            elif command.q_target_rad is not None:
                self._admittance = AdmittanceState.at_rest(self._last.pose_base_tcp)
                sent = c.servoJ(command.q_target_rad.tolist(), 0.0, 0.0, self._period_s, self.config.servo_lookahead_s,
                                self.config.servo_gain)
            else:
                self._admittance = admittance_step(self._admittance, command.pose_ref_base_tcp, command.gains,
                                                   self._last.wrench_ext_base, self._last.pose_base_tcp,
                                                   self._period_s, self.config.admittance, self._limits)
                sent = c.servoL(pose_to_ur(self._admittance.pose_base_tcp), 0.0, 0.0, self._period_s,
                                self.config.servo_lookahead_s, self.config.servo_gain)
            if self.config.kick_every_tick:
                c.kickWatchdog()
            if not sent:
                self._check_status(self._last, why_refused=True)
        except Exception as exc:
            self._set_fault(ArmFault.COMMUNICATION, f"sending the command failed: {type(exc).__name__}: {exc}")

    def set_gripper(self, width_m: float) -> None:
        """New gripper opening [m] (newest wins; the worker thread talks to the URCap)."""
        if self._links.worker is not None:
            self._links.worker.set(float(width_m))

    def recover(self) -> None:
        """Bring a faulted arm back (see the module docstring). If the cause persists (an emergency
        stop still pressed, a protective stop the controller will not unlock yet), the fault stays
        and the next reading reports it again."""
        if self._fault == ArmFault.NONE:
            return
        log.info("UR arm at %s: recovering from %s", self.host, self._fault_why)
        try:
            self._recover()
        except Exception as exc:
            log.error("UR arm at %s could not recover: %s: %s", self.host, type(exc).__name__, exc)
            return
        fault, why = self._status()
        if fault != ArmFault.NONE:
            log.error("UR arm at %s is still faulted after recovery: %s", self.host, why)
            self._fault, self._fault_why = fault, why
            return
        self._fault, self._fault_why = ArmFault.NONE, ""
        self._stale_ticks = 0
        self._admittance = AdmittanceState.at_rest(self._last.pose_base_tcp)
        log.info("UR arm at %s recovered", self.host)

    def close(self) -> None:
        """Stop servoing, stop the control script and close every connection."""
        c = self._c
        if c is not None and self._fault == ArmFault.NONE:
            try:
                if self.config.mode == "servo":
                    c.servoStop()
                c.stopScript()
            except Exception as exc:
                log.warning("stopping the UR control script failed: %s: %s", type(exc).__name__, exc)
        close_links(self._links)

    # ---- internals -----------------------------------------------------------------------------

    @property
    def fault(self) -> ArmFault:
        return self._fault

    @property
    def gripper_worker(self):
        return self._links.worker

    @property
    def owned(self) -> tuple:
        """What `connect` was given to close with the arm (the double: tests reach its controller here)."""
        return self._links.owned

    def _sample(self) -> ArmReading:
        r = self._r
        q = np.asarray(r.getActualQ(), dtype=np.float64)
        dq = np.asarray(r.getActualQd(), dtype=np.float64)
        wrench = np.asarray(r.getActualTCPForce(), dtype=np.float64)
        pose, jac, mass, coriolis, gravity = self.model.compute(q, dq)
        worker = self._links.worker
        width = worker.width_m if worker is not None else 0.0
        return ArmReading(self._clock(), q, dq, pose, jac @ dq, jac, mass, coriolis, gravity, wrench,
                          float(width) if width is not None and math.isfinite(width) else 0.0)

    def _status(self) -> tuple[ArmFault, str]:
        connected = bool(self._r.isConnected() and self._c.isConnected())
        return fault_of(connected, int(self._r.getSafetyStatusBits()), int(self._c.getRobotStatus()))

    def _check_status(self, reading: ArmReading, *, why_refused: bool = False) -> None:
        try:
            fault, why = self._status()
            stamp = float(self._r.getTimestamp())
        except Exception as exc:
            self._set_fault(ArmFault.COMMUNICATION, f"reading the controller status failed: {exc}")
            return
        if fault == ArmFault.NONE:
            self._stale_ticks = self._stale_ticks + 1 if stamp == self._last_stamp_s else 0
            self._last_stamp_s = stamp
            if self._stale_ticks >= self._stale_limit:
                fault, why = ArmFault.COMMUNICATION, (f"RTDE data stopped changing {self.config.stale_after_s} s "
                                                      "ago (network or controller)")
            elif why_refused:
                fault, why = ArmFault.SAFETY, "the controller refused the command (control script not ready)"
        if fault != ArmFault.NONE:
            self._set_fault(fault, why)

    def _set_fault(self, fault: ArmFault, why: str) -> None:
        if self._fault == ArmFault.NONE:
            log.error("UR arm at %s: %s; holding until clear_error", self.host, why)
            self._fault, self._fault_why = fault, why

    def _recover(self) -> None:
        c, r = self._c, self._r
        if not (r.isConnected() and c.isConnected()):
            if not (r.reconnect() and c.reconnect()):
                raise DeviceNotFound(f"RTDE at {self.host} is still unreachable: check the network")
        d = self._d
        if not d.isConnected():
            d.connect(int(self.config.connect_timeout_s * 1000))
        bits = int(r.getSafetyStatusBits())
        if bits & _ESTOP_BITS:
            raise DeviceNotFound("the emergency stop is still pressed: release it on the robot, then clear_error")
        d.closeSafetyPopup()
        if bits & _PROTECTIVE_BITS:
            d.unlockProtectiveStop()
        if int(r.getRobotMode()) != _ROBOT_MODE_RUNNING:
            log.warning("UR arm at %s is powered off or braked: powering on and releasing the brakes", self.host)
            d.powerOn()
            d.brakeRelease()
            deadline = time.monotonic() + 15.0
            while int(r.getRobotMode()) != _ROBOT_MODE_RUNNING:
                if time.monotonic() > deadline:
                    raise DeviceNotFound("the arm did not reach RUNNING within 15 s of power-on and brake release")
                time.sleep(0.05)
        if not int(c.getRobotStatus()) & _PROGRAM_RUNNING:
            if not c.reuploadScript():
                raise DeviceNotFound("the ur_rtde control script did not restart (reuploadScript refused)")
        if not c.setWatchdog(self.config.watchdog_min_hz):
            raise DeviceNotFound("the controller refused the RTDE watchdog after the restart")
        self._t_cycle = None
