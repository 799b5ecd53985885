"""RLPD-style SAC (SERL / HIL-SERL): critic ensemble with independent heads and a random-subset
target, LayerNorm, several critic updates per actor update, learned temperature, and an
optional hybrid discrete gripper critic (Double DQN over close / stay / open, HIL-SERL).

Losses are pure functions of (agent, batch, config); `update()` steps the optimizers it is
given, runs the critic-to-actor update ratio itself, and returns metrics. Nothing here touches
an env, a buffer, a logger or a socket. Metrics are detached 0-d tensors on the agent's device,
so an update never waits for the device; `host_metrics` turns them into floats (one sync) where
they are logged. Every tensor an update creates is made on the device of the tensors it derives
from (tests/learning/test_device.py runs updates under a "meta" default device to check this).

Batches are dicts of tensors (`batch` for one minibatch):
    features / next_features (B, F) — or "obs"/"next_obs" dicts that `agent.encode()` turns into
    features; "action" (B, A) in [−1, 1]; "reward" (B,); "mask" (B,) = 1 − terminated (time-limit
    truncation still bootstraps); "grasp_penalty" (B,) for the hybrid gripper critic; optional
    "discount" (B,): the bootstrap discount of n-step rows (γ^m), else `cfg.discount`.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from robot_rl.agents.nets import EnsembleMLP, TanhGaussianHead, mlp, soft_update
from robot_rl.agents.obs_layout import BASE_ACTION_KEY
from robot_rl.agents.sac_config import SACConfig

GRIPPER_CLASSES = 3
"""Discrete gripper actions of the hybrid critic: 0 open (−1), 1 stay (0), 2 close (+1)."""


class SACAgent(nn.Module):
    """Networks of one agent. `encoder` maps an observation batch to (B, feature_dim) features
    (identity for flat state); it is trained by the critic loss, the actor sees its output detached.
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, action_dim: int, cfg: SACConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.action_dim = action_dim
        self.cont_dim = action_dim - 1 if cfg.hybrid_gripper else action_dim
        self.encoder = encoder
        self.actor = TanhGaussianHead(feature_dim, cfg.hidden, self.cont_dim, layer_norm=cfg.layer_norm)
        self.critic = EnsembleMLP(cfg.n_critics, feature_dim + self.cont_dim, cfg.hidden, 1, layer_norm=cfg.layer_norm)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.temp_init)))
        self.target_entropy = cfg.target_entropy if cfg.target_entropy is not None else -self.cont_dim / 2.0
        if cfg.hybrid_gripper:
            self.grip_critic = mlp(feature_dim + self.cont_dim, cfg.hidden, GRIPPER_CLASSES, layer_norm=cfg.layer_norm)
            self.target_grip_critic = copy.deepcopy(self.grip_critic).requires_grad_(False)
        if cfg.residual_scale is not None:
            if cfg.hybrid_gripper:
                raise ValueError("residual_scale and hybrid_gripper do not combine: the residual covers every action")
            last = self.actor.net[-1]
            with torch.no_grad():  # zero residual mean, smallest-but-one std: the base acts alone at first
                last.weight.zero_()
                last.bias.zero_()
            self.register_buffer("residual_scale", torch.tensor(cfg.residual_scales(action_dim)), persistent=False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        """Updates done (resumes with the state dict; drives the actor warm-up)."""
        self.warmup_over = False
        """Host-side flag: `updates` passed `cfg.actor_warmup_updates` (so `update` stops reading the
        device counter, a host sync, once the warm-up is over)."""

    def critic_action(self, obs: dict, action: torch.Tensor) -> torch.Tensor:
        """The action the critic scores for the agent's `action` (B, cont_dim): the action itself,
        or with `residual_scale` the executed clip(base + scale · residual), the base's proposal read
        from the observation's `BASE_ACTION_KEY` entry (B, cont_dim)."""
        if self.cfg.residual_scale is None:
            return action
        base = obs.get(BASE_ACTION_KEY)
        if base is None:
            raise ValueError(f"a residual agent needs the base's action in the observation batch under "
                             f"{BASE_ACTION_KEY!r} (ObsLayout.raw of a ResidualEnv observation provides it)")
        return (base + self.residual_scale * action).clamp(-1.0, 1.0)

    # ---- acting ------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: dict, *, deterministic: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions (B, action_dim) in [−1, 1] for an observation batch. Deterministic mode uses
        the Gaussian's mean and the greedy gripper class (evaluation)."""
        features = self.encoder(obs)
        if deterministic:
            cont = self.actor.mode(features)
        elif self.cfg.explore_std is not None:
            cont = self.actor.mode(features)
            noise = _draw(torch.randn, cont.shape, generator, cont.device) * self.cfg.explore_std
            cont = (cont + noise).clamp(-1.0, 1.0)
        else:
            cont = self.actor.sample(features)[0]
        if not self.cfg.hybrid_gripper:
            return cont
        q = self.grip_critic(torch.cat([features, cont], -1))
        grip = q.argmax(-1)
        if not deterministic and self.cfg.gripper_epsilon > 0:
            explore = _draw(torch.rand, grip.shape, generator, grip.device) < self.cfg.gripper_epsilon
            grip = torch.where(explore, _draw(torch.randint, grip.shape, generator, grip.device, 0, GRIPPER_CLASSES),
                               grip)
        return torch.cat([cont, (grip.float() - 1.0).unsqueeze(-1)], -1)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()


def _draw(fn, shape, generator: torch.Generator | None, device: torch.device, *args) -> torch.Tensor:
    """`fn(*args, shape)` (torch.rand, randn, randint) drawn on `generator`'s device when one is
    given (a CPU generator: the same draws whatever the agent's device), then moved to `device`."""
    where = generator.device if generator is not None else device
    return fn(*args, shape, generator=generator, device=where).to(device)


def compile_critics(agent: SACAgent) -> None:
    """Compile the critic ensembles' forward and backward (see `EnsembleMLP.compile_forward`)."""
    agent.critic.compile_forward()
    agent.target_critic.compile_forward()


def make_optimizers(agent: SACAgent, cfg: SACConfig) -> dict[str, torch.optim.Optimizer]:
    """Adam per loss. The encoder trains with the critic (DrQ), never with the actor."""
    critic_params = list(agent.critic.parameters()) + [p for p in agent.encoder.parameters() if p.requires_grad]
    # fused: one kernel per step for all tensors instead of a Python loop over parameters.
    opts = {
        "critic": torch.optim.Adam(critic_params, lr=cfg.lr, fused=True),
        "actor": torch.optim.Adam(agent.actor.parameters(), lr=cfg.lr, fused=True),
        "temperature": torch.optim.Adam([agent.log_alpha], lr=cfg.lr),
    }
    if cfg.hybrid_gripper:
        opts["gripper"] = torch.optim.Adam(agent.grip_critic.parameters(), lr=cfg.lr, fused=True)
    return opts


# ---- losses --------------------------------------------------------------------------------------


def critic_loss(agent: SACAgent, batch: dict, cfg: SACConfig) -> tuple[torch.Tensor, dict]:
    """TD loss of every ensemble member against min over a random subset of target critics."""
    features = agent.encoder(batch["obs"])
    with torch.no_grad():
        next_features = agent.target_encoder(batch["next_obs"])
        next_action, next_log_prob = agent.actor.sample(next_features)
        members = None
        if cfg.critic_subsample is not None and cfg.critic_subsample < cfg.n_critics:
            members = torch.randperm(cfg.n_critics, device=next_features.device)[: cfg.critic_subsample]
        next_action = agent.critic_action(batch["next_obs"], next_action)
        target_q = agent.target_critic(torch.cat([next_features, next_action], -1), members).squeeze(-1)
        next_v = target_q.min(0).values
        if cfg.backup_entropy:
            next_v = next_v - agent.alpha * next_log_prob
        target = batch["reward"] + batch.get("discount", cfg.discount) * batch["mask"] * next_v
    q = agent.critic(torch.cat([features, agent.critic_action(batch["obs"], batch["action"][:, : agent.cont_dim])],
                               -1)).squeeze(-1)
    loss = ((q - target.unsqueeze(0)) ** 2).mean(1).sum()  # sum over members: each head learns at full rate
    return loss, {"critic_loss": loss.detach() / cfg.n_critics, "q_mean": q.detach().mean(),
                  "target_mean": target.mean()}


def actor_loss(agent: SACAgent, features: torch.Tensor, batch: dict | None = None,
               bc_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Maximize the ensemble-mean Q plus entropy (plus `bc_weight` × the squared error to the demo
    actions of `batch`'s demo rows); also returns the log-probs for the temperature."""
    mean, log_std = agent.actor(features)
    action, log_prob = agent.actor.sample_from(mean, log_std)
    if agent.cfg.residual_scale is not None:
        if batch is None:
            raise ValueError("a residual agent's actor loss needs the batch (it holds the base's action)")
        action = agent.critic_action(batch["obs"], action)
    q = agent.critic(torch.cat([features, action], -1)).squeeze(-1).mean(0)
    loss = (agent.alpha.detach() * log_prob - q).mean()
    metrics = {"entropy": -log_prob.detach().mean()}
    if bc_weight > 0 and batch is not None and "from_demo" in batch:
        demo = batch["from_demo"]
        err = ((torch.tanh(mean) - batch["action"][:, : agent.cont_dim]) ** 2).sum(-1)
        bc = (err * demo).sum() / demo.sum().clamp_min(1.0)
        loss = loss + bc_weight * bc
        metrics["actor_bc_mse"] = bc.detach()
    metrics["actor_loss"] = loss.detach()
    return loss, log_prob.detach(), metrics


def temperature_loss(agent: SACAgent, log_prob: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Adjust α so the policy's entropy tracks the target entropy."""
    loss = -(agent.log_alpha * (log_prob + agent.target_entropy)).mean()
    return loss, {"temperature": agent.alpha.detach(), "temperature_loss": loss.detach()}


def gripper_loss(agent: SACAgent, batch: dict, cfg: SACConfig) -> tuple[torch.Tensor, dict]:
    """Double-DQN loss of the discrete gripper critic; its reward includes the grasp penalty."""
    with torch.no_grad():
        features = agent.encoder(batch["obs"])
        next_features = agent.target_encoder(batch["next_obs"])
        next_cont = agent.actor.mode(next_features)
        next_in = torch.cat([next_features, next_cont], -1)
        best = agent.grip_critic(next_in).argmax(-1, keepdim=True)
        next_q = agent.target_grip_critic(next_in).gather(-1, best).squeeze(-1)
        reward = batch["reward"] + batch.get("grasp_penalty", torch.zeros_like(batch["reward"]))
        target = reward + batch.get("discount", cfg.discount) * batch["mask"] * next_q
    cls = (batch["action"][:, -1].round().clamp(-1, 1) + 1).long()
    q = agent.grip_critic(torch.cat([features, batch["action"][:, : agent.cont_dim]], -1))
    q_taken = q.gather(-1, cls.unsqueeze(-1)).squeeze(-1)
    loss = F.mse_loss(q_taken, target)
    return loss, {"gripper_loss": loss.detach(), "gripper_q": q_taken.detach().mean()}


# ---- update ----------------------------------------------------------------------------------------


def update(agent: SACAgent, opts: dict[str, torch.optim.Optimizer], batch: dict, cfg: SACConfig) -> dict:
    """One update: `critic_updates_per_actor_update` critic steps on consecutive slices of `batch`
    (so batch holds k·batch_size samples), then one actor, temperature (and gripper) step on the
    last slice. Target networks follow by Polyak averaging after each critic step."""
    k = cfg.critic_updates_per_actor_update
    n = _batch_len(batch)
    if n < k * 2:
        raise ValueError(f"batch of {n} is too small for {k} critic updates")
    size = n // k
    metrics: dict = {}
    for i in range(k):
        mb = _slice(batch, i * size, (i + 1) * size)
        loss, m = critic_loss(agent, mb, cfg)
        opts["critic"].zero_grad(set_to_none=True)
        loss.backward()
        opts["critic"].step()
        soft_update(agent.target_critic, agent.critic, cfg.tau)
        soft_update(agent.target_encoder, agent.encoder, cfg.tau)
        metrics.update(m)
    agent.updates += 1
    if cfg.actor_warmup_updates and not agent.warmup_over:  # reading the counter waits for the device
        if int(agent.updates) <= cfg.actor_warmup_updates:
            return metrics  # critic warm-up: the actor and temperature wait
        agent.warmup_over = True
    metrics.update(actor_step(agent, opts, mb, cfg.bc_weight))
    if cfg.hybrid_gripper:
        loss, m = gripper_loss(agent, mb, cfg)
        opts["gripper"].zero_grad(set_to_none=True)
        loss.backward()
        opts["gripper"].step()
        soft_update(agent.target_grip_critic, agent.grip_critic, cfg.tau)
        metrics.update(m)
    return metrics


def actor_step(agent: SACAgent, opts: dict[str, torch.optim.Optimizer], batch: dict, bc_weight: float = 0.0) -> dict:
    """One actor step against the current critic, then one temperature step; returns metrics."""
    with torch.no_grad():
        features = agent.encoder(batch["obs"])
    agent.critic.requires_grad_(False)  # the actor's backward needs no critic weight gradients
    try:
        loss, log_prob, metrics = actor_loss(agent, features, batch, bc_weight)
        opts["actor"].zero_grad(set_to_none=True)
        loss.backward()
    finally:
        agent.critic.requires_grad_(True)
    opts["actor"].step()
    loss, m = temperature_loss(agent, log_prob)
    opts["temperature"].zero_grad(set_to_none=True)
    loss.backward()
    opts["temperature"].step()
    return {**metrics, **m}


def host_metrics(metrics: dict) -> dict:
    """`metrics` with its tensor values as Python floats, copied to the host in one transfer
    (one wait for the device): call it where metrics are logged, not after every update."""
    names = [k for k, v in metrics.items() if isinstance(v, torch.Tensor)]
    if not names:
        return dict(metrics)
    values = torch.stack([metrics[k].detach().float().reshape(()) for k in names]).tolist()
    return {**metrics, **dict(zip(names, values))}


def _batch_len(batch: dict) -> int:
    return int(batch["reward"].shape[0])


def _slice(tree, start: int, stop: int):
    if isinstance(tree, dict):
        return {k: _slice(v, start, stop) for k, v in tree.items()}
    return tree[start:stop]
