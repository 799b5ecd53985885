"""Behaviour cloning baseline: the SAC actor's network fit to demonstrations (same encoder and
head, so BC and RL policies compare like for like).

The loss is the squared error of the deterministic action tanh(mean): demo actions from scripted
experts and teleoperation sit at ±1 a lot, where the tanh-Gaussian likelihood is ill-conditioned
(on 20 pick_cube demos the likelihood fit reached 0 % success, the squared error 50 %)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robot_rl.agents.nets import TanhGaussianHead


@dataclass(frozen=True)
class BCConfig:
    hidden: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    batch_size: int = 256
    steps: int = 5_000

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.steps < 1 or self.lr <= 0:
            raise ValueError("batch_size and steps must be ≥ 1 and lr > 0")


class BCAgent(nn.Module):
    """encoder → tanh-Gaussian head; `act` is deterministic (the mean) unless asked to sample."""

    def __init__(self, encoder: nn.Module, feature_dim: int, action_dim: int, cfg: BCConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.actor = TanhGaussianHead(feature_dim, cfg.hidden, action_dim)
        self.action_dim = action_dim

    @torch.no_grad()
    def act(self, obs: dict, *, deterministic: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        features = self.encoder(obs)
        return self.actor.mode(features) if deterministic else self.actor.sample(features)[0]


def bc_loss(agent: BCAgent, batch: dict) -> tuple[torch.Tensor, dict]:
    """Mean squared error between tanh(mean) and the demo actions (batch, action_dim)."""
    mean, _ = agent.actor(agent.encoder(batch["obs"]))
    loss = ((torch.tanh(mean) - batch["action"]) ** 2).mean()
    return loss, {"bc_mse": loss.item()}


def bc_update(agent: BCAgent, opt: torch.optim.Optimizer, batch: dict) -> dict:
    loss, metrics = bc_loss(agent, batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return metrics
