"""Replay buffers: every observation stored once (images as uint8, or frozen-encoder embeddings),
transitions point at their observation and next observation.

An episode of T steps adds T + 1 observations and T transitions, so the next observation of the
last step, whether the episode terminated or was truncated by the time limit, is the true
final observation (not the next episode's reset frame). `mask` = 1 − terminated: truncation
still bootstraps. Each transition links to the next one of its episode, so batches can carry
n-step returns (ResFiT uses 3–5 for sparse rewards): the discounted reward of up to n steps, the
observation after them, and the discount γ^m of the m steps taken (fewer at an episode's end).
`MixedSampler` draws a fixed fraction of each batch from a demo buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_rl.errors import ConfigError


@dataclass(frozen=True)
class FieldSpec:
    """Shape and dtype of one observation field ("state", "images/wrist", "embeddings/front"…)."""

    shape: tuple[int, ...]
    dtype: str


class ReplayBuffer:
    """Ring buffer of transitions over a ring of observations (absolute indices, so a transition
    whose observation has been overwritten is recognised and never sampled).

    Not thread-safe: the learner's one thread adds and samples.
    """

    def __init__(self, capacity: int, fields: dict[str, FieldSpec], action_dim: int) -> None:
        if capacity < 1:
            raise ConfigError(f"replay capacity must be ≥ 1, got {capacity}")
        self.capacity = capacity
        # Each transition adds one observation, plus one more at each episode start.
        self.obs_capacity = capacity + capacity // 2 + 16
        self.fields = dict(fields)
        self.obs = {name: np.zeros((self.obs_capacity, *f.shape), dtype=f.dtype) for name, f in fields.items()}
        self.obs_written = 0
        self.obs_idx = np.zeros(capacity, np.int64)
        self.next_idx = np.zeros(capacity, np.int64)
        self.action = np.zeros((capacity, action_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, bool)
        self.truncated = np.zeros(capacity, bool)
        self.intervention = np.zeros(capacity, bool)
        self.grasp_penalty = np.zeros(capacity, np.float32)
        self.seq = np.zeros(capacity, np.int64)
        self.next_t = np.full(capacity, -1, np.int64)  # absolute index of the episode's next transition
        self.written = 0

    def __len__(self) -> int:
        return min(self.written, self.capacity)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.obs.values()) + self.action.nbytes + 10 * 8 * self.capacity

    def add_obs(self, values: dict[str, np.ndarray]) -> int:
        """Store one observation; returns its absolute index."""
        slot = self.obs_written % self.obs_capacity
        for name, arr in self.obs.items():
            arr[slot] = values[name]
        self.obs_written += 1
        return self.obs_written - 1

    def add(self, obs_index: int, next_index: int, action: np.ndarray, reward: float, *, terminated: bool,
            truncated: bool, intervention: bool = False, grasp_penalty: float = 0.0, seq: int = -1) -> int:
        """Store one transition between two stored observations (absolute indices); returns the
        transition's absolute index."""
        i = self.written % self.capacity
        self.next_t[i] = -1
        self.obs_idx[i], self.next_idx[i] = obs_index, next_index
        self.action[i] = action
        self.reward[i] = reward
        self.terminated[i], self.truncated[i], self.intervention[i] = terminated, truncated, intervention
        self.grasp_penalty[i] = grasp_penalty
        self.seq[i] = seq
        self.written += 1
        return self.written - 1

    def link(self, prev: int, nxt: int) -> None:
        """Record that transition `nxt` follows `prev` in one episode (absolute indices)."""
        if prev >= self.written - self.capacity:
            self.next_t[prev % self.capacity] = nxt

    def _valid(self, idx: np.ndarray) -> np.ndarray:
        oldest = self.obs_written - self.obs_capacity
        return (self.obs_idx[idx] >= oldest) & (self.next_idx[idx] >= oldest)

    def sample_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        size = len(self)
        if size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, size, n)
        bad = ~self._valid(idx)
        while bad.any():  # only right after the observation ring wrapped
            idx[bad] = rng.integers(0, size, int(bad.sum()))
            bad = ~self._valid(idx)
        return idx

    def gather(self, idx: np.ndarray, *, n_step: int = 1, discount: float | None = None) -> dict:
        """Batch of transitions as numpy arrays: obs/next_obs dicts of fields, action, reward,
        mask (1 − terminated), grasp_penalty, intervention. With `n_step` > 1: reward and
        grasp_penalty are discounted sums over up to n steps of the episode, next_obs and mask
        those after the last step taken, and "discount" (B,) is γ^m for the m steps taken."""
        if n_step > 1:
            if discount is None:
                raise ValueError("n-step returns need the discount")
            reward, penalty, next_idx, terminated, gamma_m = self._n_step(idx, n_step, discount)
        else:
            reward, penalty = self.reward[idx], self.grasp_penalty[idx]
            next_idx, terminated, gamma_m = self.next_idx[idx], self.terminated[idx], None
        o = self.obs_idx[idx] % self.obs_capacity
        n = next_idx % self.obs_capacity
        batch = {
            "obs": {k: v[o] for k, v in self.obs.items()},
            "next_obs": {k: v[n] for k, v in self.obs.items()},
            "action": self.action[idx],
            "reward": reward,
            "mask": 1.0 - terminated.astype(np.float32),
            "grasp_penalty": penalty,
            "intervention": self.intervention[idx],
        }
        if gamma_m is not None:
            batch["discount"] = gamma_m
        return batch

    def _n_step(self, idx: np.ndarray, n_step: int, discount: float):
        reward = self.reward[idx].copy()
        penalty = self.grasp_penalty[idx].copy()
        next_idx = self.next_idx[idx].copy()
        terminated = self.terminated[idx].copy()
        ended = terminated | self.truncated[idx]
        gamma_m = np.full(len(idx), discount, np.float32)
        cur = np.asarray(idx).copy()
        oldest_t, oldest_obs = self.written - self.capacity, self.obs_written - self.obs_capacity
        for _ in range(n_step - 1):
            link = self.next_t[cur]
            go = ~ended & (link >= 0) & (link >= oldest_t)
            go[go] &= self.next_idx[link[go] % self.capacity] >= oldest_obs
            if not go.any():
                break
            j = link[go] % self.capacity
            reward[go] += gamma_m[go] * self.reward[j]
            penalty[go] += gamma_m[go] * self.grasp_penalty[j]
            next_idx[go] = self.next_idx[j]
            terminated[go] = self.terminated[j]
            ended[go] = self.terminated[j] | self.truncated[j]
            gamma_m[go] *= discount
            cur[go] = j
        return reward, penalty, next_idx, terminated, gamma_m

    def sample(self, n: int, rng: np.random.Generator, *, n_step: int = 1, discount: float | None = None) -> dict:
        return self.gather(self.sample_indices(n, rng), n_step=n_step, discount=discount)

    def transitions(self) -> dict:
        """Every stored transition in insertion order (oldest first), for tests and export."""
        size = len(self)
        start = self.written - size
        return self.gather(np.arange(start, self.written) % self.capacity) | {
            "seq": self.seq[np.arange(start, self.written) % self.capacity]}


class EpisodeAssembler:
    """Turns a stream of steps (first observation once, then next observations) into stored
    observations and transitions in one or more buffers, one episode at a time per stream."""

    def __init__(self) -> None:
        # Per (buffer, stream): the open episode's last observation and last transition (None
        # before its first step), both absolute indices.
        self._last: dict[tuple[int, str], tuple[int, int | None]] = {}

    def step(self, buffer: ReplayBuffer, stream: str, obs_fields: dict | None, next_fields: dict,
             action: np.ndarray, reward: float, *, terminated: bool, truncated: bool, intervention: bool = False,
             grasp_penalty: float = 0.0, seq: int = -1) -> None:
        """Add one step of `stream` to `buffer`. `obs_fields` must be given on an episode's first
        step (and only then: later steps reuse the previous next observation)."""
        key = (id(buffer), stream)
        if obs_fields is not None:
            self._last[key] = (buffer.add_obs(obs_fields), None)
        elif key not in self._last:
            raise ValueError(f"stream {stream!r}: first step of an episode must carry its observation")
        obs_index, prev_t = self._last[key]
        nxt = buffer.add_obs(next_fields)
        t = buffer.add(obs_index, nxt, action, reward, terminated=terminated, truncated=truncated,
                       intervention=intervention, grasp_penalty=grasp_penalty, seq=seq)
        if prev_t is not None:
            buffer.link(prev_t, t)
        if terminated or truncated:
            del self._last[key]
        else:
            self._last[key] = (nxt, t)

    def is_open(self, buffer: ReplayBuffer, stream: str) -> bool:
        """Whether `stream` has an episode (or segment) open in `buffer`."""
        return (id(buffer), stream) in self._last

    def close(self, buffer: ReplayBuffer, stream: str) -> None:
        """End `stream`'s open segment without ending an episode: its last transition keeps its
        flags (so it bootstraps) and links to nothing (n-step returns stop there)."""
        self._last.pop((id(buffer), stream), None)


class MixedSampler:
    """Batches drawing `demo_fraction` of each batch from the demo buffer (RLPD: 50/50); each
    batch's `from_demo` (float 0/1) says which rows came from it."""

    def __init__(self, online: ReplayBuffer, demo: ReplayBuffer | None, *, demo_fraction: float = 0.5,
                 seed: int = 0, n_step: int = 1, discount: float | None = None) -> None:
        if not 0.0 <= demo_fraction <= 1.0:
            raise ConfigError(f"demo_fraction must be in [0, 1], got {demo_fraction}")
        if n_step < 1 or (n_step > 1 and discount is None):
            raise ConfigError(f"n_step must be ≥ 1 (and > 1 needs the discount), got {n_step}")
        self.online, self.demo, self.demo_fraction = online, demo, demo_fraction
        self.n_step, self.discount = n_step, discount
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> dict:
        n_demo = int(round(n * self.demo_fraction)) if self.demo is not None and len(self.demo) else 0
        if len(self.online) == 0:
            n_demo = n
        parts = []
        if n_demo:
            parts.append(self.demo.sample(n_demo, self.rng, n_step=self.n_step, discount=self.discount)
                         | {"from_demo": np.ones(n_demo, np.float32)})
        if n - n_demo:
            parts.append(self.online.sample(n - n_demo, self.rng, n_step=self.n_step, discount=self.discount)
                         | {"from_demo": np.zeros(n - n_demo, np.float32)})
        if len(parts) == 1:
            return parts[0]
        # Shuffle: the update slices one batch into several critic minibatches, and each must
        # hold the same demo/online mix.
        return _take(_concat(parts), self.rng.permutation(n))


def _take(tree, idx: np.ndarray):
    if isinstance(tree, dict):
        return {k: _take(v, idx) for k, v in tree.items()}
    return tree[idx]


def _concat(parts: list) -> dict:
    first = parts[0]
    if isinstance(first, dict):
        return {k: _concat([p[k] for p in parts]) for k in first}
    return np.concatenate(parts)
