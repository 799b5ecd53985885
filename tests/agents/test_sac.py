"""SAC/RLPD mechanics on fixed batches (no env): shapes, ensemble independence, targets, losses."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from robot_rl.agents.nets import EnsembleMLP
from robot_rl.agents.sac import (
    SACAgent,
    SACConfig,
    critic_loss,
    make_optimizers,
    update,
)

D, A, B = 12, 7, 64


class StateEncoder(nn.Module):
    def forward(self, obs):
        return obs["state"]


def batch(seed: int = 0, n: int = B) -> dict:
    g = torch.Generator().manual_seed(seed)
    action = torch.rand(n, A, generator=g) * 2 - 1
    action[:, -1] = torch.randint(-1, 2, (n,), generator=g).float()
    return {"obs": {"state": torch.randn(n, D, generator=g)}, "next_obs": {"state": torch.randn(n, D, generator=g)},
            "action": action, "reward": torch.rand(n, generator=g), "mask": (torch.rand(n, generator=g) > 0.1).float(),
            "grasp_penalty": torch.zeros(n)}


def agent(**cfg) -> tuple[SACAgent, SACConfig]:
    torch.manual_seed(0)
    c = SACConfig(**cfg)
    return SACAgent(StateEncoder(), D, A, c), c


def test_ensemble_members_are_independent_and_batched():
    ens = EnsembleMLP(10, D, (32, 32), 1)
    x = torch.randn(5, D)
    out = ens(x)
    assert out.shape == (10, 5, 1)
    assert torch.unique(out[:, 0, 0]).numel() == 10  # own weights, own heads: ten different values
    sub = ens(x, torch.tensor([3, 7]))
    torch.testing.assert_close(sub, out[[3, 7]])
    # Gradient of member 3's output touches member 3's weights only (no shared last layer).
    ens(x)[3].sum().backward()
    grads = ens.out.weight.grad.abs().sum(dim=(1, 2))
    assert grads[3] > 0 and grads[[i for i in range(10) if i != 3]].abs().sum() == 0


def test_target_uses_a_random_subset_min():
    ag, cfg = agent(n_critics=10, critic_subsample=2)
    b = batch()
    torch.manual_seed(1)
    _, m1 = critic_loss(ag, b, cfg)
    torch.manual_seed(2)
    _, m2 = critic_loss(ag, b, cfg)
    assert m1["target_mean"] != m2["target_mean"]  # a different pair of critics each call
    full, cfg_full = agent(n_critics=10, critic_subsample=None)
    full.load_state_dict(ag.state_dict())
    # The min over all ten is never above the min over a subset (same next actions via the seed).
    torch.manual_seed(1)
    _, m_sub = critic_loss(ag, b, cfg)
    torch.manual_seed(1)
    _, m_all = critic_loss(full, b, cfg_full)
    assert m_all["target_mean"] <= m_sub["target_mean"] + 1e-6


def test_updates_reduce_the_critic_loss_on_a_fixed_batch():
    ag, cfg = agent(n_critics=10, critic_subsample=2, critic_updates_per_actor_update=2, backup_entropy=False)
    opts = make_optimizers(ag, cfg)
    b = batch(n=2 * B)
    first = critic_loss(ag, b, cfg)[1]["critic_loss"]
    for _ in range(100):
        metrics = update(ag, opts, b, cfg)
    last = critic_loss(ag, b, cfg)[1]["critic_loss"]
    assert last < 0.5 * first
    assert set(metrics) >= {"critic_loss", "actor_loss", "temperature", "entropy"}


def test_temperature_targets_minus_half_the_action_dim():
    ag, cfg = agent()
    assert ag.target_entropy == -A / 2
    hybrid, _ = agent(hybrid_gripper=True)
    assert hybrid.target_entropy == -(A - 1) / 2  # the gripper is discrete, not in the entropy


def test_deterministic_act_is_repeatable_and_bounded():
    ag, _ = agent()
    obs = {"state": torch.randn(3, D)}
    a1 = ag.act(obs, deterministic=True)
    a2 = ag.act(obs, deterministic=True)
    torch.testing.assert_close(a1, a2)
    assert a1.shape == (3, A) and a1.abs().max() <= 1
    s1 = ag.act(obs, deterministic=False)
    assert not torch.allclose(s1, a1)


def test_hybrid_gripper_acts_in_three_classes_and_learns():
    ag, cfg = agent(hybrid_gripper=True, gripper_epsilon=0.0)
    a = ag.act({"state": torch.randn(50, D)}, deterministic=True)
    assert set(a[:, -1].tolist()) <= {-1.0, 0.0, 1.0}
    opts = make_optimizers(ag, cfg)
    b = batch(n=2 * B)
    b["reward"] = (b["action"][:, -1] == 1).float()  # closing is rewarded
    b["mask"] = torch.zeros_like(b["mask"])
    for _ in range(150):
        m = update(ag, opts, b, cfg)
    assert m["gripper_loss"] < 0.05
    q = ag.grip_critic(torch.cat([b["obs"]["state"], b["action"][:, :-1]], -1))
    assert (q.argmax(-1) == 2).float().mean() > 0.9  # class 2 = close


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="critic_subsample"):
        SACConfig(n_critics=2, critic_subsample=3)
    with pytest.raises(ValueError, match="discount"):
        dataclasses.replace(SACConfig(), discount=1.5)


def test_explore_std_acts_with_the_mean_plus_bounded_noise():
    import torch
    from torch import nn

    from robot_rl.agents.sac import SACAgent, SACConfig

    class Identity(nn.Module):
        def forward(self, obs):
            return obs["state"]

    torch.manual_seed(0)
    agent = SACAgent(Identity(), 5, 3, SACConfig(explore_std=0.1))
    obs = {"state": torch.randn(4000, 5)}
    mean = agent.act(obs, deterministic=True)
    noisy = agent.act(obs, deterministic=False, generator=torch.Generator().manual_seed(1))
    diff = noisy - mean
    inside = mean.abs() < 0.7  # away from the clip at ±1
    assert abs(diff[inside].std().item() - 0.1) < 0.01 and abs(diff[inside].mean().item()) < 0.01
    assert noisy.abs().max() <= 1.0
    again = agent.act(obs, deterministic=False, generator=torch.Generator().manual_seed(1))
    assert torch.equal(noisy, again)  # the generator makes exploration reproducible


def test_bc_term_pulls_the_mean_to_demo_actions_on_demo_rows_only():
    a, cfg = agent(bc_weight=1.0, critic_updates_per_actor_update=1)
    opts = make_optimizers(a, cfg)
    b = batch(3, 128)
    b["from_demo"] = (torch.arange(128) < 64).float()  # first half demo, second half online
    b["action"][64:] = 0.0  # online rows: the BC term must not see these actions
    first = update(a, opts, b, cfg)["actor_bc_mse"]
    for _ in range(150):
        last = update(a, opts, b, cfg)["actor_bc_mse"]
    assert last < 0.3 * first
    with torch.no_grad():
        mean = a.actor.mode(b["obs"]["state"])
    demo_err = ((mean[:64] - b["action"][:64]) ** 2).sum(-1).mean()
    online_err = ((mean[64:] - b["action"][64:]) ** 2).sum(-1).mean()
    assert demo_err < online_err  # fit to the demo rows, not to the online rows' actions
    # Without demo rows (no demo buffer) the term is absent.
    b.pop("from_demo")
    assert "actor_bc_mse" not in update(a, opts, b, cfg)


def test_residual_agent_starts_at_zero_and_scores_the_executed_sum():
    ag, c = agent(residual_scale=0.1)
    b = batch()
    base = torch.rand(B, A) * 2 - 1
    b["obs"]["base_action"] = base
    res = ag.act(b["obs"], deterministic=True)
    assert torch.equal(res, torch.zeros_like(res))  # zero-initialized mean: the base acts alone
    r = torch.rand(B, A) * 2 - 1
    executed = ag.critic_action(b["obs"], r)
    expected = (base + 0.1 * r).clamp(-1, 1)
    assert torch.allclose(executed, expected)
    # The critic's input is the executed action: two residuals that execute the same clipped
    # action get the same Q.
    obs = {"state": torch.zeros(1, D), "base_action": torch.full((1, A), 0.95)}
    a1, a2 = ag.critic_action(obs, torch.ones(1, A)), ag.critic_action(obs, torch.full((1, A), 0.6))
    assert torch.equal(a1, a2)


def test_residual_agent_reads_the_base_action_by_name_not_by_state_position():
    ag, c = agent(residual_scale=0.5)
    state = torch.randn(2, D)
    base = torch.tensor([[0.2] * A, [-0.4] * A])
    executed = ag.critic_action({"state": state, "base_action": base}, torch.ones(2, A))
    torch.testing.assert_close(executed, (base + 0.5).clamp(-1, 1))  # the state's first columns play no part
    with pytest.raises(ValueError, match="'base_action'"):
        ag.critic_action({"state": state}, torch.ones(2, A))
    b = batch()
    b["obs"]["base_action"] = base.repeat(B // 2, 1)
    b["next_obs"]["base_action"] = base.repeat(B // 2, 1)
    assert torch.isfinite(critic_loss(ag, b, c)[0])


def test_actor_warmup_trains_only_the_critic_first():
    ag, c = agent(actor_warmup_updates=3, critic_updates_per_actor_update=1)
    opts = make_optimizers(ag, c)
    actor0 = [p.clone() for p in ag.actor.parameters()]
    critic0 = [p.clone() for p in ag.critic.parameters()]
    for i in range(3):
        update(ag, opts, batch(i), c)
    assert all(torch.equal(a, b) for a, b in zip(actor0, ag.actor.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(critic0, ag.critic.parameters()))
    update(ag, opts, batch(3), c)
    assert not all(torch.equal(a, b) for a, b in zip(actor0, ag.actor.parameters()))
    assert int(ag.updates) == 4 and "updates" in ag.state_dict()


def test_compiled_ensemble_matches_eager_values_and_gradients():
    torch.manual_seed(0)
    eager = EnsembleMLP(4, D, (32, 32), 1)
    compiled = EnsembleMLP(4, D, (32, 32), 1)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_forward()
    x = torch.randn(16, D)
    for members in (None, torch.tensor([1, 3])):
        torch.testing.assert_close(compiled(x, members), eager(x, members))
    xe, xc = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (eager(xe) ** 2).sum().backward()
    (compiled(xc) ** 2).sum().backward()
    torch.testing.assert_close(xc.grad, xe.grad)
    for pe, pc in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(pc.grad, pe.grad)
    # A copy (e.g. a target network made after compiling) runs its own weights.
    copy = __import__("copy").deepcopy(compiled)
    with torch.no_grad():
        copy.out.bias.add_(1.0)
    torch.testing.assert_close(copy(x), compiled(x) + 1.0)


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch, caplog):
    ens = EnsembleMLP(3, D, (16,), 1)
    expected = ens(torch.ones(2, D))

    def broken(*_args, **_kwargs):
        raise torch._dynamo.exc.BackendCompilerFailed(lambda *a: None, RuntimeError("InvalidCxxCompiler: no g++"), None)

    ens.compile_forward()
    monkeypatch.setattr(ens, "_compiled", broken)
    with caplog.at_level("WARNING"):
        torch.testing.assert_close(ens(torch.ones(2, D)), expected)
    assert ens._compiled is None and "--no-compile" in caplog.text


def test_n_step_rows_bootstrap_with_their_own_discount():
    ag, cfg = agent(backup_entropy=False)
    b = batch()
    torch.manual_seed(3)
    _, plain = critic_loss(ag, b, cfg)
    torch.manual_seed(3)
    _, none = critic_loss(ag, {**b, "discount": torch.zeros(B)}, cfg)
    assert none["target_mean"] == pytest.approx(b["reward"].mean().item(), abs=1e-6)
    torch.manual_seed(3)
    _, same = critic_loss(ag, {**b, "discount": torch.full((B,), cfg.discount)}, cfg)
    assert same["target_mean"] == pytest.approx(plain["target_mean"], abs=1e-6)
    with pytest.raises(ValueError, match="n_step"):
        SACConfig(n_step=0)


def test_residual_gripper_scale_reaches_the_critic_action():
    ag, cfg = agent(residual_scale=0.1, residual_gripper_scale=1.0)
    obs = {"state": torch.zeros(2, D), "base_action": torch.zeros(2, A)}
    executed = ag.critic_action(obs, -torch.ones(2, A))
    torch.testing.assert_close(executed[0], torch.tensor([-0.1] * (A - 1) + [-1.0]))
    assert cfg.residual_scales(A) == [0.1] * (A - 1) + [1.0]
    with pytest.raises(ValueError, match="residual_gripper_scale"):
        SACConfig(residual_gripper_scale=1.0)
