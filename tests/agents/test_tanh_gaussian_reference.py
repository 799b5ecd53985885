"""TanhGaussianHead's sample and log-prob pinned to torch.distributions' tanh-transformed Normal."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from robot_rl.agents.nets import TanhGaussianHead

N_CASES = 30
"""Random cases; case i draws inputs from np.random.default_rng(SEED + i) and noise from torch seed i."""
SEED = 1717
BATCH, ACTION_DIM, FEATURE_DIM = 16, 7, 12
LOGPROB_F64_ATOL_NATS = 1e-9
"""float64 log-density summed over ACTION_DIM dims (values up to a few hundred nats)."""
SOFTPLUS_CUTOFF_ATOL_NATS = ACTION_DIM * 2.0 * math.exp(-20.0)
"""F.softplus returns its input unchanged above 20 (default threshold), dropping log1p(e^−20):
the squash term is off by ≤ 2·e^−20 ≈ 4e-9 nats per dim where |pre| > 10 (torch's TanhTransform too)."""
LOGPROB_F32_RTOL, LOGPROB_F32_ATOL_NATS = 1e-5, 1e-3
"""float32 head vs a float64 reference at the same pre-tanh sample."""


def reference_log_prob(mean: torch.Tensor, log_std: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """log p(tanh(pre)) of TransformedDistribution(Normal, [Tanh]), in float64; the cached transform
    inverts tanh(pre) to exactly `pre` (atanh of a value near ±1 would not)."""
    tanh = TanhTransform(cache_size=1)
    mean, std, pre = mean.double(), log_std.double().exp(), pre.double()
    dist = TransformedDistribution(Normal(mean, std), [tanh])
    return dist.log_prob(tanh(pre)).sum(-1)


def sample_with_noise(seed: int, mean: torch.Tensor, log_std: torch.Tensor):
    """(action, log_prob) from sample_from, and the pre-tanh value it drew (same seed, same draw)."""
    torch.manual_seed(seed)
    action, log_prob = TanhGaussianHead.sample_from(mean, log_std)
    torch.manual_seed(seed)
    pre = mean + log_std.exp() * torch.randn_like(mean)
    return action, log_prob, pre


def random_inputs(case: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(SEED + case)
    mean = rng.normal(scale=2.0, size=(BATCH, ACTION_DIM))
    log_std = rng.uniform(-5.0, 2.0, size=(BATCH, ACTION_DIM))  # the head's default range is [−10, 2]
    return torch.tensor(mean, dtype=dtype), torch.tensor(log_std, dtype=dtype)


@pytest.mark.parametrize("case", range(N_CASES))
def test_log_prob_matches_torch_distributions_float64(case):
    mean, log_std = random_inputs(case)
    action, log_prob, pre = sample_with_noise(case, mean, log_std)
    assert action.shape == (BATCH, ACTION_DIM) and log_prob.shape == (BATCH,)
    torch.testing.assert_close(action, torch.tanh(pre), rtol=0, atol=0)  # no scaling or offset
    assert torch.all(action.abs() < 1.0)
    torch.testing.assert_close(log_prob, reference_log_prob(mean, log_std, pre), rtol=0,
                               atol=LOGPROB_F64_ATOL_NATS)
    # Independent of torch's (identical) softplus form: log|d tanh/dx| = −2·log cosh x.
    by_hand = (Normal(mean, log_std.exp()).log_prob(pre) + 2.0 * torch.log(torch.cosh(pre))).sum(-1)
    torch.testing.assert_close(log_prob, by_hand, rtol=0, atol=LOGPROB_F64_ATOL_NATS + SOFTPLUS_CUTOFF_ATOL_NATS)


@pytest.mark.parametrize("case", range(N_CASES))
def test_head_sample_float32_matches_reference(case):
    """The float32 head end to end: log_std squashed into [log_std_min, log_std_max], log-prob
    of the returned action equal to the float64 reference."""
    torch.manual_seed(10_000 + case)
    head = TanhGaussianHead(FEATURE_DIM, (32, 32), ACTION_DIM)
    features = torch.tensor(np.random.default_rng(SEED + case).normal(scale=3.0, size=(BATCH, FEATURE_DIM)),
                            dtype=torch.float32)
    with torch.no_grad():
        mean, log_std = head(features)
        assert torch.all(log_std >= head.log_std_min) and torch.all(log_std <= head.log_std_max)
        torch.manual_seed(case)
        action, log_prob = head.sample(features)
        _, _, pre = sample_with_noise(case, mean, log_std)
    torch.testing.assert_close(action, torch.tanh(pre), rtol=0, atol=0)
    torch.testing.assert_close(log_prob.double(), reference_log_prob(mean, log_std, pre),
                               rtol=LOGPROB_F32_RTOL, atol=LOGPROB_F32_ATOL_NATS)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_saturated_float32_action_keeps_a_finite_exact_log_prob(sign):
    """Far out in the tail float32 tanh rounds to exactly ±1: the action is then in the closed
    [−1, 1] and log(1 − tanh²) would be −inf, but the softplus form from `pre` stays exact."""
    mean = torch.full((BATCH, ACTION_DIM), 12.0 * sign)
    log_std = torch.full((BATCH, ACTION_DIM), -3.0)
    action, log_prob, pre = sample_with_noise(0, mean, log_std)
    assert torch.all(action == sign)
    assert torch.all(torch.isinf(torch.log(1.0 - action ** 2)))
    torch.testing.assert_close(log_prob.double(), reference_log_prob(mean, log_std, pre),
                               rtol=LOGPROB_F32_RTOL, atol=LOGPROB_F32_ATOL_NATS)
