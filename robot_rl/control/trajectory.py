"""Point-to-point motions used by resets: minimum-jerk timing over poses or joint vectors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_rl.control import rotations


def min_jerk(fraction: float) -> float:
    """Minimum-jerk progress s(τ) = 10τ³ − 15τ⁴ + 6τ⁵ for τ in [0, 1] (clamped)."""
    t = min(1.0, max(0.0, fraction))
    return t * t * t * (10.0 + t * (-15.0 + 6.0 * t))


@dataclass(frozen=True)
class PoseSegment:
    """Straight-line (position) and shortest-arc (orientation) motion between two poses."""

    start: np.ndarray
    goal: np.ndarray
    duration_s: float

    @staticmethod
    def plan(start: np.ndarray, goal: np.ndarray, *, speed_m_per_s: float, speed_rad_per_s: float,
             min_duration_s: float = 0.1) -> PoseSegment:
        """Segment whose peak speed stays near the given limits (min-jerk peaks at 1.875× mean)."""
        dist = float(np.linalg.norm(goal[:3] - start[:3]))
        ang = rotations.quat_angle(start[3:], goal[3:])
        duration = max(min_duration_s, 1.875 * dist / speed_m_per_s, 1.875 * ang / speed_rad_per_s)
        return PoseSegment(np.array(start, dtype=np.float64), np.array(goal, dtype=np.float64), duration)

    def at(self, elapsed_s: float) -> np.ndarray:
        s = min_jerk(elapsed_s / self.duration_s)
        out = np.empty(7)
        out[:3] = self.start[:3] + s * (self.goal[:3] - self.start[:3])
        out[3:] = rotations.quat_slerp(self.start[3:], self.goal[3:], s)
        return out


@dataclass(frozen=True)
class JointSegment:
    """Minimum-jerk motion in joint space."""

    start: np.ndarray
    goal: np.ndarray
    duration_s: float

    @staticmethod
    def plan(start: np.ndarray, goal: np.ndarray, *, speed_rad_per_s: float,
             min_duration_s: float = 0.2) -> JointSegment:
        largest = float(np.max(np.abs(goal - start))) if len(start) else 0.0
        duration = max(min_duration_s, 1.875 * largest / speed_rad_per_s)
        return JointSegment(np.array(start, dtype=np.float64), np.array(goal, dtype=np.float64), duration)

    def at(self, elapsed_s: float) -> np.ndarray:
        return self.start + min_jerk(elapsed_s / self.duration_s) * (self.goal - self.start)
