"""Cartesian and joint impedance laws: pure numpy functions, one call per 1 kHz tick.

The Cartesian law follows SERL's controller (see ../shared/REFERENCES.md):

    τ = Jᵀ(−K·clip(e) − D·J·q̇) + N·τ_posture + coriolis            (rate limited, saturated)

with the pose error `e` clipped per axis ("reference limiting": in static contact the spring
force per axis never exceeds K·clip), damping 2·√K unless given, a dynamically consistent
nullspace posture term, reference and gains low-pass filtered per tick, a torque-rate limit and
torque saturation. Gravity is added last and outside the rate limit: real arms (Franka) add it
themselves and report zero, the twin reports it so the law can add it.

Nothing here reads a clock, a socket or a simulator, and no argument is modified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from scipy.linalg.lapack import dposv

from robot_rl.control import rotations
from robot_rl.drivers.arm import ArmReading

TICK_S = 0.001
"""Control period [s] the laws are tuned for (1 kHz)."""


def _vec3(values: tuple[float, ...], name: str, lo: float, hi: float) -> None:
    if len(values) != 3:
        raise ValueError(f"{name} must have 3 entries (x, y, z), got {len(values)}")
    for v in values:
        if not (np.isfinite(v) and lo <= v <= hi):
            raise ValueError(f"{name} entries must be in [{lo}, {hi}], got {values}")


@dataclass(frozen=True)
class ImpedanceGains:
    """Cartesian impedance gains. Defaults are SERL's compliant set."""

    stiffness_trans_n_per_m: tuple[float, float, float] = (2000.0, 2000.0, 2000.0)
    """Translational stiffness K on x, y, z of the base frame."""
    stiffness_rot_nm_per_rad: tuple[float, float, float] = (150.0, 150.0, 150.0)
    """Rotational stiffness about x, y, z of the base frame."""
    damping_trans_ns_per_m: tuple[float, float, float] | None = None
    """Translational damping; None means 2·√K (critical for unit mass)."""
    damping_rot_nms_per_rad: tuple[float, float, float] | None = None
    """Rotational damping; None means 2·√K."""
    error_clip_trans_m: tuple[float, float, float] = (0.01, 0.01, 0.01)
    """Per-axis clip of the position error: static spring force per axis ≤ K·clip."""
    error_clip_rot_rad: tuple[float, float, float] = (0.05, 0.05, 0.05)
    """Per-axis clip of the orientation error (rotation vector, base frame)."""
    nullspace_stiffness_nm_per_rad: float = 0.2
    """Joint stiffness of the posture term, projected into the task nullspace."""

    def __post_init__(self) -> None:
        _vec3(self.stiffness_trans_n_per_m, "stiffness_trans_n_per_m", 0.0, 5000.0)
        _vec3(self.stiffness_rot_nm_per_rad, "stiffness_rot_nm_per_rad", 0.0, 500.0)
        if self.damping_trans_ns_per_m is not None:
            _vec3(self.damping_trans_ns_per_m, "damping_trans_ns_per_m", 0.0, 500.0)
        if self.damping_rot_nms_per_rad is not None:
            _vec3(self.damping_rot_nms_per_rad, "damping_rot_nms_per_rad", 0.0, 100.0)
        _vec3(self.error_clip_trans_m, "error_clip_trans_m", 1e-4, 0.2)
        _vec3(self.error_clip_rot_rad, "error_clip_rot_rad", 1e-4, 1.0)
        if not 0.0 <= self.nullspace_stiffness_nm_per_rad <= 50.0:
            raise ValueError(
                f"nullspace_stiffness_nm_per_rad must be in [0, 50], got {self.nullspace_stiffness_nm_per_rad}"
            )

    def stiffness(self) -> np.ndarray:
        """K as a 6-vector `[trans x y z, rot x y z]`."""
        return np.array(self.stiffness_trans_n_per_m + self.stiffness_rot_nm_per_rad, dtype=np.float64)

    def damping(self) -> np.ndarray:
        """D as a 6-vector; 2·√K where not given."""
        k = self.stiffness()
        d = 2.0 * np.sqrt(k)
        if self.damping_trans_ns_per_m is not None:
            d[:3] = self.damping_trans_ns_per_m
        if self.damping_rot_nms_per_rad is not None:
            d[3:] = self.damping_rot_nms_per_rad
        return d

    def error_clip(self) -> np.ndarray:
        """Per-axis error clip as a 6-vector (m, m, m, rad, rad, rad)."""
        return np.array(self.error_clip_trans_m + self.error_clip_rot_rad, dtype=np.float64)


PRECISION_GAINS = ImpedanceGains(
    stiffness_trans_n_per_m=(3000.0, 3000.0, 3000.0),
    stiffness_rot_nm_per_rad=(300.0, 300.0, 300.0),
    error_clip_trans_m=(0.02, 0.02, 0.02),
    error_clip_rot_rad=(0.1, 0.1, 0.1),
)
"""Stiffer set used while resetting (SERL's "precision" gains)."""


@dataclass(frozen=True)
class LawLimits:
    """Limits applied after the law, per tick."""

    torque_limit_nm: tuple[float, ...] = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)
    """Per-joint torque saturation (Franka's published limits)."""
    max_torque_rate_nm_per_s: float = 1000.0
    """Torque-rate limit: 1 N·m per 1 ms tick, as Franka's controllers use."""
    filter_alpha: float = 0.005
    """Low-pass factor per tick for reference and gains (time constant ≈ tick/α = 0.2 s)."""
    max_spring_force_n: float = 30.0
    """Cap on the norm of the translational spring force K·e (per-axis clip alone allows √3·K·clip)."""
    max_tcp_speed_m_per_s: float = 0.1
    """TCP speed limit: above it the spring stops pushing along the motion and extra damping
    brakes. Bounds the energy of an unplanned impact (the clip bounds only static force)."""
    tick_s: float = TICK_S
    """Control period the rate limit is expressed in."""
    nullspace: Literal["kinematic", "dynamic"] = "kinematic"
    """Posture-term projector: "kinematic" I − Jᵀ(Jᵀ)⁺ as SERL (one 6×6 solve per tick) or
    "dynamic", the mass-matrix-weighted (dynamically consistent) one (two solves per tick)."""

    def __post_init__(self) -> None:
        if not self.torque_limit_nm or any(not (0 < t <= 500) for t in self.torque_limit_nm):
            raise ValueError(f"torque_limit_nm entries must be in (0, 500], got {self.torque_limit_nm}")
        if not 0.0 < self.max_torque_rate_nm_per_s <= 1e5:
            raise ValueError(f"max_torque_rate_nm_per_s must be in (0, 1e5], got {self.max_torque_rate_nm_per_s}")
        if not 0.0 < self.filter_alpha <= 1.0:
            raise ValueError(f"filter_alpha must be in (0, 1], got {self.filter_alpha}")
        if not 0.0 < self.max_spring_force_n <= 500.0:
            raise ValueError(f"max_spring_force_n must be in (0, 500], got {self.max_spring_force_n}")
        if not 0.01 <= self.max_tcp_speed_m_per_s <= 2.0:
            raise ValueError(f"max_tcp_speed_m_per_s must be in [0.01, 2], got {self.max_tcp_speed_m_per_s}")
        if not 0.0 < self.tick_s <= 0.01:
            raise ValueError(f"tick_s must be in (0, 0.01], got {self.tick_s}")
        if self.nullspace not in ("kinematic", "dynamic"):
            raise ValueError(f"nullspace must be 'kinematic' or 'dynamic', got {self.nullspace!r}")
        # Cached array form of the limits (not a field: the hot path must not rebuild it per tick).
        object.__setattr__(self, "torque_limit_array", np.asarray(self.torque_limit_nm, dtype=np.float64))


class LawState(NamedTuple):
    """Per-tick state carried from one call to the next (a NamedTuple: one is built per tick)."""

    ref_pose: np.ndarray
    """Low-pass filtered reference pose, (7,)."""
    gains: np.ndarray
    """Filtered gains, (3, 6): rows K, D and the per-axis error clip. Once the filter has
    converged this *is* the target's array (the law then skips filtering)."""
    prev_tau_nm: np.ndarray
    """Torque commanded on the previous tick, without gravity, (n,)."""

    @property
    def stiffness(self) -> np.ndarray:
        return self.gains[0]

    @property
    def damping(self) -> np.ndarray:
        return self.gains[1]

    @property
    def error_clip(self) -> np.ndarray:
        return self.gains[2]

    @classmethod
    def initial(cls, pose_base_tcp: np.ndarray, gains: ImpedanceGains | GainTargets, n_joints: int) -> LawState:
        """State that holds `pose_base_tcp` with `gains` (filter already converged), zero torque."""
        target = gains if isinstance(gains, GainTargets) else GainTargets.of(gains)
        return cls(np.array(pose_base_tcp, dtype=np.float64), target.matrix, np.zeros(n_joints))


@dataclass(frozen=True)
class GainTargets:
    """Gains as vectors, precomputed once per gain change (not per tick)."""

    matrix: np.ndarray
    """(3, 6): rows stiffness K, damping D, error clip."""
    nullspace_stiffness: float

    @property
    def stiffness(self) -> np.ndarray:
        return self.matrix[0]

    @property
    def damping(self) -> np.ndarray:
        return self.matrix[1]

    @property
    def error_clip(self) -> np.ndarray:
        return self.matrix[2]

    @staticmethod
    def of(gains: ImpedanceGains) -> GainTargets:
        m = np.stack([gains.stiffness(), gains.damping(), gains.error_clip()])
        m.flags.writeable = False
        return GainTargets(m, gains.nullspace_stiffness_nm_per_rad)


def _filter_gains(current: np.ndarray, target: np.ndarray, alpha: float) -> np.ndarray:
    if current is target:
        return target
    g = alpha * target + (1.0 - alpha) * current
    if np.abs(g - target).max() <= 1e-9 * (1.0 + target.max()):
        return target  # converged: later ticks skip the filter
    return g


def _filter_pose(ref: np.ndarray, target: np.ndarray, alpha: float) -> np.ndarray:
    """ref + α·(target − ref): lerp of position, normalized lerp of the quaternion (equal to
    slerp to first order for the small per-tick α). Scalar math: faster than numpy at size 4."""
    b = 1.0 - alpha
    rw, rx, ry, rz = ref[3], ref[4], ref[5], ref[6]
    tw, tx, ty, tz = target[3], target[4], target[5], target[6]
    if tw * rw + tx * rx + ty * ry + tz * rz < 0.0:
        tw, tx, ty, tz = -tw, -tx, -ty, -tz
    qw, qx, qy, qz = alpha * tw + b * rw, alpha * tx + b * rx, alpha * ty + b * ry, alpha * tz + b * rz
    n = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
    return np.array([alpha * target[0] + b * ref[0], alpha * target[1] + b * ref[1],
                     alpha * target[2] + b * ref[2], qw / n, qx / n, qy / n, qz / n])


def limit_torque(tau_nm: np.ndarray, prev_tau_nm: np.ndarray, gravity_nm: np.ndarray,
                 limits: LawLimits) -> tuple[np.ndarray, np.ndarray]:
    """Apply the torque-rate limit (to τ without gravity) and saturation (to the total).

    Returns:
        (total torque to send incl. gravity, torque without gravity to remember for the next tick).
    """
    step = limits.max_torque_rate_nm_per_s * limits.tick_s
    tau = prev_tau_nm + np.minimum(np.maximum(tau_nm - prev_tau_nm, -step), step)
    lim = limits.torque_limit_array
    total = np.minimum(np.maximum(tau + gravity_nm, -lim), lim)
    return total, total - gravity_nm


def pose_error(pose: np.ndarray, ref_pose: np.ndarray) -> np.ndarray:
    """6-vector `[p − p_ref, rotvec(R · R_refᵀ)]` in the base frame (m, rad)."""
    # rotvec(q_pose ⊗ conj(q_ref)) with the tuple helpers (hot path, once per tick: no arrays).
    x, y, z = rotations.qto_rotvec(rotations.qmul((pose[3], pose[4], pose[5], pose[6]),
                                                  (ref_pose[3], -ref_pose[4], -ref_pose[5], -ref_pose[6])))
    return np.array([pose[0] - ref_pose[0], pose[1] - ref_pose[1], pose[2] - ref_pose[2], x, y, z])


def cartesian_impedance_step(
    state: LawState,
    arm: ArmReading,
    target_pose: np.ndarray,
    gains: GainTargets,
    q_posture_rad: np.ndarray,
    limits: LawLimits,
) -> tuple[LawState, np.ndarray]:
    """One tick of the Cartesian impedance law.

    Args:
        state: state returned by the previous tick (or `LawState.initial`).
        arm: the current arm reading (q, dq, TCP pose, jacobian, mass matrix, coriolis, gravity).
        target_pose: commanded TCP pose, (7,); the reference moves toward it with `filter_alpha`.
        gains: gains the filtered gains move toward.
        q_posture_rad: joint posture the nullspace term pulls toward, (n,).
        limits: rate limit, saturation, filter and force cap.

    Returns:
        (next state, joint torques [N·m] to send, (n,), gravity included when the arm reports it).
    """
    a = limits.filter_alpha
    ref = _filter_pose(state.ref_pose, target_pose, a)
    filtered = _filter_gains(state.gains, gains.matrix, a)
    k, d, clip = filtered[0], filtered[1], filtered[2]

    jac = arm.jacobian_base_tcp
    dq = arm.dq_rad_per_s
    spring = -k * np.minimum(np.maximum(pose_error(arm.pose_base_tcp, ref), -clip), clip)
    fx, fy, fz = spring[0], spring[1], spring[2]
    f_norm = math.sqrt(fx * fx + fy * fy + fz * fz)
    if f_norm > limits.max_spring_force_n:
        spring[:3] *= limits.max_spring_force_n / f_norm
    twist = arm.twist_base_tcp  # J·q̇, computed once by the backend
    vx, vy, vz = twist[0], twist[1], twist[2]
    speed = math.sqrt(vx * vx + vy * vy + vz * vz)
    v_max = limits.max_tcp_speed_m_per_s
    if speed > 0.75 * v_max:
        # Fade out the spring's push along the motion between 75 % and 100 % of the limit, and
        # brake with extra damping beyond it.
        u = twist[:3] / speed
        push = float(spring[:3] @ u)
        fade = min(1.0, (speed - 0.75 * v_max) / (0.25 * v_max))
        if push > 0.0:
            spring[:3] -= fade * push * u
        if speed > v_max:
            spring[:3] -= d[:3] * (speed - v_max) * u
    tau_task = jac.T @ (spring - d * twist)

    kn = gains.nullspace_stiffness
    tau_posture = kn * (q_posture_rad - arm.q_rad) - (2.0 * math.sqrt(kn)) * dq
    if limits.nullspace == "kinematic":
        # SERL's projector: N·τp = τp − Jᵀ·(J·Jᵀ)⁻¹·J·τp (one 6×6 solve).
        y = _solve_spd(jac @ jac.T + _REG6, jac @ tau_posture)
    else:
        # Dynamically consistent: N·τp = τp − Jᵀ·Λ·J·M⁻¹·τp, Λ = (J·M⁻¹·Jᵀ)⁻¹, from one solve
        # with M (right-hand sides [Jᵀ | τp]) and one with J·M⁻¹·Jᵀ.
        rhs = np.empty((dq.shape[0], 7))
        rhs[:, :6] = jac.T
        rhs[:, 6] = tau_posture
        jx = jac @ _solve_spd(arm.mass_matrix, rhs)
        y = _solve_spd(jx[:, :6] + _REG6, jx[:, 6])
    tau = tau_task + tau_posture - jac.T @ y + arm.coriolis_nm

    total, remembered = limit_torque(tau, state.prev_tau_nm, arm.gravity_nm, limits)
    return LawState(ref, filtered, remembered), total


_REG6 = 1e-6 * np.eye(6)


def _solve_spd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a⁻¹·b for a symmetric positive definite `a` (Cholesky, LAPACK dposv): at 6×6 about 5×
    faster than `np.linalg.solve`, whose Python wrapper costs more than the solve (hot path)."""
    _, x, info = dposv(a, b)
    if info != 0:  # not positive definite (a singular mass matrix reading): general solve
        return np.linalg.solve(a, b)
    return x


@dataclass(frozen=True)
class JointGains:
    """Joint impedance gains used for joint resets."""

    stiffness_nm_per_rad: tuple[float, ...] = (600.0, 600.0, 600.0, 600.0, 250.0, 150.0, 50.0)
    damping_nms_per_rad: tuple[float, ...] | None = None
    """None means 2·√K."""

    def __post_init__(self) -> None:
        if any(not (0.0 <= k <= 5000.0) for k in self.stiffness_nm_per_rad):
            raise ValueError(f"stiffness_nm_per_rad entries must be in [0, 5000], got {self.stiffness_nm_per_rad}")
        if self.damping_nms_per_rad is not None and len(self.damping_nms_per_rad) != len(self.stiffness_nm_per_rad):
            raise ValueError("damping_nms_per_rad must have one entry per joint")

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        k = np.asarray(self.stiffness_nm_per_rad, dtype=np.float64)
        d = 2.0 * np.sqrt(k) if self.damping_nms_per_rad is None else np.asarray(self.damping_nms_per_rad)
        return k, d


def joint_impedance_step(
    prev_tau_nm: np.ndarray,
    arm: ArmReading,
    q_target_rad: np.ndarray,
    stiffness_nm_per_rad: np.ndarray,
    damping_nms_per_rad: np.ndarray,
    limits: LawLimits,
) -> tuple[np.ndarray, np.ndarray]:
    """One tick of joint impedance: τ = K(q* − q) − D·q̇ + coriolis, rate limited and saturated.

    Returns:
        (total torque to send, torque without gravity to remember for the next tick).
    """
    tau = (stiffness_nm_per_rad * (q_target_rad - arm.q_rad) - damping_nms_per_rad * arm.dq_rad_per_s
           + arm.coriolis_nm)
    return limit_torque(tau, prev_tau_nm, arm.gravity_nm, limits)
