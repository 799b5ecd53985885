"""`robot-rl train-bc`: a diffusion BC policy from recorded episodes, saved as a self-describing
checkpoint that fine-tuning runs (`robot-rl finetune --base …`) load frozen.

The checkpoint (`agents.diffusion_checkpoint`) holds everything needed to rebuild the policy
without the training command, this command's settings and the policy's own evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from robot_rl.agents.diffusion import ChunkedPolicy, DiffusionConfig, DiffusionPolicy
from robot_rl.agents.diffusion_checkpoint import save_base
from robot_rl.agents.encoders import EncoderConfig
from robot_rl.agents.obs_layout import ObsLayout
from robot_rl.config import to_dict
from robot_rl.cpu import setup_torch
from robot_rl.data.episodes import iter_episodes, read_meta
from robot_rl.envs.actions import action_dim_of
from robot_rl.envs.make import EnvConfig, layout_of, make_env
from robot_rl.errors import ConfigError
from robot_rl.learning.device import check_device_name, resolve_device, to_device
from robot_rl.learning.ingest import check_demo_compatible
from robot_rl.learning.policy import run_episodes

LOG_EVERY = 50
"""Steps between progress updates: the only points where training waits for the device (losses)."""


@dataclass(frozen=True)
class TrainBCConfig:
    """Train a diffusion BC policy on recorded episodes."""

    demos: str
    """Folder of episodes recorded with `robot-rl record`."""
    task: str | None = None
    """Task the demos are of (default: the one in the recording's meta.json)."""
    obs: Literal["state", "pixels"] = "state"
    privileged: bool = True
    """State policies on a twin task also observe the twin's object state (as state SAC runs do)."""
    encoder: EncoderConfig = EncoderConfig(name="resnet10", image_hw=(128, 128), frozen=True)
    """Pixel policies: image encoder per camera."""
    diffusion: DiffusionConfig = DiffusionConfig()
    episodes: int | None = None
    """Use only the first N episodes (a deliberately weak base for fine-tuning studies)."""
    out: str | None = None
    """Checkpoint path (default: runs/bc/<task>_<obs>_diffusion.pt)."""
    eval_episodes: int = 50
    """Episodes on the embedded twin after training (0: skip)."""
    seed: int = 0
    torch_threads: int = 2
    device: str = "cpu"
    """Training device: cpu, cuda, cuda:N or auto (CUDA when torch sees one). Demos stay in host
    memory; evaluation and the saved checkpoint are on the CPU."""

    def __post_init__(self) -> None:
        check_device_name(self.device)
        if self.episodes is not None and self.episodes < 1:
            raise ConfigError(f"episodes must be ≥ 1, got {self.episodes}")
        if self.eval_episodes < 0:
            raise ConfigError(f"eval_episodes must be ≥ 0, got {self.eval_episodes}")


# ---- data ------------------------------------------------------------------------------------------


@dataclass
class ChunkDataset:
    """Demo steps as (observation history, action chunk) samples, by index arrays into the
    concatenated episodes. Histories and chunks are padded with the episode's first observation
    and last action (Diffusion Policy's sequence sampler does the same)."""

    states: np.ndarray  # (N_obs, D) float32
    images: dict[str, np.ndarray]  # camera → (N_obs, H, W, 3) uint8
    actions: np.ndarray  # (N_act, A) float32
    obs_index: np.ndarray  # (S, obs_horizon) into states / images
    action_index: np.ndarray  # (S, pred_horizon) into actions

    def __len__(self) -> int:
        return int(self.obs_index.shape[0])

    def batch(self, idx: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        oi = self.obs_index[idx]
        obs = {"state": torch.from_numpy(self.states[oi])}
        for cam, frames in self.images.items():
            obs[f"images/{cam}"] = torch.from_numpy(frames[oi])
        return obs, torch.from_numpy(self.actions[self.action_index[idx]])


def load_chunks(folder: str | Path, layout: ObsLayout, cfg: DiffusionConfig, *,
                episodes: int | None = None) -> ChunkDataset:
    states, actions, obs_index, action_index = [], [], [], []
    images: dict[str, list[np.ndarray]] = {path[-1]: [] for path, _ in layout.images}
    n_obs = n_act = 0
    for i, ep in enumerate(iter_episodes(folder)):
        if episodes is not None and i >= episodes:
            break
        check_demo_compatible(layout, ep)
        t_max = len(ep)
        if t_max == 0:
            continue
        for t in range(t_max + 1):
            obs = ep.obs_at(t)
            states.append(layout.state_vector(obs))
            for cam, img in layout.image_arrays(obs).items():
                images[cam].append(img)
        actions.append(ep.arrays["action"].astype(np.float32))
        for t in range(t_max):
            hist = np.clip(np.arange(t - cfg.obs_horizon + 1, t + 1), 0, t_max)
            chunk = np.clip(np.arange(t - cfg.obs_horizon + 1, t - cfg.obs_horizon + 1 + cfg.pred_horizon), 0, t_max - 1)
            obs_index.append(n_obs + hist)
            action_index.append(n_act + chunk)
        n_obs += t_max + 1
        n_act += t_max
    if not actions:
        raise ConfigError(f"{folder} holds no non-empty episodes: record demos first (robot-rl record --out {folder})")
    return ChunkDataset(np.stack(states).astype(np.float32), {c: np.stack(v) for c, v in images.items()},
                        np.concatenate(actions), np.stack(obs_index), np.stack(action_index))


# ---- evaluation ----------------------------------------------------------------------------------------


def evaluate_base(policy: DiffusionPolicy, env, layout: ObsLayout, episodes: int, *, seed: int = 1000,
                  progress=None) -> dict[str, Any]:
    """Success rate of the policy on `env`: reset seeds and sampling noise both come from `seed`,
    so the evaluation is reproducible (deterministic given the seed)."""
    chunked = ChunkedPolicy(policy)
    gen = torch.Generator().manual_seed(seed)

    def act(obs) -> np.ndarray:
        return np.clip(chunked.act(layout.raw(obs), generator=gen), env.action_space.low, env.action_space.high)

    return run_episodes(env, act, episodes, seed, on_reset=chunked.reset, progress=progress)


# ---- training ----------------------------------------------------------------------------------------------


def fit(policy: DiffusionPolicy, data: ChunkDataset, dcfg: DiffusionConfig, *, device: torch.device,
        seed: int = 0, on_log=None) -> list[float]:
    """Train `policy` (moved to `device`, normalization already fitted) for `dcfg.steps` steps of
    AdamW with warm-up and cosine decay, clipping and EMA; returns the loss of every step.

    Batches are drawn in host memory and sent to `device` each step; losses stay on the device
    and come back every `LOG_EVERY` steps, when `on_log(step, recent_losses)` is called."""
    policy.to(device).train()
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=dcfg.lr, weight_decay=dcfg.weight_decay)
    warmup = min(500, dcfg.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(warmup, 1)) * 0.5 * (1 + np.cos(np.pi * min(s / dcfg.steps, 1.0))))
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    losses: list[float] = []
    pending: list[torch.Tensor] = []
    for step in range(dcfg.steps):
        obs, actions = to_device(data.batch(rng.integers(0, len(data), dcfg.batch_size)), device)
        loss = policy.loss(obs, actions, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        policy.update_ema()
        pending.append(loss.detach())
        if step % LOG_EVERY == 0 or step == dcfg.steps - 1:
            losses.extend(torch.stack(pending).tolist())
            pending.clear()
            if on_log is not None:
                on_log(step, losses[-LOG_EVERY:])
    return losses


def run(cfg: TrainBCConfig) -> dict[str, Any]:

    setup_torch(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    task = cfg.task or read_meta(cfg.demos).get("task")
    if task is None:
        raise ConfigError(f"{cfg.demos}/meta.json names no task: pass --task")
    cfg = replace(cfg, task=task)
    env = make_env(EnvConfig(task=task, obs=cfg.obs, privileged=cfg.privileged, seed=cfg.seed))
    try:
        layout = layout_of(env, obs=cfg.obs, privileged=cfg.privileged)
        action_dim = action_dim_of(env)
        data = load_chunks(cfg.demos, layout, cfg.diffusion, episodes=cfg.episodes)
        dcfg = cfg.diffusion
        policy = DiffusionPolicy(layout.state_dim, action_dim, dcfg,
                                 cameras=layout.camera_names if cfg.obs == "pixels" else (),
                                 encoder=cfg.encoder if cfg.obs == "pixels" else None)
        policy.fit_normalization(torch.from_numpy(data.states), torch.from_numpy(data.actions))
        device = resolve_device(cfg.device)
        t0 = time.monotonic()
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=False) as progress:  # stdout: the JSON result
            bar = progress.add_task(f"train-bc {task}", total=dcfg.steps, info="")
            losses = fit(policy, data, dcfg, device=device, seed=cfg.seed,
                         on_log=lambda step, recent: progress.update(bar, completed=step + 1,
                                                                     info=f"loss {np.mean(recent):.4f}"))
            policy.to("cpu").eval()  # evaluated and saved on the CPU, as actors and fine-tuning runs load it
            train_s = time.monotonic() - t0
            evaluation = None
            if cfg.eval_episodes:
                ev = progress.add_task(f"evaluate {task}", total=cfg.eval_episodes, info="")
                evaluation = evaluate_base(policy, env, layout, cfg.eval_episodes, seed=cfg.seed + 1000,
                                           progress=lambda rate: progress.update(ev, advance=1, info=f"success {rate:.2f}"))
    finally:
        env.close()
    out = Path(cfg.out or f"runs/bc/{task}_{cfg.obs}_diffusion.pt")
    extra = {"train_loss_last": float(np.mean(losses[-200:])), "train_s": round(train_s, 1),
             "samples": len(data), "evaluation": evaluation}
    save_base(out, policy, layout, to_dict(cfg), extra)
    result = {"checkpoint": str(out), "task": task, "samples": len(data), "steps": dcfg.steps,
              "train_loss": round(extra["train_loss_last"], 5), "train_s": round(train_s, 1)}
    if evaluation is not None:
        result.update(eval_episodes=evaluation["episodes"], success_rate=evaluation["success_rate"])
    return result
