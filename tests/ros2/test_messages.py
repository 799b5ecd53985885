"""robot_rl arrays ↔ ROS 2 messages, both ways, and the decoders' refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robot_rl.ros2 import messages as m


def test_stamps_round_trip_nanoseconds():
    for t_ns in (0, 1, 999_999_999, 1_000_000_000, 123_456_789_012_345_678):
        stamp = m.stamp_of_ns(t_ns)
        assert 0 <= stamp.nanosec < 1_000_000_000 and m.ns_of_stamp(stamp) == t_ns


def test_pose_wrench_twist_round_trip():
    pose = np.array([0.5, -0.1, 0.3, math.cos(0.3), 0.0, math.sin(0.3), 0.0])
    np.testing.assert_allclose(m.pose_of(m.pose_stamped(5, "base", pose)), pose)
    w = np.arange(6.0) - 2.5
    np.testing.assert_array_equal(m.wrench_of(m.wrench_stamped(5, "base", w)), w)
    np.testing.assert_array_equal(m.twist_of(m.twist_stamped(5, "base", w)), w)


def test_decoders_refuse_non_finite_and_non_rotations():
    bad = m.twist_stamped(0, "", np.array([0.0, math.nan, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="non-finite"):
        m.twist_of(bad)
    pose = m.pose_stamped(0, "", np.array([0.5, 0, 0.3, 2.0, 0, 0, 0]))
    with pytest.raises(ValueError, match="norm 2.0000"):
        m.pose_of(pose)


def test_joint_states_are_picked_by_name_in_any_order():
    msg = m.joint_state(0, ["finger", "j2", "j1"], np.array([0.04, 2.0, 1.0]), np.array([0.0, 20.0, 10.0]))
    q, dq, effort = m.joints_of(msg, ["j1", "j2"])
    np.testing.assert_array_equal(q, [1.0, 2.0])
    np.testing.assert_array_equal(dq, [10.0, 20.0])
    assert effort is None
    with pytest.raises(ValueError, match=r"lacks joints \['j3'\]"):
        m.joints_of(msg, ["j1", "j3"])


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "mono8"])
def test_images_decode_to_rgb_with_row_padding(encoding):
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    if encoding == "mono8":
        rgb[:] = rgb[:, :, :1]
    msg = m.image_msg(0, "cam", rgb)
    if encoding != "rgb8":
        c = m.ENCODINGS[encoding]
        pix = {"bgr8": rgb[:, :, ::-1], "rgba8": np.dstack([rgb, np.full((4, 5), 255, np.uint8)]),
               "mono8": rgb[:, :, :1]}[encoding]
        padded = np.zeros((4, 5 * c + 3), np.uint8)  # 3 bytes of padding per row
        padded[:, :5 * c] = pix.reshape(4, 5 * c)
        msg.encoding, msg.step, msg.data = encoding, 5 * c + 3, padded.tobytes()
    np.testing.assert_array_equal(m.rgb_of_image(msg), rgb)


def test_images_with_a_wrong_size_or_encoding_are_refused():
    msg = m.image_msg(0, "cam", np.zeros((4, 5, 3), np.uint8))
    msg.height = 5
    with pytest.raises(ValueError, match="expected 75"):
        m.rgb_of_image(msg)
    msg.height, msg.encoding = 4, "16UC1"
    with pytest.raises(ValueError, match="not supported"):
        m.rgb_of_image(msg)


def test_camera_info_is_a_pinhole_of_the_field_of_view():
    info = m.camera_info(0, "cam", 128, 128, 90.0)
    assert info.k[0] == pytest.approx(64.0) and info.k[2] == pytest.approx(63.5)
