"""The success classifier model (HIL-SERL's reward classifier) and its checkpoint file.

`SuccessClassifier` maps uint8 camera frames to a success logit; `resize_frames` is the one
resize used in training and at run time; `save_classifier` / `load_classifier` write and read a
self-describing checkpoint (cameras, frame size, encoder, threshold, metrics, weights) that needs
nothing but this module to rebuild the model. Training lives in `robot_rl.rewards.train`, the
reward wrapper in `robot_rl.envs.classifier_reward`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from robot_rl.agents.encoders import EncoderConfig, build_encoder
from robot_rl.atomic import atomic_write
from robot_rl.config import from_dict, to_dict
from robot_rl.errors import ConfigError

CHECKPOINT_FORMAT = "robot_rl.success_classifier"
CHECKPOINT_VERSION = 1


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


# ---- checkpoints -----------------------------------------------------------------------------------


def save_classifier(model: SuccessClassifier, path: str | Path, *,
                    config: Mapping[str, Any] | None = None) -> Path:
    """Write a checkpoint loadable with torch.load(weights_only=True): plain types and tensors only.
    Atomic: a temporary file renamed into place, so a crash never leaves a half-written checkpoint.

    `config` is the training configuration as a plain dict (e.g. `to_dict(ClassifierConfig(...))`),
    stored for the record; loading rebuilds the model from the checkpoint's own fields, not from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "cameras": list(model.cameras),
            "image_hw": list(model.image_hw), "encoder": to_dict(model.encoder_config), "hidden": model.hidden,
            "threshold": model.threshold, "metrics": to_dict(model.metrics),
            "config": to_dict(dict(config)) if config is not None else None,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_write(path) as f:
        torch.save(blob, f)
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
