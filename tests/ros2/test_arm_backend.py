"""`robot-rl serve --backend ros2` against the ROS 2 twin driver, each in its own process, over
real ROS 2 topics (a DDS domain of this session's own: tests/ros2/conftest.py) and a real
ZeroMQ bridge; plus the command shaping and the config file's refusals."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from robot_rl.errors import BridgeRemoteError, ConfigError
from robot_rl.ros2.arm_command import follow_pose, twist_toward, wrench_in_base
from robot_rl.ros2.arm_config import load_arm_config
from robot_rl.task_spec import load_task
from robot_rl.twin.doubles.ros2_driver import DriverProcess

TWIN_CONFIG = "hardware/ros2/twin_driver.yaml"
BOX_TOL_M = 0.005
"""The TCP stays within the workspace box plus this (the driver's controller overshoots little)."""
MOVE_MIN_M = 0.01
DOWN = np.array([0.0, 1.0, 0.0, 0.0])


# ---- pure parts ---------------------------------------------------------------------------------


def test_follow_pose_is_speed_and_lead_limited():
    measured = np.array([0.5, 0.0, 0.2, *DOWN])
    ref = np.array([0.6, 0.0, 0.2, *DOWN])
    out = follow_pose(measured, ref, measured, 0.004, max_speed_m_per_s=0.1, max_speed_rad_per_s=1.0,
                      max_lead_m=0.03)
    assert out[0] - 0.5 == pytest.approx(0.1 * 0.004)
    far = follow_pose(np.array([0.55, 0.0, 0.2, *DOWN]), ref, measured, 1.0, max_speed_m_per_s=1.0,
                      max_speed_rad_per_s=1.0, max_lead_m=0.03)
    assert np.linalg.norm(far[:3] - measured[:3]) == pytest.approx(0.03)


def test_twist_points_at_the_reference_within_the_speed_limit():
    measured = np.array([0.5, 0.0, 0.2, *DOWN])
    twist = twist_toward(np.array([0.5, 0.3, 0.2, *DOWN]), measured, gain_per_s=5.0, max_speed_m_per_s=0.1,
                         max_speed_rad_per_s=1.0)
    np.testing.assert_allclose(twist, [0.0, 0.1, 0.0, 0.0, 0.0, 0.0], atol=1e-12)


def test_tcp_frame_wrench_is_rotated_into_the_base_frame():
    # Tool pointing down (180° about x): the tool's +z force is the base's −z force.
    w = wrench_in_base(np.array([0.0, 0.0, 5.0, 0.0, 0.0, 0.0]), np.array([0.5, 0.0, 0.2, *DOWN]))
    np.testing.assert_allclose(w, [0.0, 0.0, -5.0, 0.0, 0.0, 0.0], atol=1e-12)


def test_shipped_configs_load():
    for path in sorted(Path(__file__).resolve().parents[2].joinpath("hardware/ros2").glob("*.yaml")):
        cfg = load_arm_config(path)
        assert cfg.command.mode in ("pose", "twist")


@pytest.mark.parametrize(("text", "field"), [
    ("arm: panda\n", "joint_names"),
    ("arm: kuka\njoint_names: [a, b, c, d, e, f, g]\n", "arm"),
    ("arm: panda\njoint_names: [a, b]\n", "joint_names"),
    ("arm: panda\njoint_names: [a, b, c, d, e, f, g]\ncommand: {mode: velocity}\n", "command.mode"),
    ("arm: panda\njoint_names: [a, b, c, d, e, f, g]\ncommand: {rate_hz: 5000}\n", "rate_hz"),
    ("arm: panda\njoint_names: [a, b, c, d, e, f, g]\nwrench_topic: 'no topic'\n", "wrench_topic"),
    ("arm: panda\njoint_names: [a, b, c, d, e, f, g]\nstale_after_ms: fast\n", "stale_after_ms"),
    ("arm: panda\njoint_names: [a, b, c, d, e, f, g]\ntopics: {}\n", "topics"),
    ("arm: [panda\n", "not valid YAML"),
])
def test_bad_yaml_is_a_config_error_naming_file_and_field(tmp_path, text, field):
    path = tmp_path / "arm.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_arm_config(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_serve_without_ros2_config_says_what_to_pass():
    from robot_rl.arms.registry import BackendChoice, make_factory

    with pytest.raises(ConfigError, match="--ros2-config"):
        make_factory(BackendChoice("ros2"), load_task("pick_cube"))


# ---- real processes -----------------------------------------------------------------------------


def test_missing_driver_is_a_clear_device_not_found(serve_process):
    t0 = time.monotonic()
    proc = serve_process("--backend", "ros2", "--ros2-config", TWIN_CONFIG, "--task", "pick_cube")
    proc.proc.wait(timeout=60)
    out = proc.output()
    assert proc.proc.returncode != 0
    assert "DeviceNotFound" in out and "no sensor_msgs/JointState on /robot_rl_twin/joint_states within 5 s" in out
    assert "ros2 topic echo /robot_rl_twin/joint_states" in out
    assert time.monotonic() - t0 < 45.0


@pytest.fixture
def driver():
    d = DriverProcess.start("pick_cube", TWIN_CONFIG)
    yield d
    d.stop()


def _wait_mode(client, mode: str, timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        obs = client.observe()
        if obs.state.mode == mode or time.monotonic() > deadline:
            return obs
        time.sleep(0.05)


@pytest.mark.slow
def test_serve_on_the_twin_driver_moves_clips_and_holds(driver, serve_process):
    """One served session: reset (scene hooks over ROS), steps move the TCP, targets beyond the
    box leave the TCP in it, the watchdog holds when the client goes silent, killing the driver
    is a reflex with a COMMUNICATION fault."""
    server = serve_process("--backend", "ros2", "--ros2-config", TWIN_CONFIG, "--task", "pick_cube",
                           "--stream-cameras", "False")
    with server.client(timeout_s=5.0) as c:
        obs = c.reset(seed=1)
        assert obs.state.mode == "hold"
        cube = obs.state.privileged["cube_pose"]
        assert 0.3 < cube[0] < 0.7 and abs(cube[2] - 0.02) < 0.005  # the driver's ground truth
        start = obs.state.pose_base_tcp.copy()
        for _ in range(8):
            obs = c.step(np.array([0.02, 0.0, 0.0, 0.0, 0.0, 0.0]), hold_s=0.1)
        assert obs.state.pose_base_tcp[0] - start[0] > MOVE_MIN_M

        box = load_task("pick_cube").workspace
        for _ in range(30):  # push down and out through the box corner (steps within max_step_m)
            obs = c.step(np.array([0.025, 0.025, -0.025, 0.0, 0.0, 0.0]), hold_s=0.1)
            p = obs.state.pose_base_tcp
            assert all(box.min_m[i] - BOX_TOL_M <= p[i] <= box.max_m[i] + BOX_TOL_M for i in range(3)), p
        assert obs.state.target_clipped

        # Silence: the core's watchdog holds (the arm keeps being commanded to where it is).
        time.sleep(0.5)
        obs = c.observe()
        assert obs.state.mode == "watchdog_hold"
        held = obs.state.pose_base_tcp.copy()
        time.sleep(0.5)
        assert np.linalg.norm(c.observe().state.pose_base_tcp[:3] - held[:3]) < 0.005

        driver.kill()  # no goodbye: joint_states just stop
        obs = _wait_mode(c, "reflex", 5.0)
        assert obs.state.mode == "reflex" and "communication" in obs.state.fault
        with pytest.raises(BridgeRemoteError):
            c.step(np.zeros(6))


def test_twin_driver_renamespace_moves_every_twin_topic():
    from robot_rl.twin.doubles.ros2_driver import _renamespace

    cfg = _renamespace(load_arm_config(TWIN_CONFIG), "/other")
    assert cfg.joint_states_topic == "/other/joint_states" and cfg.command.topic == "/other/target_pose"
    assert cfg.twin.namespace == "/other" and cfg.gripper.command_topic == "/other/gripper/width"
    assert not math.isnan(cfg.stale_after_ms)
