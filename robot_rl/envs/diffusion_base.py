"""The common part of env wrappers that put a frozen diffusion BC base between an agent and the env
(`ResidualEnv`, `NoiseActionEnv`)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from robot_rl.agents.diffusion import ChunkedPolicy, DiffusionPolicy
from robot_rl.agents.obs_layout import ObsLayout
from robot_rl.errors import ConfigError


class DiffusionBaseWrapper(gym.Wrapper):
    """What the residual and noise-action wrappers share: the frozen base, its chunk queue, a
    noise generator seeded from each reset seed, and conversion between the base's normalized
    action units and the env's."""

    def __init__(self, env: gym.Env, policy: DiffusionPolicy, layout: ObsLayout, *, seed: int = 0) -> None:
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, spaces.Box) or space.shape != (policy.action_dim,):
            raise ConfigError(f"the base policy acts in {policy.action_dim} dimensions, the env's actions are {space}: "
                              "was the base trained on another task?")
        self.policy, self.layout = policy, layout
        self.chunked = ChunkedPolicy(policy)
        self.gen = torch.Generator().manual_seed(seed)
        self.env_low = np.asarray(space.low, np.float64)
        self.env_high = np.asarray(space.high, np.float64)

    def _seed_noise(self, seed: int | None) -> None:
        if seed is not None:
            self.gen.manual_seed(int(seed) + 7_919)

    def to_env(self, normalized: np.ndarray) -> np.ndarray:
        """Base-normalized action(s) [−1, 1] → env units, inside the env's bounds."""
        normalized = torch.as_tensor(normalized, dtype=torch.float32, device="cpu")
        out = self.policy.action_norm.unnormalize(normalized).numpy()
        return np.clip(out.astype(np.float64), self.env_low, self.env_high)

    def to_normalized(self, env_action: np.ndarray) -> np.ndarray:
        env_action = torch.as_tensor(np.asarray(env_action), dtype=torch.float32, device="cpu")
        out = self.policy.action_norm.normalize(env_action)
        return out.clamp(-1.0, 1.0).numpy().astype(np.float64)
