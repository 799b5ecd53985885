"""Diffusion BC mechanics: deterministic sampling given the noise, chunk alignment, the action
queue, normalization, and a few updates decrease the loss."""

import numpy as np
import pytest
import torch

from robot_rl.agents.diffusion import ChunkedPolicy, DiffusionConfig, DiffusionPolicy, MinMax, cosine_alpha_bars, mish

CFG = DiffusionConfig(obs_horizon=2, pred_horizon=8, action_horizon=4, hidden=64, blocks=2, inference_steps=5,
                      train_timesteps=50)


def make_policy(seed=0, cfg=CFG, state_dim=5, action_dim=3):
    torch.manual_seed(seed)
    policy = DiffusionPolicy(state_dim, action_dim, cfg)
    policy.fit_normalization(torch.randn(100, state_dim) * 3, torch.rand(100, action_dim) * 4 - 1)
    return policy.eval()


def test_sample_is_deterministic_given_the_noise():
    policy = make_policy()
    obs = {"state": torch.randn(4, 2, 5)}
    noise = torch.randn(4, *policy.chunk_shape)
    a = policy.sample(obs, noise)
    b = policy.sample(obs, noise.clone())
    assert a.shape == (4, 8, 3)
    assert torch.equal(a, b)
    c = policy.sample(obs, torch.randn(4, *policy.chunk_shape))
    assert not torch.allclose(a, c)
    # Actions come back in env units, inside the demo range.
    assert (a >= policy.action_norm.mid - policy.action_norm.half_range - 1e-5).all()
    assert (a <= policy.action_norm.mid + policy.action_norm.half_range + 1e-5).all()


def test_sample_rejects_wrongly_shaped_noise():
    policy = make_policy()
    with pytest.raises(ValueError, match="noise must have shape"):
        policy.sample({"state": torch.randn(2, 2, 5)}, torch.randn(2, 7, 3))


def test_cosine_schedule_decreases_from_one_to_near_zero():
    ab = cosine_alpha_bars(100)
    assert ab[0] > 0.99 and ab[-1] < 1e-3
    assert (ab[1:] < ab[:-1]).all()


def test_minmax_maps_data_range_onto_unit_interval():
    norm = MinMax(2)
    data = torch.tensor([[0.0, 5.0], [10.0, 5.0], [4.0, 5.0]])
    norm.fit(data)
    out = norm.normalize(data)
    assert torch.allclose(out[:, 0], torch.tensor([-1.0, 1.0, -0.2]))
    assert torch.allclose(out[:, 1], torch.zeros(3))  # constant dimension maps to 0, no division by zero
    assert torch.allclose(norm.unnormalize(out), data)


def test_a_few_updates_decrease_the_loss_on_a_fixed_batch():
    policy = make_policy()
    policy.train()
    obs = {"state": torch.randn(64, 2, 5)}
    actions = torch.rand(64, 8, 3) * 2 - 1
    opt = torch.optim.Adam(policy.denoiser.parameters(), lr=1e-3)

    def loss_at(seed):
        return policy.loss(obs, actions, generator=torch.Generator().manual_seed(seed)).item()

    before = np.mean([loss_at(s) for s in range(5)])
    for step in range(60):
        loss = policy.loss(obs, actions, generator=torch.Generator().manual_seed(step % 5))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = np.mean([loss_at(s) for s in range(5)])
    assert after < 0.7 * before


def test_ema_follows_the_trained_weights():
    policy = make_policy()
    before = [p.clone() for p in policy.ema.parameters()]
    with torch.no_grad():
        for p in policy.denoiser.parameters():
            p.add_(1.0)
    policy.update_ema()
    moved = [(a - b).abs().mean().item() for a, b in zip(policy.ema.parameters(), before)]
    assert all(m == pytest.approx(1.0 - CFG.ema_decay, rel=1e-3) for m in moved)


def test_chunked_policy_executes_action_horizon_then_resamples_and_resets():
    policy = make_policy()
    chunked = ChunkedPolicy(policy)
    calls = []
    real_sample = policy.sample

    def counting_sample(obs, noise=None, **kw):
        calls.append(obs["state"].clone())
        return real_sample(obs, noise, **kw)

    policy.sample = counting_sample
    gen = torch.Generator().manual_seed(0)
    obs = [{"state": np.full(5, float(i), np.float32)} for i in range(10)]
    for i in range(4):
        chunked.act(obs[i], generator=gen)
    assert len(calls) == 1
    # The first observation of an episode fills the whole history.
    assert torch.equal(calls[0][0, 0], calls[0][0, 1])
    chunked.act(obs[4], generator=gen)
    assert len(calls) == 2
    assert calls[1][0, :, 0].tolist() == [3.0, 4.0]  # history: previous and current observation
    assert len(chunked.queue) == CFG.action_horizon - 1
    chunked.reset()
    assert not chunked.queue and not chunked.history
    chunked.act(obs[9], generator=gen)
    assert len(calls) == 3  # a fresh chunk for the new episode, not the stale queue
    assert calls[2][0, :, 0].tolist() == [9.0, 9.0]


def test_chunked_policy_executes_the_chunk_aligned_with_the_current_observation():
    policy = make_policy()
    noise = torch.randn(*policy.chunk_shape)
    chunked = ChunkedPolicy(policy)
    obs = {"state": np.ones(5, np.float32)}
    first = chunked.act(obs, noise=noise)
    chunk = policy.sample({"state": torch.ones(1, 2, 5)}, noise.unsqueeze(0))[0]
    # obs_horizon 2: the chunk starts one step in the past; the executed actions start at index 1.
    np.testing.assert_allclose(first, chunk[1].numpy(), rtol=1e-5, atol=1e-6)


def test_config_rejects_executed_actions_outside_the_chunk():
    with pytest.raises(ValueError, match="inside the chunk"):
        DiffusionConfig(obs_horizon=2, pred_horizon=8, action_horizon=8)


def test_a_saved_and_loaded_policy_acts_exactly_as_the_trained_one(tmp_path):
    from robot_rl.agents.obs_layout import ObsLayout
    from robot_rl.agents.diffusion_checkpoint import load_base, save_base
    from robot_rl.agents.encoders import EncoderConfig
    from robot_rl.config import to_dict

    policy = make_policy()
    train = {"task": "pick_cube", "obs": "state", "privileged": True, "encoder": to_dict(EncoderConfig())}
    path = save_base(tmp_path / "base.pt", policy, ObsLayout(state=((("s",), 5),), images=()), train, {})
    loaded = load_base(path).policy
    # States inside and far outside the demos' range (where the encoder's clip decides what the
    # network sees: a loaded base once clipped at ±10 where the trained one clipped at ±1.5).
    mid, half = policy.obs_encoder.state_mean, 1.0 / policy.obs_encoder.state_inv_std
    for scale in (0.5, 4.0):
        obs = {"state": mid + scale * half * torch.randn(6, 2, 5)}
        noise = torch.randn(6, *policy.chunk_shape)
        assert torch.equal(loaded.sample(obs, noise), policy.sample(obs, noise))


def test_one_exp_mish_equals_torchs_on_batched_inputs_and_extremes():
    from torch.nn import functional as F

    x = torch.cat([torch.linspace(-100, 100, 20_001), torch.tensor([-1e30, -88.0, 0.0, 20.0, 21.0, 88.0, 1e30])])
    x = x.repeat(2)  # above the size where the one-exp form takes over
    ours = mish(x)
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours, F.mish(x), rtol=1e-5, atol=1e-6)
    # Training keeps torch's kernel: gradients are torch's exactly.
    w = x[:30_000].clone().requires_grad_(True)
    mish(w).sum().backward()
    v = x[:30_000].clone().requires_grad_(True)
    F.mish(v).sum().backward()
    assert torch.equal(w.grad, v.grad)


def test_bench_diffusion_times_both_mish_forms_side_by_side():
    from robot_rl.bench.diffusion import DiffusionBench, run

    out = run(DiffusionBench(batch_sizes=(1, 128), calls=1, repeats=1))
    for job in ("sample_b1", "sample_b128", "train_step_b256"):
        assert out[f"{job}_ms"] > 0 and out[f"{job}_torch_mish_ms"] > 0 and out[f"{job}_speedup"] > 0
    assert out["max_abs_action_diff_normalized"] < 1e-4
