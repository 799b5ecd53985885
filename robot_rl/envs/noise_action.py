"""DSRL's env: the agent acts in a frozen diffusion base's initial-noise space.

`NoiseActionEnv`: the agent's action is the base's initial diffusion noise w = bound · a for a
whole chunk; the wrapper samples the chunk deterministically from (obs, w), executes its
`action_horizon` actions, and returns the summed reward. Its observation is the base's
observation history, so noise-space critics can query the base on replayed states. The base's
action queue is reset every episode and its sampling noise seeded from the reset seed.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from robot_rl.agents.diffusion import DiffusionPolicy
from robot_rl.agents.obs_layout import ObsLayout
from robot_rl.envs.diffusion_base import DiffusionBaseWrapper
from robot_rl.errors import ConfigError


class NoiseActionEnv(DiffusionBaseWrapper):
    """See the module docstring. Action: (pred_horizon · A,) in [−1, 1], scaled by `bound` to the
    noise. Observation: {"history": (obs_horizon · D,)} for state bases. info["primitive_steps"]
    counts the env steps a chunk took."""

    def __init__(self, env: gym.Env, policy: DiffusionPolicy, layout: ObsLayout, *, bound: float = 1.5,
                 seed: int = 0) -> None:
        super().__init__(env, policy, layout, seed=seed)
        if layout.images:
            raise ConfigError("NoiseActionEnv serves state bases (its observation is the base's state history); "
                              "pixel bases need the image history in replay, not supported yet")
        if not 0.0 < bound <= 5.0:
            raise ConfigError(f"noise bound must be in (0, 5], got {bound}")
        self.bound = bound
        h, d = policy.cfg.obs_horizon, layout.state_dim
        self.observation_space = spaces.Dict({"history": spaces.Box(-np.inf, np.inf, (h * d,), np.float32)})
        self.action_space = spaces.Box(-1.0, 1.0, (int(np.prod(policy.chunk_shape)),), np.float32)

    def _obs(self) -> dict:
        return {"history": np.concatenate([o["state"] for o in self.chunked.history]).astype(np.float32)}

    def history_batch(self, history: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat histories (B, obs_horizon · D) → the base's observation batch."""
        return {"state": history.reshape(history.shape[0], self.policy.cfg.obs_horizon, -1)}

    def noise_of(self, action: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(action, torch.Tensor):  # a learner's batch stays on its device
            a = action.to(torch.float32).clamp(-1.0, 1.0)
        else:
            a = torch.as_tensor(np.asarray(action), dtype=torch.float32, device="cpu").clamp(-1.0, 1.0)
        return self.bound * a.reshape(-1, *self.policy.chunk_shape)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.chunked.reset()
        self._seed_noise(seed)
        self.chunked.observe(self.layout.raw(obs))
        return self._obs(), info

    def step(self, action: np.ndarray):
        chunk = self.policy.sample(self.chunked.history_batch(), self.noise_of(action))[0]
        executed = chunk[self.chunked.chunk_slice()].numpy().astype(np.float64)
        total, steps = 0.0, 0
        info: dict = {}
        terminated = truncated = False
        actions = []
        for a in executed:
            env_a = np.clip(a, self.env_low, self.env_high)
            obs, reward, terminated, truncated, info = self.env.step(env_a)
            actions.append(env_a)
            total += float(reward)
            steps += 1
            self.chunked.observe(self.layout.raw(obs))
            if terminated or truncated:
                break
        info = {**info, "primitive_steps": steps, "executed_actions": np.stack(actions)}
        return self._obs(), total, terminated, truncated, info
