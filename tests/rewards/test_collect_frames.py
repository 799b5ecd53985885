"""Twin frame collection (`robot-rl collect-frames`): episode kinds, a trained policy's own episodes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from robot_rl.errors import ConfigError
from robot_rl.rewards.collect import CollectConfig, collect_twin_frames, run_collect
from robot_rl.task_spec import CameraSpec, load_task


@pytest.mark.slow
def test_random_episodes_include_an_untrained_policys_half_closed_gripper(tmp_path):
    # A policy fresh from initialization sends gripper commands inside the hold band (−0.5, 0.5),
    # stopping the fingers part way; a classifier that never saw that near the cube fired on it.
    from robot_rl.data.episodes import iter_episodes

    task = dataclasses.replace(load_task("pick_cube"), cameras=(CameraSpec("front", 32, 32),))
    collect_twin_frames(task, tmp_path / "data", 4, seed=0, near_miss_fraction=0.0, random_fraction=1.0)
    episodes = list(iter_episodes(tmp_path / "data"))
    assert len(episodes) == 4 and all(e.meta["kind"] == "random" for e in episodes)
    in_band = [float(np.mean(np.abs(e.arrays["action"][:, 6]) < 0.5)) for e in episodes]
    assert max(in_band) > 0.15, in_band  # uniform commands: half of the random steps
    widths = np.concatenate([e.observation("gripper_width")[:, 0] for e in episodes])
    top = float(widths.max())
    assert np.any((widths > 0.2 * top) & (widths < 0.8 * top)), "no half-closed fingers recorded"


@pytest.mark.slow
def test_near_misses_reach_just_below_the_success_height(tmp_path):
    # A policy rewarded by a classifier that never saw 4–5 cm lifts learned to stop there.
    from robot_rl.data.episodes import iter_episodes

    task = dataclasses.replace(load_task("pick_cube"), cameras=(CameraSpec("front", 32, 32),))
    lift_m = task.twin.pick_cube.lift_height_m
    collect_twin_frames(task, tmp_path / "data", 8, seed=0, near_miss_fraction=1.0, random_fraction=0.0,
                        hold_steps=(12, 12), release_probability=0.0)
    episodes = list(iter_episodes(tmp_path / "data"))
    assert all(e.meta["kind"] == "near_miss" for e in episodes)
    peaks = []
    for e in episodes:
        z = e.observation("privileged/cube_pose")[:, 2]
        peaks.append(float(z.max() - z[0]))
        assert not e.arrays["success"].any()
    assert max(peaks) > lift_m - 0.008, peaks  # the last centimetre below success is covered (old: ≤ 4 cm asked)
    assert min(peaks) < lift_m - 0.015, peaks  # and lower hovers still are


@pytest.mark.slow
def test_expert_grasps_vary_in_height_so_the_arm_does_not_give_the_cubes_away(tmp_path):
    # A policy grasping near the top edge was paid ~1.7 cm early by a classifier that had only seen
    # centre grasps: with the cube lower in the fingers, the arm's height no longer tells the cube's.
    from robot_rl.data.episodes import iter_episodes

    task = dataclasses.replace(load_task("pick_cube"), cameras=(CameraSpec("front", 32, 32),))
    collect_twin_frames(task, tmp_path / "data", 8, seed=0, near_miss_fraction=0.0, random_fraction=0.0,
                        hold_steps=(1, 1), release_probability=0.0)
    above_m = []
    for e in iter_episodes(tmp_path / "data"):
        first = int(np.argmax(e.arrays["success"])) + 1  # observation index of the first success
        assert e.arrays["success"].any()  # high grasps still lift the cube
        above_m.append(float(e.observation("tcp_pose")[first, 2] - e.observation("privileged/cube_pose")[first, 2]))
    assert min(above_m) < 0.005 and max(above_m) > 0.012, above_m


# ---- a trained policy's own episodes (HIL-SERL's classifier loop) -------------------------------------------


@pytest.fixture(scope="module")
def policy_run(tmp_path_factory):
    """A `robot-rl train` run folder on pick_cube holding one checkpoint of a freshly built agent."""
    from robot_rl.config import to_dict
    from robot_rl.envs.actions import action_dim_of
    from robot_rl.envs.make import make_env
    from robot_rl.learning.config import TrainConfig, make_agent
    from robot_rl.learning.checkpoints import save_checkpoint

    cfg = TrainConfig(task="pick_cube", seed=3)
    env = make_env(cfg.env_config())
    try:
        layout = cfg.layout_of(env)
        agent = make_agent(cfg, layout, action_dim_of(env))
    finally:
        env.close()
    run = tmp_path_factory.mktemp("policy_run")
    save_checkpoint(run, "ckpt_000000100", {"agent": agent.state_dict(), "update": 100, "config": to_dict(cfg),
                                            "obs_layout": layout.record()})
    return run, agent, layout


@pytest.mark.slow
def test_policy_episodes_are_the_checkpoints_actions_on_what_it_saw(tmp_path, policy_run):
    from robot_rl.data.episodes import iter_episodes

    run, agent, layout = policy_run
    summary = run_collect(CollectConfig(out=str(tmp_path / "data"), episodes=3, seed=5, cameras=("front",),
                                        random_fraction=0.0, near_miss_fraction=0.0, policy=str(run),
                                        policy_fraction=1.0, policy_deterministic=True))
    assert summary["kinds"]["policy"] == 3
    episodes = list(iter_episodes(tmp_path / "data"))
    assert [e.meta["kind"] for e in episodes] == ["policy"] * 3 and episodes[0].meta["policy"] == str(run)
    assert "obs/images/front" in episodes[0].arrays and "obs/images/wrist" not in episodes[0].arrays
    for e in episodes:
        # Re-run the agent on the recorded observations: the recorded actions must be its actions.
        state = np.concatenate([e.observation("/".join(path)).reshape(len(e) + 1, -1) for path, _ in layout.state],
                               axis=1)[:-1].astype(np.float32)
        with torch.no_grad():
            expected = agent.act({"state": torch.from_numpy(state)}, deterministic=True).numpy()
        np.testing.assert_allclose(e.arrays["action"], np.clip(expected, -1, 1), atol=1e-5)
        assert e.arrays["action"].std(axis=0).max() > 1e-3  # it reacts to what it sees, not a constant


def test_policy_collection_refuses_bad_requests(tmp_path, policy_run):
    from robot_rl.learning.evaluate import checkpoint_policy

    with pytest.raises(ConfigError, match="needs --policy"):
        CollectConfig(policy_fraction=0.5)
    with pytest.raises(ConfigError, match="does not exist"):
        CollectConfig(policy=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        checkpoint_policy(tmp_path, None, "pick_cube")
    with pytest.raises(ConfigError, match="not on task 'peg_insertion'"):
        checkpoint_policy(policy_run[0], None, "peg_insertion")
    with pytest.raises(ConfigError, match="summing to ≤ 1"):
        collect_twin_frames("pick_cube", tmp_path / "d", 1, near_miss_fraction=0.5, random_fraction=0.3,
                            policy_fraction=0.5, make_policy=lambda env: None)
    with pytest.raises(ConfigError, match="needs make_policy"):
        collect_twin_frames("pick_cube", tmp_path / "d", 1, near_miss_fraction=0.2, random_fraction=0.2,
                            policy_fraction=0.5)
