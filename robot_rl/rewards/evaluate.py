"""Scoring a success classifier: batch prediction, frame metrics, first fires, `robot-rl eval-classifier`.

`predict` runs a classifier over loaded frames, `binary_metrics` gives accuracy / FPR / FNR at a
threshold, and `first_fires` / `episode_false_fires` score it the way an RL run feels it: where in
each episode the classifier, used as a reward, first fires. `evaluate_classifier` applies these to
other recordings (e.g. a trained policy's own episodes), per episode kind; training
(`robot_rl.rewards.train`) uses the same functions on its held-out episodes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robot_rl.agents.success_classifier import SuccessClassifier, load_classifier
from robot_rl.errors import ConfigError
from robot_rl.rewards.data import load_frames


def binary_metrics(p: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """accuracy, fpr (false successes / failures), fnr (missed successes / successes) of p > threshold."""
    pred, pos = p > threshold, labels > 0.5
    return {"accuracy": float(np.mean(pred == pos)),
            "fpr": float(np.mean(pred[~pos])) if (~pos).any() else 0.0,
            "fnr": float(np.mean(~pred[pos])) if pos.any() else 0.0}


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
