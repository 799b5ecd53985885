"""Robot-PC safety limits: workspace box, per-command step limits, force reflex, watchdog.

These checks run on the robot PC for every command, whatever the client does. Out-of-box
*absolute* targets, steps larger than the limit and non-finite values are refused with a
`SafetyViolation` (the server turns it into an error reply and the arm does not move). Delta
commands that would leave the box are clipped to the box wall: a policy pushing against a wall
is normal during RL, not an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from robot_rl.control import rotations
from robot_rl.errors import SafetyViolation


def _check_len(values: tuple[float, ...], n: int, name: str) -> None:
    if len(values) != n or not all(np.isfinite(v) for v in values):
        raise ValueError(f"{name} must be {n} finite numbers, got {values}")


@dataclass(frozen=True)
class WorkspaceBox:
    """Where the TCP may go: an axis-aligned position box and bounds on the orientation.

    The orientation bound is per axis on the rotation vector of `R · R_nominalᵀ` (base frame):
    with the nominal tool pointing down, axis z is yaw and x, y are tilt.
    """

    min_m: tuple[float, float, float] = (0.3, -0.25, 0.01)
    """Lower corner of the TCP position box, base frame."""
    max_m: tuple[float, float, float] = (0.7, 0.25, 0.4)
    """Upper corner of the TCP position box, base frame."""
    nominal_quat_wxyz: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 0.0)
    """Orientation the rotation bounds are measured from (default: tool pointing down)."""
    rot_bound_rad: tuple[float, float, float] = (0.5, 0.5, 1.6)
    """Per-axis bound of the rotation vector away from nominal."""

    def __post_init__(self) -> None:
        _check_len(self.min_m, 3, "min_m")
        _check_len(self.max_m, 3, "max_m")
        _check_len(self.nominal_quat_wxyz, 4, "nominal_quat_wxyz")
        _check_len(self.rot_bound_rad, 3, "rot_bound_rad")
        if any(lo >= hi for lo, hi in zip(self.min_m, self.max_m)):
            raise ValueError(f"workspace min_m {self.min_m} must be below max_m {self.max_m} on every axis")
        if any(not (0.0 <= b <= np.pi) for b in self.rot_bound_rad):
            raise ValueError(f"rot_bound_rad entries must be in [0, π], got {self.rot_bound_rad}")

    def _rel_rotvec(self, quat_wxyz) -> tuple[float, float, float]:
        n = self.nominal_quat_wxyz
        return rotations.qto_rotvec(rotations.qmul(tuple(quat_wxyz), (n[0], -n[1], -n[2], -n[3])))

    def violation(self, pose: np.ndarray, *, tol_m: float = 0.0, tol_rad: float = 0.0) -> str | None:
        """None if `pose` is inside the box (with tolerance), else a sentence naming the axis."""
        for i, axis in enumerate("xyz"):
            if not self.min_m[i] - tol_m <= pose[i] <= self.max_m[i] + tol_m:
                return (f"{axis}={pose[i]:.4f} m is outside the workspace box "
                        f"[{self.min_m[i]:.4f}, {self.max_m[i]:.4f}] m")
        rel = self._rel_rotvec(pose[3:])
        for i, axis in enumerate("xyz"):
            if abs(rel[i]) > self.rot_bound_rad[i] + tol_rad:
                return (f"rotation about {axis} of {rel[i]:.3f} rad from nominal exceeds the bound "
                        f"±{self.rot_bound_rad[i]:.3f} rad")
        return None

    def clip(self, pose) -> tuple[np.ndarray, bool]:
        """Nearest pose inside the box (position clipped per axis, rotation vector per axis).

        Scalar math: this runs for every command."""
        lo, hi, b = self.min_m, self.max_m, self.rot_bound_rad
        p = [min(max(float(pose[i]), lo[i]), hi[i]) for i in range(3)]
        q = (float(pose[3]), float(pose[4]), float(pose[5]), float(pose[6]))
        rel = self._rel_rotvec(q)
        rel_c = tuple(min(max(rel[i], -b[i]), b[i]) for i in range(3))
        clipped = bool(p[0] != pose[0] or p[1] != pose[1] or p[2] != pose[2])
        if rel_c != rel:
            clipped = True
            q = rotations.qnormalize(rotations.qmul(rotations.qfrom_rotvec(*rel_c), tuple(self.nominal_quat_wxyz)))
        return np.array([p[0], p[1], p[2], q[0], q[1], q[2], q[3]]), clipped


@dataclass(frozen=True)
class CommandLimits:
    """Per-command limits and protective behaviour of the robot PC."""

    max_step_m: float = 0.05
    """Largest translation one command may ask for (delta, or absolute target vs current pose)."""
    max_step_rad: float = 0.35
    """Largest rotation one command may ask for."""
    max_contact_force_n: float = 80.0
    """Reflex: if the external force on the end effector exceeds this, hold and report an error
    until a clear-error request. The default leaves room above what the arm may apply on
    purpose (the spring-force cap, 30 N, plus a 20 N grasp) for impacts at the speed limit."""
    watchdog_s: float = 0.2
    """Hold the current pose when the controlling client sends no command for this long."""
    max_hold_s: float = 2.0
    """Longest `hold_s` a command may ask the server to wait before replying."""

    def __post_init__(self) -> None:
        if not 0.0 < self.max_step_m <= 0.3:
            raise ValueError(f"max_step_m must be in (0, 0.3], got {self.max_step_m}")
        if not 0.0 < self.max_step_rad <= 1.0:
            raise ValueError(f"max_step_rad must be in (0, 1], got {self.max_step_rad}")
        if not 1.0 <= self.max_contact_force_n <= 500.0:
            raise ValueError(f"max_contact_force_n must be in [1, 500], got {self.max_contact_force_n}")
        if not 0.01 <= self.watchdog_s <= 10.0:
            raise ValueError(f"watchdog_s must be in [0.01, 10], got {self.watchdog_s}")
        if not 0.0 <= self.max_hold_s <= 10.0:
            raise ValueError(f"max_hold_s must be in [0, 10], got {self.max_hold_s}")


def _require_finite(values, what: str) -> None:
    if not all(math.isfinite(v) for v in values):
        raise SafetyViolation(f"{what} contains NaN or inf: {np.asarray(values).tolist()}", code="non_finite")


def target_from_delta(pose_now: np.ndarray, delta_base: np.ndarray, box: WorkspaceBox,
                      limits: CommandLimits) -> tuple[np.ndarray, bool]:
    """Absolute target for a delta command `[dx dy dz rx ry rz]` (m, rad, base frame).

    The delta is applied to the measured pose (as SERL does, so pushing on a wall cannot wind
    up), then clipped to the box.

    Raises:
        SafetyViolation: non-finite delta, or a step beyond `max_step_m` / `max_step_rad`.
    """
    dx, dy, dz, rx, ry, rz = (float(v) for v in delta_base)
    _require_finite((dx, dy, dz, rx, ry, rz), "delta")
    step_m = math.sqrt(dx * dx + dy * dy + dz * dz)
    step_rad = math.sqrt(rx * rx + ry * ry + rz * rz)
    if step_m > limits.max_step_m:
        raise SafetyViolation(f"translation step {step_m:.4f} m exceeds max_step_m {limits.max_step_m} m",
                              code="step_too_large")
    if step_rad > limits.max_step_rad:
        raise SafetyViolation(f"rotation step {step_rad:.4f} rad exceeds max_step_rad {limits.max_step_rad} rad",
                              code="step_too_large")
    q = rotations.qnormalize(rotations.qmul(rotations.qfrom_rotvec(rx, ry, rz),
                                            (float(pose_now[3]), float(pose_now[4]), float(pose_now[5]),
                                             float(pose_now[6]))))
    target, clipped = box.clip((pose_now[0] + dx, pose_now[1] + dy, pose_now[2] + dz, *q))
    if clipped:
        # Clipping pulls the target toward the box, which can be far from an arm that is outside
        # it (at start-up, or pushed out): the step limit holds for the target actually sent.
        far_m = math.dist(target[:3], pose_now[:3])
        if far_m > limits.max_step_m + _STEP_SLACK:
            why = box.violation(pose_now)
            raise SafetyViolation(
                f"the box-clipped target is {far_m:.4f} m from the current pose, more than max_step_m "
                f"{limits.max_step_m} m{f' (the arm is outside the box: {why})' if why else ''}; "
                "send reset to bring the arm into the workspace", code="step_too_large")
        far_rad = rotations.quat_angle(target[3:], np.asarray(pose_now[3:], dtype=np.float64))
        if far_rad > limits.max_step_rad + _STEP_SLACK:
            raise SafetyViolation(
                f"the box-clipped target is {far_rad:.4f} rad from the current orientation, more than "
                f"max_step_rad {limits.max_step_rad} rad; send reset to bring the arm into the workspace",
                code="step_too_large")
    return target, clipped


_STEP_SLACK = 1e-9


def widened_limit(outer_box: WorkspaceBox, outer_limits: CommandLimits, box: WorkspaceBox,
                  limits: CommandLimits) -> str | None:
    """None if `box` and `limits` are at least as tight as the outer ones, else the first limit
    they widen, as `"workspace.max_m[0] = 5.0 is wider than 0.68"`. Outer limits come from the
    task file: runtime requests may only tighten them (as a robot's own safety configuration
    cannot be changed from the client)."""
    for i in range(3):
        if box.min_m[i] < outer_box.min_m[i]:
            return f"workspace.min_m[{i}] = {box.min_m[i]} m is wider than {outer_box.min_m[i]} m"
        if box.max_m[i] > outer_box.max_m[i]:
            return f"workspace.max_m[{i}] = {box.max_m[i]} m is wider than {outer_box.max_m[i]} m"
        if box.rot_bound_rad[i] > outer_box.rot_bound_rad[i]:
            return f"workspace.rot_bound_rad[{i}] = {box.rot_bound_rad[i]} rad is wider than {outer_box.rot_bound_rad[i]} rad"
    if tuple(box.nominal_quat_wxyz) != tuple(outer_box.nominal_quat_wxyz):
        return (f"workspace.nominal_quat_wxyz = {list(box.nominal_quat_wxyz)} moves the rotation bounds "
                f"away from {list(outer_box.nominal_quat_wxyz)}")
    for name, unit in (("max_step_m", "m"), ("max_step_rad", "rad"), ("max_contact_force_n", "N"),
                       ("watchdog_s", "s"), ("max_hold_s", "s")):
        new, old = getattr(limits, name), getattr(outer_limits, name)
        if new > old:
            return f"limits.{name} = {new} {unit} is wider than {old} {unit}"
    return None


def check_absolute_target(pose_now: np.ndarray, target: np.ndarray, box: WorkspaceBox,
                          limits: CommandLimits) -> np.ndarray:
    """Validated copy of an absolute target pose `[x y z qw qx qy qz]`.

    Raises:
        SafetyViolation: non-finite values, a non-unit quaternion, a target outside the box, or
            a step from the measured pose beyond the limits.
    """
    _require_finite(target, "target pose")
    qn = float(np.linalg.norm(target[3:]))
    if abs(qn - 1.0) > 1e-3:
        raise SafetyViolation(f"target quaternion must be unit length (w x y z), has norm {qn:.6f}",
                              code="bad_quaternion")
    out = np.array(target, dtype=np.float64)
    out[3:] = rotations.quat_normalize(out[3:])
    why = box.violation(out)
    if why is not None:
        raise SafetyViolation(f"target refused: {why}", code="outside_workspace")
    step_m = float(np.linalg.norm(out[:3] - pose_now[:3]))
    step_rad = rotations.quat_angle(out[3:], pose_now[3:])
    if step_m > limits.max_step_m:
        raise SafetyViolation(
            f"target is {step_m:.4f} m from the current pose, more than max_step_m {limits.max_step_m} m; "
            "send intermediate targets or use reset to travel", code="step_too_large")
    if step_rad > limits.max_step_rad:
        raise SafetyViolation(
            f"target is {step_rad:.4f} rad from the current orientation, more than max_step_rad "
            f"{limits.max_step_rad} rad", code="step_too_large")
    return out
