"""Pixel encoders in plain torch: a backbone under SERL's spatial-embedding (or average) pooling head.

An `ImageEncoder` maps env frames, uint8 `(batch, H, W, 3)`, to features `(batch, out_dim)`:
ImageNet normalization → backbone feature map `(batch, C, h, w)` → pooling head → Linear →
LayerNorm → tanh. With `frozen=True` the backbone never changes, so a learner can call
`backbone_features` once per frame, store that in its replay buffer and train only `head`.

The backbones and ImageNet weights live in `robot_rl.agents.backbones`; DrQ's random shift in
`robot_rl.agents.augmentation`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from robot_rl.agents.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MIN_IMAGE_SIDE,
    MOBILENET_V2_PACKAGE,
    BackboneName,
    MobileNetV2,
    ResNet10,
    SmallCNN,
    load_mobilenet_v2,
    load_state_dict_file,
)
from robot_rl.errors import ConfigError

log = logging.getLogger(__name__)

PoolName = Literal["spatial", "avg"]


# ---- pooling heads: (batch, C, h, w) → (batch, D) -------------------------------------------------


class SpatialEmbeddings(nn.Module):
    """SERL's learned spatial embeddings: K learned (h, w) kernels per channel, output (batch, C·K).

    Unlike global average pooling, each kernel can weight image regions, so positions survive.
    """

    def __init__(self, channels: int, height: int, width: int, num_kernels: int) -> None:
        super().__init__()
        self.kernels = nn.Parameter(torch.empty(channels, height, width, num_kernels))
        # Each output sums h·w products; 1/√(h·w) keeps it on the scale of one feature value.
        nn.init.normal_(self.kernels, 0.0, (height * width) ** -0.5)
        self.out_dim = channels * num_kernels

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,chwk->bck", features, self.kernels).flatten(1)


class GlobalAvgPool(nn.Module):
    """Mean over positions: (batch, C, h, w) → (batch, C)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.out_dim = channels

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3))


# ---- the encoder ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderConfig:
    """What `build_encoder` needs to rebuild an encoder; save `robot_rl.config.to_dict(cfg)` in checkpoints."""

    name: BackboneName = "small_cnn"
    """Backbone: small_cnn (train from scratch), resnet10 (SERL's size), mobilenet_v2 (ImageNet weights)."""
    image_hw: tuple[int, int] = (128, 128)
    """Input height and width in pixels; the spatial head's kernels are sized for exactly this."""
    frozen: bool = False
    """Freeze the backbone (no grads, BatchNorm stats fixed); the pooling head always trains."""
    pretrained: bool | str = False
    """True: the packaged ImageNet weights (mobilenet_v2 only). A str: a local state dict file, of the
    backbone (small_cnn, resnet10) or of torchvision's whole MobileNetV2. A checkpoint's state dict
    holds the backbone too: to restore one where the file is absent, rebuild with False and load it."""
    out_dim: int = 256
    """Output feature size (SERL: Dense 256)."""
    pool: PoolName = "spatial"
    """spatial: learned spatial embeddings (SERL); avg: global average pooling."""
    num_kernels: int = 8
    """Spatial embeddings per channel (SERL: 8); unused by avg pooling."""

    def __post_init__(self) -> None:
        if self.name not in MIN_IMAGE_SIDE:
            raise ConfigError(f"name must be one of {sorted(MIN_IMAGE_SIDE)}, got {self.name!r}")
        side = MIN_IMAGE_SIDE[self.name]
        if (len(self.image_hw) != 2 or not all(isinstance(v, int) and side <= v <= 1024 for v in self.image_hw)):
            raise ConfigError(f"image_hw must be (height, width) integers in [{side}, 1024] for {self.name}, "
                              f"got {self.image_hw!r}")
        if self.pretrained is True and self.name != "mobilenet_v2":
            raise ConfigError(f"pretrained=True: no packaged weights for {self.name}; pass the path of a state "
                              "dict instead, or use name='mobilenet_v2'")
        if isinstance(self.pretrained, str) and not self.pretrained:
            raise ConfigError("pretrained must be True, False or a weights file path, got an empty string")
        if not 1 <= self.out_dim <= 8192:
            raise ConfigError(f"out_dim must be in [1, 8192], got {self.out_dim}")
        if self.pool not in ("spatial", "avg"):
            raise ConfigError(f"pool must be 'spatial' or 'avg', got {self.pool!r}")
        if not 1 <= self.num_kernels <= 64:
            raise ConfigError(f"num_kernels must be in [1, 64], got {self.num_kernels}")


class ImageEncoder(nn.Module):
    """uint8 frames (batch, H, W, 3) → features (batch, out_dim) in (−1, 1).

    `forward(images) == head(backbone_features(images))`. With `frozen`, the backbone's parameters
    have requires_grad False and it stays in eval mode through `.train()`, so BatchNorm running
    statistics never change; its forward runs under no_grad. Attributes: `config`,
    `feature_shape` (C, h, w) of `backbone_features`, `out_dim`.
    """

    def __init__(self, backbone: nn.Module, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.frozen = config.frozen
        self.out_dim = config.out_dim
        self.backbone = backbone
        # Every backbone sees ImageNet-normalized input, pretrained or not, so the normalization never
        # depends on where the weights came from (a checkpoint rebuilt with pretrained=False matches).
        # (x/255 − mean)/std folded into one multiply-add; buffers so `.to(device)` moves them.
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("shift", -torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / std, persistent=False)
        if self.frozen:
            backbone.requires_grad_(False)
            if config.pretrained is False:
                log.warning("encoder %s: frozen backbone with random weights; only the head will learn", config.name)
        was_training = backbone.training
        with torch.no_grad():
            c, h, w = backbone.eval()(torch.zeros(1, 3, *config.image_hw)).shape[1:]
        backbone.train(was_training and not self.frozen)
        self.feature_shape = (int(c), int(h), int(w))
        self.pool = SpatialEmbeddings(c, h, w, config.num_kernels) if config.pool == "spatial" else GlobalAvgPool(c)
        # tanh, as SERL: bounded features keep the critic's input scale fixed while the encoder trains.
        self.projection = nn.Sequential(nn.Linear(self.pool.out_dim, config.out_dim), nn.LayerNorm(config.out_dim),
                                        nn.Tanh())

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (batch, H, W, 3) → float32 (batch, 3, H, W), ImageNet mean/std normalized."""
        hw = tuple(self.config.image_hw)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[3] != 3 or tuple(images.shape[1:3]) != hw:
            raise ValueError(f"images must be uint8 (batch, {hw[0]}, {hw[1]}, 3), channels last as the env gives "
                             f"them, got {images.dtype} {tuple(images.shape)}")
        # The permuted view stays channels-last in memory: measured 1.4–2× faster convs than contiguous.
        return torch.addcmul(self.shift, images.permute(0, 3, 1, 2).to(torch.float32), self.scale)

    def backbone_features(self, images: torch.Tensor, *, max_batch: int | None = None) -> torch.Tensor:
        """Feature map (batch, C, h, w) float32 of uint8 frames (batch, H, W, 3); see `feature_shape`.

        `max_batch` runs the backbone on chunks of at most that many frames, e.g. to precompute a
        demo buffer: on 2 cores, chunks of 8–32 ran 1.2–2× faster than one batch of 256 (smaller
        activations). Chunks change nothing unless a trainable backbone is in train mode (BatchNorm).
        """
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be a positive number of frames or None, got {max_batch}")
        x = self.normalize(images)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            if max_batch is None or x.shape[0] <= max_batch:
                return self.backbone(x)
            return torch.cat([self.backbone(chunk) for chunk in x.split(max_batch)])

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """Shape of what a replay buffer stores per frame for a frozen backbone: the feature map,
        or with average pooling the pooled vector (C,). Pooling is linear and the backbone fixed,
        so pooling once at storage is exact, and 16× less to store, copy and reduce per update
        (it was most of a pixel update's time on 2 cores)."""
        return self.feature_shape[:1] if isinstance(self.pool, GlobalAvgPool) else self.feature_shape

    def stored_features(self, images: torch.Tensor, *, max_batch: int | None = None) -> torch.Tensor:
        """`backbone_features`, pooled when the head averages: (batch, *stored_shape)."""
        features = self.backbone_features(images, max_batch=max_batch)
        return self.pool(features) if isinstance(self.pool, GlobalAvgPool) else features

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """The trainable part: feature map (batch, C, h, w) → (batch, out_dim); with average
        pooling also the pooled vectors (batch, C) of `stored_features`."""
        if isinstance(self.pool, GlobalAvgPool) and features.ndim == 2 and features.shape[1] == self.feature_shape[0]:
            return self.projection(features)
        if features.ndim != 4 or tuple(features.shape[1:]) != self.feature_shape:
            raise ValueError(f"features must have shape (batch, {', '.join(map(str, self.feature_shape))}), "
                             f"got {tuple(features.shape)}: pass the output of backbone_features")
        return self.projection(self.pool(features))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (batch, H, W, 3) → float32 (batch, out_dim)."""
        return self.head(self.backbone_features(images))


def build_encoder(config: EncoderConfig) -> ImageEncoder:
    """An `ImageEncoder` as `config` describes it, loading pretrained weights if asked.

    Raises:
        ConfigError: a weights path that is missing or does not fit the backbone.
        DependencyMissing: pretrained=True and the MobileNetV2 weights package is not installed.
    """
    path = config.pretrained if isinstance(config.pretrained, str) else None
    backbone: nn.Module
    if config.name == "mobilenet_v2":
        backbone = (load_mobilenet_v2(path) if config.pretrained is not False else MobileNetV2()).features
    else:
        backbone = SmallCNN() if config.name == "small_cnn" else ResNet10()
        if path is not None:
            load_state_dict_file(backbone, path)
    if config.pretrained is not False:
        log.info("encoder %s: pretrained backbone weights loaded from %s", config.name, path or MOBILENET_V2_PACKAGE)
    return ImageEncoder(backbone, config)


def make_encoder(name: BackboneName, *, image_hw: tuple[int, int], frozen: bool, pretrained: bool | str = False,
                 out_dim: int = 256, pool: PoolName = "spatial", num_kernels: int = 8) -> ImageEncoder:
    """`build_encoder(EncoderConfig(...))`; arguments as the `EncoderConfig` fields.

    Raises:
        ConfigError: an invalid field (the message names it), or unusable weights.
        DependencyMissing: pretrained=True and the MobileNetV2 weights package is not installed.
    """
    return build_encoder(EncoderConfig(name=name, image_hw=tuple(image_hw), frozen=frozen, pretrained=pretrained,
                                       out_dim=out_dim, pool=pool, num_kernels=num_kernels))
