"""Glue between env observations, the agent and weight messages (used by actor, learner, eval)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from robot_rl.agents.obs_layout import ObsLayout
from robot_rl.agents.sac import SACAgent


def obs_batch(layout: ObsLayout, obs: Any) -> dict[str, torch.Tensor]:
    """A batch of one observation for `agent.act`: each entry of `ObsLayout.raw` with a batch axis
    ("state" (1, D), "images/<camera>" (1, H, W, 3), "base_action" (1, A) in a residual env)."""
    return {name: torch.from_numpy(value).unsqueeze(0) for name, value in layout.raw(obs).items()}


def policy_action(agent: SACAgent, batch: dict[str, torch.Tensor], *, deterministic: bool,
                  generator: torch.Generator | None = None) -> np.ndarray:
    """Action (A,) float64 in [−1, 1]."""
    return agent.act(batch, deterministic=deterministic, generator=generator)[0].numpy().astype(np.float64)


def acting_state(agent: SACAgent) -> dict[str, np.ndarray]:
    """What an actor needs to act: the encoder's trainable parts, the actor head and the gripper
    critic. Frozen backbone weights are not sent (both sides build them identically). Always CPU
    arrays, whatever device the learner trains on (actors act on the CPU)."""
    frozen = {name for name, p in agent.named_parameters() if not p.requires_grad}
    out = {}
    for name, value in agent.state_dict().items():
        if not name.startswith(("encoder.", "actor.", "grip_critic.")) or name in frozen:
            continue
        if ".backbone." in name and agent.encoder.frozen:
            continue  # frozen backbones' BatchNorm buffers never change either
        out[name] = value.detach().to("cpu", torch.float32).numpy().copy()
    return out


def load_weights(agent: SACAgent, params: dict[str, np.ndarray]) -> None:
    """Load an `acting_state` into an agent (missing keys keep their values)."""
    state = {name: torch.from_numpy(np.array(value)) for name, value in params.items()}
    current = agent.state_dict()
    unknown = sorted(set(state) - set(current))
    if unknown:
        raise ValueError(f"weights for unknown parameters {unknown[:5]}: actor and learner configs differ")
    for name, tensor in state.items():
        if tensor.shape != current[name].shape:
            raise ValueError(f"parameter {name} has shape {tuple(tensor.shape)}, the actor's has "
                             f"{tuple(current[name].shape)}: actor and learner configs differ")
    agent.load_state_dict(state, strict=False)


def frozen_digest(agent: SACAgent) -> float:
    """A number that differs when two agents' frozen weights differ (cheap init-mismatch check)."""
    total = 0.0
    for p in agent.parameters():
        if not p.requires_grad:
            total += float(p.detach().double().abs().sum())
    return total


def success_of(info: dict, terminated: bool, reward: float) -> bool:
    """Task success from info ("env_success": the env's ground truth where a learned reward stands
    in, then "success", "is_success"), else a terminating positive reward."""
    for key in ("env_success", "success", "is_success"):
        if key in info:
            return bool(info[key])
    return bool(terminated and reward > 0)


def run_episodes(env, act: Callable[[Any], np.ndarray], episodes: int, seed: int, *,
                 on_reset: Callable[[], None] | None = None, steps_of: Callable[[dict], int] | None = None,
                 progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Play `episodes` episodes of `act(obs) -> env action` on `env`, each reset with a seed drawn
    from `seed` (so an evaluation is reproducible given its seed). `on_reset` runs after each reset
    (an action queue's reset), `steps_of(info)` counts the env steps of one `step` (several when
    an agent acts once per chunk), `progress(success_rate_so_far)` after each episode.

    Returns success rate, mean steps, mean steps and mean wall seconds of the successful episodes
    (None if none) and the env's clock ("sim" on a stepped twin)."""
    rng = np.random.default_rng(seed)
    successes, lengths, walls = [], [], []
    info: dict = {}
    for _ in range(episodes):
        obs, info = env.reset(seed=int(rng.integers(2**31)))
        if on_reset is not None:
            on_reset()
        steps, start = 0, time.perf_counter()
        while True:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            steps += 1 if steps_of is None else int(steps_of(info))
            if terminated or truncated:
                break
        successes.append(success_of(info, terminated, reward))
        lengths.append(steps)
        walls.append(time.perf_counter() - start)
        if progress is not None:
            progress(float(np.mean(successes)))
    won = [i for i, ok in enumerate(successes) if ok]
    return {"success_rate": float(np.mean(successes)) if episodes else 0.0, "episodes": episodes,
            "mean_steps": float(np.mean(lengths)) if episodes else 0.0,
            "success_mean_steps": float(np.mean([lengths[i] for i in won])) if won else None,
            "success_mean_wall_s": float(np.mean([walls[i] for i in won])) if won else None,
            "clock": info.get("clock")}
