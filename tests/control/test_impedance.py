"""Properties of the Cartesian and joint impedance laws (pure functions, no simulator)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from robot_rl.control import rotations
from robot_rl.control.impedance import (
    GainTargets,
    ImpedanceGains,
    JointGains,
    LawLimits,
    LawState,
    cartesian_impedance_step,
    joint_impedance_step,
    _solve_spd,
    pose_error,
)
from robot_rl.drivers.arm import ArmReading

N = 7
FORCE_ATOL_N = 1e-6
RNG = np.random.default_rng(0)


def reading(*, dq=None, pose=None, seed: int = 0, gravity=None) -> ArmReading:
    """A plausible arm sample: random full-rank jacobian, SPD mass matrix."""
    rng = np.random.default_rng(seed)
    jac = rng.normal(size=(6, N)) * 0.3
    a = rng.normal(size=(N, N))
    mass = a @ a.T / N + np.eye(N) * 0.5
    dq = np.zeros(N) if dq is None else dq
    return ArmReading(
        t_capture_ns=0, q_rad=rng.uniform(-1, 1, N), dq_rad_per_s=dq,
        pose_base_tcp=np.array([0.5, 0.0, 0.2, 0.0, 1.0, 0.0, 0.0]) if pose is None else pose,
        twist_base_tcp=jac @ dq, jacobian_base_tcp=jac, mass_matrix=mass, coriolis_nm=np.zeros(N),
        gravity_nm=np.zeros(N) if gravity is None else gravity, wrench_ext_base=np.zeros(6), gripper_width_m=0.08)


def converged_state(pose: np.ndarray, gains: ImpedanceGains) -> LawState:
    return LawState.initial(pose, gains, N)


def task_wrench(arm: ArmReading, tau: np.ndarray) -> np.ndarray:
    """The Cartesian wrench whose Jᵀ gives `tau` (least squares; exact when tau = Jᵀ·F)."""
    return np.linalg.lstsq(arm.jacobian_base_tcp.T, tau, rcond=None)[0]


@pytest.mark.parametrize("k", [100.0, 2000.0, 4000.0])
def test_default_damping_is_two_sqrt_k(k):
    gains = ImpedanceGains(stiffness_trans_n_per_m=(k, k, k), stiffness_rot_nm_per_rad=(k / 20,) * 3)
    np.testing.assert_allclose(gains.damping(), 2 * np.sqrt(gains.stiffness()))


def test_explicit_damping_overrides_default():
    gains = ImpedanceGains(damping_trans_ns_per_m=(89.0, 89.0, 89.0), damping_rot_nms_per_rad=(7.0, 7.0, 7.0))
    np.testing.assert_allclose(gains.damping(), [89, 89, 89, 7, 7, 7])


@pytest.mark.parametrize("field,value", [("stiffness_trans_n_per_m", (1e5, 0, 0)),
                                         ("error_clip_trans_m", (0.0, 0.01, 0.01)),
                                         ("stiffness_rot_nm_per_rad", (1.0, 1.0))])
def test_gains_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ImpedanceGains(**{field: value})


@pytest.mark.parametrize("offset_m", [0.005, 0.05, 0.5])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_static_force_bounded_by_clip(offset_m, axis):
    """At rest, the translational force never exceeds K·clip per axis (SERL's reference limiting),
    however far the target is."""
    gains = ImpedanceGains()
    limits = LawLimits(max_torque_rate_nm_per_s=1e5, torque_limit_nm=(500.0,) * N, max_spring_force_n=500.0)
    arm = reading()
    target = arm.pose_base_tcp.copy()
    target[axis] += offset_m
    state = converged_state(target, gains)  # reference already at the far target
    _, tau = cartesian_impedance_step(state, arm, target, GainTargets.of(gains), arm.q_rad, limits)
    wrench = task_wrench(arm, tau)
    bound = gains.stiffness()[:3] * gains.error_clip()[:3]
    assert abs(wrench[axis]) <= bound[axis] + FORCE_ATOL_N
    assert abs(wrench[axis]) == pytest.approx(min(offset_m, gains.error_clip_trans_m[axis]) * gains.stiffness_trans_n_per_m[axis], rel=1e-6)
    assert np.sign(wrench[axis]) == 1.0  # pulls toward the target


def test_spring_force_norm_cap():
    """A diagonal error hits every per-axis clip; the norm cap then bounds the vector."""
    gains = ImpedanceGains()
    limits = LawLimits(max_torque_rate_nm_per_s=1e5, torque_limit_nm=(500.0,) * N, max_spring_force_n=25.0)
    arm = reading()
    target = arm.pose_base_tcp.copy()
    target[:3] += 0.3
    _, tau = cartesian_impedance_step(converged_state(target, gains), arm, target, GainTargets.of(gains), arm.q_rad,
                                      limits)
    assert np.linalg.norm(task_wrench(arm, tau)[:3]) == pytest.approx(25.0, rel=1e-6)


def test_rotation_error_clipped():
    gains = ImpedanceGains()
    limits = LawLimits(max_torque_rate_nm_per_s=1e5, torque_limit_nm=(500.0,) * N)
    arm = reading()
    target = rotations.apply_delta(arm.pose_base_tcp, np.zeros(3), np.array([0.0, 0.0, 1.0]))
    _, tau = cartesian_impedance_step(converged_state(target, gains), arm, target, GainTargets.of(gains), arm.q_rad,
                                      limits)
    torque = task_wrench(arm, tau)[3:]
    assert abs(torque[2]) == pytest.approx(gains.stiffness_rot_nm_per_rad[2] * gains.error_clip_rot_rad[2], rel=1e-6)
    assert torque[2] > 0


def test_damping_opposes_velocity():
    gains = ImpedanceGains()
    limits = LawLimits(max_torque_rate_nm_per_s=1e5, torque_limit_nm=(500.0,) * N)
    arm0 = reading()
    twist = np.array([0.05, 0, 0, 0, 0, 0])
    dq = np.linalg.lstsq(arm0.jacobian_base_tcp, twist, rcond=None)[0]
    arm = arm0._replace(dq_rad_per_s=dq, twist_base_tcp=arm0.jacobian_base_tcp @ dq)
    gains_t = GainTargets.of(dataclasses.replace(gains, nullspace_stiffness_nm_per_rad=0.0))
    _, tau = cartesian_impedance_step(converged_state(arm.pose_base_tcp, gains), arm, arm.pose_base_tcp, gains_t,
                                      arm.q_rad, limits)
    wrench = task_wrench(arm, tau)
    assert wrench[0] == pytest.approx(-gains.damping()[0] * 0.05, rel=1e-4)


def test_torque_rate_limit_one_nm_per_tick():
    limits = LawLimits()
    arm = reading()
    target = arm.pose_base_tcp.copy()
    target[0] += 0.2
    state = converged_state(target, ImpedanceGains())
    for _ in range(20):
        new_state, tau = cartesian_impedance_step(state, arm, target, GainTargets.of(ImpedanceGains()), arm.q_rad,
                                                  limits)
        assert np.max(np.abs(new_state.prev_tau_nm - state.prev_tau_nm)) <= 1.0 + 1e-12
        state = new_state


def test_saturation_and_gravity_outside_rate_limit():
    """Gravity is added after the rate limit (arms that report it need it at once) and the total
    is saturated at the torque limits."""
    gravity = np.array([30.0, -20.0, 10.0, 100.0, 0.0, 0.0, 0.0])
    arm = reading(gravity=gravity)
    limits = LawLimits()
    state = converged_state(arm.pose_base_tcp, ImpedanceGains())
    _, tau = cartesian_impedance_step(state, arm, arm.pose_base_tcp, GainTargets.of(ImpedanceGains()), arm.q_rad,
                                      limits)
    lim = np.asarray(limits.torque_limit_nm)
    assert np.all(np.abs(tau) <= lim + 1e-12)
    np.testing.assert_allclose(tau[:3], gravity[:3], atol=1.0)  # at rest on target: gravity only (± one tick)
    assert tau[3] == pytest.approx(87.0)  # saturated


@pytest.mark.parametrize("projector", ["kinematic", "dynamic"])
def test_nullspace_posture_makes_no_task_force(projector):
    """With the TCP on target and at rest, the posture torque alone must not push the TCP:
    J·N·τ = 0 (kinematic projector) or J·M⁻¹·N·τ = 0 (dynamically consistent)."""
    gains = dataclasses.replace(ImpedanceGains(), nullspace_stiffness_nm_per_rad=10.0)
    limits = LawLimits(max_torque_rate_nm_per_s=1e5, torque_limit_nm=(500.0,) * N, nullspace=projector)
    arm = reading(seed=3)
    q_posture = arm.q_rad + 0.5
    _, tau = cartesian_impedance_step(converged_state(arm.pose_base_tcp, gains), arm, arm.pose_base_tcp,
                                      GainTargets.of(gains), q_posture, limits)
    assert np.linalg.norm(tau) > 0.1  # the posture term is active
    if projector == "kinematic":
        residual = arm.jacobian_base_tcp @ tau
    else:
        residual = arm.jacobian_base_tcp @ np.linalg.solve(arm.mass_matrix, tau)
    assert np.linalg.norm(residual) < 1e-4 * np.linalg.norm(tau)


def test_reference_and_gains_low_pass():
    gains_a = ImpedanceGains()
    gains_b = dataclasses.replace(gains_a, stiffness_trans_n_per_m=(1000.0, 1000.0, 1000.0))
    limits = LawLimits()
    arm = reading()
    target = arm.pose_base_tcp.copy()
    target[1] += 0.1
    state, _ = cartesian_impedance_step(converged_state(arm.pose_base_tcp, gains_a), arm, target,
                                        GainTargets.of(gains_b), arm.q_rad, limits)
    assert state.ref_pose[1] == pytest.approx(limits.filter_alpha * 0.1)
    assert state.stiffness[0] == pytest.approx(2000.0 + limits.filter_alpha * (1000.0 - 2000.0))
    for _ in range(6000):
        state, _ = cartesian_impedance_step(state, arm, target, GainTargets.of(gains_b), arm.q_rad, limits)
    assert state.ref_pose[1] == pytest.approx(0.1, abs=1e-9)
    assert state.stiffness[0] == pytest.approx(1000.0)


def test_law_does_not_modify_inputs():
    arm = reading(dq=RNG.normal(size=N) * 0.1)
    before = {name: np.copy(getattr(arm, name)) for name in arm._fields}
    target = arm.pose_base_tcp + np.array([0.03, -0.02, 0.01, 0, 0, 0, 0])
    state = converged_state(arm.pose_base_tcp, ImpedanceGains())
    state_ref = state.ref_pose.copy()
    cartesian_impedance_step(state, arm, target, GainTargets.of(ImpedanceGains()), arm.q_rad, LawLimits())
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(arm, name), value)
    np.testing.assert_array_equal(state.ref_pose, state_ref)


def test_pose_error_sign_and_units():
    ref = np.array([0.5, 0.0, 0.2, 0.0, 1.0, 0.0, 0.0])
    pose = rotations.apply_delta(ref, np.array([0.01, 0.0, -0.02]), np.array([0.0, 0.0, 0.1]))
    np.testing.assert_allclose(pose_error(pose, ref), [0.01, 0.0, -0.02, 0.0, 0.0, 0.1], atol=1e-12)


def test_joint_impedance_pulls_to_target_with_limits():
    arm = reading()
    k, d = JointGains().vectors()
    np.testing.assert_allclose(d, 2 * np.sqrt(k))
    limits = LawLimits()
    tau, remembered = joint_impedance_step(np.zeros(N), arm, arm.q_rad + 0.1, k, d, limits)
    assert np.all(tau > 0)
    assert np.max(np.abs(remembered)) <= 1.0 + 1e-12  # rate limited from zero


def test_spd_solve_matches_general_solve_and_falls_back_when_not_positive_definite():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(6, 6))
    spd = a @ a.T + 1e-3 * np.eye(6)
    b = rng.normal(size=(6, 7))
    np.testing.assert_allclose(_solve_spd(spd, b), np.linalg.solve(spd, b), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(_solve_spd(spd, b[:, 0]), np.linalg.solve(spd, b[:, 0]), rtol=1e-8, atol=1e-10)
    indefinite = spd - 2.0 * np.linalg.eigvalsh(spd).max() * np.outer(np.eye(6)[0], np.eye(6)[0])
    assert np.linalg.eigvalsh(indefinite).min() < 0
    np.testing.assert_allclose(_solve_spd(indefinite, b), np.linalg.solve(indefinite, b), rtol=1e-8, atol=1e-10)


# ---- TCP speed limit: the spring's push along the motion fades out from 0.75·v_max, damping brakes above v_max ----

SPEED_LIMIT_GAINS = dataclasses.replace(ImpedanceGains(), nullspace_stiffness_nm_per_rad=0.0)  # no posture torque
SPEED_LIMIT_LIMITS = LawLimits(max_torque_rate_nm_per_s=1e5, torque_limit_nm=(500.0,) * N, max_spring_force_n=500.0)
V_MAX = SPEED_LIMIT_LIMITS.max_tcp_speed_m_per_s
PUSH_N = SPEED_LIMIT_GAINS.stiffness_trans_n_per_m[0] * SPEED_LIMIT_GAINS.error_clip_trans_m[0]
"""Ordinary spring force [N] toward a target beyond the error clip along +x."""
D_TRANS = SPEED_LIMIT_GAINS.damping()[0]
DIRECTIONS = {"+x": np.array([1.0, 0.0, 0.0]), "oblique": np.array([0.6, -0.48, 0.64])}


def spring_while_moving(speed: float, direction: np.ndarray, target_offset_m: float = 0.05) -> np.ndarray:
    """Translational spring force [N] the law commands with the TCP moving at `speed` along `direction`
    and the target `target_offset_m` further along it: the task wrench with the ordinary damping −D·v removed."""
    arm0 = reading()
    twist = np.concatenate([speed * direction, np.zeros(3)])
    dq = np.linalg.lstsq(arm0.jacobian_base_tcp, twist, rcond=None)[0]
    arm = arm0._replace(dq_rad_per_s=dq, twist_base_tcp=twist)
    target = arm.pose_base_tcp.copy()
    target[:3] += target_offset_m * direction
    _, tau = cartesian_impedance_step(converged_state(target, SPEED_LIMIT_GAINS), arm, target,
                                      GainTargets.of(SPEED_LIMIT_GAINS), arm.q_rad, SPEED_LIMIT_LIMITS)
    return task_wrench(arm, tau)[:3] + SPEED_LIMIT_GAINS.damping()[:3] * twist[:3]


def static_spring(direction: np.ndarray) -> np.ndarray:
    return spring_while_moving(0.0, direction)


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.74])
def test_speed_limit_inactive_below_three_quarters(direction, fraction):
    np.testing.assert_allclose(spring_while_moving(fraction * V_MAX, direction), static_spring(direction),
                               atol=FORCE_ATOL_N)
    assert static_spring(DIRECTIONS["+x"])[0] == pytest.approx(PUSH_N, rel=1e-9)


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
@pytest.mark.parametrize("fraction", [1.01, 1.2, 1.5, 3.0])
def test_speed_limit_brakes_above_v_max(direction, fraction):
    """Above v_max nothing pushes along the motion: the spring's push is gone, extra damping
    D·(v − v_max) brakes, and the spring's pull across the motion is kept."""
    speed = fraction * V_MAX
    spring = spring_while_moving(speed, direction)
    twist = speed * direction
    total = spring - D_TRANS * twist  # the whole commanded force, ordinary damping included
    assert float(total @ direction) < 0.0
    assert float(spring @ direction) == pytest.approx(-D_TRANS * (speed - V_MAX), abs=FORCE_ATOL_N)
    across = static_spring(direction) - float(static_spring(direction) @ direction) * direction
    np.testing.assert_allclose(spring - float(spring @ direction) * direction, across, atol=FORCE_ATOL_N)


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_speed_limit_fades_push_monotonically(direction):
    """Between 0.75 and 1.0·v_max the push along the motion falls linearly from full to zero."""
    full = float(static_spring(direction) @ direction)
    fractions = np.linspace(0.75, 1.0, 11)
    push = np.array([float(spring_while_moving(f * V_MAX, direction) @ direction) for f in fractions])
    assert full > 1.0
    assert np.all(np.diff(push) < 0.0)
    np.testing.assert_allclose(push, full * (1.0 - (fractions - 0.75) / 0.25), atol=FORCE_ATOL_N)


def test_speed_limit_keeps_the_pull_back_when_moving_away():
    """Moving fast away from the target: the spring pulls against the motion and is not faded."""
    away = -DIRECTIONS["+x"]
    spring = spring_while_moving(0.9 * V_MAX, away, target_offset_m=-0.05)
    np.testing.assert_allclose(spring, static_spring(DIRECTIONS["+x"]), atol=FORCE_ATOL_N)
