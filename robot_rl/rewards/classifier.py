"""Binary success classifier on camera frames (HIL-SERL's reward classifier): data, training, reward wrapper.

Pipeline: `collect_twin_frames` records labeled twin episodes → `train_classifier` trains a
`SuccessClassifier` and saves a self-describing checkpoint → `ClassifierReward` wraps an env so
reward and termination come from the classifier (physical arms have no ground truth).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from robot_rl.agents.encoders import EncoderConfig, build_encoder, random_shift
from robot_rl.config import from_dict, to_dict
from robot_rl.cpu import setup_torch
from robot_rl.data.episodes import (
    EpisodeBuffer,
    EpisodeWriter,
    iter_episodes,
    read_meta,
)
from robot_rl.errors import ConfigError
from robot_rl.task_spec import TaskSpec, load_task

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "robot_rl.success_classifier"
CHECKPOINT_VERSION = 1
THRESHOLD_RANGE = (0.5, 0.95)
"""The chosen threshold is clamped here: HIL-SERL uses 0.5–0.85; above 0.95 the classifier is
too unsure to end episodes on, below 0.5 it would call more likely-failures successes."""


@dataclass(frozen=True)
class ClassifierConfig:
    """`robot-rl train-classifier`: train a success classifier on recorded episodes."""

    data: tuple[str, ...] = ("runs/classifier_data/pick_cube",)
    """Recording folders (robot-rl record, or collect_twin_frames) of one task."""
    out: str = "runs/classifier/success_classifier.pt"
    """Checkpoint path (written atomically; parent folders created)."""
    cameras: tuple[str, ...] | None = None
    """Cameras to classify from; None: every camera of the first episode."""
    image_hw: tuple[int, int] = (128, 128)
    """Height and width the classifier sees; frames are area-resized to this on load and at run time.
    On pick_cube's twin frames a 5 cm lift spans a few pixels of the front camera: at 64 px a
    classifier read the arm's height instead and paid a trained policy's lifts 1–2 steps early in 17
    of 30 episodes; at 128 px in 4 (training takes ≈ 4× longer, ≈ 11 min for 7.5k frames)."""
    encoder: EncoderConfig = EncoderConfig(name="small_cnn", image_hw=(128, 128), out_dim=64)
    """Per-camera encoder. Its image_hw is replaced by `image_hw`. Pretrained option:
    EncoderConfig(name="mobilenet_v2", frozen=True, pretrained=True, pool="avg")."""
    hidden: int = 128
    """Width of the MLP on the concatenated camera features."""
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    held_out_fraction: float = 0.2
    """Fraction of episodes (not frames: consecutive frames are near-duplicates) held out."""
    augment: bool = True
    """Random shift and mild brightness/contrast jitter on training frames."""
    shift_px: int | None = None
    """Largest random shift in pixels at `image_hw`; None: 3 per 64 px (DrQ uses 4 at 84 px)."""
    jitter: float = 0.1
    """Brightness and contrast jitter: each scaled or offset by up to ±jitter (of full range)."""
    target_fpr: float = 0.01
    """Threshold = the lowest in [0.5, 0.95] whose held-out false-positive rate is ≤ this. A false
    positive pays reward and ends the episode, a miss only delays it: on pick_cube's twin frames
    0.03 kept threshold 0.5 and 2 hits in a row still fired in 2 of 16 held-out failure episodes;
    0.01 chose 0.68 and none fired, at the same false-negative rate (0.8 %)."""
    unlabeled: Literal["success", "skip"] = "success"
    """Frames without an operator label: take the recorded `success` (twin ground truth; always
    false on a physical arm, so negatives, as in HIL-SERL's recorder) or leave them out."""
    seed: int = 0
    torch_threads: int | None = 1
    """torch.set_num_threads for training (None: torch's default). 1 ran 3× faster than 2 on a
    2-core machine shared with another run; try 2 on an idle one."""

    def __post_init__(self) -> None:
        if isinstance(self.data, str) or not self.data:
            raise ConfigError(f"data must be a non-empty list of recording folders, got {self.data!r}")
        if self.cameras is not None and (not self.cameras or len(set(self.cameras)) != len(self.cameras)):
            raise ConfigError(f"cameras must be None or distinct camera names, got {self.cameras!r}")
        try:  # the encoder sees the resized frames, so its size is derived, never set separately
            object.__setattr__(self, "encoder", dataclasses.replace(self.encoder, image_hw=tuple(self.image_hw)))
        except ConfigError as exc:
            raise ConfigError(f"image_hw {self.image_hw!r} does not fit encoder {self.encoder.name}: {exc}") from exc
        for name in ("hidden", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not 0.0 < self.lr < 1.0:
            raise ConfigError(f"lr must be in (0, 1), got {self.lr}")
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ConfigError(f"held_out_fraction must be in (0, 1), got {self.held_out_fraction}")
        if self.shift_px is None:
            object.__setattr__(self, "shift_px", max(1, round(min(self.image_hw) * 3 / 64)))
        if not 0 <= self.shift_px <= min(self.image_hw) // 4:
            raise ConfigError(f"shift_px must be in [0, {min(self.image_hw) // 4}] at image_hw {self.image_hw}, "
                              f"got {self.shift_px}")
        if not 0.0 <= self.jitter <= 0.5:
            raise ConfigError(f"jitter must be in [0, 0.5], got {self.jitter}")
        if not 0.0 <= self.target_fpr <= 1.0:
            raise ConfigError(f"target_fpr must be in [0, 1], got {self.target_fpr}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"torch_threads must be None or ≥ 1, got {self.torch_threads}")


# ---- the model -----------------------------------------------------------------------------------


def resize_frames(frames: np.ndarray | torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """uint8 (N, H, W, 3) → uint8 (N, h, w, 3) by area averaging; the same op in training and at run time."""
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[3] != 3:
        raise ValueError(f"frames must be uint8 (N, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    if tuple(x.shape[1:3]) == tuple(image_hw):
        return x
    y = F.interpolate(x.permute(0, 3, 1, 2).float(), size=tuple(image_hw), mode="area")
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class SuccessClassifier(nn.Module):
    """uint8 frames per camera → one success logit per sample.

    One encoder per camera, not shared: the wrist and front views share no geometry, and the
    compute is the same either way (it scales with frames); a small CNN's weights are ~40 k.
    Features are concatenated in `cameras` order → Linear → ReLU → Linear → logit.
    Attributes: `cameras`, `image_hw`, `threshold` (p above it = success), `metrics` (from training).
    """

    def __init__(self, cameras: Sequence[str], encoder: EncoderConfig, *, hidden: int = 128,
                 threshold: float = 0.5) -> None:
        super().__init__()
        if not cameras:
            raise ConfigError("cameras must name at least one camera")
        self.cameras = tuple(cameras)
        self.image_hw = tuple(encoder.image_hw)
        self.encoder_config = encoder
        self.hidden = hidden
        self.threshold = float(threshold)
        self.metrics: dict[str, Any] = {}
        self.encoders = nn.ModuleDict({cam: build_encoder(encoder) for cam in self.cameras})
        self.mlp = nn.Sequential(nn.Linear(encoder.out_dim * len(self.cameras), hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, images: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """images[cam]: uint8 (B, *image_hw, 3) → logits float32 (B,)."""
        return self.mlp(torch.cat([self.encoders[cam](images[cam]) for cam in self.cameras], dim=1)).squeeze(1)

    @torch.no_grad()
    def probability(self, images: Mapping[str, np.ndarray]) -> np.ndarray:
        """p(success) (B,) of env frames: images[cam] uint8 (H, W, 3) or (B, H, W, 3), any H, W."""
        missing = [cam for cam in self.cameras if cam not in images]
        if missing:
            raise ConfigError(f"classifier needs cameras {list(self.cameras)}, observation lacks {missing}: "
                              f"build the env with image_obs=True and these cameras")
        batch = {}
        for cam in self.cameras:
            x = np.asarray(images[cam])
            batch[cam] = resize_frames(x[None] if x.ndim == 3 else x, self.image_hw)
        was_training = self.training
        self.eval()
        p = torch.sigmoid(self(batch)).numpy()
        self.train(was_training)
        return p


# ---- labels and data ------------------------------------------------------------------------------


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


def choose_threshold(p: np.ndarray, labels: np.ndarray, target_fpr: float,
                     bounds: tuple[float, float] = THRESHOLD_RANGE) -> float:
    """Lowest threshold t in `bounds` with false-positive rate mean(p[neg] > t) ≤ target_fpr
    (the upper bound if none reaches it). FPR only drops at a negative's p, so those are the candidates."""
    neg = np.sort(p[labels < 0.5])
    lo, hi = bounds
    for t in [lo, *neg[(neg > lo) & (neg < hi)], hi]:
        if neg.size == 0 or np.mean(neg > t) <= target_fpr:
            return float(t)
    return float(hi)


def binary_metrics(p: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """accuracy, fpr (false successes / failures), fnr (missed successes / successes) of p > threshold."""
    pred, pos = p > threshold, labels > 0.5
    return {"accuracy": float(np.mean(pred == pos)),
            "fpr": float(np.mean(pred[~pos])) if (~pos).any() else 0.0,
            "fnr": float(np.mean(~pred[pos])) if pos.any() else 0.0}


# ---- training --------------------------------------------------------------------------------------


def augment_frames(frames: torch.Tensor, *, shift_px: int, jitter: float, generator: torch.Generator) -> torch.Tensor:
    """uint8 (B, H, W, 3) → uint8 (B, H, W, 3): DrQ random shift, then per-sample contrast ×(1±jitter)
    about the frame mean and brightness ±jitter·255 (lighting on a real cell drifts over a day)."""
    x = random_shift(frames.permute(0, 3, 1, 2), shift_px, generator=generator).float()
    b = x.shape[0]
    contrast = 1.0 + jitter * (2 * torch.rand(b, 1, 1, 1, generator=generator) - 1)
    brightness = 255.0 * jitter * (2 * torch.rand(b, 1, 1, 1, generator=generator) - 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + brightness
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def predict(model: SuccessClassifier, images: Mapping[str, np.ndarray], index: np.ndarray, *,
            batch: int = 256) -> np.ndarray:
    """p(success) (len(index),) of already resized frames `images[cam][index]`."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(index), batch):
            i = index[start:start + batch]
            out.append(torch.sigmoid(model({c: torch.from_numpy(images[c][i]) for c in model.cameras})).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def first_fires(p: np.ndarray, y: np.ndarray, episode: np.ndarray, threshold: float,
                consecutive: int) -> dict[int, tuple[int | None, int | None]]:
    """Per episode: (frame index within the episode at which the classifier, `consecutive` hits in a
    row, first fires, or None; steps from there to the next success label, 0 on a success frame,
    None if none follows). Frames of each episode must be in time order."""
    out = {}
    for e in np.unique(episode):
        m = episode == e
        hits, labels = p[m] > threshold, y[m] > 0.5
        streak, fire = 0, None
        for t, hit in enumerate(hits):
            streak = streak + 1 if hit else 0
            if streak >= consecutive:
                fire = t
                break
        later = np.flatnonzero(labels[fire:]) if fire is not None else np.zeros(0, int)
        out[int(e)] = (fire, int(later[0]) if later.size else None)
    return out


def episode_false_fires(p: np.ndarray, y: np.ndarray, episode: np.ndarray, threshold: float,
                        consecutive: int) -> float:
    """Fraction of episodes in which the classifier, used as a reward with `consecutive` hits in a
    row, would first fire on a failure frame. Frames of each episode must be in time order. This
    is what an RL run feels: a per-frame false-positive rate of 1.5 % is a false success in about
    one episode of six."""
    fires = first_fires(p, y, episode, threshold, consecutive)
    if not fires:
        return 0.0
    # steps to the next success is 0 exactly when the fire is on a success frame
    return sum(fire is not None and to_success != 0 for fire, to_success in fires.values()) / len(fires)


@dataclass(frozen=True)
class ClassifierEvalConfig:
    """`robot-rl eval-classifier`: score a trained classifier on other recordings, e.g. a trained
    policy's own episodes (collect-frames --policy), per episode kind."""

    classifier: str
    """Checkpoint of `robot-rl train-classifier`."""
    data: tuple[str, ...]
    """Recording folders, labeled as for training (twin ground truth or operator hotkeys)."""
    consecutive: int = 2
    """Hits in a row that end an episode, as `robot-rl train --classifier-consecutive`."""
    threshold: float | None = None
    """Override of the checkpoint's threshold."""

    def __post_init__(self) -> None:
        if isinstance(self.data, str) or not self.data:
            raise ConfigError(f"data must be a non-empty list of recording folders, got {self.data!r}")
        if self.consecutive < 1:
            raise ConfigError(f"consecutive must be ≥ 1, got {self.consecutive}")
        if not Path(self.classifier).is_file():
            raise ConfigError(f"classifier {self.classifier} does not exist: train one with robot-rl train-classifier")


def evaluate_classifier(cfg: ClassifierEvalConfig) -> dict[str, Any]:
    """Frame accuracy / FPR / FNR at the threshold and, per episode, whether the classifier used as
    a reward would end it on a failure frame (a false success), overall and per episode kind.

    `false_fire_steps_early` counts the false successes by how many steps before the next success
    frame they fired ("never" when none followed): 1–2 steps early means the classifier is a lift
    too eager, "never" that it pays for something else entirely.
    """
    t0 = time.monotonic()
    model = load_classifier(cfg.classifier)
    threshold = float(model.threshold if cfg.threshold is None else cfg.threshold)
    data = load_frames(cfg.data, model.cameras, model.image_hw)
    p = predict(model, data.images, np.arange(len(data.labels)))
    fires = first_fires(p, data.labels, data.episode, threshold, cfg.consecutive)

    def summary(episodes: list[int]) -> dict[str, Any]:
        frames = np.isin(data.episode, episodes)
        false = [e for e in episodes if fires[e][0] is not None and fires[e][1] != 0]
        early: dict[str, int] = {}
        for e in false:
            key = "never" if fires[e][1] is None else str(fires[e][1]) if fires[e][1] <= 2 else ">2"
            early[key] = early.get(key, 0) + 1
        return {"episodes": len(episodes), "frames": int(frames.sum()),
                **binary_metrics(p[frames], data.labels[frames], threshold),
                "episode_false_fire_rate": len(false) / max(1, len(episodes)),
                "false_fire_steps_early": dict(sorted(early.items()))}

    every = sorted(fires)
    kinds = sorted({k for k in data.episode_kinds if k is not None})
    return {"classifier": cfg.classifier, "threshold": threshold, "consecutive": cfg.consecutive, **summary(every),
            "by_kind": {k: summary([e for e in every if data.episode_kinds[e] == k]) for k in kinds},
            "wall_s": round(time.monotonic() - t0, 2)}


def train_classifier(cfg: ClassifierConfig) -> dict[str, Any]:
    """Train on `cfg.data`, choose the threshold on held-out episodes, save `cfg.out`; returns the report.

    The report holds counts (frames, positives, negatives, episodes per side), the threshold and
    held-out accuracy / fpr / fnr at it (and at 0.5), the final training loss and wall times (s).
    The threshold is chosen on the same held-out frames it is scored on, so the held-out FPR is
    slightly optimistic; more held-out episodes shrink that bias.

    Raises:
        ConfigError: unusable data (see `load_frames`), or no success / no failure frames to train on.
    """
    t0 = time.monotonic()
    setup_torch(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    data = load_frames(cfg.data, cfg.cameras, cfg.image_hw, unlabeled=cfg.unlabeled)
    cameras = tuple(data.images)
    train_ep, held_ep = split_episodes(data.has_positive, cfg.held_out_fraction, seed=cfg.seed)
    train_idx = np.flatnonzero(np.isin(data.episode, train_ep))
    held_idx = np.flatnonzero(np.isin(data.episode, held_ep))
    y_train = data.labels[train_idx]
    n_pos, n_neg = int(y_train.sum()), int(len(y_train) - y_train.sum())
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(f"training episodes hold {n_pos} success and {n_neg} failure frames: the classifier "
                          "needs both; record successful and failed episodes (or label frames)")
    load_s = time.monotonic() - t0
    log.info("classifier data: %d frames (%d train: %d pos / %d neg; %d held out) from %d episodes, cameras %s, "
             "%.1f s", len(data.labels), len(train_idx), n_pos, n_neg, len(held_idx), len(data.episode_names),
             cameras, load_s)
    model = SuccessClassifier(cameras, cfg.encoder, hidden=cfg.hidden)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    # Balanced BCE: success frames are rare, and unweighted BCE would learn "never success".
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(n_neg / n_pos))
    gen = torch.Generator().manual_seed(cfg.seed)
    t1 = time.monotonic()
    loss_avg = float("nan")
    for epoch in range(cfg.epochs):
        model.train()
        losses = []
        for batch in torch.randperm(len(train_idx), generator=gen).split(cfg.batch_size):
            i = train_idx[batch.numpy()]
            images = {c: torch.from_numpy(data.images[c][i]) for c in cameras}
            if cfg.augment:
                images = {c: augment_frames(v, shift_px=cfg.shift_px, jitter=cfg.jitter, generator=gen)
                          for c, v in images.items()}
            loss = loss_fn(model(images), torch.from_numpy(data.labels[i]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        loss_avg = float(np.mean(losses))
        log.info("classifier epoch %d/%d: train loss %.4f (%.0f s)", epoch + 1, cfg.epochs, loss_avg,
                 time.monotonic() - t1)
    train_s = time.monotonic() - t1
    p_held = predict(model, data.images, held_idx)
    y_held = data.labels[held_idx]
    threshold = choose_threshold(p_held, y_held, cfg.target_fpr)
    model.threshold = threshold
    at = binary_metrics(p_held, y_held, threshold)
    at_half = binary_metrics(p_held, y_held, 0.5)
    report: dict[str, Any] = {
        "task": read_meta(cfg.data[0]).get("task"), "cameras": list(cameras), "image_hw": list(cfg.image_hw),
        "episodes_train": len(train_ep), "episodes_held_out": len(held_ep),
        "frames_train": len(train_idx), "positives_train": n_pos, "negatives_train": n_neg,
        "frames_held_out": len(held_idx), "positives_held_out": int(y_held.sum()),
        "negatives_held_out": int(len(y_held) - y_held.sum()),
        "threshold": threshold, **at, "fpr_target_met": at["fpr"] <= cfg.target_fpr,
        **{f"{k}_at_0.5": v for k, v in at_half.items()},
        **{f"episode_false_fire_rate_{k}_in_a_row": round(episode_false_fires(p_held, y_held, data.episode[held_idx],
                                                                                threshold, k), 4) for k in (1, 2, 3)},
        "final_train_loss": loss_avg, "load_s": round(load_s, 2), "train_s": round(train_s, 2),
        "checkpoint": str(cfg.out)}
    model.metrics = report
    save_classifier(model, cfg.out, config=cfg)
    report["total_s"] = round(time.monotonic() - t0, 2)
    log.info("classifier: held-out accuracy %.3f, fpr %.3f, fnr %.3f at threshold %.3f → %s",
             at["accuracy"], at["fpr"], at["fnr"], threshold, cfg.out)
    if len(held_idx) and not report["fpr_target_met"]:
        log.warning("classifier: held-out fpr %.3f is above target %.3f even at threshold %.2f: record more "
                    "failure frames like the false positives, or train longer", at["fpr"], cfg.target_fpr, threshold)
    return report


def run(cfg: ClassifierConfig) -> dict[str, Any]:
    """`robot-rl train-classifier`: `train_classifier(cfg)`."""
    return train_classifier(cfg)


# ---- checkpoints -----------------------------------------------------------------------------------


def save_classifier(model: SuccessClassifier, path: str | Path, *, config: ClassifierConfig | None = None) -> Path:
    """Write a checkpoint loadable with torch.load(weights_only=True): plain types and tensors only.
    Atomic: a temporary file renamed into place, so a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "cameras": list(model.cameras),
            "image_hw": list(model.image_hw), "encoder": to_dict(model.encoder_config), "hidden": model.hidden,
            "threshold": model.threshold, "metrics": to_dict(model.metrics),
            "config": to_dict(config) if config is not None else None,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def load_classifier(path: str | Path) -> SuccessClassifier:
    """The classifier saved at `path`, in eval mode, with its `threshold`, `cameras`, `image_hw`, `metrics`.

    Raises:
        ConfigError: the file is missing or is not a success-classifier checkpoint of this version.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"classifier checkpoint {path} does not exist: train one with `robot-rl train-classifier`")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a corrupt or foreign file
        raise ConfigError(f"{path} is not a loadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a robot_rl success-classifier checkpoint")
    if blob.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(f"{path} has checkpoint version {blob.get('version')}, this code reads "
                          f"{CHECKPOINT_VERSION}: retrain the classifier")
    # The state dict holds the backbone too, so pretrained weights need not be present to restore it.
    encoder = dataclasses.replace(from_dict(EncoderConfig, blob["encoder"], where="encoder"), pretrained=False)
    model = SuccessClassifier(blob["cameras"], encoder, hidden=int(blob["hidden"]), threshold=blob["threshold"])
    model.load_state_dict(blob["state_dict"], strict=True)
    model.metrics = dict(blob.get("metrics") or {})
    return model.eval()


# ---- run-time reward ---------------------------------------------------------------------------------


class ClassifierReward(gym.Wrapper):
    """Reward 1 and termination when the classifier says success; 0 and no termination otherwise.

    Every step computes p = p(success) of the observation's images (resized as in training);
    success = p > threshold and (proprio_check(obs) if given). info gets `classifier_p`,
    `success` (the classifier's decision), and `env_success` / `env_reward` (what the wrapped env
    said, e.g. twin ground truth for evaluation). Truncation passes through. When the wrapped env
    ends an episode itself (twin_success tasks) and the classifier disagrees, the step becomes a
    truncation: the episode still ends, but is not scored a success. Use reward type `none` on
    physical arms. Single-threaded, like the env it wraps.

    Args:
        env: an env whose Dict observation has "images" with every camera the classifier uses.
        classifier: a `SuccessClassifier` or a checkpoint path (`load_classifier`).
        threshold: override of the checkpoint's threshold.
        proprio_check: obs → bool, ANDed with the image test, e.g. `lambda o: o["gripper_width"][0] > 0.01`.
        consecutive: success needs the test to hold on this many consecutive steps. A per-frame
            false-positive rate of 1.5 % fires falsely in one episode of six over 60 steps; two
            frames in a row cut that about threefold on pick_cube's held-out episodes (README).
    """

    def __init__(self, env: gym.Env, classifier: SuccessClassifier | str | os.PathLike, *,
                 threshold: float | None = None, proprio_check: Callable[[dict[str, Any]], bool] | None = None,
                 consecutive: int = 1) -> None:
        super().__init__(env)
        if consecutive < 1:
            raise ConfigError(f"consecutive must be ≥ 1, got {consecutive}")
        self.consecutive = consecutive
        self._streak = 0
        self.classifier = classifier if isinstance(classifier, nn.Module) else load_classifier(classifier)
        self.classifier.eval()
        self.threshold = float(self.classifier.threshold if threshold is None else threshold)
        if not 0.0 <= self.threshold < 1.0:
            raise ConfigError(f"threshold must be in [0, 1), got {self.threshold}")
        self.proprio_check = proprio_check
        space = env.observation_space
        served = list(space["images"].spaces) if isinstance(space, gym.spaces.Dict) and "images" in space.spaces else []
        missing = [c for c in self.classifier.cameras if c not in served]
        if missing:
            raise ConfigError(f"classifier needs cameras {list(self.classifier.cameras)}; the env's observation "
                              f"has images {served}: build the env with image_obs=True and those cameras")

    def _p(self, obs: dict[str, Any]) -> float:
        return float(self.classifier.probability(obs["images"])[0])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._streak = 0
        return obs, {**info, "classifier_p": self._p(obs)}

    def step(self, action):
        obs, env_reward, env_terminated, truncated, info = self.env.step(action)
        p = self._p(obs)
        hit = p > self.threshold and (self.proprio_check is None or bool(self.proprio_check(obs)))
        self._streak = self._streak + 1 if hit else 0
        success = self._streak >= self.consecutive
        extra = {"classifier_p": p, "env_reward": float(env_reward), "success": success}
        if "success" in info:
            extra["env_success"] = bool(info["success"])
        info = {**info, **extra}
        return obs, 1.0 if success else 0.0, success, bool(truncated or (env_terminated and not success)), info


@dataclass(frozen=True)
class CollectConfig:
    """`robot-rl collect-frames`: record twin episodes labeled by ground truth for a success
    classifier (successes, near misses, random motion); see `collect_twin_frames`."""

    task: str = "pick_cube"
    out: str = "runs/classifier_data/pick_cube"
    episodes: int = 60
    seed: int = 0
    cameras: tuple[str, ...] | None = None
    """The task's cameras to record (default: all of them)."""
    near_miss_fraction: float = 0.3
    random_fraction: float = 0.3
    policy: str | None = None
    """A `robot-rl train` run folder (or checkpoint) on this task: a share of the episodes are the
    policy's own, labeled by the twin. HIL-SERL's loop: a policy rewarded by a classifier finds the
    frames it wrongly pays for; recording them and retraining closes the hole."""
    policy_fraction: float | None = None
    """Share of policy episodes; default with `policy`: all but the near misses and random
    episodes (the policy's successes stand in for the expert's). Expert successes take the rest."""
    policy_deterministic: bool = False
    """Act with the policy's mean; default samples, as the actor does while training."""

    def __post_init__(self) -> None:
        if self.policy is None and self.policy_fraction is not None:
            raise ConfigError("policy_fraction needs --policy RUN (a robot-rl train run folder or checkpoint)")
        if self.policy is not None and not Path(self.policy).exists():
            raise ConfigError(f"policy {self.policy} does not exist: give a robot-rl train run folder or checkpoint")


def run_collect(cfg: CollectConfig) -> dict[str, Any]:
    """`robot-rl collect-frames`."""
    make_policy = None
    if cfg.policy is not None:
        from robot_rl.learning.evaluate import checkpoint_policy  # lazy: only recording a policy needs the agent

        def make_policy(env: gym.Env) -> Callable[[Any], np.ndarray]:
            return checkpoint_policy(cfg.policy, env, cfg.task, deterministic=cfg.policy_deterministic, seed=cfg.seed)

    policy_fraction = cfg.policy_fraction
    if cfg.policy is None:
        policy_fraction = 0.0
    elif policy_fraction is None:
        policy_fraction = max(0.0, 1.0 - cfg.near_miss_fraction - cfg.random_fraction)
    return collect_twin_frames(cfg.task, cfg.out, cfg.episodes, seed=cfg.seed, cameras=cfg.cameras,
                               near_miss_fraction=cfg.near_miss_fraction, random_fraction=cfg.random_fraction,
                               policy_fraction=policy_fraction, make_policy=make_policy, policy_name=cfg.policy)


# ---- twin data without human labels -------------------------------------------------------------------

EPISODE_KINDS = ("success", "near_miss", "random", "policy")
GRASP_ABOVE_CENTER_M = 0.025
"""Half of the expert's episodes close the fingers up to this far above the cube's centre. A
trained policy grasped near the top edge (tool 1.8 cm above the centre, median) and a classifier
that had only seen centre grasps paid it ~1.7 cm early: it read the arm's height, not the cube's."""


def collect_twin_frames(task: str | TaskSpec, out_dir: str | Path, episodes: int, *, seed: int = 0,
                        expert_noise: float = 0.1, near_miss_fraction: float = 0.3, random_fraction: float = 0.3,
                        hold_steps: tuple[int, int] = (8, 20), release_probability: float = 0.6,
                        max_steps: int | None = None, cameras: Sequence[str] | None = None,
                        policy_fraction: float = 0.0,
                        make_policy: Callable[[gym.Env], Callable[[Any], np.ndarray]] | None = None,
                        policy_name: str | None = None) -> dict[str, Any]:
    """Record twin episodes labeled by ground truth (per-step `success`) for classifier training.

    Episode kinds, drawn per episode (on pick_cube, half of the expert's grasps are made up to
    `GRASP_ABOVE_CENTER_M` above the cube's centre):
    - success: the noisy scripted expert until the twin reports success, then `hold_steps` of
      wandering with the object held (positives), then with `release_probability` the gripper
      opens and the object falls (negatives that look like the scene just after a success);
    - near_miss (pick_cube): the expert grasps, then hovers the cube 0.5 cm to 2 mm short of the
      success height (5 cm; half of them in its last 1.5 cm) for `hold_steps`, then may release;
      other tasks: the expert stops part way;
    - random: the expert for a random number of steps, then either a smoothed random walk with
      random gripper toggles or (half of them) a fresh uniform action every step, as an untrained
      policy acts, 30–60 steps in all. The second kind matters: gripper commands inside the hold
      band (−0.5, 0.5) stop the fingers part way, and a classifier that never saw half-closed
      fingers near the cube took them for a grasp (it fired at the start of 6 of 12 such episodes);
    - policy (with `make_policy`): a trained policy acts from the start; after a ground-truth
      success it holds and may release like the expert's successes. A policy rewarded by a
      classifier goes where that classifier errs, so these frames hold its false positives.
    Runs an in-process twin; ≈ 17 env steps/s with two 128 px cameras on 2 loaded cores
    (rendering dominates, so fewer or smaller cameras record faster).

    Args:
        task: task name or spec; must have a twin (ground truth) and a scripted expert.
        out_dir: recording folder (created; existing episodes of the same task are kept).
        episodes: episodes to record; max_steps caps each (default: the task's episode_steps).
        cameras: the task's cameras to record (default: all); pass a TaskSpec with smaller
            `cameras` sizes to render smaller frames.
        policy_fraction: share of policy episodes; needs `make_policy`, called once with the
            recording env (image and privileged observations on) to give obs → action.
        policy_name: recorded in each policy episode's metadata (e.g. the run folder).

    Returns:
        {"out", "episodes", "frames", "positives", "kinds": {kind: count}, "wall_s"}.
    """
    from robot_rl.envs.robot_env import (
        RobotEnv,  # env and expert import the twin: only when collecting
    )
    from robot_rl.teleop.scripted import make_expert

    spec = task if isinstance(task, TaskSpec) else load_task(task)
    if cameras is not None:
        unknown = sorted(set(cameras) - {c.name for c in spec.cameras})
        if unknown:
            raise ConfigError(f"cameras {unknown} are not cameras of task {spec.name} "
                              f"({[c.name for c in spec.cameras]})")
        spec = dataclasses.replace(spec, cameras=tuple(c for c in spec.cameras if c.name in cameras))
    fractions = (near_miss_fraction, random_fraction, policy_fraction)
    if episodes < 1 or sum(fractions) > 1 + 1e-9 or min(fractions) < 0:  # 0.2 + 0.1 + 0.7 > 1 in floats
        raise ConfigError(f"need episodes ≥ 1 and near_miss, random and policy fractions ≥ 0 summing to ≤ 1, got "
                          f"{episodes}, {near_miss_fraction}, {random_fraction}, {policy_fraction}")
    if policy_fraction > 0 and make_policy is None:
        raise ConfigError("policy_fraction > 0 needs make_policy (collect-frames --policy RUN)")
    if not 1 <= hold_steps[0] <= hold_steps[1]:
        raise ConfigError(f"hold_steps must be (low, high) with 1 ≤ low ≤ high, got {hold_steps}")
    if spec.twin is None:
        raise ConfigError(f"task {spec.name} has no twin: ground-truth labels need one (label frames by hand instead)")
    rng = np.random.default_rng(seed)
    expert = make_expert(spec, seed=seed, noise=expert_noise)
    writer = EpisodeWriter(out_dir, spec)
    env = RobotEnv(spec, in_process=True, image_obs=True, privileged_obs=True)
    policy = None
    if policy_fraction > 0:
        try:
            policy = make_policy(env)
        except BaseException:
            env.close()
            raise
    t0 = time.monotonic()
    kinds = dict.fromkeys(EPISODE_KINDS, 0)
    frames = positives = 0
    try:
        for i in range(episodes):
            u = rng.random()
            kind = "random" if u < random_fraction else "near_miss" if u < random_fraction + near_miss_fraction \
                else "policy" if u < sum(fractions) else "success"
            buf = _twin_episode(env, expert, kind, rng, seed=seed + i, hold_steps=hold_steps,
                                release_probability=release_probability, max_steps=max_steps or spec.episode_steps,
                                policy=policy)
            meta = {"source": "classifier_collect", "kind": kind, "seed": seed + i, "operator_label": None}
            if kind == "policy":
                meta["policy"] = policy_name
            writer.save(buf, meta)
            kinds[kind] += 1
            frames += len(buf) + 1
            positives += int(sum(buf.success))
            log.info("collect %d/%d: %s, %d steps, %d success frames", i + 1, episodes, kind, len(buf),
                     sum(buf.success))
    finally:
        env.close()
    return {"out": str(writer.dir), "episodes": episodes, "frames": frames, "positives": positives, "kinds": kinds,
            "wall_s": round(time.monotonic() - t0, 2)}


def _twin_episode(env: Any, expert: Any, kind: str, rng: np.random.Generator, *, seed: int,
                  hold_steps: tuple[int, int], release_probability: float, max_steps: int,
                  policy: Callable[[Any], np.ndarray] | None = None) -> EpisodeBuffer:
    """One episode of `collect_twin_frames`; a phase machine over expert / policy / random / hover / hold / release."""
    obs, info = env.reset(seed=seed)
    expert.reset()
    if hasattr(expert, "grasp_above_center_m"):  # pick_cube: see GRASP_ABOVE_CENTER_M
        expert.grasp_above_center_m = rng.uniform(0.0, GRASP_ABOVE_CENTER_M) if rng.random() < 0.5 else 0.0
    buf = EpisodeBuffer()
    buf.start(obs, info)
    scale_m = env.task.action.translation_scale_m
    cube = "cube_pose" in info["privileged"]
    phase = "policy" if kind == "policy" else "expert"
    switch_at = int(rng.integers(0, 45)) if kind == "random" else int(rng.integers(15, 40))
    left = int(rng.integers(hold_steps[0], hold_steps[1] + 1))
    # Cube heights above its rest height [m]; success needs the lift height (pick_cube: 5 cm). Half
    # of the near misses hover within 1.5 cm below it: without them the classifier never saw
    # 4–5 cm, and a policy rewarded by it learned to stop there (it fired at 3.6–4.9 cm lifts).
    lift_m = env.task.twin.pick_cube.lift_height_m  # collect_twin_frames refuses tasks without a twin
    if kind == "near_miss":
        band_m = 0.015
        low_m, high_m = (0.005, lift_m - band_m) if rng.random() < 0.5 else (lift_m - band_m, lift_m - 0.002)
    else:
        low_m, high_m = lift_m + 0.02, lift_m + 0.10
    hover_m = rng.uniform(low_m, high_m)
    rest_z = None
    walk = np.zeros(7)
    jerky = kind == "random" and rng.random() < 0.5
    if kind == "random":  # mostly easy negatives: keep them from crowding out the rest
        max_steps = min(max_steps, int(rng.integers(30, 61)))
    for t in range(max_steps):
        if phase == "expert":
            if kind == "random" and t >= switch_at:
                phase = "random"
            elif kind == "near_miss" and (getattr(expert, "phase", None) == "lift" if cube else t >= switch_at):
                phase = "hold"
        action = np.zeros(7)
        if phase == "expert":
            action = expert.act(obs, info)
        elif phase == "policy":
            action = np.asarray(policy(obs), np.float64)
        elif phase == "random" and jerky:  # an untrained policy: every step new, the gripper stopped part way
            action[:3], action[5], action[6] = rng.uniform(-1.0, 1.0, 3), rng.uniform(-0.3, 0.3), rng.uniform(-1.0, 1.0)
        elif phase == "random":
            walk = 0.7 * walk + 0.3 * rng.normal(0.0, 1.0, 7)
            action[:3], action[5] = walk[:3], 0.3 * walk[5]
            action[6] = 1.0 if walk[6] > 0 else -1.0
        elif phase == "hold":
            action[:2] = rng.normal(0.0, 0.3, 2)
            action[6] = 1.0
            if cube:
                z = float(info["privileged"]["cube_pose"][2])
                rest_z = z if rest_z is None else rest_z
                action[2] = (rest_z + hover_m - z) / scale_m
        elif phase == "release":
            action[6] = -1.0
        obs, reward, terminated, truncated, info = env.step(np.clip(action, -1.0, 1.0))
        buf.add(action, obs, reward, terminated, truncated, info, intervention=False)
        if info.get("reflex"):
            break
        if phase in ("expert", "policy") and kind in ("success", "policy") and info["success"]:
            phase, rest_z = "hold", None
            if cube:  # hold relative to the table, not to where success first registered
                rest_z = float(info["privileged"]["cube_pose"][2]) - lift_m
        elif phase == "hold":
            left -= 1
            if left <= 0:
                if rng.random() >= release_probability:
                    break
                phase, left = "release", int(rng.integers(4, 10))
        elif phase == "release":
            left -= 1
            if left <= 0:
                break
    return buf
