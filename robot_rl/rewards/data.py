"""Success-classifier training data: frame labels, loading recordings, the episode split, augmentation.

`frame_labels` decides each recorded observation's label (operator hotkeys over twin ground
truth), `load_frames` reads recording folders into a `FrameSet` of resized, labeled frames,
`split_episodes` holds out whole episodes, and `augment_frames` perturbs training frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from robot_rl.agents.augmentation import random_shift
from robot_rl.agents.success_classifier import resize_frames
from robot_rl.data.episodes import iter_episodes, read_meta
from robot_rl.errors import ConfigError


def frame_labels(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], *,
                 unlabeled: Literal["success", "skip"] = "success") -> np.ndarray:
    """Label of each of an episode's T+1 observations: int8 (T+1,), 1 success, 0 failure, −1 unused.

    Rule (operator labels win over ground truth):
    1. Observation t+1 is the one after step t, so it takes `success[t]`; observation 0 (the reset
       frame) is a failure unless meta["success_at_reset"] is true. With unlabeled="skip" every
       frame starts at −1 instead.
    2. The episode's verdict, meta["operator_label"] (the last 1/0 hotkey of `robot-rl record`),
       labels the final observation, if the episode has no per-step `label` array.
    3. A `label` array (−1 unlabeled, 0/1 the 1/0 hotkeys) overrides where it is ≥ 0: shape (T,) is
       per step (label[t] → observation t+1, as success), shape (T+1,) per observation.
    """
    steps = int(arrays["action"].shape[0])
    if unlabeled == "skip":
        labels = np.full(steps + 1, -1, np.int8)
    else:
        labels = np.zeros(steps + 1, np.int8)
        labels[0] = bool(meta.get("success_at_reset", False))
        labels[1:] = np.asarray(arrays["success"], dtype=bool)
    operator = arrays.get("label")
    if operator is None:
        if meta.get("operator_label") is not None:
            labels[-1] = bool(meta["operator_label"])
        return labels
    operator = np.asarray(operator).astype(np.int8)
    if operator.shape not in ((steps,), (steps + 1,)) or not np.isin(operator, (-1, 0, 1)).all():
        raise ConfigError(f"label array must be (T,) or (T+1,) with values −1, 0, 1 (T = {steps}), got shape "
                          f"{operator.shape} values {np.unique(operator)[:5]}: re-record or drop it")
    target = labels[1:] if operator.shape == (steps,) else labels
    target[operator >= 0] = operator[operator >= 0]
    return labels


@dataclass(frozen=True)
class FrameSet:
    """Labeled frames: `images[cam]` uint8 (N, h, w, 3), `labels` float32 (N,) in {0, 1},
    `episode` int64 (N,) index into `episode_names`, `has_positive` bool per episode."""

    images: dict[str, np.ndarray]
    labels: np.ndarray
    episode: np.ndarray
    episode_names: tuple[str, ...]
    has_positive: np.ndarray
    episode_kinds: tuple[str | None, ...] = ()
    """meta["kind"] of each episode (collect-frames' success / near_miss / random / policy), None if unset."""


def load_frames(folders: Sequence[str], cameras: Sequence[str] | None, image_hw: tuple[int, int], *,
                unlabeled: Literal["success", "skip"] = "success") -> FrameSet:
    """Every labeled frame of the recordings, resized to `image_hw` (see `frame_labels`).

    Raises:
        ConfigError: folders of different tasks, no episodes, a missing camera, or no labeled frames.
    """
    tasks = {str(f): read_meta(f).get("task") for f in folders}
    if len(set(tasks.values())) > 1:
        raise ConfigError(f"data folders hold different tasks {tasks}: train one classifier per task")
    images: dict[str, list[torch.Tensor]] = {}
    labels, episode, names, has_positive, kinds = [], [], [], [], []
    for folder in folders:
        for ep in iter_episodes(folder):
            recorded = sorted(k[len("obs/images/"):] for k in ep.arrays if k.startswith("obs/images/"))
            if cameras is None:
                cameras = recorded
            missing = [c for c in cameras if c not in recorded]
            if missing:
                raise ConfigError(f"{ep.path} has no images of camera(s) {missing} (it has {recorded}): pass "
                                  f"cameras= a subset every episode has, or record with images on")
            lab = frame_labels(ep.arrays, ep.meta, unlabeled=unlabeled)
            keep = lab >= 0
            for cam in cameras:
                images.setdefault(cam, []).append(resize_frames(ep.observation(f"images/{cam}")[keep], image_hw))
            labels.append(lab[keep].astype(np.float32))
            episode.append(np.full(int(keep.sum()), len(names), np.int64))
            names.append(str(ep.path))
            has_positive.append(bool((lab == 1).any()))
            kinds.append(ep.meta.get("kind"))
    if not names or not cameras:
        raise ConfigError(f"no episodes with images in {list(folders)}: record some first "
                          "(robot-rl record, or collect_twin_frames on a twin)")
    y = np.concatenate(labels)
    if y.size == 0:
        raise ConfigError(f"no labeled frames in {list(folders)}: label frames with the 1/0 hotkeys or use "
                          "unlabeled='success'")
    return FrameSet({cam: torch.cat(v).numpy() for cam, v in images.items()}, y, np.concatenate(episode),
                    tuple(names), np.asarray(has_positive), tuple(kinds))


def split_episodes(has_positive: np.ndarray, held_out_fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out) episode indices. By episode, stratified on whether the episode has a
    success frame, so both sides see successes; each side gets ≥ 1 episode when there are ≥ 2."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for group in (np.flatnonzero(has_positive), np.flatnonzero(~has_positive)):
        group = rng.permutation(group)
        n_held = int(round(held_out_fraction * len(group)))
        held.append(group[:n_held])
        train.append(group[n_held:])
    train_idx, held_idx = np.sort(np.concatenate(train)), np.sort(np.concatenate(held))
    if len(has_positive) >= 2 and (len(train_idx) == 0 or len(held_idx) == 0):
        both = rng.permutation(len(has_positive))
        train_idx, held_idx = np.sort(both[1:]), np.sort(both[:1])
    return train_idx, held_idx


def augment_frames(frames: torch.Tensor, *, shift_px: int, jitter: float, generator: torch.Generator) -> torch.Tensor:
    """uint8 (B, H, W, 3) → uint8 (B, H, W, 3): DrQ random shift, then per-sample contrast ×(1±jitter)
    about the frame mean and brightness ±jitter·255 (lighting on a real cell drifts over a day)."""
    x = random_shift(frames.permute(0, 3, 1, 2), shift_px, generator=generator).float()
    b = x.shape[0]
    # Drawn where the generator lives (a CPU generator gives the same draws for any device), used on x's device.
    contrast = 1.0 + jitter * (2 * torch.rand(b, 1, 1, 1, generator=generator, device=generator.device) - 1)
    brightness = 255.0 * jitter * (2 * torch.rand(b, 1, 1, 1, generator=generator, device=generator.device) - 1)
    contrast, brightness = contrast.to(x.device), brightness.to(x.device)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + brightness
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
