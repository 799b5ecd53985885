"""Classifier reward wrapper: reward and termination from the classifier, in make_env and in a training run."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from torch import nn

from robot_rl.agents.encoders import EncoderConfig
from robot_rl.agents.success_classifier import SuccessClassifier, save_classifier
from robot_rl.envs.classifier_reward import ClassifierReward
from robot_rl.errors import ConfigError


class StubClassifier(nn.Module):
    """Returns whatever `p` is set to; stands in for a trained classifier."""

    cameras = ("front",)
    threshold = 0.7

    def __init__(self) -> None:
        super().__init__()
        self.p = 0.0
        self.seen: list[tuple[int, ...]] = []

    def probability(self, images):
        self.seen.append(images["front"].shape)
        return np.array([self.p])


class ImageEnv(gym.Env):
    """Images only; ends itself (terminated) when `env_done` is set, truncates after `limit` steps."""

    def __init__(self, limit: int = 100) -> None:
        self.observation_space = gym.spaces.Dict({
            "images": gym.spaces.Dict({"front": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)}),
            "gripper_width": gym.spaces.Box(0, 1, (1,), np.float32)})
        self.action_space = gym.spaces.Box(-1, 1, (7,), np.float32)
        self.limit, self.t, self.env_done, self.width = limit, 0, False, 0.03

    def _obs(self):
        return {"images": {"front": np.zeros((16, 16, 3), np.uint8)}, "gripper_width": np.array([self.width])}

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 5.0, self.env_done, self.t >= self.limit, {"success": self.env_done}


def test_wrapper_rewards_and_terminates_exactly_when_p_exceeds_threshold():
    stub = StubClassifier()
    env = ClassifierReward(ImageEnv(limit=6), stub)
    _, info = env.reset()
    assert info["classifier_p"] == 0.0
    for p, expect in [(0.2, False), (0.7, False), (0.7001, True), (0.99, True)]:
        stub.p = p
        _, reward, terminated, truncated, info = env.step(np.zeros(7))
        assert (reward, terminated, truncated) == (float(expect), expect, False)
        assert info["classifier_p"] == p and info["success"] is expect
        assert info["env_success"] is False and info["env_reward"] == 5.0
    stub.p = 0.1
    env.step(np.zeros(7))
    assert env.step(np.zeros(7))[2:4] == (False, True)  # truncation passes through
    assert stub.seen[0] == (16, 16, 3)


def test_wrapper_proprio_check_threshold_override_and_env_termination():
    inner = ImageEnv()
    stub = StubClassifier()
    env = ClassifierReward(inner, stub, threshold=0.5, proprio_check=lambda o: o["gripper_width"][0] > 0.01)
    env.reset()
    stub.p = 0.6
    assert env.step(np.zeros(7))[1:3] == (1.0, True)
    inner.width = 0.0  # gripper closed on nothing: the image says success, the proprio check vetoes
    assert env.step(np.zeros(7))[1:3] == (0.0, False)
    # The inner env ends the episode on its own ground truth; the classifier disagrees: truncation, no reward.
    inner.env_done, stub.p = True, 0.1
    _, reward, terminated, truncated, info = env.step(np.zeros(7))
    assert (reward, terminated, truncated, info["env_success"], info["success"]) == (0.0, False, True, True, False)


def test_wrapper_needs_consecutive_hits_when_asked():
    stub = StubClassifier()
    env = ClassifierReward(ImageEnv(), stub, consecutive=3)
    env.reset()
    outcomes = []
    for p in (0.9, 0.9, 0.1, 0.9, 0.9, 0.9):
        stub.p = p
        outcomes.append(env.step(np.zeros(7))[2])
    assert outcomes == [False, False, False, False, False, True]  # an interrupted streak starts over
    stub.p = 0.9
    env.reset()  # a new episode starts a new streak
    assert env.step(np.zeros(7))[2] is False
    with pytest.raises(ConfigError, match="consecutive"):
        ClassifierReward(ImageEnv(), stub, consecutive=0)


def test_wrapper_refuses_an_env_without_the_cameras():
    class NoImages(ImageEnv):
        def __init__(self):
            super().__init__()
            self.observation_space = gym.spaces.Dict({"gripper_width": gym.spaces.Box(0, 1, (1,), np.float32)})

    with pytest.raises(ConfigError, match="image_obs=True"):
        ClassifierReward(NoImages(), StubClassifier())


def test_train_config_with_a_classifier_renders_its_cameras_and_wraps_the_env(tmp_path):
    from robot_rl.envs.make import make_env
    from robot_rl.learning.config import TrainConfig
    from robot_rl.learning.policy import success_of

    model = SuccessClassifier(("front",), EncoderConfig(image_hw=(32, 32), out_dim=8), threshold=0.9)
    save_classifier(model, tmp_path / "c.pt")
    cfg = TrainConfig(task="pick_cube", classifier=str(tmp_path / "c.pt"))
    env = make_env(cfg.env_config())
    try:
        assert isinstance(env, ClassifierReward)
        obs, info = env.reset(seed=0)
        assert "front" in obs["images"] and 0.0 <= info["classifier_p"] <= 1.0
        assert cfg.layout_of(env).images == ()  # a state run: the agent never sees the frames
        _, reward, terminated, _, info = env.step(np.zeros(7))
        assert reward == float(info["success"]) and terminated == info["success"]
        # The twin's ground truth is logged but no longer rewards or ends episodes.
        assert env.unwrapped.task.reward.type == "none" and "env_success" in info
        # Scoring uses the twin's ground truth, not the classifier's verdict.
        assert success_of({**info, "env_success": True, "success": False}, False, 0.0) is True
    finally:
        env.close()
    learner_env = make_env(cfg.env_config(), render_images=False)  # the learner only needs the spaces
    try:
        assert not isinstance(learner_env, ClassifierReward)
    finally:
        learner_env.close()


@pytest.mark.slow
def test_train_with_a_classifier_takes_reward_and_episode_ends_from_it_and_logs_both_verdicts(tmp_path):
    # End to end through the actor and learner processes: a classifier that always fires (threshold
    # 0) ends every episode after `--classifier-consecutive` steps with reward 1; the twin says failure.
    import subprocess
    import sys

    from robot_rl.bench.learning import false_success_rate
    from robot_rl.learning.metrics import read_metrics

    model = SuccessClassifier(("front",), EncoderConfig(image_hw=(32, 32), out_dim=8), threshold=0.0)
    save_classifier(model, tmp_path / "c.pt")
    out = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "train", "--task", "pick_cube", "--env-steps", "12",
                          "--learning-starts", "100", "--eval-episodes", "0", "--no-compile", "--classifier",
                          str(tmp_path / "c.pt"), "--classifier-consecutive", "3", "--run", "r", "--runs-dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    episodes = read_metrics(tmp_path / "r", kind="episode")
    assert len(episodes) == 4
    assert all(e["length"] == 3 and e["return"] == 1.0 for e in episodes)
    assert all(e["reward_success"] and not e["success"] for e in episodes)
    assert false_success_rate(read_metrics(tmp_path / "r")) == 1.0
    assert false_success_rate([{"kind": "episode", "return": 1.0, "success": True},  # a run from before the field
                               {"kind": "episode", "return": 0.0, "success": False}]) == 0.0
