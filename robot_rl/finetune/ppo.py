"""Residual PPO over a frozen diffusion BC base (ResiP, Ankile et al.): many in-process twin envs
(a gymnasium vector env of `ResidualEnv`s), GAE, clipped surrogate objective.

The residual's mean layer starts at zero, so the first rollouts are the base plus exploration
noise of `init_std` (in residual units, × the wrapper's scale in normalized actions).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from robot_rl.agents.nets import mlp
from robot_rl.agents.obs_encoder import STATE_STD_FLOOR
from robot_rl.agents.obs_layout import ObsLayout
from robot_rl.agents.sac import host_metrics
from robot_rl.agents.sac_config import residual_scales
from robot_rl.learning.device import module_device, to_device
from robot_rl.learning.policy import run_episodes


def residual_layout(env) -> ObsLayout:
    """Observation layout of residual-ppo's model over a `ResidualEnv`: its whole state vector
    (the base's proposal included), privileged twin state too."""
    return ObsLayout.of(env.observation_space, include=("privileged",), images=False)


@dataclass(frozen=True)
class PPOConfig:
    """ResiP's settings where they fit a CPU (it ran thousands of GPU envs)."""

    num_envs: int = 8
    rollout_steps: int = 128
    """Steps per env per rollout."""
    discount: float = 0.999
    gae_lambda: float = 0.95
    clip: float = 0.2
    epochs: int = 4
    minibatches: int = 4
    lr: float = 3e-4
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 1.0
    init_std: float = 0.5
    hidden: tuple[int, ...] = (256, 256)
    residual_scale: float = 0.3
    """Residual scale in the base's normalized action units: residual-sac's 0.3, wider than
    ResiP's 0.1 (on pick_cube's 0.40 base, at 50k env steps: 0.66 / 0.60 against 0.50 / 0.40 with
    0.1 on arm and gripper, seeds 0 / 1; BENCHMARKS.md)."""
    residual_gripper_scale: float | None = 1.0
    """Scale of the last action dimension, the gripper (None: `residual_scale`): 1.0 lets the
    residual hold back the base's ±1 gripper command, not flip it."""
    async_envs: bool = False
    """Step each env in its own worker process (gymnasium's AsyncVectorEnv): the twins' 1 kHz
    ticks then use every core; False keeps all envs in this process."""

    def __post_init__(self) -> None:
        if self.num_envs < 1 or self.rollout_steps < 1 or self.epochs < 1 or self.minibatches < 1:
            raise ValueError("num_envs, rollout_steps, epochs and minibatches must be ≥ 1")
        if not 0.0 < self.discount <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError("discount must be in (0, 1] and gae_lambda in [0, 1]")
        for name in ("residual_scale", "residual_gripper_scale"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 2.0:
                raise ValueError(f"{name} must be in (0, 2], got {value}")

    def residual_scales(self, action_dim: int) -> list[float]:
        return residual_scales(self.residual_scale, self.residual_gripper_scale, action_dim)


class ResidualActorCritic(nn.Module):
    """Gaussian residual policy (zero-initialized mean, state-independent log std) and a value
    function, both over the standardized state (which holds the base action)."""

    def __init__(self, state_dim: int, action_dim: int, cfg: PPOConfig) -> None:
        super().__init__()
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_inv_std", torch.ones(state_dim))
        self.actor = mlp(state_dim, cfg.hidden, action_dim)
        self.critic = mlp(state_dim, cfg.hidden, 1)
        self.log_std = nn.Parameter(torch.full((action_dim,), math.log(cfg.init_std)))
        with torch.no_grad():
            self.actor[-1].weight.zero_()
            self.actor[-1].bias.zero_()

    def _x(self, state: torch.Tensor) -> torch.Tensor:
        return ((state - self.state_mean) * self.state_inv_std).clamp(-10, 10)

    def dist(self, state: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.actor(self._x(state)), self.log_std.exp())

    def value(self, state: torch.Tensor) -> torch.Tensor:
        return self.critic(self._x(state)).squeeze(-1)


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
        done: torch.Tensor, discount: float, lam: float) -> torch.Tensor:
    """Advantages (T, N). `next_values` (T, N) is V of each step's true next observation (the
    final one at episode ends: truncation bootstraps, termination does not); `done` cuts the
    λ-trace between episodes."""
    t_max = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(t_max)):
        delta = rewards[t] + discount * (1.0 - terminated[t]) * next_values[t] - values[t]
        last = delta + discount * lam * (1.0 - done[t]) * last
        adv[t] = last
    return adv


def ppo_loss(model: ResidualActorCritic, batch: dict, cfg: PPOConfig) -> tuple[torch.Tensor, dict]:
    dist = model.dist(batch["state"])
    log_prob = dist.log_prob(batch["action"]).sum(-1)
    ratio = (log_prob - batch["log_prob"]).exp()
    adv = batch["advantage"]
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv).mean()
    value_loss = ((model.value(batch["state"]) - batch["return"]) ** 2).mean()
    entropy = dist.entropy().sum(-1).mean()
    loss = -surrogate + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
    return loss, {"policy_loss": -surrogate.detach(), "value_loss": value_loss.detach(), "entropy": entropy.detach(),
                  "clip_fraction": ((ratio - 1).abs() > cfg.clip).float().mean()}


def train_ppo(make_env: Callable[[int], gym.Env], layout: ObsLayout, cfg: PPOConfig, *, env_steps: int,
              eval_fn: Callable[[ResidualActorCritic, int], dict] | None = None, eval_every: int = 50_000,
              seed: int = 0, on_rollout: Callable[[int, dict], None] | None = None,
              checkpoint: Callable[[dict], None] | None = None, checkpoint_every: int = 10_000,
              restore: dict | None = None, device: torch.device = torch.device("cpu")) -> dict:
    """Train until `env_steps` env steps (over all envs) with the model on `device` (the envs on
    the CPU: each rollout step sends states there and brings the actions back). `make_env(i)` builds env i (in a worker
    process with `cfg.async_envs`, so it must not rely on state shared with this process).

    `checkpoint(state)` receives the training state after the first rollout past every
    `checkpoint_every` env steps and at the end; `restore` (such a state) continues from it. The
    envs cannot be saved: a restored run starts fresh episodes (reset with a seed of its step
    count), the steps of the episodes in flight at the checkpoint stay counted.
    """
    torch.manual_seed(seed)
    makers = [functools.partial(make_env, i) for i in range(cfg.num_envs)]
    if cfg.async_envs:
        # fork: the makers are closures over the loaded base (not picklable for spawn).
        envs = gym.vector.AsyncVectorEnv(makers, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, context="fork")
    else:
        envs = gym.vector.SyncVectorEnv(makers, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    action_dim = envs.single_action_space.shape[0]
    model = ResidualActorCritic(layout.state_dim, action_dim, cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5)

    def states(obs) -> np.ndarray:
        return np.stack([layout.state_vector(_index(obs, i)) for i in range(cfg.num_envs)])

    steps, evals, successes = 0, [], []
    next_eval = 0
    if restore is None:
        obs, _ = envs.reset(seed=seed)
        s = states(obs)
        with torch.no_grad():  # standardize with the first observations (the base action stays unscaled)
            first = torch.from_numpy(s).to(device)
            model.state_mean.copy_(first.mean(0))
            model.state_inv_std.copy_(1.0 / first.std(0).clamp_min(STATE_STD_FLOOR) if cfg.num_envs > 1
                                      else torch.ones_like(first[0]))
    else:
        model.load_state_dict(restore["model"])
        opt.load_state_dict(restore["optimizer"])
        torch.set_rng_state(restore["torch_rng"])
        steps, next_eval = int(restore["env_steps"]), int(restore["next_eval"])
        evals, successes = list(restore["evals"]), list(restore["recent_successes"])
        obs, _ = envs.reset(seed=seed + steps)
        s = states(obs)
    next_checkpoint = (steps // checkpoint_every + 1) * checkpoint_every

    def save() -> None:
        if checkpoint is not None:
            checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                        "env_steps": steps, "next_eval": next_eval, "evals": evals,
                        "recent_successes": successes[-50:]})

    try:
        while steps < env_steps:
            if eval_fn is not None and steps >= next_eval:
                evals.append(eval_fn(model, steps) | {"env_step": steps})
                next_eval += eval_every
            buf = {k: [] for k in ("state", "action", "log_prob", "reward", "value", "next_value", "terminated", "done")}
            for _ in range(cfg.rollout_steps):
                st = to_device(s, device)
                with torch.no_grad():
                    dist = model.dist(st)
                    action = dist.sample()
                    log_prob = dist.log_prob(action).sum(-1)
                    value = model.value(st)
                obs, reward, terminated, truncated, info = envs.step(action.clamp(-1, 1).cpu().numpy())
                next_s = states(obs)
                done = np.logical_or(terminated, truncated)
                true_next = next_s.copy()
                if done.any():  # SAME_STEP autoreset: the true final observation is in info
                    for i in np.flatnonzero(done):
                        true_next[i] = layout.state_vector(_index(info["final_obs"], i))
                        successes.append(bool(_index(info["final_info"], i).get("success", False)))
                with torch.no_grad():
                    next_value = model.value(to_device(true_next, device))
                flags = to_device({"reward": np.asarray(reward, np.float32), "done": done.astype(np.float32),
                                   "terminated": np.asarray(terminated, np.float32)}, device)
                for k, v in (("state", st), ("action", action), ("log_prob", log_prob), ("value", value),
                             ("next_value", next_value), *flags.items()):
                    buf[k].append(v)
                s = next_s
                steps += cfg.num_envs
            b = {k: torch.stack(v) for k, v in buf.items()}
            adv = gae(b["reward"], b["value"], b["next_value"], b["terminated"], b["done"], cfg.discount, cfg.gae_lambda)
            flat = {"state": b["state"].flatten(0, 1), "action": b["action"].flatten(0, 1),
                    "log_prob": b["log_prob"].flatten(0, 1), "return": (adv + b["value"]).flatten(0, 1)}
            a = adv.flatten()
            flat["advantage"] = (a - a.mean()) / (a.std() + 1e-8)
            n = a.shape[0]
            mb = n // cfg.minibatches
            metrics = {}
            for _ in range(cfg.epochs):
                perm = torch.randperm(n, device=device)
                for start in range(0, n - mb + 1, mb):
                    idx = perm[start:start + mb]
                    loss, metrics = ppo_loss(model, {k: v[idx] for k, v in flat.items()}, cfg)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    opt.step()
            metrics = host_metrics(metrics)  # one wait for the device per rollout
            metrics["train_success_rate"] = float(np.mean(successes[-50:])) if successes else None
            if on_rollout is not None:
                on_rollout(steps, metrics)
            if steps >= next_checkpoint and steps < env_steps:
                save()
                next_checkpoint = (steps // checkpoint_every + 1) * checkpoint_every
        if eval_fn is not None and (not evals or evals[-1]["env_step"] != steps):
            evals.append(eval_fn(model, steps) | {"env_step": steps})
        save()
    finally:
        envs.close()
    return {"env_steps": steps, "evals": evals, "model": model}


def evaluate_residual(model: ResidualActorCritic, env, layout: ObsLayout, episodes: int, seed: int, *,
                      stochastic: bool = False) -> dict:
    """Episodes of base + residual on one `ResidualEnv`: the residual's mean (or a sample, with
    `stochastic`). Success rate, mean steps, and mean steps of the successful episodes (None if none)."""
    device = module_device(model)

    def act(obs) -> np.ndarray:
        with torch.no_grad():
            dist = model.dist(torch.from_numpy(layout.state_vector(obs)).unsqueeze(0).to(device))
            action = (dist.sample() if stochastic else dist.mean)[0]
        return action.clamp(-1, 1).cpu().numpy()

    return run_episodes(env, act, episodes, seed)


def _index(tree, i: int):
    """Env i's entry of a vector env's batched (nested dict) observation or info."""
    if isinstance(tree, dict):
        return {k: _index(v, i) for k, v in tree.items() if not k.startswith("_")}
    return tree[i]
