"""Workspace box, per-command step limits and non-finite refusal on the robot PC."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robot_rl.control import rotations
from robot_rl.control.safety import (
    CommandLimits,
    WorkspaceBox,
    check_absolute_target,
    target_from_delta,
)
from robot_rl.errors import SafetyViolation

BOX = WorkspaceBox(min_m=(0.3, -0.2, 0.05), max_m=(0.7, 0.2, 0.4), rot_bound_rad=(0.2, 0.2, 1.0))
LIMITS = CommandLimits(max_step_m=0.05, max_step_rad=0.3)
HERE = np.array([0.5, 0.0, 0.2, 0.0, 1.0, 0.0, 0.0])


def test_delta_moves_from_measured_pose():
    target, clipped = target_from_delta(HERE, np.array([0.01, -0.02, 0.03, 0, 0, 0.1]), BOX, LIMITS)
    np.testing.assert_allclose(target[:3], [0.51, -0.02, 0.23])
    assert not clipped
    expected_q = rotations.quat_normalize(rotations.quat_mul(rotations.rotvec_to_quat(np.array([0, 0, 0.1])),
                                                             HERE[3:]))
    np.testing.assert_allclose(target[3:], expected_q, atol=1e-12)


def test_delta_clipped_to_box_wall_not_refused():
    at_wall = HERE.copy()
    at_wall[2] = 0.06
    target, clipped = target_from_delta(at_wall, np.array([0, 0, -0.04, 0, 0, 0]), BOX, LIMITS)
    assert clipped and target[2] == pytest.approx(0.05)


@pytest.mark.parametrize("outside", [np.array([0.5, 0.0, 0.59, 0.0, 1.0, 0.0, 0.0]),   # 0.19 m above the box
                                     np.array([0.5, 0.0, 0.2, 1.0, 0.0, 0.0, 0.0])])   # tool up: π from nominal
def test_the_step_limit_holds_for_the_clipped_target(outside):
    """An arm outside the box: a zero delta clips to a target far from where the arm is, which
    would move it farther than any one command may."""
    with pytest.raises(SafetyViolation, match="box-clipped target") as err:
        target_from_delta(outside, np.zeros(6), BOX, LIMITS)
    assert err.value.code == "step_too_large" and "send reset" in str(err.value)


def test_clipping_near_the_wall_stays_allowed():
    just_out = HERE.copy()
    just_out[2] = 0.04  # 1 cm below the floor of the box (compliance, contact)
    target, clipped = target_from_delta(just_out, np.zeros(6), BOX, LIMITS)
    assert clipped and target[2] == pytest.approx(0.05)


def test_delta_rotation_clipped_to_bounds():
    tilted = rotations.apply_delta(HERE, np.zeros(3), np.array([0.18, 0, 0]))
    target, clipped = target_from_delta(tilted, np.array([0, 0, 0, 0.1, 0, 0]), BOX, LIMITS)
    assert clipped
    assert BOX.violation(target, tol_rad=1e-9) is None


@pytest.mark.parametrize("delta,code,words", [
    ([0.06, 0, 0, 0, 0, 0], "step_too_large", "translation step 0.0600 m exceeds max_step_m"),
    ([0, 0, 0, 0, 0, 0.31], "step_too_large", "rotation step 0.3100 rad exceeds max_step_rad"),
    ([math.nan, 0, 0, 0, 0, 0], "non_finite", r"delta contains NaN or inf: \[nan"),
    ([0, math.inf, 0, 0, 0, 0], "non_finite", r"delta contains NaN or inf: \[0.0, inf"),
])
def test_bad_deltas_refused(delta, code, words):
    with pytest.raises(SafetyViolation, match=words) as err:
        target_from_delta(HERE, np.array(delta), BOX, LIMITS)
    assert err.value.code == code


@pytest.mark.parametrize("pose,code,words", [
    ([0.9, 0, 0.2, 0, 1, 0, 0], "outside_workspace", "x=0.9000"),
    ([0.5, 0, 0.01, 0, 1, 0, 0], "outside_workspace", "z=0.0100"),
    ([0.5, 0, 0.2, 0, 2, 0, 0], "bad_quaternion", "unit length"),
    ([0.54, 0.04, 0.2, 0, 1, 0, 0], "step_too_large", "max_step_m"),
    ([0.5, 0, 0.2, math.nan, 1, 0, 0], "non_finite", "NaN"),
])
def test_bad_absolute_targets_refused_with_reason(pose, code, words):
    with pytest.raises(SafetyViolation, match=words) as err:
        check_absolute_target(HERE, np.array(pose, dtype=float), BOX, LIMITS)
    assert err.value.code == code


def test_tilted_absolute_target_outside_rotation_bound():
    tilted = rotations.apply_delta(HERE, np.zeros(3), np.array([0.0, 0.25, 0.0]))
    with pytest.raises(SafetyViolation, match="rotation about y"):
        check_absolute_target(HERE, tilted, WorkspaceBox(rot_bound_rad=(0.2, 0.2, 1.0)),
                              CommandLimits(max_step_rad=0.5))


def test_valid_absolute_target_normalized():
    target = check_absolute_target(HERE, np.array([0.52, 0.01, 0.21, 0, -1, 0, 0]), BOX, LIMITS)
    np.testing.assert_allclose(target[3:], [0, 1, 0, 0])  # canonical sign, same rotation


def test_box_validation():
    with pytest.raises(ValueError, match="below max_m"):
        WorkspaceBox(min_m=(0.5, 0, 0), max_m=(0.4, 1, 1))
    with pytest.raises(ValueError, match="max_step_m"):
        CommandLimits(max_step_m=1.0)


def test_rotation_helpers_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(200):
        v = rng.normal(size=3)
        v *= min(1.0, 3.0 / np.linalg.norm(v))
        np.testing.assert_allclose(rotations.quat_to_rotvec(rotations.rotvec_to_quat(v)), v, atol=1e-9)
        a, b = rotations.quat_normalize(rng.normal(size=4)), rotations.quat_normalize(rng.normal(size=4))
        np.testing.assert_allclose(rotations.quat_to_mat(rotations.quat_mul(a, b)),
                                   rotations.quat_to_mat(a) @ rotations.quat_to_mat(b), atol=1e-12)
        np.testing.assert_allclose(rotations.mat_to_quat(rotations.quat_to_mat(a)), a, atol=1e-12)
        s = rotations.quat_slerp(a, b, 0.5)
        assert rotations.quat_angle(a, s) == pytest.approx(rotations.quat_angle(s, b), abs=1e-9)
