"""The agents' action convention against an env's: agents act in [−1, 1] on a 1-D Box."""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from robot_rl.errors import ConfigError


def action_dim_of(env: gym.Env) -> int:
    """Size of the env's 1-D Box action space (other bounds than [−1, 1] go through ActionScaler)."""
    space = env.action_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ConfigError(f"the agents need a 1-D Box action space, got {space}")
    return int(space.shape[0])


@dataclass(frozen=True)
class ActionScaler:
    """Maps the agent's [−1, 1] actions onto an env's Box bounds (identity for robot_rl envs)."""

    low: np.ndarray = field(default_factory=lambda: np.array([-1.0]))
    high: np.ndarray = field(default_factory=lambda: np.array([1.0]))

    @staticmethod
    def of(env: gym.Env) -> ActionScaler:
        return ActionScaler(np.asarray(env.action_space.low, np.float64), np.asarray(env.action_space.high, np.float64))

    def to_env(self, action: np.ndarray) -> np.ndarray:
        return self.low + (np.clip(action, -1, 1) + 1.0) * 0.5 * (self.high - self.low)

    def to_agent(self, action: np.ndarray) -> np.ndarray:
        return np.clip(2.0 * (np.asarray(action) - self.low) / (self.high - self.low) - 1.0, -1.0, 1.0)
