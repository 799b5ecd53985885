"""Diffusion BC base checkpoints: one self-describing file that rebuilds a frozen `DiffusionPolicy`
without the command that trained it.

The file holds the diffusion and encoder settings, the observation layout the policy was trained
on, its normalization statistics (buffers of the state dict), the training settings as a plain
dict (`robot-rl train-bc`'s config: task, obs, privileged, encoder, demos, …) and free-form
extras such as the policy's own evaluation. Residual RL and DSRL load it frozen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from robot_rl.agents.diffusion import DiffusionConfig, DiffusionPolicy
from robot_rl.agents.encoders import EncoderConfig
from robot_rl.agents.obs_layout import ObsLayout
from robot_rl.atomic import atomic_write
from robot_rl.config import from_dict, to_dict
from robot_rl.errors import ConfigError

FORMAT = "robot_rl.diffusion_bc"
VERSION = 1


@dataclass(frozen=True)
class BaseCheckpoint:
    """A loaded base: the frozen policy, the observation it reads and what it was trained on."""

    policy: DiffusionPolicy
    layout: ObsLayout
    task: str
    obs: Literal["state", "pixels"]
    privileged: bool
    """A state base that also observes the twin's object state (needs a twin to act)."""
    encoder: EncoderConfig
    train: dict[str, Any]
    """The training command's settings as saved (demos, episodes, seed, …)."""
    extra: dict[str, Any]
    """What training added: loss, sample count, the policy's evaluation."""


def save_base(path: str | Path, policy: DiffusionPolicy, layout: ObsLayout, train: dict[str, Any],
              extra: dict[str, Any] | None = None) -> Path:
    """Write `policy` to `path` (atomically). `train` must name the task, obs, privileged and
    encoder settings the policy was trained with (`robot-rl train-bc`'s config as a dict)."""
    missing = [k for k in ("task", "obs", "privileged", "encoder") if k not in train]
    if missing:
        raise ValueError(f"base checkpoint train settings lack {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "version": VERSION, "train": dict(train), "diffusion": to_dict(policy.cfg),
             "layout": {"state": [[list(p), n] for p, n in layout.state],
                        "images": [[list(p), list(s)] for p, s in layout.images]},
             "state_dim": policy.state_dim, "action_dim": policy.action_dim, "state_dict": policy.state_dict(),
             "extra": json.dumps(extra or {})}
    with atomic_write(path) as f:
        torch.save(state, f)
    return path


def is_base_state(state: Any) -> bool:
    """A loaded file's contents are a diffusion BC base (`save_base`)."""
    return isinstance(state, dict) and state.get("format") == FORMAT


def load_base(path: str | Path) -> BaseCheckpoint:
    """A frozen diffusion BC policy (eval mode, no gradients) from `save_base`'s file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"base policy {path} does not exist: train one with `robot-rl train-bc --demos DIR`")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not is_base_state(state):
        found = state.get("format") if isinstance(state, dict) else None
        raise ConfigError(f"{path} is not a diffusion BC checkpoint (format {found!r})")
    if state["version"] > VERSION:
        raise ConfigError(f"{path} was written by a newer robot_rl (version {state['version']} > {VERSION}): upgrade")
    train = dict(state["train"])
    try:
        task, obs, privileged = str(train["task"]), train["obs"], bool(train["privileged"])
    except KeyError as exc:
        raise ConfigError(f"{path} train settings lack {exc.args[0]!r}: a damaged or foreign base checkpoint") from exc
    if obs not in ("state", "pixels"):
        raise ConfigError(f"{path} train settings: obs must be 'state' or 'pixels', got {obs!r}")
    encoder = from_dict(EncoderConfig, train["encoder"], where=f"{path} encoder config")
    dcfg = from_dict(DiffusionConfig, state["diffusion"], where=f"{path} diffusion config")
    layout = ObsLayout(tuple((tuple(p), int(n)) for p, n in state["layout"]["state"]),
                       tuple((tuple(p), tuple(s)) for p, s in state["layout"]["images"]))
    pixels = obs == "pixels"
    policy = DiffusionPolicy(state["state_dim"], state["action_dim"], dcfg,
                             cameras=layout.camera_names if pixels else (),
                             encoder=replace(encoder, pretrained=False) if pixels else None)  # weights: state dict
    policy.load_state_dict(state["state_dict"])
    policy.eval().requires_grad_(False)
    return BaseCheckpoint(policy, layout, task, obs, privileged, encoder, train, json.loads(state["extra"]))
