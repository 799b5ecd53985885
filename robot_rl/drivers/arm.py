"""The arm interface every backend implements (twin, Franka, UR): read a sample, write a command.

The control loop is the only caller. It calls `read()` then `write()` once per tick (every
`ArmSpec.period_s`: 1 ms on Franka and the twins, 2 ms on UR's 500 Hz RTDE), from one thread, and
`close()` when it stops. Backends whose hardware paces the loop (libfranka's 1 ms packets, RTDE's
500 Hz cycle) set `ArmSpec.paced_by_hardware`; otherwise the loop keeps time itself.

Command modes: every tick the core hands the backend one `ArmCommand` holding both the joint
torques of the impedance law and the law's filtered, clipped reference pose (plus a joint target
during joint-space reset phases). A torque-controlled arm (Franka, UR `directTorque`, the twins)
sends the torques; a position-controlled one (UR `servoL`) runs its admittance filter toward the
reference. The core never asks which kind of arm it drives.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple, Protocol

import numpy as np


@dataclass(frozen=True)
class ArmSpec:
    """Static facts of an arm that the controller and safety code need."""

    name: str
    """Backend name shown in logs and the handshake, e.g. "twin" or "franka"."""
    n_joints: int
    q_min_rad: tuple[float, ...]
    q_max_rad: tuple[float, ...]
    dq_max_rad_per_s: tuple[float, ...]
    torque_limit_nm: tuple[float, ...]
    q_home_rad: tuple[float, ...]
    """Joint posture for joint resets and the nullspace term."""
    gripper_max_width_m: float
    """Full opening of the gripper (0 when no gripper)."""
    paced_by_hardware: bool = False
    """True when `read()` blocks until the next control packet (the hardware keeps time)."""
    period_s: float = 0.001
    """Control period: 0.001 (1 kHz) for Franka and the twins, 0.002 for UR's 500 Hz RTDE."""

    def __post_init__(self) -> None:
        n = self.n_joints
        for name in ("q_min_rad", "q_max_rad", "dq_max_rad_per_s", "torque_limit_nm", "q_home_rad"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ArmSpec.{name} must have {n} entries, got {len(getattr(self, name))}")
        if not 0.0005 <= self.period_s <= 0.01:
            raise ValueError(f"ArmSpec.period_s must be in [0.0005, 0.01] s, got {self.period_s}")


class ArmFault(IntEnum):
    """A fault the arm itself reports (`ArmReading.fault`); the core then holds in REFLEX until
    `clear_error`, which calls `ArmBackend.recover()`."""

    NONE = 0
    REFLEX = 1
    """The arm's own reflex stopped it (Franka: a libfranka ControlException, e.g. a collision,
    joint or Cartesian limit, or missed command packets)."""
    COMMUNICATION = 2
    """No state from the arm (network loss, controller gone); the arm's own watchdog stops it."""
    PROTECTIVE_STOP = 3
    """UR protective stop (a collision or safety limit tripped on the controller)."""
    EMERGENCY_STOP = 4
    """An emergency stop button is pressed: release it on the robot, then clear_error."""
    SAFETY = 5
    """Safety violation or fault on the controller, or the control script stopped."""


ARM_FAULT_TEXT = {
    ArmFault.NONE: "",
    ArmFault.REFLEX: "the arm's own reflex stopped it (collision, limit or missed command packets)",
    ArmFault.COMMUNICATION: "communication with the arm was lost",
    ArmFault.PROTECTIVE_STOP: "the arm is in a protective stop",
    ArmFault.EMERGENCY_STOP: "an emergency stop is pressed",
    ArmFault.SAFETY: "the arm controller reports a safety violation or fault, or its control script stopped",
}


class ArmReading(NamedTuple):
    """One sample of the arm, taken at `t_capture_ns` (time.monotonic_ns of the robot PC).

    A NamedTuple rather than a frozen dataclass: one is built every 1 ms tick, and a tuple builds
    several times faster. Change a field with `reading._replace(...)`.
    """

    t_capture_ns: int
    q_rad: np.ndarray
    """(n,)"""
    dq_rad_per_s: np.ndarray
    """(n,)"""
    pose_base_tcp: np.ndarray
    """(7,) `[x y z qw qx qy qz]`, m, base frame."""
    twist_base_tcp: np.ndarray
    """(6,) `[vx vy vz wx wy wz]`, m/s and rad/s, base frame."""
    jacobian_base_tcp: np.ndarray
    """(6, n) geometric jacobian of the TCP in the base frame."""
    mass_matrix: np.ndarray
    """(n, n) kg·m²."""
    coriolis_nm: np.ndarray
    """(n,)"""
    gravity_nm: np.ndarray
    """(n,) gravity torque the controller must add; zeros when the arm compensates itself."""
    wrench_ext_base: np.ndarray
    """(6,) external force [N] and torque [N·m] acting on the end effector, base frame, at the TCP."""
    gripper_width_m: float
    """Current opening between the fingers."""
    fault: int = 0
    """An `ArmFault` the arm reports (0: none). The sample's other fields are the last known state."""


class ArmCommand(NamedTuple):
    """What the core asks of the arm for one tick; each backend uses what its command mode needs."""

    tau_nm: np.ndarray
    """(n,) joint torques of the impedance law, already rate-limited and saturated; gravity
    included only when the arm reported a non-zero `gravity_nm`."""
    pose_ref_base_tcp: np.ndarray
    """(7,) the law's filtered, box-clipped reference pose `[x y z qw qx qy qz]` (m, base frame):
    what a position-controlled arm's admittance filter pulls toward."""
    gains: np.ndarray
    """(3, 6) the law's filtered gains: rows stiffness K, damping D and the per-axis error clip
    (m and rad), `[trans x y z, rot x y z]`."""
    q_target_rad: np.ndarray | None = None
    """(n,) joint target during joint-space reset phases, else None."""


class ArmBackend(Protocol):
    """What the control loop needs from an arm. All methods are called from the control thread."""

    spec: ArmSpec

    def read(self) -> ArmReading:
        """Newest sample; blocks until the next packet when `spec.paced_by_hardware`."""
        ...

    def write(self, command: ArmCommand) -> None:
        """Send this tick's command (torques, or the reference for position-controlled arms)."""
        ...

    def set_gripper(self, width_m: float) -> None:
        """Command the gripper opening [m]; 0 closes (grasps) with the backend's grasp force."""
        ...

    def recover(self) -> None:
        """Clear a hardware error state (Franka reflexes, UR protective stops); no-op if none."""
        ...

    def close(self) -> None:
        """Stop commanding the arm and release the connection."""
        ...
