"""Configuration of `robot-rl ros2-bridge` and its one pure rule (twist → delta command); no rclpy here."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from robot_rl.errors import ConfigError

TWIN_FOVY_DEG = {"wrist": 75.0, "front": 50.0}
"""Vertical fields of view of the twin's cameras (sim/panda_twin.xml, sim/pick_cube.xml)."""
DEFAULT_FOVY_DEG = 60.0


@dataclass(frozen=True)
class Ros2BridgeConfig:
    """`robot-rl ros2-bridge`: publish a robot server's state and cameras on ROS 2, take teleop twists."""

    server: str | None = None
    """Robot server's request socket, e.g. tcp://10.0.0.2:5555 (or use --embedded-twin)."""
    embedded_twin: bool = False
    """Serve a real-time MuJoCo twin of --task in this process instead of connecting to --server."""
    task: str = "pick_cube"
    """Task of the embedded twin (box, limits, cameras)."""
    namespace: str = "robot_rl"
    """ROS namespace of the node (topics are /<namespace>/bridge/...)."""
    rate_hz: float = 100.0
    """State publishing rate (joint states, TCP pose, wrench), Hz."""
    cameras: str | None = None
    """Comma-separated cameras to publish, e.g. "wrist,front"; None: all the server's; "": none."""
    camera_rate_hz: float = 30.0
    """Most images per second per camera (and the embedded twin's render rate), Hz."""
    camera_fovy_deg: float | None = None
    """Vertical field of view for CameraInfo; None: the twin's own (wrist 75°, front 50°), else 60°."""
    control: bool = False
    """Start as the controlling client (else a monitor until ~/take_control). Refused while
    another client holds the arm: logged, and the node stays a monitor."""
    command_rate_hz: float = 10.0
    """Teleop delta commands per second (twist × 1/command_rate_hz each). The server applies a delta
    to the *measured* pose (no wind-up against a wall), so the compliant arm lags the twist: on the
    pick_cube twin, 0.1 m/s at 10 Hz moved the TCP at about 0.035 m/s; a higher rate sends smaller
    deltas, which pull with less force. Must be faster than 1 / the server's watchdog_s."""
    teleop_speed_m_per_s: float = 0.1
    """Twists are scaled down to at most this linear speed (direction kept)."""
    teleop_speed_rad_per_s: float = 0.5
    """Twists are scaled down to at most this angular speed (axis kept)."""
    twist_timeout_s: float = 0.15
    """A twist older than this is stale: no command is sent, and the server's watchdog holds the arm."""
    base_frame: str = "base"
    """frame_id of poses and wrenches; twists must be in it (or carry an empty frame_id)."""
    joint_names: tuple[str, ...] = ()
    """JointState names; empty: joint1..jointN."""
    reset_seed: int | None = None
    """Seed of ~/reset's randomization (None: server-chosen)."""
    name: str = "ros2_bridge"
    """Client name the robot server shows."""

    def __post_init__(self) -> None:
        if (self.server is None) == (not self.embedded_twin):
            raise ValueError("pass exactly one of --server tcp://HOST:PORT or --embedded-twin")
        for name in ("rate_hz", "camera_rate_hz", "command_rate_hz", "teleop_speed_m_per_s",
                     "teleop_speed_rad_per_s", "twist_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self.rate_hz > 1000 or self.command_rate_hz > self.rate_hz:
            raise ValueError(f"need command_rate_hz ({self.command_rate_hz}) ≤ rate_hz ({self.rate_hz}) ≤ 1000: "
                             "commands are sent from the state loop")

    def camera_names(self, available: tuple[str, ...]) -> tuple[str, ...]:
        if self.cameras is None:
            return available
        names = tuple(c.strip() for c in self.cameras.split(",") if c.strip())
        unknown = [c for c in names if c not in available]
        if unknown:
            raise ConfigError(f"--cameras {unknown} not served (the server has {list(available)}): pick from those")
        return names


def twist_to_delta(twist: np.ndarray, period_s: float, *, max_m_per_s: float, max_rad_per_s: float) -> np.ndarray:
    """Delta command `[dx dy dz rx ry rz]` (m, rad) of a twist (6,) held for `period_s`; the linear
    and angular parts are each scaled down to the speed limits, keeping their direction.

    Raises:
        ValueError: a non-finite twist.
    """
    twist = np.asarray(twist, dtype=np.float64)
    if twist.shape != (6,) or not np.all(np.isfinite(twist)):
        raise ValueError(f"twist must be 6 finite numbers, got {twist.tolist()}")
    out = twist.copy()
    for part, limit in ((slice(0, 3), max_m_per_s), (slice(3, 6), max_rad_per_s)):
        peak = float(np.max(np.abs(out[part])))
        speed = peak * float(np.linalg.norm(out[part] / peak)) if peak > 0 else 0.0  # no overflow at 1e308
        if speed > limit:
            out[part] = out[part] / speed * limit
    out *= period_s
    if not np.all(np.isfinite(out)):  # the last guard before a command (the scaling cannot overflow)
        raise ValueError(f"twist {twist.tolist()} does not scale to a finite delta")
    return out
