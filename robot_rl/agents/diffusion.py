"""Diffusion behaviour cloning (Diffusion Policy, state and image conditioned).

DDPM training with ε-prediction on a squared-cosine schedule, deterministic DDIM sampling (η = 0),
min-max normalization of actions and state to [−1, 1], EMA weights. The policy predicts
`pred_horizon` actions from the last `obs_horizon` observations and executes `action_horizon`
of them (a per-step action queue, `ChunkedPolicy`), as in Chi et al.

`DiffusionPolicy.sample(obs, noise)` is a deterministic function of the observation and the
initial noise: DSRL steers the policy through that noise, residual RL adds to its actions.
Pure torch; no env, no files (checkpoints: `robot_rl.learning.bc_checkpoint`).
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from robot_rl.agents.encoders import EncoderConfig
from robot_rl.agents.obs_encoder import ObsEncoder


@dataclass(frozen=True)
class DiffusionConfig:
    """Diffusion Policy hyper-parameters (defaults: the paper's state-based settings, scaled to CPU)."""

    obs_horizon: int = 2
    """Observations the policy conditions on (the current one and obs_horizon − 1 before it)."""
    pred_horizon: int = 16
    """Actions predicted per sample (a chunk)."""
    action_horizon: int = 8
    """Actions of each chunk executed before sampling again."""
    train_timesteps: int = 100
    inference_steps: int = 10
    """DDIM steps at sampling time."""
    hidden: int = 256
    """Denoiser width (Diffusion Policy's state MLPs: ≈ 512; 256 fits pick_cube: 0.96 success
    from 20 scripted demos, at a quarter of the CPU time)."""
    blocks: int = 3
    """Residual MLP blocks of the denoiser."""
    time_dim: int = 64
    """Sinusoidal timestep embedding size."""
    ema_decay: float = 0.995
    lr: float = 1e-3
    """Peak learning rate (warm-up, then cosine decay). At 3e-4 for 3000 steps the loss stalled
    at 0.08 and the policy succeeded 12 % of the time; 1e-3 for 6000 steps: loss 0.02, 96 %."""
    weight_decay: float = 1e-6
    batch_size: int = 256
    steps: int = 6_000
    """Gradient steps of `robot-rl train-bc`."""

    def __post_init__(self) -> None:
        if self.obs_horizon < 1 or self.pred_horizon < 1 or self.action_horizon < 1:
            raise ValueError("obs_horizon, pred_horizon and action_horizon must be ≥ 1")
        if self.obs_horizon - 1 + self.action_horizon > self.pred_horizon:
            raise ValueError(f"obs_horizon − 1 + action_horizon = {self.obs_horizon - 1 + self.action_horizon} must be "
                             f"≤ pred_horizon = {self.pred_horizon}: the executed actions must lie inside the chunk")
        if not 1 <= self.inference_steps <= self.train_timesteps:
            raise ValueError(f"inference_steps must be in [1, train_timesteps={self.train_timesteps}], "
                             f"got {self.inference_steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


def cosine_alpha_bars(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """ᾱ_t for t = 0 … T−1 of the squared-cosine schedule (Nichol & Dhariwal), betas capped at 0.999."""
    def f(t: float) -> float:
        return math.cos((t / timesteps + s) / (1 + s) * math.pi / 2) ** 2

    betas = torch.tensor([min(1 - f(t + 1) / f(t), 0.999) for t in range(timesteps)], dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0).to(torch.float32)


class MinMax(nn.Module):
    """Per-dimension affine map of [low, high] onto [−1, 1] (constant dimensions map to 0)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mid", torch.zeros(dim))
        self.register_buffer("half_range", torch.ones(dim))

    @torch.no_grad()
    def fit(self, data: torch.Tensor, *, min_half_range: float = 1e-4) -> None:
        low, high = data.min(0).values, data.max(0).values
        self.mid.copy_((low + high) / 2)
        self.half_range.copy_(((high - low) / 2).clamp_min(min_half_range))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mid) / self.half_range

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.half_range + self.mid


_ONE_EXP_MIN_NUMEL = 16_384


def mish(x: torch.Tensor) -> torch.Tensor:
    """Mish, x · tanh(softplus(x)), with one exp: tanh(log(1 + e)) = n / (n + 2), n = e(e + 2).
    Equal to torch's within 1e-5 and ≈ 2.5× faster on the CPU than torch's kernel (log1p, exp and
    tanh per element), the largest cost of a batched DDIM sample: a batch-256 sample (DSRL-NA takes
    two per update) 1.28× faster on one idle core (`robot-rl bench diffusion`).
    Small tensors keep torch's kernel (there the six extra ops' dispatch costs more than the exps),
    and so does training (autograd through six ops costs more than torch's fused backward)."""
    if x.numel() < _ONE_EXP_MIN_NUMEL or x.requires_grad:
        return F.mish(x)
    e = torch.exp(x.clamp(max=20.0))  # beyond 20, n / (n + 2) is 1 in float32
    n = e * (e + 2.0)
    return x * (n / (n + 2.0))  # the ratio first: x · n overflows for huge x


class _Mish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x)


class _Block(nn.Module):
    def __init__(self, hidden: int, cond_dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.fc1, self.fc2 = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.cond = nn.Linear(cond_dim, hidden)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.fc1(mish(self.norm1(h))) + self.cond(cond)
        return h + self.fc2(mish(self.norm2(x)))


class Denoiser(nn.Module):
    """ε(x_t, t, obs features): a residual MLP with the condition (features + timestep embedding)
    injected into every block."""

    def __init__(self, chunk_dim: int, feature_dim: int, cfg: DiffusionConfig) -> None:
        super().__init__()
        self.time_dim = cfg.time_dim
        self.time_mlp = nn.Sequential(nn.Linear(cfg.time_dim, 2 * cfg.time_dim), _Mish(),
                                      nn.Linear(2 * cfg.time_dim, cfg.time_dim))
        cond_dim = feature_dim + cfg.time_dim
        self.inp = nn.Linear(chunk_dim + cond_dim, cfg.hidden)
        self.blocks = nn.ModuleList(_Block(cfg.hidden, cond_dim) for _ in range(cfg.blocks))
        self.out = nn.Sequential(nn.LayerNorm(cfg.hidden), _Mish(), nn.Linear(cfg.hidden, chunk_dim))

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        half = self.time_dim // 2
        steps = torch.arange(half, dtype=torch.float32, device=t.device)
        freqs = torch.exp(-math.log(10_000.0) * steps / max(half - 1, 1))
        args = t.float().unsqueeze(-1) * freqs
        return self.time_mlp(torch.cat([args.sin(), args.cos()], -1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        cond = torch.cat([features, self.time_embedding(t)], -1)
        h = self.inp(torch.cat([x, cond], -1))
        for block in self.blocks:
            h = block(h, cond)
        return self.out(h)


STATE_CLIP = 1.5
"""|normalized state| bound of the diffusion policies' observation encoder."""


class DiffusionPolicy(nn.Module):
    """Observation history → action chunk. Observation batches are dicts as for the SAC agents
    ("state" and "images/<camera>"), each entry with an extra history axis after the batch:
    "state" (B, obs_horizon, D), "images/<cam>" (B, obs_horizon, H, W, 3)."""

    def __init__(self, state_dim: int, action_dim: int, cfg: DiffusionConfig, *, cameras: tuple[str, ...] = (),
                 encoder: EncoderConfig | None = None) -> None:
        super().__init__()
        self.cfg, self.state_dim, self.action_dim = cfg, state_dim, action_dim
        self.obs_encoder = ObsEncoder(state_dim, cameras, encoder)
        # States are min-max normalized to [−1, 1] on the demos; beyond ±1.5 is off the data. Set
        # here, not in fit_normalization: the clip is not in the state dict, and a loaded base must
        # see states exactly as the trained one did (it once loaded with the encoder's ±10 and
        # evaluated 0.22 where the trained policy had 0.40).
        self.obs_encoder.state_clip = STATE_CLIP
        self.action_norm = MinMax(action_dim)
        feature_dim = self.obs_encoder.feature_dim * cfg.obs_horizon
        self.denoiser = Denoiser(cfg.pred_horizon * action_dim, feature_dim, cfg)
        self.ema = copy.deepcopy(self.denoiser).requires_grad_(False)
        self.register_buffer("alpha_bars", cosine_alpha_bars(cfg.train_timesteps))

    @property
    def chunk_shape(self) -> tuple[int, int]:
        """Shape of one action chunk, and of the initial noise `sample` takes per observation."""
        return (self.cfg.pred_horizon, self.action_dim)

    @torch.no_grad()
    def fit_normalization(self, states: torch.Tensor, actions: torch.Tensor) -> None:
        """Min-max statistics of the training data: states (N, D) and actions (N, A)."""
        self.action_norm.fit(actions)
        state_norm = MinMax(self.state_dim)
        state_norm.fit(states)
        # The ObsEncoder's standardization buffers express the same affine map: (x − mid) / half_range.
        self.obs_encoder.state_mean.copy_(state_norm.mid)
        self.obs_encoder.state_inv_std.copy_(1.0 / state_norm.half_range)

    def features(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, obs_horizon · feature_dim): each history frame encoded, then concatenated."""
        b, h = obs["state"].shape[:2]
        flat = {k: v.reshape(b * h, *v.shape[2:]) for k, v in obs.items()}
        return self.obs_encoder(flat).reshape(b, -1)

    def loss(self, obs: dict[str, torch.Tensor], actions: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """DDPM ε-prediction loss; actions (B, pred_horizon, A) in env units."""
        x0 = self.action_norm.normalize(actions).flatten(1)
        b = x0.shape[0]
        t = torch.randint(0, self.cfg.train_timesteps, (b,), generator=generator,
                          device=_draw_device(generator, x0.device)).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=_draw_device(generator, x0.device)).to(x0.device)
        ab = self.alpha_bars[t].unsqueeze(-1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        return F.mse_loss(self.denoiser(x_t, t, self.features(obs)), noise)

    @torch.no_grad()
    def update_ema(self) -> None:
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.denoiser.parameters()), 1.0 - self.cfg.ema_decay)

    @torch.no_grad()
    def sample(self, obs: dict[str, torch.Tensor], noise: torch.Tensor | None = None, *,
               generator: torch.Generator | None = None, use_ema: bool = True) -> torch.Tensor:
        """Action chunks (B, pred_horizon, A) in env units by DDIM (η = 0) from `noise`
        (B, pred_horizon, A), standard normal when None. Deterministic given the noise."""
        features = self.features(obs)
        b = features.shape[0]
        if noise is None:
            noise = torch.randn((b, *self.chunk_shape), generator=generator,
                                device=_draw_device(generator, features.device))
        if tuple(noise.shape) != (b, *self.chunk_shape):
            raise ValueError(f"noise must have shape {(b, *self.chunk_shape)}, got {tuple(noise.shape)}")
        net = self.ema if use_ema else self.denoiser
        x = noise.reshape(b, -1).to(features.device, features.dtype)
        steps = self.cfg.inference_steps
        ratio = self.cfg.train_timesteps // steps
        timesteps = [(steps - 1 - i) * ratio for i in range(steps)]
        for i, t in enumerate(timesteps):
            ab = self.alpha_bars[t]
            ab_prev = self.alpha_bars[timesteps[i + 1]] if i + 1 < steps else self.alpha_bars.new_ones(())
            eps = net(x, torch.full((b,), t, dtype=torch.long, device=features.device), features)
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1.0, 1.0)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()  # consistent with the clipped x0
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return self.action_norm.unnormalize(x.clamp(-1.0, 1.0).reshape(b, *self.chunk_shape))


def _draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Where random numbers are drawn: on the generator's device when one is given (a CPU
    generator keeps a CUDA run's draws reproducible; they are copied over), else on `device`."""
    return generator.device if generator is not None else device


class ChunkedPolicy:
    """Per-step acting with a diffusion policy: keeps the observation history and a queue of the
    chunk's actions still to execute. `reset()` at every episode start (a stale queue would replay
    the previous episode's last chunk, a known DSRL pitfall)."""

    def __init__(self, policy: DiffusionPolicy) -> None:
        self.policy = policy
        self.history: deque[dict[str, np.ndarray]] = deque(maxlen=policy.cfg.obs_horizon)
        self.queue: deque[np.ndarray] = deque()

    def reset(self) -> None:
        self.history.clear()
        self.queue.clear()

    def observe(self, obs: dict[str, np.ndarray]) -> None:
        """Append one observation ({"state": (D,), "images/<cam>": (H, W, 3)}); the first of an
        episode fills the whole history."""
        if not self.history:
            self.history.extend([obs] * self.policy.cfg.obs_horizon)
        else:
            self.history.append(obs)

    def history_batch(self) -> dict[str, torch.Tensor]:
        """The observation history as a batch of one: each entry (1, obs_horizon, …)."""
        if not self.history:
            raise RuntimeError("observe() an observation before acting")
        return {k: torch.from_numpy(np.stack([o[k] for o in self.history])).unsqueeze(0) for k in self.history[0]}

    def chunk_slice(self) -> slice:
        """Which actions of a predicted chunk are executed (aligned to the current observation)."""
        start = self.policy.cfg.obs_horizon - 1
        return slice(start, start + self.policy.cfg.action_horizon)

    def act(self, obs: dict[str, np.ndarray], noise: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> np.ndarray:
        """Observe `obs` and return the next action (A,); samples a new chunk when the queue is empty."""
        self.observe(obs)
        if not self.queue:
            chunk = self.policy.sample(self.history_batch(), None if noise is None else noise.unsqueeze(0),
                                       generator=generator)[0]
            self.queue.extend(chunk[self.chunk_slice()].cpu().numpy().astype(np.float64))
        return self.queue.popleft()
