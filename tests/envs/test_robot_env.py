"""The gymnasium env over the bridge: embedded server, remote server, in-process twin."""

from __future__ import annotations

import dataclasses
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import robot_rl  # noqa: F401 - registers the env ids
from robot_rl.envs.robot_env import RobotEnv
from robot_rl.errors import ConfigError
from robot_rl.task_spec import load_task


@pytest.mark.parametrize("env_id", ["robot_rl/PickCube-v0", "robot_rl/PegInsertion-v0"])
def test_passes_gymnasium_env_checker(env_id):
    env = gym.make(env_id)
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


def test_observation_layout_and_info():
    env = gym.make("robot_rl/PickCube-v0", privileged_obs=True)
    obs, info = env.reset(seed=3)
    assert set(obs) == {"tcp_pose", "tcp_vel", "gripper_width", "force", "torque", "images", "privileged"}
    assert obs["images"]["wrist"].shape == (128, 128, 3) and obs["images"]["wrist"].dtype == np.uint8
    assert "cube_pose" in obs["privileged"] and "success" not in obs["privileged"]
    obs, reward, terminated, truncated, info = env.step(np.zeros(7, np.float32))
    assert info["rtt_ms"] > 0 and info["clock"] == "sim" and info["mode"] == "track"
    assert set(info["frame_age_ms"]) == {"wrist", "front"}
    assert reward == 0.0 and not terminated and not truncated
    env.close()


def test_actions_move_the_tcp_and_the_gripper():
    env = RobotEnv("pick_cube", image_obs=False)
    obs, _ = env.reset(seed=0)
    start = obs["tcp_pose"][:3].copy()
    for _ in range(8):
        obs, *_ = env.step(np.array([0, 1.0, 1.0, 0, 0, 0, 0]))
    moved = obs["tcp_pose"][:3] - start
    assert moved[1] > 0.04 and moved[2] > 0.04 and abs(moved[0]) < 0.01
    widths = []
    for _ in range(10):  # the fingers travel at 0.1 m/s: 0.8 s to close fully
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))  # close
        widths.append(obs["gripper_width"][0])
    assert widths[-1] < 0.005 and widths[1] > 0.05  # closed, and not in one step
    for _ in range(10):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))  # open
    assert obs["gripper_width"][0] > 0.075
    with pytest.raises(ValueError, match="7 finite numbers"):
        env.step(np.array([np.nan] * 7))
    env.close()


def test_truncation_at_episode_length():
    task = dataclasses.replace(load_task("pick_cube"), episode_steps=5)
    env = RobotEnv(task, image_obs=False, in_process=True)
    env.reset(seed=1)
    flags = [env.step(np.zeros(7))[3] for _ in range(5)]
    assert flags == [False, False, False, False, True]
    env.close()


def test_in_process_env_matches_socket_env():
    """Same seed, same actions: the in-process twin and the embedded server give the same
    observations (one code path below the wire)."""
    actions = np.random.default_rng(0).uniform(-1, 1, (15, 7))
    runs = []
    for in_process in (True, False):
        env = RobotEnv("pick_cube", image_obs=False, in_process=in_process)
        obs, _ = env.reset(seed=11)
        trace = [obs["tcp_pose"]]
        for a in actions:
            trace.append(env.step(a)[0]["tcp_pose"])
        runs.append(np.array(trace))
        env.close()
    np.testing.assert_array_equal(runs[0], runs[1])


def test_connects_to_a_served_robot(serve_process):
    server = serve_process("--task", "peg_insertion")
    server.client().close()  # wait until it serves
    env = gym.make("robot_rl/PegInsertion-v0", server=server.address, image_obs=False)
    obs, info = env.reset(seed=2)
    obs, *_ = env.step(np.array([0, 0, -1.0, 0, 0, 0, 0]))
    assert obs["tcp_pose"][2] < 0.13
    env.close()


def test_wrong_server_task_and_flags_are_clear_errors():
    with pytest.raises(ConfigError, match="in_process=True runs its own twin"):
        RobotEnv("pick_cube", in_process=True, server="tcp://127.0.0.1:1")
    with pytest.raises(ConfigError, match="unknown task 'pick_banana'"):
        RobotEnv("pick_banana")


def test_env_config_arm_builds_the_twin_with_that_arm():
    from robot_rl.envs.make import EnvConfig, make_env
    from robot_rl.learning.config import TrainConfig

    cfg = TrainConfig(task="pick_cube", arm="ur5e").env_config()
    env = make_env(dataclasses.replace(cfg, env_kwargs={"in_process": True}))
    try:
        assert env.unwrapped.task.twin.arm == "ur5e" and env.unwrapped.link.welcome.n_joints == 6
    finally:
        env.close()
    assert EnvConfig(task="pick_cube").arm is None  # default: the task's own arm
    with pytest.raises(ConfigError, match="--arm ur5e chooses the twin arm of a robot_rl task"):
        TrainConfig(task=None, env="Pendulum-v1", arm="ur5e")


def test_reflex_truncates_and_reset_clears_it():
    env = RobotEnv("pick_cube", image_obs=False, in_process=True)
    env.reset(seed=0)
    env.link.set_params(limits={"max_contact_force_n": 2.0})
    truncated = False
    info = {}
    for _ in range(40):
        _, _, terminated, truncated, info = env.step(np.array([0.0, 0.0, -1.0, 0, 0, 0, 0]))
        if truncated:
            break
    assert truncated and "contact force" in info["reflex"]
    env.link.set_params(limits={"max_contact_force_n": 80.0})
    obs, info = env.reset(seed=1)
    assert info["mode"] == "hold"
    assert not env.step(np.zeros(7))[3]
    env.close()


def test_cube_relative_to_tcp_follows_the_arm():
    """The twin's relative features equal (cube − TCP) and the yaw error the expert aligns away."""
    import math

    from robot_rl.teleop.scripted import _wrap, _yaw_of, _yaw_of_cube

    env = RobotEnv("pick_cube", in_process=True, image_obs=False, privileged_obs=True)
    try:
        for seed in range(3):
            obs, _ = env.reset(seed=seed)
            rels = []
            for t in range(6):
                priv = obs["privileged"]
                rel, yaw_rel = priv["cube_from_tcp_m"], float(priv["cube_yaw_from_tcp_rad"][0])
                assert np.allclose(rel, priv["cube_pose"][:3] - obs["tcp_pose"][:3], atol=2e-4)
                want = _wrap(_yaw_of_cube(priv["cube_pose"][3:]) - _yaw_of(obs["tcp_pose"][3:]), math.pi / 2)
                assert abs(yaw_rel - want) < 2e-3 and -math.pi / 4 <= yaw_rel < math.pi / 4
                rels.append(rel.copy())
                obs, *_ = env.step(np.array([1.0, -1.0, 0.0, 0, 0, 0.5, 0]))  # +x, −y, yaw: cube − tcp moves the other way
            assert rels[-1][0] < rels[0][0] - 0.015 and rels[-1][1] > rels[0][1] + 0.015
    finally:
        env.close()


def test_vectorized_in_process_twins():
    envs = gym.make_vec("robot_rl/PickCube-v0", num_envs=2, vectorization_mode="async", in_process=True,
                        image_obs=False, privileged_obs=True)
    try:
        obs, _ = envs.reset(seed=0)
        assert obs["tcp_pose"].shape == (2, 7)
        cubes = obs["privileged"]["cube_pose"]
        assert not np.allclose(cubes[0], cubes[1])  # each sub-env has its own seeded scene
        for _ in range(3):
            obs, reward, terminated, truncated, info = envs.step(np.zeros((2, 7), np.float32))
        assert reward.shape == (2,) and obs["tcp_vel"].shape == (2, 6)
    finally:
        envs.close()


def test_tcp_quaternion_sign_is_stable_near_the_nominal_pose():
    from robot_rl.envs.robot_env import canonical_quat

    nominal = np.array([0.0, 1.0, 0.0, 0.0])
    q = np.array([0.01, -0.999, 0.02, 0.0])  # the same rotation as −q, reported in the other hemisphere
    assert np.allclose(canonical_quat(q, nominal), -q) and np.allclose(canonical_quat(-q, nominal), -q)
    # Through the twin: yawing both ways and wobbling never flips the sign of the reported quaternion.
    env = RobotEnv("pick_cube", in_process=True, image_obs=False)
    try:
        obs, _ = env.reset(seed=0)
        quats = [obs["tcp_pose"][3:]]
        rng = np.random.default_rng(0)
        for t in range(40):
            action = np.zeros(7)
            action[5] = 1.0 if t < 20 else -1.0
            action[:3] = rng.uniform(-0.3, 0.3, 3)
            obs, *_ = env.step(action)
            quats.append(obs["tcp_pose"][3:])
    finally:
        env.close()
    quats = np.array(quats)
    assert np.all(quats @ nominal > 0.3)
    assert np.abs(np.diff(quats, axis=0)).max() < 0.2  # continuous: no jump from q to −q


@pytest.mark.slow
def test_a_watchdog_hold_truncates_the_episode(serve_process):
    """A real-time robot held by its watchdog (this process stalled): the next step is not
    applied, the env says so and ends the episode; the following episode runs normally."""
    server = serve_process("--task", "pick_cube", "--pace", "realtime")
    server.client().close()  # wait until it serves; bye releases control
    env = RobotEnv("pick_cube", server=server.address, image_obs=False)
    env.reset(seed=0)
    _, _, _, truncated, info = env.step(np.array([0.0, 0.5, 0.0, 0, 0, 0, 0]))
    assert not truncated and info["mode"] == "track"
    time.sleep(0.6)  # longer than the task's watchdog_s = 0.2 s
    _, _, terminated, truncated, info = env.step(np.array([0.0, 0.5, 0.0, 0, 0, 0, 0]))
    assert truncated and not terminated and info.get("watchdog_hold") and info["mode"] == "watchdog_hold"
    env.reset(seed=1)
    _, _, _, truncated, info = env.step(np.zeros(7))
    assert not truncated and info["mode"] == "track"
    env.close()
