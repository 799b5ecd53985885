"""Success classifier model: checkpoint round trip, frame resizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.agents.encoders import EncoderConfig
from robot_rl.agents.success_classifier import SuccessClassifier, load_classifier, resize_frames, save_classifier
from robot_rl.errors import ConfigError

LOGIT_ATOL = 1e-6
"""Reloaded weights must give the same logits: same ops, same order."""
SMALL_ENCODER = EncoderConfig(name="small_cnn", image_hw=(32, 32), out_dim=16)


def test_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    model = SuccessClassifier(("front", "wrist"), SMALL_ENCODER, hidden=32, threshold=0.73)
    model.metrics = {"accuracy": 0.97}
    # The training config arrives as a plain dict (rewards.train passes to_dict(cfg)); tuples are stored as lists.
    path = save_classifier(model, tmp_path / "sub" / "c.pt", config={"data": ("d",), "image_hw": (32, 32)})
    assert not list(path.parent.glob("*.tmp"))
    blob = torch.load(path, weights_only=True)  # plain types and tensors only
    assert blob["config"]["image_hw"] == [32, 32]
    loaded = load_classifier(path)
    assert (loaded.cameras, loaded.image_hw, loaded.threshold) == (("front", "wrist"), (32, 32), 0.73)
    assert loaded.metrics == {"accuracy": 0.97} and not loaded.training
    g = torch.Generator().manual_seed(1)
    x = {c: torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8, generator=g) for c in ("front", "wrist")}
    model.eval()
    torch.testing.assert_close(loaded(x), model(x), atol=LOGIT_ATOL, rtol=0)
    # probability() resizes env frames as training did.
    big = {c: np.repeat(np.repeat(v.numpy(), 4, axis=1), 4, axis=2) for c, v in x.items()}
    np.testing.assert_allclose(loaded.probability(big), torch.sigmoid(model(x)).detach().numpy(), atol=1e-6)
    np.testing.assert_array_equal(resize_frames(big["front"], (32, 32)).numpy(), x["front"].numpy())
    with pytest.raises(ConfigError, match="does not exist"):
        load_classifier(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="not a robot_rl success-classifier"):
        load_classifier(tmp_path / "other.pt")
