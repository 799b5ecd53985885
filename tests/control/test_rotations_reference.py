"""robot_rl.control.rotations pinned to scipy.spatial.transform.Rotation on random inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from robot_rl.control import rotations as rot

N_CASES = 40
"""Random cases per test; case i draws from np.random.default_rng(SEED + i)."""
SEED = 20230
QUAT_ATOL = 1e-12
"""Quaternion / matrix components (unitless): float64 round-off of a few dozen operations."""
ANGLE_ATOL_RAD = 1e-9
"""Rotation vectors and relative angles computed with atan2 (well conditioned everywhere)."""
ARCCOS_ANGLE_ATOL_RAD = 2e-7
"""quat_angle uses 2·arccos(|a·b|): near angle 0 a round-off δ in the dot product costs ≈ 2·√(2δ)
≈ 6e-8 rad, so its tolerance is looser than the atan2-based functions'."""
SMALL_AND_NEAR_PI_RAD = [0.0, 1e-14, 1e-10, 1e-9, 2e-9, 1e-6, 1e-3, 1.0, math.pi - 1e-3, math.pi - 1e-6,
                         math.pi - 1e-9]


def rng_for(case: int) -> np.random.Generator:
    return np.random.default_rng(SEED + case)


def random_quat(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random unit quaternion [w x y z], either sign."""
    q = rng.normal(size=4)
    return q / np.linalg.norm(q)


def unit_axis(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def R(quat_wxyz: np.ndarray) -> Rotation:
    return Rotation.from_quat(quat_wxyz, scalar_first=True)


def geodesic_rad(a: Rotation, b: Rotation) -> float:
    return float((a.inv() * b).magnitude())


def assert_same_quat_up_to_sign(q: np.ndarray, ref: np.ndarray) -> None:
    sign = 1.0 if float(np.dot(q, ref)) >= 0 else -1.0
    np.testing.assert_allclose(q, sign * ref, atol=QUAT_ATOL, rtol=0)


cases = pytest.mark.parametrize("case", range(N_CASES))
small_and_near_pi = pytest.mark.parametrize("angle_rad", SMALL_AND_NEAR_PI_RAD)


@cases
def test_quat_mul_is_composition_apply_b_first(case):
    rng = rng_for(case)
    a, b = random_quat(rng), random_quat(rng)
    ref = (R(a) * R(b)).as_quat(scalar_first=True)  # scipy: (Ra * Rb)(v) = Ra(Rb(v))
    np.testing.assert_allclose(rot.quat_mul(a, b), ref, atol=QUAT_ATOL, rtol=0)
    v = rng.normal(size=3)
    np.testing.assert_allclose(rot.quat_to_mat(rot.quat_mul(a, b)) @ v, R(a).apply(R(b).apply(v)), atol=1e-12)


@cases
def test_quat_to_mat_and_back(case):
    q = random_quat(rng_for(case))
    np.testing.assert_allclose(rot.quat_to_mat(q), R(q).as_matrix(), atol=QUAT_ATOL, rtol=0)
    back = rot.mat_to_quat(R(q).as_matrix())
    assert_same_quat_up_to_sign(back, q)
    assert back[0] >= 0.0  # canonical sign


@pytest.mark.parametrize("angle_rad", [math.pi, math.pi - 1e-9, *SMALL_AND_NEAR_PI_RAD])
@pytest.mark.parametrize("case", range(8))
def test_mat_to_quat_every_shepperd_branch(case, angle_rad):
    """Angles near π make the trace negative: the x / y / z-dominant branches are taken."""
    rv = angle_rad * unit_axis(rng_for(case))
    m = Rotation.from_rotvec(rv).as_matrix()
    assert_same_quat_up_to_sign(rot.mat_to_quat(m), Rotation.from_rotvec(rv).as_quat(scalar_first=True))


@cases
def test_rotvec_to_quat_and_back_random(case):
    rng = rng_for(case)
    rv = unit_axis(rng) * rng.uniform(0.0, 2.0 * math.pi)  # beyond π too: same rotation, other way round
    assert_same_quat_up_to_sign(rot.rotvec_to_quat(rv), Rotation.from_rotvec(rv).as_quat(scalar_first=True))
    q = random_quat(rng)
    np.testing.assert_allclose(rot.quat_to_rotvec(q), R(q).as_rotvec(), atol=ANGLE_ATOL_RAD, rtol=0)


@small_and_near_pi
@pytest.mark.parametrize("case", range(8))
def test_rotvec_round_trip_near_zero_and_pi(case, angle_rad):
    rv = angle_rad * unit_axis(rng_for(case))
    q = rot.rotvec_to_quat(rv)
    assert_same_quat_up_to_sign(q, Rotation.from_rotvec(rv).as_quat(scalar_first=True))
    assert np.linalg.norm(q) == pytest.approx(1.0, abs=QUAT_ATOL)
    for quat in (q, -q):  # either sign of the quaternion gives the angle in [0, π]
        np.testing.assert_allclose(rot.quat_to_rotvec(quat), Rotation.from_rotvec(rv).as_rotvec(),
                                   atol=ANGLE_ATOL_RAD, rtol=0)


@pytest.mark.parametrize("case", range(8))
def test_quat_to_rotvec_at_exactly_pi(case):
    """At π the axis sign is arbitrary: pin the rotation and the angle, not the vector."""
    axis = unit_axis(rng_for(case))
    q = np.array([0.0, *axis])
    rv = rot.quat_to_rotvec(q)
    assert np.linalg.norm(rv) == pytest.approx(math.pi, abs=ANGLE_ATOL_RAD)
    assert geodesic_rad(Rotation.from_rotvec(rv), R(q)) < ANGLE_ATOL_RAD


@cases
def test_quat_angle_is_geodesic_distance(case):
    rng = rng_for(case)
    a, b = random_quat(rng), random_quat(rng)
    assert rot.quat_angle(a, b) == pytest.approx(geodesic_rad(R(a), R(b)), abs=ARCCOS_ANGLE_ATOL_RAD)
    assert rot.quat_angle(a, -b) == pytest.approx(rot.quat_angle(a, b), abs=ARCCOS_ANGLE_ATOL_RAD)


@small_and_near_pi
@pytest.mark.parametrize("case", range(4))
def test_quat_angle_small_and_near_pi(case, angle_rad):
    rng = rng_for(case)
    a = random_quat(rng)
    b = rot.quat_mul(rot.rotvec_to_quat(angle_rad * unit_axis(rng)), a)
    assert rot.quat_angle(a, b) == pytest.approx(geodesic_rad(R(a), R(b)), abs=ARCCOS_ANGLE_ATOL_RAD)


@cases
def test_quat_slerp_matches_scipy(case):
    rng = rng_for(case)
    a, b = random_quat(rng), random_quat(rng)
    fractions = np.array([0.0, rng.uniform(), rng.uniform(), 1.0])
    ref = Slerp([0.0, 1.0], Rotation.concatenate([R(a), R(b)]))(fractions)
    for f, expected in zip(fractions, ref):
        got = rot.quat_slerp(a, b, float(f))
        assert geodesic_rad(R(got), expected) < ANGLE_ATOL_RAD
        assert got[0] >= 0.0


@cases
def test_orientation_error_is_rotvec_of_current_times_desired_inverse(case):
    rng = rng_for(case)
    current, desired = random_quat(rng), random_quat(rng)
    ref = (R(current) * R(desired).inv()).as_rotvec()
    np.testing.assert_allclose(rot.orientation_error(current, desired), ref, atol=ANGLE_ATOL_RAD, rtol=0)
    # Restoring direction: rotating current by −error (base frame) lands on desired.
    back = Rotation.from_rotvec(-rot.orientation_error(current, desired)) * R(current)
    assert geodesic_rad(back, R(desired)) < ANGLE_ATOL_RAD


@cases
def test_apply_delta_left_multiplies_in_base_frame(case):
    rng = rng_for(case)
    pose = np.concatenate([rng.normal(size=3), random_quat(rng)])
    dp, drv = rng.normal(size=3) * 0.1, unit_axis(rng) * rng.uniform(0.0, math.pi)
    out = rot.apply_delta(pose, dp, drv)
    np.testing.assert_allclose(out[:3], pose[:3] + dp, atol=1e-15, rtol=0)
    assert_same_quat_up_to_sign(out[3:], (Rotation.from_rotvec(drv) * R(pose[3:])).as_quat(scalar_first=True))
    assert out[3] >= 0.0


@cases
def test_quat_from_euler_xyz_is_scipy_extrinsic_xyz(case):
    rpy = rng_for(case).uniform(-math.pi, math.pi, 3)
    q = rot.quat_from_euler_xyz(*rpy)
    assert geodesic_rad(R(q), Rotation.from_euler("xyz", rpy)) < ANGLE_ATOL_RAD  # extrinsic: Rz·Ry·Rx
    np.testing.assert_allclose(rot.quat_to_mat(q), Rotation.from_euler("z", rpy[2]).as_matrix()
                               @ Rotation.from_euler("y", rpy[1]).as_matrix()
                               @ Rotation.from_euler("x", rpy[0]).as_matrix(), atol=QUAT_ATOL, rtol=0)
    assert geodesic_rad(R(q), Rotation.from_euler("XYZ", rpy)) > 1e-3  # not intrinsic X-Y-Z


@cases
def test_tuple_versions_agree_with_array_versions(case):
    rng = rng_for(case)
    a, b = random_quat(rng), random_quat(rng)
    np.testing.assert_allclose(rot.qmul(tuple(a), tuple(b)), rot.quat_mul(a, b), atol=QUAT_ATOL, rtol=0)
    np.testing.assert_allclose(rot.qto_rotvec(tuple(a)), rot.quat_to_rotvec(a), atol=ANGLE_ATOL_RAD, rtol=0)
    np.testing.assert_allclose(rot.qnormalize(tuple(3.7 * a)), rot.quat_normalize(3.7 * a), atol=QUAT_ATOL, rtol=0)
    for angle in (rng.uniform(0.0, math.pi), *SMALL_AND_NEAR_PI_RAD):
        rv = angle * unit_axis(rng)
        np.testing.assert_allclose(rot.qfrom_rotvec(*rv), rot.rotvec_to_quat(rv), atol=QUAT_ATOL, rtol=0)


@cases
def test_tuple_versions_match_scipy(case):
    rng = rng_for(case)
    a, b = random_quat(rng), random_quat(rng)
    np.testing.assert_allclose(rot.qmul(tuple(a), tuple(b)), (R(a) * R(b)).as_quat(scalar_first=True),
                               atol=QUAT_ATOL, rtol=0)
    np.testing.assert_allclose(rot.qto_rotvec(tuple(a)), R(a).as_rotvec(), atol=ANGLE_ATOL_RAD, rtol=0)
    n = rot.qnormalize(tuple(-2.5 * a))
    assert_same_quat_up_to_sign(np.array(n), a)
    assert n[0] >= 0.0  # canonical sign
    for angle in (rng.uniform(0.0, 2.0 * math.pi), *SMALL_AND_NEAR_PI_RAD):
        rv = angle * unit_axis(rng)
        ref = Rotation.from_rotvec(rv).as_quat(scalar_first=True)
        assert_same_quat_up_to_sign(np.array(rot.qfrom_rotvec(*rv)), ref)


@cases
def test_impedance_pose_error_is_orientation_error(case):
    """The impedance law's per-tick pose error uses the tuple helpers: rotvec(R · R_refᵀ)."""
    from robot_rl.control.impedance import pose_error

    rng = rng_for(case)
    pose = np.concatenate([rng.normal(size=3), random_quat(rng)])
    ref = np.concatenate([rng.normal(size=3), random_quat(rng)])
    err = pose_error(pose, ref)
    np.testing.assert_array_equal(err[:3], pose[:3] - ref[:3])
    np.testing.assert_allclose(err[3:], (R(pose[3:]) * R(ref[3:]).inv()).as_rotvec(), atol=ANGLE_ATOL_RAD, rtol=0)
    np.testing.assert_allclose(err[3:], rot.orientation_error(pose[3:], ref[3:]), atol=ANGLE_ATOL_RAD, rtol=0)
