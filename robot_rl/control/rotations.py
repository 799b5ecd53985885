"""Rotation helpers on numpy arrays. Quaternions are scalar-first, `[w x y z]` (MuJoCo order).

Pure functions; inputs are never modified. Poses are 7-vectors `[x y z qw qx qy qz]` (m, unit quat).
The hot ones are written with scalar math: at size 4, numpy's per-call overhead dominates.
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-12


def _negative_sign(w: float, x: float, y: float, z: float) -> bool:
    """True when the canonical sign (w > 0; for w = 0 the first non-zero of x, y, z > 0) needs a flip."""
    if w != 0.0:
        return w < 0.0
    return (x < 0.0) if x != 0.0 else (y < 0.0) if y != 0.0 else z < 0.0


def quat_normalize(quat_wxyz: np.ndarray) -> np.ndarray:
    """Unit quaternion with one canonical sign (w > 0, ties broken by x, y, z)."""
    w, x, y, z = (float(v) for v in quat_wxyz)
    n = math.sqrt(w * w + x * x + y * y + z * z)
    if not math.isfinite(n) or n < _EPS:
        raise ValueError(f"quaternion must be finite and non-zero, got {list(quat_wxyz)}")
    if _negative_sign(w, x, y, z):
        n = -n
    return np.array([w / n, x / n, y / n, z / n])


def quat_mul(a_wxyz: np.ndarray, b_wxyz: np.ndarray) -> np.ndarray:
    """Hamilton product a ⊗ b (apply b first, then a)."""
    aw, ax, ay, az = (float(v) for v in a_wxyz)
    bw, bx, by, bz = (float(v) for v in b_wxyz)
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def quat_conj(quat_wxyz: np.ndarray) -> np.ndarray:
    """Conjugate (inverse for unit quaternions)."""
    return np.array([quat_wxyz[0], -quat_wxyz[1], -quat_wxyz[2], -quat_wxyz[3]], dtype=np.float64)


def quat_to_mat(quat_wxyz: np.ndarray) -> np.ndarray:
    """3×3 rotation matrix of a unit quaternion."""
    w, x, y, z = quat_wxyz
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def mat_to_quat(mat: np.ndarray) -> np.ndarray:
    """Unit quaternion (w ≥ 0) of a 3×3 rotation matrix (Shepperd's method)."""
    m = np.asarray(mat, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    return quat_normalize(np.array(q))


def rotvec_to_quat(rotvec_rad: np.ndarray) -> np.ndarray:
    """Quaternion of a rotation vector (axis · angle, rad)."""
    x, y, z = (float(v) for v in rotvec_rad)
    angle = math.sqrt(x * x + y * y + z * z)
    if angle < 1e-9:
        return quat_normalize(np.array([1.0, 0.5 * x, 0.5 * y, 0.5 * z]))
    k = math.sin(0.5 * angle) / angle
    return np.array([math.cos(0.5 * angle), k * x, k * y, k * z])


def quat_to_rotvec(quat_wxyz: np.ndarray) -> np.ndarray:
    """Rotation vector (rad) of a unit quaternion; angle in [0, π]."""
    w, x, y, z = (float(v) for v in quat_wxyz)
    if w < 0:
        w, x, y, z = -w, -x, -y, -z
    s = math.sqrt(x * x + y * y + z * z)
    k = 2.0 if s < 1e-9 else 2.0 * math.atan2(s, w) / s
    return np.array([k * x, k * y, k * z])


def quat_angle(a_wxyz: np.ndarray, b_wxyz: np.ndarray) -> float:
    """Angle (rad, in [0, π]) of the rotation taking a to b."""
    d = abs(float(np.dot(a_wxyz, b_wxyz)))
    return 2.0 * float(np.arccos(min(1.0, d)))


def quat_slerp(a_wxyz: np.ndarray, b_wxyz: np.ndarray, fraction: float) -> np.ndarray:
    """Spherical interpolation from a (fraction 0) to b (fraction 1) along the short arc."""
    a = np.asarray(a_wxyz, dtype=np.float64)
    b = np.asarray(b_wxyz, dtype=np.float64)
    if np.dot(a, b) < 0:
        b = -b
    rel = quat_mul(b, quat_conj(a))
    return quat_normalize(quat_mul(rotvec_to_quat(fraction * quat_to_rotvec(rel)), a))


def orientation_error(current_wxyz: np.ndarray, desired_wxyz: np.ndarray) -> np.ndarray:
    """Rotation vector (rad, base frame) of R_current · R_desiredᵀ: zero when they agree.

    Sign convention matches the position error `p_current − p_desired`, so the restoring
    torque is `−K · error`.
    """
    return quat_to_rotvec(quat_mul(current_wxyz, quat_conj(desired_wxyz)))


def apply_delta(pose: np.ndarray, delta_xyz_m: np.ndarray, delta_rotvec_rad: np.ndarray) -> np.ndarray:
    """Pose `[x y z qw qx qy qz]` moved by a base-frame translation and a base-frame rotation.

    The rotation is applied as R(Δ) · R_current, as SERL does.
    """
    out = np.empty(7)
    out[:3] = pose[:3] + delta_xyz_m
    out[3:] = quat_normalize(quat_mul(rotvec_to_quat(delta_rotvec_rad), pose[3:]))
    return out


def quat_from_euler_xyz(roll_rad: float, pitch_rad: float, yaw_rad: float) -> np.ndarray:
    """Quaternion of extrinsic x-y-z (roll, pitch, yaw) Euler angles: R = Rz · Ry · Rx."""
    qx = rotvec_to_quat(np.array([roll_rad, 0.0, 0.0]))
    qy = rotvec_to_quat(np.array([0.0, pitch_rad, 0.0]))
    qz = rotvec_to_quat(np.array([0.0, 0.0, yaw_rad]))
    return quat_normalize(quat_mul(qz, quat_mul(qy, qx)))


# ---- tuple versions for per-request hot paths (no array allocation) -----------------------------

Quat = tuple[float, float, float, float]


def qmul(a: Quat, b: Quat) -> Quat:
    """Hamilton product on plain tuples (w, x, y, z)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return (aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw)


def qfrom_rotvec(x: float, y: float, z: float) -> Quat:
    angle = math.sqrt(x * x + y * y + z * z)
    if angle < 1e-9:
        w, qx, qy, qz = 1.0, 0.5 * x, 0.5 * y, 0.5 * z
        n = math.sqrt(w * w + qx * qx + qy * qy + qz * qz)
        return (w / n, qx / n, qy / n, qz / n)
    k = math.sin(0.5 * angle) / angle
    return (math.cos(0.5 * angle), k * x, k * y, k * z)


def qto_rotvec(q: Quat) -> tuple[float, float, float]:
    w, x, y, z = q
    if w < 0:
        w, x, y, z = -w, -x, -y, -z
    s = math.sqrt(x * x + y * y + z * z)
    k = 2.0 if s < 1e-9 else 2.0 * math.atan2(s, w) / s
    return (k * x, k * y, k * z)


def qnormalize(q: Quat) -> Quat:
    w, x, y, z = q
    n = math.sqrt(w * w + x * x + y * y + z * z)
    if _negative_sign(w, x, y, z):
        n = -n
    return (w / n, x / n, y / n, z / n)
