"""Training a success classifier: `ClassifierConfig`, threshold choice, `robot-rl train-classifier`.

`train_classifier` loads labeled frames (`robot_rl.rewards.data`), trains a `SuccessClassifier`
with balanced BCE, picks its threshold on held-out episodes with `choose_threshold` (the lowest
one meeting a false-positive target), scores it (`robot_rl.rewards.evaluate`) and saves the
checkpoint (`robot_rl.agents.success_classifier`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from robot_rl.agents.encoders import EncoderConfig
from robot_rl.agents.success_classifier import SuccessClassifier, save_classifier
from robot_rl.config import to_dict
from robot_rl.cpu import setup_torch
from robot_rl.data.episodes import read_meta
from robot_rl.errors import ConfigError
from robot_rl.learning.device import check_device_name, resolve_device, to_device
from robot_rl.rewards.data import augment_frames, load_frames, split_episodes
from robot_rl.rewards.evaluate import binary_metrics, episode_false_fires, predict

log = logging.getLogger(__name__)

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
    device: str = "cpu"
    """Training device: cpu, cuda, cuda:N or auto (CUDA when torch sees one). Frames stay in host
    memory; the threshold is chosen and the checkpoint saved on the CPU."""

    def __post_init__(self) -> None:
        check_device_name(self.device)
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
    t1 = time.monotonic()
    loss_avg = fit_classifier(model, data.images, data.labels, train_idx, cfg, device=resolve_device(cfg.device))
    model.to("cpu")  # threshold choice, scoring and the checkpoint on the CPU, where envs run it
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
    save_classifier(model, cfg.out, config=to_dict(cfg))
    report["total_s"] = round(time.monotonic() - t0, 2)
    log.info("classifier: held-out accuracy %.3f, fpr %.3f, fnr %.3f at threshold %.3f → %s",
             at["accuracy"], at["fpr"], at["fnr"], threshold, cfg.out)
    if len(held_idx) and not report["fpr_target_met"]:
        log.warning("classifier: held-out fpr %.3f is above target %.3f even at threshold %.2f: record more "
                    "failure frames like the false positives, or train longer", at["fpr"], cfg.target_fpr, threshold)
    return report


def fit_classifier(model: SuccessClassifier, images: dict[str, np.ndarray], labels: np.ndarray,
                   train_idx: np.ndarray, cfg: ClassifierConfig, *, device: torch.device) -> float:
    """Train `model` (moved to `device`) for `cfg.epochs` epochs of balanced BCE on the frames
    `images[cam][train_idx]` (uint8, host memory) and their 0/1 `labels`; returns the last epoch's
    mean loss. Batches go to the device one at a time; the loss comes back once per epoch."""
    model.to(device)
    y_train = labels[train_idx]
    n_pos, n_neg = int(y_train.sum()), int(len(y_train) - y_train.sum())
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    # Balanced BCE: success frames are rare, and unweighted BCE would learn "never success".
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(n_neg / max(n_pos, 1), device=device))
    # Shuffles and augmentation draw on the CPU: the same run on any device.
    gen = torch.Generator().manual_seed(cfg.seed)
    t1 = time.monotonic()
    loss_avg = float("nan")
    for epoch in range(cfg.epochs):
        model.train()
        losses = []
        for batch in torch.randperm(len(train_idx), generator=gen, device="cpu").split(cfg.batch_size):
            i = train_idx[batch.numpy()]
            frames, target = to_device(({c: images[c][i] for c in model.cameras}, labels[i]), device)
            if cfg.augment:
                frames = {c: augment_frames(v, shift_px=cfg.shift_px, jitter=cfg.jitter, generator=gen)
                          for c, v in frames.items()}
            loss = loss_fn(model(frames), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        loss_avg = torch.stack(losses).mean().item()  # one wait for the device per epoch
        log.info("classifier epoch %d/%d: train loss %.4f (%.0f s)", epoch + 1, cfg.epochs, loss_avg,
                 time.monotonic() - t1)
    return loss_avg


def run(cfg: ClassifierConfig) -> dict[str, Any]:
    """`robot-rl train-classifier`: `train_classifier(cfg)`."""
    return train_classifier(cfg)
