"""Reward from a success classifier: a gym wrapper that ends episodes when the classifier fires.

`ClassifierReward` replaces the wrapped env's reward and termination with a trained
`SuccessClassifier`'s verdict on the observation's camera frames, for physical arms that have no
ground truth (HIL-SERL's reward classifier). The model and its checkpoint live in
`robot_rl.agents.success_classifier`; training in `robot_rl.rewards.train`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from torch import nn

from robot_rl.agents.success_classifier import SuccessClassifier, load_classifier
from robot_rl.errors import ConfigError


class ClassifierReward(gym.Wrapper):
    """Reward 1 and termination when the classifier says success; 0 and no termination otherwise.

    Every step computes p = p(success) of the observation's images (resized as in training);
    success = p > threshold and (proprio_check(obs) if given). info gets `classifier_p`,
    `success` (the classifier's decision), and `env_success` / `env_reward` (what the wrapped env
    said, e.g. twin ground truth for evaluation). Truncation passes through. When the wrapped env
    ends an episode itself (twin_success tasks) and the classifier disagrees, the step becomes a
    truncation: the episode still ends, but is not scored a success. Use reward type `none` on
    physical arms. Single-threaded, like the env it wraps.

    Args:
        env: an env whose Dict observation has "images" with every camera the classifier uses.
        classifier: a `SuccessClassifier` or a checkpoint path (`load_classifier`).
        threshold: override of the checkpoint's threshold.
        proprio_check: obs → bool, ANDed with the image test, e.g. `lambda o: o["gripper_width"][0] > 0.01`.
        consecutive: success needs the test to hold on this many consecutive steps. A per-frame
            false-positive rate of 1.5 % fires falsely in one episode of six over 60 steps; two
            frames in a row cut that about threefold on pick_cube's held-out episodes (BENCHMARKS.md).
    """

    def __init__(self, env: gym.Env, classifier: SuccessClassifier | str | os.PathLike, *,
                 threshold: float | None = None, proprio_check: Callable[[dict[str, Any]], bool] | None = None,
                 consecutive: int = 1) -> None:
        super().__init__(env)
        if consecutive < 1:
            raise ConfigError(f"consecutive must be ≥ 1, got {consecutive}")
        self.consecutive = consecutive
        self._streak = 0
        self.classifier = classifier if isinstance(classifier, nn.Module) else load_classifier(classifier)
        self.classifier.eval()
        self.threshold = float(self.classifier.threshold if threshold is None else threshold)
        if not 0.0 <= self.threshold < 1.0:
            raise ConfigError(f"threshold must be in [0, 1), got {self.threshold}")
        self.proprio_check = proprio_check
        space = env.observation_space
        served = list(space["images"].spaces) if isinstance(space, gym.spaces.Dict) and "images" in space.spaces else []
        missing = [c for c in self.classifier.cameras if c not in served]
        if missing:
            raise ConfigError(f"classifier needs cameras {list(self.classifier.cameras)}; the env's observation "
                              f"has images {served}: build the env with image_obs=True and those cameras")

    def _p(self, obs: dict[str, Any]) -> float:
        return float(self.classifier.probability(obs["images"])[0])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._streak = 0
        return obs, {**info, "classifier_p": self._p(obs)}

    def step(self, action):
        obs, env_reward, env_terminated, truncated, info = self.env.step(action)
        p = self._p(obs)
        hit = p > self.threshold and (self.proprio_check is None or bool(self.proprio_check(obs)))
        self._streak = self._streak + 1 if hit else 0
        success = self._streak >= self.consecutive
        extra = {"classifier_p": p, "env_reward": float(env_reward), "success": success}
        if "success" in info:
            extra["env_success"] = bool(info["success"])
        info = {**info, **extra}
        return obs, 1.0 if success else 0.0, success, bool(truncated or (env_terminated and not success)), info
