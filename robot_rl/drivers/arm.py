"""The arm interface every backend implements (twin, Franka, UR): read a sample, write torques.

The 1 kHz control loop is the only caller. It calls `read()` then `write_torque()` once per tick,
from one thread, and `close()` when it stops. Backends whose hardware paces the loop (libfranka's
1 ms packets) set `ArmSpec.paced_by_hardware`; otherwise the loop keeps time itself.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    def __post_init__(self) -> None:
        n = self.n_joints
        for name in ("q_min_rad", "q_max_rad", "dq_max_rad_per_s", "torque_limit_nm", "q_home_rad"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ArmSpec.{name} must have {n} entries, got {len(getattr(self, name))}")


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


class ArmBackend(Protocol):
    """What the control loop needs from an arm. All methods are called from the control thread."""

    spec: ArmSpec

    def read(self) -> ArmReading:
        """Newest sample; blocks until the next packet when `spec.paced_by_hardware`."""
        ...

    def write_torque(self, tau_nm: np.ndarray) -> None:
        """Send joint torques [N·m], (n,), already rate-limited and saturated."""
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
