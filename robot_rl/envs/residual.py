"""Residual RL over a frozen diffusion BC base (ResiP / ResFiT / Policy Decorator).

`ResidualEnv`: each step the base proposes an action, which the wrapper puts into the observation
under `BASE_ACTION_KEY` ("base_action", in the base's normalized units); the agent's action is a
residual r ∈ [−1, 1]; the env executes clip(base + scale · r) mapped back to env units. A zero
residual reproduces the base exactly. Progressive enabling (Policy Decorator): with
`enable_over_episodes` = N the residual acts in episode k only with probability k/N (else the base
acts alone and the step records a zero residual in `info["agent_action"]`), so early random
residuals do not spoil the base's rollouts.

`residual_episode` re-expresses a recorded demo as the steps a residual run stores.

The base's action queue is reset every episode and its sampling noise seeded from the reset
seed, so evaluations are reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from robot_rl.agents.diffusion import ChunkedPolicy, DiffusionPolicy
from robot_rl.agents.obs_layout import BASE_ACTION_KEY, ObsLayout
from robot_rl.data.episodes import Episode
from robot_rl.envs.diffusion_base import DiffusionBaseWrapper
from robot_rl.errors import ConfigError


class ResidualEnv(DiffusionBaseWrapper):
    """See the module docstring. Observation: the env's Dict plus `BASE_ACTION_KEY` (A,), which
    `ObsLayout` hands to the residual SAC agent by name (`SACConfig.residual_scale`)."""

    def __init__(self, env: gym.Env, policy: DiffusionPolicy, layout: ObsLayout, *,
                 scale: float | Sequence[float] = 0.1, seed: int = 0, enable_over_episodes: int = 0) -> None:
        """`scale`: one residual scale, or one per action dimension (e.g. a larger one for a
        binary gripper, `SACConfig.residual_scales`)."""
        super().__init__(env, policy, layout, seed=seed)
        scale = np.broadcast_to(np.asarray(scale, np.float64), (policy.action_dim,)).copy()
        if not ((scale > 0.0) & (scale <= 2.0)).all():
            raise ConfigError(f"residual scale must be in (0, 2], got {scale.tolist()}")
        if enable_over_episodes < 0:
            raise ConfigError(f"enable_over_episodes must be ≥ 0, got {enable_over_episodes}")
        self.scale = scale
        self.enable_over_episodes = enable_over_episodes
        self.episodes = 0
        self.residual_on = True
        self.evaluating = False
        """Evaluation episodes: the residual always acts and the episode does not count."""
        self._forced = False
        self._enable_rng = np.random.default_rng(seed + 104_729)
        a = policy.action_dim
        inner = env.observation_space
        parts = dict(inner.spaces) if isinstance(inner, spaces.Dict) else {"env": inner}
        if BASE_ACTION_KEY in parts:
            raise ConfigError(f"the env already observes a {BASE_ACTION_KEY!r}: residual wrappers do not stack")
        self.observation_space = spaces.Dict({BASE_ACTION_KEY: spaces.Box(-1.0, 1.0, (a,), np.float32), **parts})
        self.action_space = spaces.Box(-1.0, 1.0, (a,), np.float32)
        self._base_n = np.zeros(a)

    def _observe(self, obs: Any) -> dict:
        base_env = self.chunked.act(self.layout.raw(obs), generator=self.gen)
        self._base_n = self.to_normalized(base_env)
        parts = dict(obs) if isinstance(obs, dict) else {"env": obs}
        return {BASE_ACTION_KEY: self._base_n.astype(np.float32), **parts}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.chunked.reset()
        self._seed_noise(seed)
        if self.evaluating:
            self.residual_on = True
        else:
            if self.enable_over_episodes:
                p_on = min(1.0, self.episodes / self.enable_over_episodes)
                self.residual_on = bool(self._enable_rng.random() < p_on)
            self.episodes += 1
        return self._observe(obs), info

    def step(self, residual: np.ndarray):
        r = np.clip(np.asarray(residual, np.float64), -1.0, 1.0)
        if not (self.residual_on or self._forced):
            r = np.zeros_like(r)
        self._forced = False
        executed_n = np.clip(self._base_n + self.scale * r, -1.0, 1.0)
        action = self.to_env(executed_n)
        base_action = self.to_env(self._base_n)
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = {**info, "base_action": base_action, "executed_action": action, "agent_action": r.astype(np.float32)}
        return self._observe(obs), reward, terminated, truncated, info

    def agent_action(self, env_action: np.ndarray) -> np.ndarray:
        """The residual that makes the env execute `env_action` now (interventions are recorded
        as residuals; beyond ±1 they are clipped). The next step executes it even in an episode
        where progressive enabling keeps the agent's residual off."""
        self._forced = True
        return np.clip((self.to_normalized(env_action) - self._base_n) / self.scale, -1.0, 1.0)


def residual_episode(ep: Episode, policy: DiffusionPolicy, layout: ObsLayout, scale: float | Sequence[float], *,
                     seed: int = 0) -> tuple[Episode, float]:
    """A recorded episode re-expressed as a residual run stores its steps, so demos can fill a
    residual agent's demo buffer: "base_action" observed at every step (the base acting along the
    recorded observations, chunk queue and seeded noise as in `ResidualEnv`) and the recorded
    action turned into the residual that executes it, (demo − base) / scale in the base's
    normalized units, clipped to [−1, 1].

    Returns the episode and the fraction of its action entries that needed clipping: there the
    stored transition executes less than the demo did (a base far from its demos, or a ±1
    gripper command the residual can only hold back)."""
    a = policy.action_dim
    scale = np.broadcast_to(np.asarray(scale, np.float64), (a,))
    chunked = ChunkedPolicy(policy)
    gen = torch.Generator().manual_seed(int(seed) + 7_919)
    n = len(ep)
    base_n = np.zeros((n + 1, a), np.float32)
    for t in range(n + 1):  # the base's proposal at every observation, the last one included (next_obs)
        raw = layout.raw(ep.obs_at(t))
        env_action = chunked.act(raw, generator=gen)
        base_n[t] = policy.action_norm.normalize(torch.as_tensor(env_action, dtype=torch.float32)).clamp(-1, 1).numpy()
    demo_n = policy.action_norm.normalize(torch.as_tensor(ep.arrays["action"], dtype=torch.float32)).clamp(-1, 1).numpy()
    residual = (demo_n - base_n[:n]) / scale
    clipped = float(np.mean(np.abs(residual) > 1.0)) if n else 0.0
    arrays = {**ep.arrays, f"obs/{BASE_ACTION_KEY}": base_n, "action": np.clip(residual, -1.0, 1.0).astype(np.float32)}
    return Episode(ep.path, arrays, ep.meta), clipped
