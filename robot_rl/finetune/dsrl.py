"""DSRL: reinforcement learning in a frozen diffusion policy's latent-noise space (Wagenmaker et al.).

The agent's action is the initial noise w of the base's DDIM sampler (bounded by `noise_bound`);
the base maps (observation, w) to an action chunk deterministically and `NoiseActionEnv`
executes it. Two variants:

- DSRL-SAC: plain SAC on the noise-action env (a chunk is one transition).
- DSRL-NA (noise aliasing): an action critic Q_A(s, a) trained by TD on the executed chunks, a
  noise critic Q_W(s, w) distilled from Q_A(s, π_dp(s, w)) with w ~ N(0, I) (so noises that
  the base maps to the same actions share their value), and the SAC actor maximizing Q_W.

Only black-box access to the base is needed: `sample(obs, noise)`. Losses are pure functions of
(agent, batch); `train_dsrl` runs the in-process loop.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from robot_rl.agents.diffusion import DiffusionPolicy
from robot_rl.agents.nets import EnsembleMLP, soft_update
from robot_rl.agents.obs_encoder import ObsEncoder
from robot_rl.agents.sac import SACAgent, actor_step, make_optimizers, update
from robot_rl.agents.sac_config import SACConfig
from robot_rl.envs.noise_action import NoiseActionEnv
from robot_rl.errors import ConfigError
from robot_rl.learning.device import module_device, to_device
from robot_rl.learning.policy import run_episodes, success_of


@dataclass(frozen=True)
class DSRLConfig:
    """Noise-space agent settings."""

    noise_bound: float = 1.5
    """|w| ≤ noise_bound per dimension (DSRL: 1 … 2.5)."""
    sac: SACConfig = SACConfig(n_critics=2, critic_updates_per_actor_update=1, discount=0.97, target_entropy=0.0,
                               temp_init=0.001)
    """The noise-space SAC agent (HIL-SERL's critic set; one chunk is one transition), target
    entropy 0 as in DSRL's configs (SAC's usual −|A|/2 would be −56 for a 16-step × 7-D noise).
    Initial temperature 0.001, not SAC's 0.01: the entropy bonus of a 112-D noise otherwise keeps
    the policy near-uniform for ≈ 7k env steps (pick_cube, 3 seeds: 0.92 mean success at 20k env
    steps against 0.69)."""
    utd: float | None = None
    """Updates per chunk step; None: 20 for DSRL-SAC (DSRL's setting; 2.5 per env step with 8-step
    chunks), 4 for DSRL-NA, which samples the base twice per update (at 20 a 20k-step run takes
    hours on a CPU; at 4 it reached 1.00 on pick_cube). At 2 DSRL-SAC's temperature fell too
    slowly: after 10k env steps the actor's entropy was still ≈ 74, its noise pushed to the bound's
    corners, far from the N(0, I) the base was trained on."""
    learning_starts: int = 100
    """Chunk steps collected before updates start."""
    action_critic_hidden: tuple[int, ...] = (256, 256)
    """DSRL-NA's action critic."""

    def __post_init__(self) -> None:
        if self.utd is not None and self.utd <= 0:
            raise ConfigError(f"dsrl utd must be > 0 updates per chunk step, got {self.utd}")

    def updates_per_chunk(self, variant: str) -> float:
        """`utd`, or its default for the variant ("sac" or "na")."""
        if self.utd is not None:
            return self.utd
        return 4.0 if variant == "na" else 20.0


_REPLAY_FIELDS = ("obs", "next_obs", "action", "executed", "reward", "mask")


@dataclass
class ChunkReplay:
    """Transitions between chunk decisions: noise action, executed (normalized, padded) chunk,
    summed reward."""

    capacity: int
    obs_dim: int
    noise_dim: int
    exec_dim: int
    obs: np.ndarray = field(init=False)
    next_obs: np.ndarray = field(init=False)
    action: np.ndarray = field(init=False)
    executed: np.ndarray = field(init=False)
    reward: np.ndarray = field(init=False)
    mask: np.ndarray = field(init=False)
    written: int = 0

    def __post_init__(self) -> None:
        self.obs = np.zeros((self.capacity, self.obs_dim), np.float32)
        self.next_obs = np.zeros((self.capacity, self.obs_dim), np.float32)
        self.action = np.zeros((self.capacity, self.noise_dim), np.float32)
        self.executed = np.zeros((self.capacity, self.exec_dim), np.float32)
        self.reward = np.zeros(self.capacity, np.float32)
        self.mask = np.zeros(self.capacity, np.float32)

    def __len__(self) -> int:
        return min(self.written, self.capacity)

    def add(self, obs, next_obs, action, executed, reward: float, terminated: bool) -> None:
        i = self.written % self.capacity
        self.obs[i], self.next_obs[i], self.action[i], self.executed[i] = obs, next_obs, action, executed
        self.reward[i], self.mask[i] = reward, 0.0 if terminated else 1.0
        self.written += 1

    def state(self) -> dict:
        """The stored rows as tensors (for a checkpoint) and the write count."""
        n = len(self)
        return {"written": self.written, **{k: torch.from_numpy(getattr(self, k)[:n].copy()) for k in _REPLAY_FIELDS}}

    def load_state(self, state: dict) -> None:
        """Refill from `state()` (same dimensions; capacity at least the stored rows)."""
        n = state["obs"].shape[0]
        if n > self.capacity or state["obs"].shape[1] != self.obs_dim or state["executed"].shape[1] != self.exec_dim:
            raise ValueError(f"replay state of {n} rows × obs {tuple(state['obs'].shape[1:])} does not fit a buffer "
                             f"of {self.capacity} rows × obs ({self.obs_dim},), executed ({self.exec_dim},)")
        for k in _REPLAY_FIELDS:
            getattr(self, k)[:n] = state[k].numpy()
        self.written = int(state["written"])

    def sample(self, n: int, rng: np.random.Generator) -> dict:
        idx = rng.integers(0, len(self), n)
        t = torch.from_numpy
        return {"obs": {"state": t(self.obs[idx])}, "next_obs": {"state": t(self.next_obs[idx])},
                "action": t(self.action[idx]), "executed": t(self.executed[idx]), "reward": t(self.reward[idx]),
                "mask": t(self.mask[idx])}


class ActionCritic(torch.nn.Module):
    """DSRL-NA's Q_A(s, executed chunk): an ensemble with a target copy."""

    def __init__(self, obs_dim: int, exec_dim: int, cfg: DSRLConfig) -> None:
        super().__init__()
        self.q = EnsembleMLP(cfg.sac.n_critics, obs_dim + exec_dim, cfg.action_critic_hidden, 1)
        self.target = copy.deepcopy(self.q).requires_grad_(False)


def executed_chunk(env: NoiseActionEnv, history: torch.Tensor, noise_action: torch.Tensor, *,
                   base: DiffusionPolicy | None = None) -> torch.Tensor:
    """(B, action_horizon · A): the base's executed actions for noise actions in [−1, 1],
    in the base's normalized units. `base`: a copy of `env.policy` on the learner's device (None:
    `env.policy` itself, on the CPU where the env acts)."""
    policy = env.policy if base is None else base
    chunk = policy.sample(env.history_batch(history), env.noise_of(noise_action))
    start = policy.cfg.obs_horizon - 1
    executed = chunk[:, start:start + policy.cfg.action_horizon]
    return policy.action_norm.normalize(executed).clamp(-1, 1).flatten(1)


def na_losses(agent: SACAgent, qa: ActionCritic, env: NoiseActionEnv, batch: dict, cfg: DSRLConfig,
              generator: torch.Generator | None = None, *,
              base: DiffusionPolicy | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(action-critic TD loss, noise-critic distillation loss, metrics: detached tensors).
    `base`: the diffusion base on the agent's device (see `executed_chunk`)."""
    sac = cfg.sac
    features = agent.encoder(batch["obs"])
    with torch.no_grad():
        next_features = agent.encoder(batch["next_obs"])
        next_noise, _ = agent.actor.sample(next_features)
        next_exec = executed_chunk(env, batch["next_obs"]["state"], next_noise, base=base)
        members = None
        if sac.critic_subsample is not None and sac.critic_subsample < sac.n_critics:
            members = torch.randperm(sac.n_critics, device=features.device)[: sac.critic_subsample]
        next_q = qa.target(torch.cat([next_features, next_exec], -1), members).squeeze(-1).min(0).values
        target = batch["reward"] + sac.discount * batch["mask"] * next_q
    q = qa.q(torch.cat([features, batch["executed"]], -1)).squeeze(-1)
    td = ((q - target.unsqueeze(0)) ** 2).mean(1).sum()
    # Distill: Q_W(s, w) ≈ Q_A(s, π_dp(s, w)) for w ~ N(0, I) within the bound.
    with torch.no_grad():
        b = features.shape[0]
        w = torch.randn((b, agent.action_dim), generator=generator,  # drawn where the generator lives
                        device=generator.device if generator is not None else features.device).to(features.device)
        w_action = w.clamp(-cfg.noise_bound, cfg.noise_bound) / cfg.noise_bound
        exec_w = executed_chunk(env, batch["obs"]["state"], w_action, base=base)
        distill_target = qa.q(torch.cat([features.detach(), exec_w], -1)).squeeze(-1).mean(0)
    qw = agent.critic(torch.cat([features.detach(), w_action], -1)).squeeze(-1)
    distill = ((qw - distill_target.unsqueeze(0)) ** 2).mean(1).sum()
    return td, distill, {"action_critic_loss": td.detach() / sac.n_critics,
                         "noise_critic_loss": distill.detach() / sac.n_critics, "q_action_mean": q.detach().mean()}


def na_update(agent: SACAgent, qa: ActionCritic, opts: dict, env: NoiseActionEnv, batch: dict, cfg: DSRLConfig,
              generator: torch.Generator | None = None, *, base: DiffusionPolicy | None = None) -> dict:
    td, distill, metrics = na_losses(agent, qa, env, batch, cfg, generator, base=base)
    opts["action_critic"].zero_grad(set_to_none=True)
    opts["critic"].zero_grad(set_to_none=True)
    (td + distill).backward()
    opts["action_critic"].step()
    opts["critic"].step()
    soft_update(qa.target, qa.q, cfg.sac.tau)
    return {**metrics, **actor_step(agent, opts, batch)}


def make_noise_agent(env: NoiseActionEnv, cfg: DSRLConfig) -> SACAgent:
    obs_dim = env.observation_space["history"].shape[0]
    encoder = ObsEncoder(obs_dim)
    # The base's own min-max statistics, one copy per history frame.
    h = env.policy.cfg.obs_horizon
    encoder.state_mean.copy_(env.policy.obs_encoder.state_mean.repeat(h))
    encoder.state_inv_std.copy_(env.policy.obs_encoder.state_inv_std.repeat(h))
    return SACAgent(encoder, obs_dim, env.action_space.shape[0], cfg.sac)


def evaluate_noise_agent(agent: SACAgent, env: NoiseActionEnv, episodes: int, seed: int, *,
                         stochastic: bool = False) -> dict:
    """Deterministic (mean noise; sampled with `stochastic`) episodes: success rate, mean primitive
    steps, and mean primitive steps of the successful episodes (None if none)."""
    device = module_device(agent)

    def act(obs) -> np.ndarray:
        with torch.no_grad():
            return agent.act({"state": torch.from_numpy(obs["history"]).unsqueeze(0).to(device)},
                             deterministic=not stochastic)[0].cpu().numpy()

    return run_episodes(env, act, episodes, seed, steps_of=lambda info: info["primitive_steps"])


def train_dsrl(env: NoiseActionEnv, eval_env: NoiseActionEnv, cfg: DSRLConfig, *, variant: str, env_steps: int,
               eval_every: int, eval_episodes: int, seed: int,
               on_eval: Callable[[int, dict], None] | None = None,
               on_step: Callable[[int, dict], None] | None = None,
               checkpoint: Callable[[dict], None] | None = None, checkpoint_every: int = 10_000,
               restore: dict | None = None, device: torch.device = torch.device("cpu")) -> dict:
    """Train until `env_steps` primitive env steps; evaluate every `eval_every` (and at 0 and the end).

    `checkpoint(state)` receives the whole training state (networks, optimizers, the replay, RNGs,
    counters, evaluations) at the first chunk past every `checkpoint_every` env steps and at the
    end; `restore` (such a state) continues from it. The env cannot be saved: a restored run
    starts a fresh episode, the steps of the episode in flight at the checkpoint stay counted.

    `device`: where the agent (and DSRL-NA's action critic and a copy of the base) train; the envs
    and their base act on the CPU, replay stays in host memory, and random draws come from CPU
    generators (the same run on any device).
    """
    if variant not in ("sac", "na"):
        raise ValueError(f"variant must be 'sac' or 'na', got {variant!r}")
    utd = cfg.updates_per_chunk(variant)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    agent = make_noise_agent(env, cfg).to(device)
    opts = make_optimizers(agent, cfg.sac)
    obs_dim = env.observation_space["history"].shape[0]
    exec_dim = env.policy.cfg.action_horizon * env.policy.action_dim
    qa = base = None
    if variant == "na":
        qa = ActionCritic(obs_dim, exec_dim, cfg).to(device)
        base = None if device.type == "cpu" else copy.deepcopy(env.policy).to(device)
        opts["action_critic"] = torch.optim.Adam(qa.q.parameters(), lr=cfg.sac.lr)
    capacity = env_steps + 16
    replay = ChunkReplay(capacity, obs_dim, agent.action_dim, exec_dim)
    evals: list[dict] = []

    def evaluate(at: int) -> None:
        agent.eval()
        result = evaluate_noise_agent(agent, eval_env, eval_episodes, seed + 10_000 + at) | {"env_step": at}
        agent.train()
        evals.append(result)
        if on_eval is not None:
            on_eval(at, result)

    steps = chunk_steps = updates = 0
    update_debt = 0.0
    successes: list[bool] = []  # training episodes (sampled noise), reported over the last 50 as PPO does
    if restore is None:
        if eval_episodes:
            evaluate(0)
        next_eval = eval_every
    else:
        agent.load_state_dict(restore["agent"])
        for name, opt in opts.items():
            opt.load_state_dict(restore["optimizers"][name])
        if qa is not None:
            qa.load_state_dict(restore["action_critic"])
        replay.load_state(restore["replay"])
        rng.bit_generator.state = restore["numpy_rng"]
        gen.set_state(restore["generator"])
        torch.set_rng_state(restore["torch_rng"])
        steps, chunk_steps, updates = int(restore["env_steps"]), int(restore["chunk_steps"]), int(restore["updates"])
        update_debt, next_eval = float(restore["update_debt"]), int(restore["next_eval"])
        evals, successes = list(restore["evals"]), list(restore["recent_successes"])
    next_checkpoint = (steps // checkpoint_every + 1) * checkpoint_every

    def save() -> None:
        if checkpoint is not None:
            checkpoint({"agent": agent.state_dict(), "optimizers": {k: o.state_dict() for k, o in opts.items()},
                        "action_critic": qa.state_dict() if qa is not None else None, "replay": replay.state(),
                        "numpy_rng": rng.bit_generator.state, "generator": gen.get_state(),
                        "torch_rng": torch.get_rng_state(), "env_steps": steps, "chunk_steps": chunk_steps,
                        "updates": updates, "update_debt": update_debt, "next_eval": next_eval, "evals": evals,
                        "recent_successes": successes[-50:]})

    metrics: dict = {}
    obs, info = env.reset(seed=int(rng.integers(2**31)))
    while steps < env_steps:
        with torch.no_grad():
            action = agent.act({"state": torch.from_numpy(obs["history"]).unsqueeze(0).to(device)},
                               deterministic=False, generator=gen)[0].cpu().numpy()
        next_obs, reward, terminated, truncated, info = env.step(action)
        executed = env.to_normalized(info["executed_actions"]).astype(np.float32)
        if executed.shape[0] < env.policy.cfg.action_horizon:  # episode ended mid-chunk: pad with the last action
            executed = np.concatenate([executed, np.repeat(executed[-1:], env.policy.cfg.action_horizon - executed.shape[0], 0)])
        replay.add(obs["history"], next_obs["history"], action, executed.reshape(-1), reward, terminated)
        steps += info["primitive_steps"]
        chunk_steps += 1
        obs = next_obs
        if terminated or truncated:
            successes.append(success_of(info, terminated, reward))
            obs, info = env.reset(seed=int(rng.integers(2**31)))
        if chunk_steps >= cfg.learning_starts:
            update_debt += utd
            while update_debt >= 1.0:
                batch = to_device(replay.sample(cfg.sac.batch_size * (cfg.sac.critic_updates_per_actor_update
                                                                      if variant == "sac" else 1), rng), device)
                if variant == "sac":
                    metrics = update(agent, opts, batch, cfg.sac)
                else:
                    metrics = na_update(agent, qa, opts, env, batch, cfg, gen, base=base)
                updates += 1
                update_debt -= 1.0
        if on_step is not None:
            on_step(steps, {**metrics, "train_success_rate": float(np.mean(successes[-50:]))}
                    if metrics and successes else metrics)
        if eval_episodes and steps >= next_eval and steps < env_steps:
            evaluate(steps)
            next_eval = (steps // eval_every + 1) * eval_every
        if steps >= next_checkpoint and steps < env_steps:
            save()
            next_checkpoint = (steps // checkpoint_every + 1) * checkpoint_every
    if eval_episodes and (not evals or evals[-1]["env_step"] != steps):
        evaluate(steps)
    save()
    return {"env_steps": steps, "chunk_steps": chunk_steps, "updates": updates, "evals": evals,
            "agent": agent, "action_critic": qa}
