"""The one evaluation loop shared by `robot-rl eval`, train-bc, residual-ppo and DSRL."""

import gymnasium as gym
import numpy as np

from robot_rl.learning.policy import run_episodes


class _Countdown(gym.Env):
    """Succeeds (terminates with reward 1) once the summed actions reach the target drawn at reset;
    truncates unsuccessfully after 5 steps."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.seeds.append(seed)
        self.target, self.total, self.t = int(self.np_random.integers(1, 8)), 0.0, 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.total += float(action[0])
        self.t += 1
        done = self.total >= self.target
        return np.zeros(1, np.float32), float(done), done, self.t >= 5 and not done, {"primitive_steps": 3}


def test_counts_successes_steps_and_resets_reproducibly():
    env = _Countdown()
    env.seeds = []
    resets = []
    r = run_episodes(env, lambda obs: np.ones(1, np.float32), 20, seed=7, on_reset=lambda: resets.append(1))
    assert len(resets) == 20 and len(env.seeds) == 20
    # Replay the same seeds by hand: success iff the target is ≤ 5 (one unit per step, 5 steps).
    wins, lengths = [], []
    for s in list(env.seeds):
        env.reset(seed=s)
        target = env.target
        wins.append(target <= 5)
        lengths.append(min(target, 5))
    assert r["episodes"] == 20
    assert r["success_rate"] == np.mean(wins)
    assert r["mean_steps"] == np.mean(lengths)
    assert r["success_mean_steps"] == np.mean([n for n, w in zip(lengths, wins) if w])
    # The same seed gives the same episodes; chunked agents count primitive steps.
    env.seeds = []
    again = run_episodes(env, lambda obs: np.ones(1, np.float32), 20, seed=7, steps_of=lambda info: info["primitive_steps"])
    assert again["success_rate"] == r["success_rate"]
    assert again["mean_steps"] == 3 * r["mean_steps"]


def test_no_success_reports_none():
    env = _Countdown()
    env.seeds = []
    r = run_episodes(env, lambda obs: np.zeros(1, np.float32), 4, seed=0)
    assert r["success_rate"] == 0.0 and r["mean_steps"] == 5.0
    assert r["success_mean_steps"] is None and r["success_mean_wall_s"] is None
