"""The scripted experts solve their twin tasks through the env (a few seeds; the 50-episode
success rates are `robot-rl bench expert`)."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.envs.robot_env import RobotEnv
from robot_rl.task_spec import load_task
from robot_rl.teleop.scripted import make_expert


@pytest.mark.parametrize("task", ["pick_cube", "peg_insertion"])
def test_expert_solves_the_task(task):
    env = RobotEnv(task, image_obs=False, in_process=True)
    expert = make_expert(env.task)
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        expert.reset()
        for _ in range(env.task.episode_steps):
            obs, reward, terminated, truncated, info = env.step(expert.act(obs, info))
            if terminated or truncated:
                break
        assert terminated and reward == 1.0 and info["success"], f"seed {seed}: expert phase {expert.phase}"
    env.close()


def test_expert_actions_stay_in_the_action_box():
    env = RobotEnv("pick_cube", image_obs=False, in_process=True)
    expert = make_expert(env.task, noise=0.5, seed=1)
    obs, info = env.reset(seed=0)
    for _ in range(30):
        a = expert.act(obs, info)
        assert a.shape == (7,) and np.all(np.abs(a) <= 1.0)
        obs, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            break
    env.close()


def test_no_expert_for_tasks_without_a_twin():
    import dataclasses

    task = dataclasses.replace(load_task("pick_cube"), twin=None)
    with pytest.raises(ValueError, match="no scripted expert"):
        make_expert(task)
