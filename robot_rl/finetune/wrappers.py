"""Env wrappers that put a frozen diffusion BC base between an RL agent and the env.

`ResidualEnv` (residual RL, ResiP / ResFiT / Policy Decorator): each step the base proposes an
action, which the wrapper puts into the observation ("base_action", in the base's normalized
units); the agent's action is a residual r ∈ [−1, 1]; the env executes
clip(base + scale · r) mapped back to env units. A zero residual reproduces the base exactly.
Progressive enabling (Policy Decorator): with `enable_over_episodes` = N the residual acts in
episode k only with probability k/N (else the base acts alone and the step records a zero
residual in `info["agent_action"]`), so early random residuals do not spoil the base's rollouts.

`NoiseActionEnv` (DSRL): the agent's action is the base's initial diffusion noise
w = bound · a for a whole chunk; the wrapper samples the chunk deterministically from (obs, w),
executes its `action_horizon` actions, and returns the summed reward. Its observation is the
base's observation history, so noise-space critics can query the base on replayed states.

Both reset the base's action queue every episode and seed its sampling noise from the reset
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
from robot_rl.data.episodes import Episode
from robot_rl.errors import ConfigError
from robot_rl.learning.obs import ObsLayout


class _BaseWrapper(gym.Wrapper):
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
        out = self.policy.action_norm.unnormalize(torch.as_tensor(normalized, dtype=torch.float32)).numpy()
        return np.clip(out.astype(np.float64), self.env_low, self.env_high)

    def to_normalized(self, env_action: np.ndarray) -> np.ndarray:
        out = self.policy.action_norm.normalize(torch.as_tensor(np.asarray(env_action), dtype=torch.float32))
        return out.clamp(-1.0, 1.0).numpy().astype(np.float64)


class ResidualEnv(_BaseWrapper):
    """See the module docstring. Observation: the env's Dict plus "base_action" (A,) — first in the
    flat state, where the residual SAC agent reads it (`SACConfig.residual_scale`)."""

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
        if "base_action" in parts:
            raise ConfigError("the env already observes a 'base_action': residual wrappers do not stack")
        self.observation_space = spaces.Dict({"base_action": spaces.Box(-1.0, 1.0, (a,), np.float32), **parts})
        self.action_space = spaces.Box(-1.0, 1.0, (a,), np.float32)
        self._base_n = np.zeros(a)

    def _observe(self, obs: Any) -> dict:
        base_env = self.chunked.act(self.layout.raw(obs), generator=self.gen)
        self._base_n = self.to_normalized(base_env)
        parts = dict(obs) if isinstance(obs, dict) else {"env": obs}
        return {"base_action": self._base_n.astype(np.float32), **parts}

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


class NoiseActionEnv(_BaseWrapper):
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
        a = torch.as_tensor(np.asarray(action), dtype=torch.float32).clamp(-1.0, 1.0)
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
        obs = {k[4:]: v[t] for k, v in ep.arrays.items() if k.startswith("obs/")}
        raw = layout.raw(_nest(obs))
        env_action = chunked.act(raw, generator=gen)
        base_n[t] = policy.action_norm.normalize(torch.as_tensor(env_action, dtype=torch.float32)).clamp(-1, 1).numpy()
    demo_n = policy.action_norm.normalize(torch.as_tensor(ep.arrays["action"], dtype=torch.float32)).clamp(-1, 1).numpy()
    residual = (demo_n - base_n[:n]) / scale
    clipped = float(np.mean(np.abs(residual) > 1.0)) if n else 0.0
    arrays = {**ep.arrays, "obs/base_action": base_n, "action": np.clip(residual, -1.0, 1.0).astype(np.float32)}
    return Episode(ep.path, arrays, ep.meta), clipped


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"a/b": x} → {"a": {"b": x}} (recorded observation keys → the env's nested observation)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out
