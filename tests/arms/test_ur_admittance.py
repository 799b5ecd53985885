"""The UR servo mode's admittance filter, alone: convergence, deflection K⁻¹F and its limits."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.arms.ur_admittance import AdmittanceLimits, AdmittanceParams, AdmittanceState, admittance_step
from robot_rl.control import rotations
from robot_rl.control.impedance import ImpedanceGains, pose_error
from robot_rl.control.safety import WorkspaceBox

DT_S = 0.002
POS_ATOL_M = 1e-4
ROT_ATOL_RAD = 1e-3
BOX = WorkspaceBox(min_m=(0.35, -0.2, 0.012), max_m=(0.68, 0.2, 0.3), rot_bound_rad=(0.1, 0.1, 1.6))
DOWN = np.array([0.0, 1.0, 0.0, 0.0])
NO_DEADBAND = AdmittanceParams()
LIMITS = AdmittanceLimits(box=BOX, max_tcp_speed_m_per_s=0.1, max_lead_m=0.5)


def gains_matrix(gains: ImpedanceGains = ImpedanceGains()) -> np.ndarray:
    return np.stack([gains.stiffness(), gains.damping(), gains.error_clip()])


def pose(x: float, y: float, z: float, quat=DOWN) -> np.ndarray:
    return np.concatenate(([x, y, z], quat))


def run(state: AdmittanceState, ref: np.ndarray, seconds: float, *, wrench=np.zeros(6), gains=None,
        params=NO_DEADBAND, limits=LIMITS, follow: bool = True) -> tuple[AdmittanceState, list[AdmittanceState]]:
    """Tick for `seconds`; the measured TCP follows the virtual one exactly when `follow`."""
    g = gains_matrix() if gains is None else gains
    measured = state.pose_base_tcp.copy()
    history = []
    for _ in range(int(round(seconds / DT_S))):
        state = admittance_step(state, ref, g, wrench, measured, DT_S, params, limits)
        if follow:
            measured = state.pose_base_tcp.copy()
        history.append(state)
    return state, history


def test_converges_to_the_reference():
    start = AdmittanceState.at_rest(pose(0.5, 0.0, 0.15))
    yaw = rotations.quat_normalize(rotations.quat_mul(rotations.rotvec_to_quat(np.array([0, 0, 0.3])), DOWN))
    ref = pose(0.53, -0.02, 0.17, yaw)
    end, _ = run(start, ref, 3.0)
    err = pose_error(end.pose_base_tcp, ref)
    assert np.linalg.norm(err[:3]) < POS_ATOL_M
    assert np.linalg.norm(err[3:]) < ROT_ATOL_RAD
    assert np.linalg.norm(end.twist_base_tcp) < 1e-3


def test_does_not_modify_its_arguments():
    state = AdmittanceState.at_rest(pose(0.5, 0.0, 0.15))
    ref, g, w, m = pose(0.52, 0.0, 0.15), gains_matrix(), np.ones(6), pose(0.5, 0.0, 0.15)
    copies = [a.copy() for a in (state.pose_base_tcp, state.twist_base_tcp, ref, g, w, m)]
    admittance_step(state, ref, g, w, m, DT_S, NO_DEADBAND, LIMITS)
    for before, after in zip(copies, (state.pose_base_tcp, state.twist_base_tcp, ref, g, w, m)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("force_n", [-8.0, 5.0])
def test_external_force_deflects_by_k_inverse_f(axis, force_n):
    """Below K·clip the virtual TCP rests at x_ref + K⁻¹F, as the impedance law's arm does."""
    ref = pose(0.5, 0.0, 0.15)
    wrench = np.zeros(6)
    wrench[axis] = force_n
    end, _ = run(AdmittanceState.at_rest(ref), ref, 3.0, wrench=wrench)
    k = ImpedanceGains().stiffness()[axis]
    expected = ref[:3].copy()
    expected[axis] += force_n / k
    np.testing.assert_allclose(end.pose_base_tcp[:3], expected, atol=POS_ATOL_M / 10)


def test_external_torque_deflects_by_k_inverse_tau():
    ref = pose(0.5, 0.0, 0.15)
    wrench = np.array([0, 0, 0, 0, 0, 3.0])  # about z (yaw), N·m
    end, _ = run(AdmittanceState.at_rest(ref), ref, 3.0, wrench=wrench)
    deflection = pose_error(end.pose_base_tcp, ref)[3:]
    np.testing.assert_allclose(deflection, [0, 0, 3.0 / ImpedanceGains().stiffness()[5]], atol=1e-4)


def test_force_beyond_the_clip_keeps_yielding():
    """Above K·clip the spring cannot hold it: the virtual TCP keeps moving (bounded by speed and box)."""
    ref = pose(0.5, 0.0, 0.15)
    k_clip = ImpedanceGains().stiffness()[2] * ImpedanceGains().error_clip()[2]
    end, _ = run(AdmittanceState.at_rest(ref), ref, 1.0, wrench=np.array([0, 0, 1.5 * k_clip, 0, 0, 0]))
    assert end.pose_base_tcp[2] - ref[2] > 2 * ImpedanceGains().error_clip()[2]


def test_deadband_ignores_small_forces_and_passes_the_rest():
    ref = pose(0.5, 0.0, 0.15)
    params = AdmittanceParams(force_deadband_n=2.0)
    quiet, _ = run(AdmittanceState.at_rest(ref), ref, 2.0, wrench=np.array([1.5, -1.9, 0, 0, 0, 0]), params=params)
    np.testing.assert_allclose(quiet.pose_base_tcp[:3], ref[:3], atol=1e-9)
    loud, _ = run(AdmittanceState.at_rest(ref), ref, 3.0, wrench=np.array([6.0, 0, 0, 0, 0, 0]), params=params)
    assert loud.pose_base_tcp[0] - ref[0] == pytest.approx(4.0 / 2000.0, abs=POS_ATOL_M / 10)


@pytest.mark.parametrize("clip_m", [0.002, 0.01])
def test_error_clip_bounds_the_spring_and_the_approach_speed(clip_m):
    """A far reference pulls with at most K·clip: the terminal speed is K·clip/D, whatever the distance."""
    gains = ImpedanceGains(error_clip_trans_m=(clip_m,) * 3)
    g = gains_matrix(gains)
    limits = AdmittanceLimits(box=BOX, max_tcp_speed_m_per_s=2.0, max_lead_m=0.5)
    _, history = run(AdmittanceState.at_rest(pose(0.4, 0.0, 0.15)), pose(0.65, 0.0, 0.15), 1.0, gains=g,
                     limits=limits)
    peak = max(abs(s.twist_base_tcp[0]) for s in history)
    assert peak <= g[0, 0] * clip_m / g[1, 0] * (1 + 1e-6)


def test_spring_force_cap_holds():
    """Clip 5 cm × K 2000 would pull 100 N; the cap (30 N) bounds the terminal speed to 30 N / D."""
    gains = ImpedanceGains(error_clip_trans_m=(0.05,) * 3)
    g = gains_matrix(gains)
    limits = AdmittanceLimits(box=BOX, max_tcp_speed_m_per_s=2.0, max_spring_force_n=30.0, max_lead_m=0.5)
    _, history = run(AdmittanceState.at_rest(pose(0.4, 0.0, 0.15)), pose(0.65, 0.0, 0.15), 1.0, gains=g,
                     limits=limits)
    assert max(abs(s.twist_base_tcp[0]) for s in history) <= 30.0 / g[1, 0] * (1 + 1e-6)


def test_speed_limits_hold():
    gains = ImpedanceGains(error_clip_trans_m=(0.05,) * 3, error_clip_rot_rad=(0.5,) * 3)
    limits = AdmittanceLimits(box=BOX, max_tcp_speed_m_per_s=0.05, max_tcp_speed_rad_per_s=0.2, max_lead_m=0.5,
                              max_spring_force_n=100.0)
    yaw = rotations.quat_normalize(rotations.quat_mul(rotations.rotvec_to_quat(np.array([0, 0, 1.2])), DOWN))
    start = AdmittanceState.at_rest(pose(0.4, -0.1, 0.1))
    _, history = run(start, pose(0.6, 0.1, 0.25, yaw), 2.0, gains=gains_matrix(gains), limits=limits)
    poses = np.array([start.pose_base_tcp] + [s.pose_base_tcp for s in history])
    step_m = np.linalg.norm(np.diff(poses[:, :3], axis=0), axis=1)
    assert step_m.max() <= 0.05 * DT_S * (1 + 1e-9)
    assert max(np.linalg.norm(s.twist_base_tcp[3:]) for s in history) <= 0.2 * (1 + 1e-9)
    step_rad = [rotations.quat_angle(a[3:], b[3:]) for a, b in zip(poses[:-1], poses[1:])]
    assert max(step_rad) <= 0.2 * DT_S * (1 + 1e-6)


def test_stays_in_the_box_under_any_force():
    ref = pose(0.67, 0.19, 0.02)
    _, history = run(AdmittanceState.at_rest(ref), ref, 2.0, wrench=np.array([200.0, 200.0, -200.0, 0, 0, 20.0]))
    for s in history:
        assert BOX.violation(s.pose_base_tcp, tol_m=1e-12, tol_rad=1e-9) is None
    end = history[-1]
    np.testing.assert_allclose(end.pose_base_tcp[:3], [0.68, 0.2, 0.012], atol=1e-12)
    assert np.all(end.twist_base_tcp[:3] == 0.0)  # nothing stored up against the wall


def test_lead_over_a_blocked_arm_is_bounded():
    """The measured TCP stays put (the arm is blocked): the target never runs further than max_lead_m."""
    limits = AdmittanceLimits(box=BOX, max_tcp_speed_m_per_s=0.1, max_lead_m=0.01)
    start = AdmittanceState.at_rest(pose(0.5, 0.0, 0.15))
    _, history = run(start, pose(0.6, 0.0, 0.15), 2.0, limits=limits, follow=False)
    leads = [np.linalg.norm(s.pose_base_tcp[:3] - start.pose_base_tcp[:3]) for s in history]
    assert max(leads) <= 0.01 + 1e-12
    assert history[-1].twist_base_tcp[0] == pytest.approx(0.0, abs=1e-12)


def test_tripled_damping_stays_stable():
    """The core's brake multiplies D by 3: implicit damping keeps the filter stable and still."""
    g = gains_matrix()
    g[1] *= 3.0
    start = AdmittanceState(pose(0.5, 0.0, 0.15), np.array([0.1, 0, 0, 0, 0, 0.5]))
    end, history = run(start, pose(0.5, 0.0, 0.15), 2.0, gains=g)
    assert np.linalg.norm(end.twist_base_tcp) < 1e-3
    assert max(np.linalg.norm(s.twist_base_tcp[:3]) for s in history) <= 0.1 + 1e-9


def test_bad_shapes_say_what_was_wrong():
    state = AdmittanceState.at_rest(pose(0.5, 0.0, 0.15))
    with pytest.raises(ValueError, match="gains"):
        admittance_step(state, pose(0.5, 0, 0.15), np.zeros((2, 6)), np.zeros(6), pose(0.5, 0, 0.15), DT_S,
                        NO_DEADBAND, LIMITS)
    with pytest.raises(ValueError, match="dt_s"):
        admittance_step(state, pose(0.5, 0, 0.15), gains_matrix(), np.zeros(6), pose(0.5, 0, 0.15), 0.0,
                        NO_DEADBAND, LIMITS)
    with pytest.raises(ValueError, match="mass_kg"):
        AdmittanceParams(mass_kg=0.0)
