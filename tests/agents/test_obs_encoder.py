"""State standardization of the observation encoder."""

from __future__ import annotations

import torch

from robot_rl.agents.obs_encoder import ObsEncoder


def _fitted(states: torch.Tensor) -> ObsEncoder:
    enc = ObsEncoder(states.shape[1])
    enc.set_state_normalization(states)
    return enc.eval()


def test_varying_features_come_out_standardized():
    gen = torch.Generator().manual_seed(0)
    states = torch.stack([0.5 + 0.05 * torch.randn(2000, generator=gen),   # a position, m
                          20.0 * torch.randn(2000, generator=gen)], -1)    # a force, N
    z = _fitted(states)({"state": states})
    assert torch.allclose(z.mean(0), torch.zeros(2), atol=1e-4)
    assert torch.allclose(z.std(0), torch.ones(2), atol=1e-3)


def test_a_channel_quiet_in_the_data_does_not_saturate_on_its_first_wobble():
    # pick_cube's demos never tilt the cube: its quaternion x varies by ~1e-4. A later 0.02 wobble
    # must read as a couple of units, not pin the input at the clip (20 σ, clipped to 10, with the
    # old 1e-3 floor); a tipped cube (0.38) still saturates.
    gen = torch.Generator().manual_seed(1)
    quiet = 1e-4 * torch.randn(2000, generator=gen)
    constant = torch.full((2000,), 0.7)
    enc = _fitted(torch.stack([quiet, constant], -1))
    wobble = enc({"state": torch.tensor([[0.02, 0.72]])})[0]
    assert 1.5 < float(wobble[0]) < 2.5
    assert abs(float(wobble[1]) - 2.0) < 1e-3
    tipped = enc({"state": torch.tensor([[0.38, 0.7]])})[0]
    assert float(tipped[0]) == enc.state_clip
