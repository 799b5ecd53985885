"""`--device`: resolution, batches on the device, updates that create no tensor off the device,
CPU weights for actors, checkpoints loaded on any device.

This machine has no GPU, so placement is checked with torch's "meta" device: with
`torch.set_default_device("meta")` in force, any tensor an update creates without an explicit
device (`torch.randperm(n)` instead of `torch.randperm(n, device=x.device)`) is a meta tensor
with no values, and the update's result differs from the same update run normally.
"""

from __future__ import annotations

import contextlib

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from robot_rl.agents.encoders import EncoderConfig
from robot_rl.agents.obs_encoder import ObsEncoder
from robot_rl.agents.sac import SACAgent, SACConfig, host_metrics, make_optimizers, update
from robot_rl.errors import ConfigError
from robot_rl.learning.checkpoints import load_latest_checkpoint, save_checkpoint
from robot_rl.learning.config import TrainConfig
from robot_rl.learning.device import resolve_device, to_device
from robot_rl.learning.policy import acting_state
from robot_rl.learning.replay import FieldSpec, MixedSampler, ReplayBuffer

CPU = torch.device("cpu")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA device")


@contextlib.contextmanager
def default_device(name: str):
    """`torch.set_default_device(name)` for the block, restored after."""
    torch.set_default_device(name)
    try:
        yield
    finally:
        torch.set_default_device(None)


# ---- resolution ------------------------------------------------------------------------------------


@no_cuda
def test_auto_resolves_to_the_cpu_without_cuda():
    assert resolve_device("auto") == CPU
    assert resolve_device("cpu") == CPU


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_asking_for_cuda_without_it_names_the_build_and_the_fix(name):
    with pytest.raises(ConfigError) as err:
        resolve_device(name)
    msg = str(err.value)
    assert f"--device {name} asked for, but torch sees no CUDA device" in msg
    assert torch.__version__ in msg and "--device cpu or auto" in msg


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CPU", "mps"])
def test_a_misspelt_device_is_a_config_error(name):
    with pytest.raises(ConfigError, match="--device must be one of"):
        TrainConfig(device=name)


# ---- updates on the device ---------------------------------------------------------------------------

STATE_DIM, ACTION_DIM, BATCH = 6, 4, 16


def _buffer(fields: dict[str, FieldSpec], rng: np.random.Generator, n: int = 40) -> ReplayBuffer:
    buf = ReplayBuffer(n, fields, ACTION_DIM)
    prev = None
    for t in range(n):
        obs = {name: (rng.integers(0, 255, f.shape) if f.dtype == "uint8" else rng.normal(size=f.shape)).astype(f.dtype)
               for name, f in fields.items()}
        i = buf.add_obs(obs)
        if prev is not None:
            action = rng.uniform(-1, 1, ACTION_DIM).astype(np.float32)
            action[-1] = rng.choice([-1.0, 0.0, 1.0])
            buf.add(prev, i, action, float(rng.random()), terminated=t % 9 == 0, truncated=False)
        prev = i
    return buf


def _agent(cameras: tuple[str, ...], encoder: EncoderConfig | None, cfg: SACConfig) -> SACAgent:
    torch.manual_seed(0)
    enc = ObsEncoder(STATE_DIM, cameras, encoder, augment_pad=2)
    return SACAgent(enc, enc.feature_dim, ACTION_DIM, cfg)


def _train(cameras, encoder, cfg: SACConfig, fields, *, under: str | None, updates: int = 3) -> tuple[SACAgent, dict]:
    """`updates` learner updates (sample → to_device → update) on the CPU, optionally with the
    default device set to `under` while they run; returns the agent and the last metrics."""
    agent = _agent(cameras, encoder, cfg).to(CPU)
    opts = make_optimizers(agent, cfg)
    rng = np.random.default_rng(1)
    sampler = MixedSampler(_buffer(fields, rng), _buffer(fields, rng), demo_fraction=0.5, seed=2, n_step=2,
                           discount=cfg.discount)
    torch.manual_seed(3)
    metrics = {}
    with default_device(under) if under else contextlib.nullcontext():
        for _ in range(updates):
            batch = to_device(sampler.sample(BATCH * cfg.critic_updates_per_actor_update), CPU)
            agent.train()
            metrics = update(agent, opts, batch, cfg)
    return agent, metrics


STATE_CFG = SACConfig(hidden=(32, 32), n_critics=4, critic_subsample=2, hybrid_gripper=True, bc_weight=1.0,
                      explore_std=0.1, batch_size=BATCH, n_step=2)


@pytest.mark.parametrize("pixels", [False, True], ids=["state", "pixels"])
def test_updates_create_every_tensor_on_the_learner_device(pixels):
    """Same seeds, same batches: updates with a meta default device must give the same weights
    and metrics as plain ones (a tensor made without `device=` would be meta: no values)."""
    fields = {"state": FieldSpec((STATE_DIM,), "float32")}
    cameras, encoder = (), None
    if pixels:  # a trainable backbone on raw uint8 frames, with DrQ shifts
        cameras, encoder = ("wrist",), EncoderConfig(name="small_cnn", image_hw=(16, 16), out_dim=8, num_kernels=2)
        fields["images/wrist"] = FieldSpec((16, 16, 3), "uint8")
    plain, m_plain = _train(cameras, encoder, STATE_CFG, fields, under=None)
    meta, m_meta = _train(cameras, encoder, STATE_CFG, fields, under="meta")
    for (name, a), b in zip(plain.state_dict().items(), meta.state_dict().values()):
        assert b.device == CPU, name
        torch.testing.assert_close(b, a, msg=lambda m: f"{name}: {m}")
    floats = host_metrics(m_meta)
    assert all(isinstance(v, float) and np.isfinite(v) for v in floats.values()), floats
    assert floats == pytest.approx(host_metrics(m_plain))


def test_update_metrics_stay_tensors_until_logged():
    """No host sync per update: metrics come back as 0-d tensors; `host_metrics` converts them once."""
    fields = {"state": FieldSpec((STATE_DIM,), "float32")}
    _, metrics = _train((), None, STATE_CFG, fields, under=None, updates=1)
    assert metrics and all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in metrics.values())
    assert set(host_metrics(metrics)) == set(metrics)


def test_batches_keep_their_dtypes_on_the_device():
    rng = np.random.default_rng(0)
    batch = to_device({"obs": {"images/wrist": rng.integers(0, 255, (2, 4, 4, 3)).astype(np.uint8)},
                       "reward": np.zeros(2, np.float32)}, CPU)
    assert batch["obs"]["images/wrist"].dtype == torch.uint8 and batch["reward"].dtype == torch.float32


# ---- weights for actors, checkpoints -------------------------------------------------------------------


class _OnAccelerator(torch.Tensor):
    """A CPU tensor that behaves like one on a GPU where it matters here: `.numpy()` refuses
    until the tensor has been moved to the CPU (`.cpu()` or `.to("cpu", …)`)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.numpy:
            raise TypeError("can't convert cuda:0 device type tensor to numpy: use Tensor.cpu() first")
        out = super().__torch_function__(func, types, args, kwargs)
        targets = (*args[1:], kwargs.get("device"))
        if func is torch.Tensor.cpu or (func is torch.Tensor.to and any(str(a) == "cpu" for a in targets)):
            return out.as_subclass(torch.Tensor)
        return out


def test_weights_sent_to_actors_are_cpu_arrays(monkeypatch):
    agent = _agent((), None, STATE_CFG)
    on_gpu = {k: v.as_subclass(_OnAccelerator) for k, v in agent.state_dict().items()}
    monkeypatch.setattr(agent, "state_dict", lambda: on_gpu)
    params = acting_state(agent)
    assert params and all(type(v) is np.ndarray and v.dtype == np.float32 for v in params.values())


def test_checkpoints_load_onto_the_device_asked_for(tmp_path):
    agent = _agent((), None, STATE_CFG)
    save_checkpoint(tmp_path, "ckpt_000000001", {"agent": agent.state_dict(), "update": 1})
    on_meta = load_latest_checkpoint(tmp_path, map_location=torch.device("meta"))
    assert {t.device.type for t in on_meta["agent"].values()} == {"meta"}
    on_cpu = load_latest_checkpoint(tmp_path, map_location=resolve_device("cpu"))
    fresh = _agent((), None, STATE_CFG)
    fresh.load_state_dict(on_cpu["agent"])
    for name, value in agent.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], value)


# ---- diffusion BC (robot-rl train-bc) -------------------------------------------------------------------


def _bc_fit(under: str | None):
    from robot_rl.agents.diffusion import DiffusionConfig, DiffusionPolicy
    from robot_rl.learning.train_bc import ChunkDataset, fit

    dcfg = DiffusionConfig(obs_horizon=2, pred_horizon=4, action_horizon=2, hidden=32, blocks=1, time_dim=8,
                           train_timesteps=20, inference_steps=4, batch_size=8, steps=3)
    rng = np.random.default_rng(0)
    n, frames = 12, ("wrist",)
    data = ChunkDataset(rng.normal(size=(n, STATE_DIM)).astype(np.float32),
                        {"wrist": rng.integers(0, 255, (n, 16, 16, 3)).astype(np.uint8)},
                        rng.uniform(-1, 1, (n, ACTION_DIM)).astype(np.float32),
                        np.stack([np.clip(np.arange(t - 1, t + 1), 0, n - 1) for t in range(n - 4)]),
                        np.stack([np.arange(t, t + 4) for t in range(n - 4)]))
    torch.manual_seed(0)
    policy = DiffusionPolicy(STATE_DIM, ACTION_DIM, dcfg, cameras=frames,
                             encoder=EncoderConfig(name="small_cnn", image_hw=(16, 16), out_dim=8, num_kernels=2))
    policy.fit_normalization(torch.from_numpy(data.states), torch.from_numpy(data.actions))
    with default_device(under) if under else contextlib.nullcontext():
        losses = fit(policy, data, dcfg, device=CPU, seed=1)
        obs = {"state": torch.from_numpy(data.states[None, :2]),
               "images/wrist": torch.from_numpy(data.images["wrist"][None, :2])}
        chunk = policy.sample(obs, generator=torch.Generator(device=CPU).manual_seed(2))
    return policy, losses, chunk


def test_diffusion_bc_trains_and_samples_on_the_learner_device():
    plain, plain_losses, plain_chunk = _bc_fit(None)
    meta, meta_losses, meta_chunk = _bc_fit("meta")
    assert len(meta_losses) == 3 and np.isfinite(meta_losses).all()
    assert meta_losses == pytest.approx(plain_losses)
    assert meta_chunk.device == CPU
    torch.testing.assert_close(meta_chunk, plain_chunk)
    for (name, a), b in zip(plain.state_dict().items(), meta.state_dict().values()):
        torch.testing.assert_close(b, a, msg=lambda m: f"{name}: {m}")


# ---- DSRL (robot-rl finetune --method dsrl-sac / dsrl-na) -----------------------------------------------


class _Line(gym.Env):
    """Observation: the step count and the last action's sum; reward 1 from step 5 on; 8 steps."""

    observation_space = spaces.Dict({"count": spaces.Box(-1e3, 1e3, (2,), np.float32)})
    action_space = spaces.Box(-1.0, 1.0, (3,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return {"count": np.array([0.0, 0.0], np.float32)}, {}

    def step(self, action):
        self.t += 1
        obs = {"count": np.array([self.t, float(np.sum(action))], np.float32)}
        return obs, float(self.t >= 5), False, self.t >= 8, {"success": False}


def _tiny_base():
    """A frozen diffusion base acting in `_Line` (random weights: mechanics, not learning)."""
    from robot_rl.agents.diffusion import DiffusionConfig, DiffusionPolicy

    torch.manual_seed(0)
    dcfg = DiffusionConfig(obs_horizon=2, pred_horizon=4, action_horizon=2, hidden=16, blocks=1, time_dim=8,
                           train_timesteps=10, inference_steps=2)
    policy = DiffusionPolicy(2, 3, dcfg)
    policy.fit_normalization(torch.randn(20, 2) * 5, torch.rand(20, 3) * 1.6 - 0.8)
    return policy.eval().requires_grad_(False)


def _dsrl(variant: str, under: str | None) -> dict:
    from robot_rl.agents.obs_layout import ObsLayout
    from robot_rl.envs.noise_action import NoiseActionEnv
    from robot_rl.finetune.dsrl import DSRLConfig, train_dsrl

    inner = _Line()
    env = NoiseActionEnv(inner, _tiny_base(), ObsLayout.of(inner.observation_space), bound=1.5, seed=0)
    cfg = DSRLConfig(sac=SACConfig(hidden=(16, 16), n_critics=3, critic_subsample=2, critic_updates_per_actor_update=1,
                                   target_entropy=0.0, batch_size=4), utd=1.0, learning_starts=2,
                     action_critic_hidden=(16, 16))
    with default_device(under) if under else contextlib.nullcontext():
        return train_dsrl(env, env, cfg, variant=variant, env_steps=16, eval_every=10_000, eval_episodes=0, seed=0,
                          device=CPU)


def _built_on_the_cpu(build):
    """`build` run with no default device: networks are built on the CPU, then moved to the learner's device."""
    def wrapper(*args, **kwargs):
        previous = torch.get_default_device()
        torch.set_default_device(None)
        try:
            return build(*args, **kwargs)
        finally:
            torch.set_default_device(previous)
    return wrapper


@pytest.mark.parametrize("variant", ["sac", "na"])
def test_dsrl_trains_with_every_tensor_on_the_learner_device(variant, monkeypatch):
    from robot_rl.finetune import dsrl

    monkeypatch.setattr(dsrl, "make_noise_agent", _built_on_the_cpu(dsrl.make_noise_agent))
    monkeypatch.setattr(dsrl, "ActionCritic", _built_on_the_cpu(dsrl.ActionCritic))
    plain, meta = _dsrl(variant, None), _dsrl(variant, "meta")
    assert meta["updates"] == plain["updates"] > 0
    for net in ("agent", "action_critic") if variant == "na" else ("agent",):
        for (name, a), b in zip(plain[net].state_dict().items(), meta[net].state_dict().values()):
            assert b.device == CPU, name
            torch.testing.assert_close(b, a, msg=lambda m: f"{net}.{name}: {m}")


# ---- residual PPO (robot-rl finetune --method residual-ppo) -----------------------------------------------


def _ppo(under: str | None) -> dict:
    from robot_rl.agents.obs_layout import ObsLayout
    from robot_rl.envs.residual import ResidualEnv
    from robot_rl.finetune.ppo import PPOConfig, ResidualActorCritic, residual_layout, train_ppo

    base = _tiny_base()

    def make_env(index: int):
        inner = _Line()
        return ResidualEnv(inner, base, ObsLayout.of(inner.observation_space), scale=0.3, seed=index)

    layout = residual_layout(make_env(-1))
    cfg = PPOConfig(num_envs=2, rollout_steps=6, epochs=2, minibatches=2, hidden=(16, 16))
    rollouts: list[dict] = []
    with default_device(under) if under else contextlib.nullcontext():
        import robot_rl.finetune.ppo as ppo

        build = ppo.ResidualActorCritic
        ppo.ResidualActorCritic = _built_on_the_cpu(ResidualActorCritic)
        try:
            out = train_ppo(make_env, layout, cfg, env_steps=24, seed=0, device=CPU,
                            on_rollout=lambda step, m: rollouts.append(m))
        finally:
            ppo.ResidualActorCritic = build
    return out | {"rollouts": rollouts}


def test_residual_ppo_trains_with_every_tensor_on_the_model_device():
    plain, meta = _ppo(None), _ppo("meta")
    assert len(meta["rollouts"]) == len(plain["rollouts"]) == 2
    for m, p in zip(meta["rollouts"], plain["rollouts"]):
        assert all(isinstance(v, float) for k, v in m.items() if k != "train_success_rate")
        assert m == pytest.approx(p)
    for (name, a), b in zip(plain["model"].state_dict().items(), meta["model"].state_dict().values()):
        assert b.device == CPU, name
        torch.testing.assert_close(b, a, msg=lambda m: f"{name}: {m}")
