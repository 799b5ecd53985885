"""Residual and noise-action wrappers around a frozen diffusion base: a zero residual leaves the
base's actions unchanged, noise bounds are honoured, chunk rewards are summed, queues reset."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from robot_rl.agents.diffusion import ChunkedPolicy, DiffusionConfig, DiffusionPolicy
from robot_rl.agents.obs_layout import ObsLayout
from robot_rl.envs.noise_action import NoiseActionEnv
from robot_rl.envs.residual import ResidualEnv
from robot_rl.errors import ConfigError

CFG = DiffusionConfig(obs_horizon=2, pred_horizon=8, action_horizon=4, hidden=32, blocks=1, inference_steps=4,
                      train_timesteps=20)


class CountingEnv(gym.Env):
    """Observation: the step count; reward of step t is t + 1; ends after `length` steps."""

    def __init__(self, length=10, terminate_at=None):
        self.observation_space = spaces.Dict({"count": spaces.Box(-1e3, 1e3, (2,), np.float32)})
        self.action_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.length, self.terminate_at = length, terminate_at
        self.actions = []

    def _obs(self):
        return {"count": np.array([self.t, -self.t], np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.actions.append(np.array(action))
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return self._obs(), float(self.t), terminated, self.t >= self.length, {"success": terminated}


def base_policy():
    torch.manual_seed(0)
    policy = DiffusionPolicy(2, 3, CFG)
    policy.fit_normalization(torch.randn(50, 2) * 5, torch.rand(50, 3) * 1.6 - 0.8)
    return policy.eval().requires_grad_(False)


def layout_of(env):
    return ObsLayout.of(env.observation_space)


def test_zero_residual_executes_exactly_the_base_actions():
    policy = base_policy()
    inner = CountingEnv(length=12)
    env = ResidualEnv(inner, policy, layout_of(inner), scale=0.1)
    obs, _ = env.reset(seed=3)
    assert list(env.observation_space.spaces)[0] == "base_action"
    # The flat state starts with the base action (the residual SAC agent reads it there).
    assert ObsLayout.of(env.observation_space).state[0] == (("base_action",), 3)
    for _ in range(12):
        obs, reward, terminated, truncated, info = env.step(np.zeros(3))
        np.testing.assert_allclose(info["executed_action"], info["base_action"], atol=1e-6)
    # Same seed, base alone: identical actions (the wrapper's noise is seeded from the reset seed).
    inner2 = CountingEnv(length=12)
    env2 = ResidualEnv(inner2, policy, layout_of(inner2), scale=0.1)
    env2.reset(seed=3)
    for _ in range(12):
        env2.step(np.zeros(3))
    np.testing.assert_allclose(np.stack(inner.actions), np.stack(inner2.actions), atol=1e-6)


def test_residual_moves_the_action_by_scale_in_normalized_units_and_converts_back():
    policy = base_policy()
    inner = CountingEnv()
    env = ResidualEnv(inner, policy, layout_of(inner), scale=0.1)
    obs, _ = env.reset(seed=0)
    base_n = obs["base_action"].astype(np.float64)
    residual = np.array([1.0, -1.0, 0.5])
    _, _, _, _, info = env.step(residual)
    executed_n = env.to_normalized(info["executed_action"])
    np.testing.assert_allclose(executed_n, np.clip(base_n + 0.1 * residual, -1, 1), atol=1e-5)
    # agent_action inverts: the residual that executes a given env action.
    obs, _ = env.reset(seed=1)
    target_n = np.clip(obs["base_action"] + 0.05, -0.99, 0.99)
    expected = (target_n - obs["base_action"]) / 0.1
    np.testing.assert_allclose(env.agent_action(env.to_env(target_n)), expected, atol=1e-4)


def test_a_gripper_scale_gives_the_residual_authority_over_the_last_dimension():
    policy = base_policy()
    inner = CountingEnv()
    env = ResidualEnv(inner, policy, layout_of(inner), scale=[0.1, 0.1, 1.0])
    obs, _ = env.reset(seed=0)
    base_n = obs["base_action"].astype(np.float64)
    residual = np.array([1.0, 1.0, -1.0])
    _, _, _, _, info = env.step(residual)
    np.testing.assert_allclose(env.to_normalized(info["executed_action"]),
                               np.clip(base_n + np.array([0.1, 0.1, 1.0]) * residual, -1, 1), atol=1e-5)
    with pytest.raises(ConfigError, match="scale"):
        ResidualEnv(CountingEnv(), policy, layout_of(inner), scale=[0.1, 0.0, 1.0])


def test_residual_env_resets_the_base_queue_every_episode():
    policy = base_policy()
    inner = CountingEnv(length=5)
    env = ResidualEnv(inner, policy, layout_of(inner))
    env.reset(seed=0)
    for _ in range(5):
        env.step(np.zeros(3))
    assert len(env.chunked.queue) > 0  # mid-chunk when the episode ended
    env.reset(seed=0)
    assert len(env.chunked.queue) == CFG.action_horizon - 1  # a fresh chunk: the first action was taken
    assert torch.equal(env.chunked.history_batch()["state"][0, 0], env.chunked.history_batch()["state"][0, 1])


def test_noise_env_sums_chunk_rewards_and_counts_primitive_steps():
    policy = base_policy()
    inner = CountingEnv(length=10)
    env = NoiseActionEnv(inner, policy, layout_of(inner), bound=1.5)
    obs, _ = env.reset(seed=0)
    assert obs["history"].shape == (4,)
    _, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape))
    assert info["primitive_steps"] == 4 and reward == 1 + 2 + 3 + 4
    _, reward, _, _, info = env.step(np.zeros(env.action_space.shape))
    assert reward == 5 + 6 + 7 + 8
    # The episode ends after 10 steps: the last chunk stops early and sums only what ran.
    _, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape))
    assert info["primitive_steps"] == 2 and reward == 9 + 10 and truncated
    assert info["executed_actions"].shape == (2, 3)


def test_noise_env_honours_the_bound_and_executes_the_base_sample_for_that_noise():
    policy = base_policy()
    inner = CountingEnv(length=10)
    env = NoiseActionEnv(inner, policy, layout_of(inner), bound=0.7)
    obs, _ = env.reset(seed=0)
    action = np.full(env.action_space.shape, 5.0)  # beyond the action space: clipped to ±1, noise ±0.7
    noise = env.noise_of(action)
    assert noise.abs().max().item() == pytest.approx(0.7)
    history = env.chunked.history_batch()
    _, _, _, _, info = env.step(action)
    expected = policy.sample(history, torch.full((1, 8, 3), 0.7))[0, 1:5].numpy()
    np.testing.assert_allclose(info["executed_actions"], np.clip(expected, -1, 1), atol=1e-5)


def test_wrappers_refuse_a_base_of_another_action_size():
    policy = base_policy()

    class Wide(CountingEnv):
        def __init__(self):
            super().__init__()
            self.action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)

    inner = Wide()
    with pytest.raises(ConfigError, match="another task"):
        ResidualEnv(inner, policy, layout_of(inner))


def test_chunked_policy_and_residual_env_agree_on_the_first_action():
    policy = base_policy()
    inner = CountingEnv()
    env = ResidualEnv(inner, policy, layout_of(inner))
    obs, _ = env.reset(seed=5)
    gen = torch.Generator().manual_seed(5 + 7_919)
    chunked = ChunkedPolicy(policy)
    first = chunked.act({"state": np.array([0.0, 0.0], np.float32)}, generator=gen)
    np.testing.assert_allclose(env.to_env(obs["base_action"]), np.clip(first, -1, 1), atol=1e-5)


def test_progressive_enabling_ramps_the_residual_in_and_evaluation_always_applies_it():
    policy = base_policy()
    inner = CountingEnv(length=3)
    env = ResidualEnv(inner, policy, layout_of(inner), scale=0.1, enable_over_episodes=40, seed=1)
    on = []
    for episode in range(80):
        obs, _ = env.reset(seed=episode)
        for _ in range(3):
            base_n = obs["base_action"].astype(np.float64)
            obs, _, _, _, info = env.step(np.ones(3))
            # What the env reports as applied is what it executed: the full residual or none.
            np.testing.assert_array_equal(info["agent_action"], np.ones(3) if env.residual_on else np.zeros(3))
            np.testing.assert_allclose(info["executed_action"],
                                       env.to_env(np.clip(base_n + 0.1 * info["agent_action"], -1, 1)), atol=1e-6)
        on.append(env.residual_on)
    assert not on[0]  # episode 0: probability 0
    assert 3 <= sum(on[:40]) <= 37  # ramping in, neither all off nor all on
    assert all(on[40:])  # probability 1 once the ramp is over
    # Evaluation: the residual always acts and the episode does not move the ramp.
    fresh = ResidualEnv(CountingEnv(length=3), policy, layout_of(inner), scale=0.1, enable_over_episodes=1000)
    fresh.evaluating = True
    fresh.reset(seed=0)
    _, _, _, _, info = fresh.step(np.ones(3))
    np.testing.assert_array_equal(info["agent_action"], np.ones(3))
    assert fresh.episodes == 0


def test_an_intervention_is_executed_even_while_the_residual_is_off():
    policy = base_policy()
    inner = CountingEnv(length=5)
    env = ResidualEnv(inner, policy, layout_of(inner), scale=0.5, enable_over_episodes=10 ** 9)
    obs, _ = env.reset(seed=0)
    assert not env.residual_on
    target = env.to_env(np.clip(obs["base_action"] + 0.2, -1, 1))
    residual = env.agent_action(target)
    _, _, _, _, info = env.step(residual)
    np.testing.assert_allclose(info["executed_action"], target, atol=1e-5)
    np.testing.assert_allclose(info["agent_action"], residual, atol=1e-6)
    _, _, _, _, info = env.step(np.ones(3))  # the agent's own residual stays off
    np.testing.assert_array_equal(info["agent_action"], np.zeros(3))


def test_a_demo_as_residuals_replays_the_demo_through_the_residual_env():
    """residual_episode's base proposals are what ResidualEnv observes along the same observations,
    and executing its residuals reproduces the demo's actions wherever they needed no clipping."""
    from pathlib import Path

    from robot_rl.data.episodes import Episode
    from robot_rl.envs.residual import residual_episode

    policy = base_policy()
    recorder = CountingEnv(length=9)
    obs, _ = recorder.reset(seed=0)
    rng = np.random.default_rng(1)
    observations, actions, rewards, terminated, truncated = [obs["count"]], [], [], [], []
    while True:
        action = rng.uniform(-0.8, 0.8, 3).astype(np.float32)  # inside the base's action range
        obs, r, term, trunc, _ = recorder.step(action)
        observations.append(obs["count"])
        actions.append(action)
        rewards.append(r)
        terminated.append(term)
        truncated.append(trunc)
        if term or trunc:
            break
    ep = Episode(Path("ep_000000.npz"), {"obs/count": np.stack(observations), "action": np.stack(actions),
                                         "reward": np.array(rewards), "terminated": np.array(terminated),
                                         "truncated": np.array(truncated)}, {})
    scale = [0.5, 0.5, 1.0]
    converted, clipped = residual_episode(ep, policy, layout_of(recorder), scale, seed=5)
    residuals = converted.arrays["action"]
    assert residuals.shape == (9, 3) and np.abs(residuals).max() <= 1.0
    assert converted.arrays["obs/base_action"].shape == (10, 3)
    assert np.array_equal(converted.arrays["obs/count"], ep.arrays["obs/count"])  # the rest untouched

    inner = CountingEnv(length=9)
    env = ResidualEnv(inner, policy, layout_of(inner), scale=scale)
    obs, _ = env.reset(seed=5)
    for t in range(9):
        np.testing.assert_allclose(obs["base_action"], converted.arrays["obs/base_action"][t], atol=1e-6)
        obs, *_ = env.step(residuals[t])
    np.testing.assert_allclose(obs["base_action"], converted.arrays["obs/base_action"][9], atol=1e-6)
    executed, demo = np.stack(inner.actions), ep.arrays["action"]
    raw = (env.to_normalized(demo) - converted.arrays["obs/base_action"][:9]) / np.asarray(scale)
    fits = np.abs(raw) <= 1.0
    assert clipped == pytest.approx(1.0 - fits.mean())
    assert 0.0 < clipped < 1.0  # this base is far from some of the demo's actions, near others
    np.testing.assert_allclose(executed[fits], demo[fits], atol=1e-5)
    assert not np.allclose(executed[~fits], demo[~fits], atol=1e-3)  # clipped: the residual falls short
