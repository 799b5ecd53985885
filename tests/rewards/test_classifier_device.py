"""`robot-rl train-classifier --device`: training creates every tensor on the model's device.

As in tests/learning/test_device.py, a "meta" default device stands in for a GPU on this CPU-only
machine: a tensor made without `device=` has no values, and training no longer matches a plain run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.agents.encoders import EncoderConfig
from robot_rl.agents.success_classifier import SuccessClassifier
from robot_rl.rewards.train import ClassifierConfig, fit_classifier

CPU = torch.device("cpu")
HW = (16, 16)


def _fit(default_device: str | None) -> tuple[SuccessClassifier, float]:
    cfg = ClassifierConfig(data=("unused",), image_hw=HW, encoder=EncoderConfig(name="small_cnn", out_dim=8),
                           hidden=8, epochs=2, batch_size=8, shift_px=2, jitter=0.1)
    rng = np.random.default_rng(0)
    images = {"front": rng.integers(0, 255, (20, *HW, 3)).astype(np.uint8)}
    labels = (np.arange(20) % 3 == 0).astype(np.float32)
    torch.manual_seed(0)
    model = SuccessClassifier(("front",), cfg.encoder, hidden=cfg.hidden)
    torch.set_default_device(default_device)
    try:
        loss = fit_classifier(model, images, labels, np.arange(16), cfg, device=CPU)
    finally:
        torch.set_default_device(None)
    return model, loss


def test_classifier_training_creates_every_tensor_on_the_model_device():
    plain, plain_loss = _fit(None)
    meta, meta_loss = _fit("meta")
    assert np.isfinite(meta_loss) and meta_loss == pytest.approx(plain_loss)
    for (name, a), b in zip(plain.state_dict().items(), meta.state_dict().values()):
        assert b.device == CPU, name
        torch.testing.assert_close(b, a, msg=lambda m: f"{name}: {m}")


def test_a_misspelt_classifier_device_is_a_config_error():
    from robot_rl.errors import ConfigError

    with pytest.raises(ConfigError, match="--device must be one of"):
        ClassifierConfig(device="gpu0")
