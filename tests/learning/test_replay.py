"""Replay: observations stored once, correct final observations, bootstrap masks, demo mixing."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.errors import ConfigError
from robot_rl.learning.replay import (
    EpisodeAssembler,
    FieldSpec,
    MixedSampler,
    ReplayBuffer,
)

FIELDS = {"state": FieldSpec((2,), "float32"), "images/cam": FieldSpec((4, 4, 3), "uint8")}


def obs(t: float) -> dict:
    return {"state": np.array([t, -t], np.float32), "images/cam": np.full((4, 4, 3), int(t) % 256, np.uint8)}


def fill(buffer: ReplayBuffer, episodes: list[tuple[int, bool]], assembler: EpisodeAssembler | None = None,
         start: int = 0) -> int:
    """Episodes of (length, terminated-else-truncated); observation t of episode e has state e*100+t."""
    asm = assembler or EpisodeAssembler()
    seq = start
    for e, (length, terminated) in enumerate(episodes):
        for t in range(length):
            last = t == length - 1
            asm.step(buffer, "s", obs(e * 100 + t) if t == 0 else None, obs(e * 100 + t + 1),
                     np.full(3, t, np.float32), float(last and terminated),
                     terminated=last and terminated, truncated=last and not terminated, seq=seq)
            seq += 1
    return seq


def test_images_stored_once_per_step():
    buf = ReplayBuffer(100, FIELDS, 3)
    fill(buf, [(10, True), (5, False)])
    assert len(buf) == 15
    assert buf.obs_written == 15 + 2  # T + 1 observations per episode, no duplicates
    assert buf.obs["images/cam"].dtype == np.uint8


def test_next_observation_at_episode_ends_is_the_final_one():
    buf = ReplayBuffer(100, FIELDS, 3)
    fill(buf, [(3, True), (4, False), (2, True)])
    tr = buf.transitions()
    states, nexts = tr["obs"]["state"][:, 0], tr["next_obs"]["state"][:, 0]
    np.testing.assert_array_equal(states, [0, 1, 2, 100, 101, 102, 103, 200, 201])
    np.testing.assert_array_equal(nexts, states + 1)  # never the next episode's first frame
    # Termination stops bootstrapping; time-limit truncation does not.
    np.testing.assert_array_equal(tr["mask"], [1, 1, 0, 1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(tr["seq"], np.arange(9))


def test_ring_overwrites_oldest_and_never_samples_stale_observations():
    buf = ReplayBuffer(20, FIELDS, 3)
    fill(buf, [(7, False)] * 10)
    assert len(buf) == 20
    rng = np.random.default_rng(0)
    batch = buf.sample(2000, rng)
    np.testing.assert_array_equal(batch["next_obs"]["state"][:, 0], batch["obs"]["state"][:, 0] + 1)
    assert batch["obs"]["state"][:, 0].min() == 701  # the newest 20 transitions: episode 7 from step 1 on
    np.testing.assert_array_equal(batch["obs"]["images/cam"][:, 0, 0, 0], batch["obs"]["state"][:, 0] % 256)


def test_first_step_must_carry_its_observation():
    buf = ReplayBuffer(10, FIELDS, 3)
    with pytest.raises(ValueError, match="first step"):
        EpisodeAssembler().step(buf, "s", None, obs(1), np.zeros(3), 0.0, terminated=False, truncated=False)


def test_mixed_sampler_draws_the_demo_fraction_and_shuffles():
    online, demo = ReplayBuffer(100, FIELDS, 3), ReplayBuffer(100, FIELDS, 3)
    fill(online, [(10, True)])
    asm = EpisodeAssembler()
    for t in range(10):
        asm.step(demo, "d", obs(1000 + t) if t == 0 else None, obs(1001 + t), np.zeros(3), 1.0,
                 terminated=t == 9, truncated=False)
    batch = MixedSampler(online, demo, demo_fraction=0.5, seed=1).sample(256)
    from_demo = batch["obs"]["state"][:, 0] >= 1000
    assert from_demo.sum() == 128
    assert from_demo[:128].sum() not in (0, 128)  # shuffled: both halves mix demo and online
    only_demo = MixedSampler(ReplayBuffer(10, FIELDS, 3), demo, demo_fraction=0.5).sample(16)
    assert (only_demo["obs"]["state"][:, 0] >= 1000).all()  # empty online buffer: all from demos


def test_n_step_returns_stop_at_episode_ends():
    buf = ReplayBuffer(100, FIELDS, 3)
    fill(buf, [(5, True), (4, False)])  # reward 1 on the terminating step only
    g = 0.9
    b = buf.gather(np.arange(9), n_step=3, discount=g)
    s, nxt = b["obs"]["state"][:, 0], b["next_obs"]["state"][:, 0]
    np.testing.assert_array_equal(s, [0, 1, 2, 3, 4, 100, 101, 102, 103])
    # Three steps ahead, or the episode's final observation when it ends sooner.
    np.testing.assert_array_equal(nxt, [3, 4, 5, 5, 5, 103, 104, 104, 104])
    np.testing.assert_allclose(b["reward"], [0, 0, g**2, g, 1, 0, 0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(b["discount"], [g**3, g**3, g**3, g**2, g, g**3, g**3, g**2, g], rtol=1e-6)
    # Rows reaching the termination stop bootstrapping; truncated ones still bootstrap.
    np.testing.assert_array_equal(b["mask"], [1, 1, 0, 0, 0, 1, 1, 1, 1])
    one = buf.gather(np.arange(9))
    assert "discount" not in one
    np.testing.assert_array_equal(one["next_obs"]["state"][:, 0], s + 1)


def test_n_step_follows_each_stream_and_the_ring():
    buf, asm = ReplayBuffer(12, FIELDS, 3), EpisodeAssembler()
    # Two streams interleaved step by step (an actor's steps and an intervention stream).
    for t in range(10):
        for stream, base in (("a", 0), ("b", 500)):
            asm.step(buf, stream, obs(base + t) if t == 0 else None, obs(base + t + 1), np.zeros(3, np.float32),
                     float(base + t), terminated=False, truncated=False)
    idx = np.arange(len(buf))
    b = buf.gather(idx, n_step=2, discount=0.5)
    s, nxt = b["obs"]["state"][:, 0], b["next_obs"]["state"][:, 0]
    last = s % 100 == 9  # the newest step of each stream has no successor yet: one step only
    np.testing.assert_array_equal(nxt[~last], s[~last] + 2)
    np.testing.assert_allclose(b["reward"][~last], s[~last] + 0.5 * (s[~last] + 1))
    np.testing.assert_array_equal(nxt[last], s[last] + 1)
    np.testing.assert_allclose(b["discount"], np.where(last, 0.5, 0.25))


def test_mixed_sampler_passes_n_step_to_both_buffers():
    online, demo = ReplayBuffer(100, FIELDS, 3), ReplayBuffer(100, FIELDS, 3)
    fill(online, [(20, False)])
    fill(demo, [(20, False)])
    batch = MixedSampler(online, demo, n_step=4, discount=0.9, seed=0).sample(200)
    gap = batch["next_obs"]["state"][:, 0] - batch["obs"]["state"][:, 0]
    np.testing.assert_allclose(batch["discount"], 0.9 ** gap, rtol=1e-6)
    assert set(np.unique(gap)) <= {1, 2, 3, 4} and (gap == 4).mean() > 0.7
    with pytest.raises(ConfigError, match=r"n_step .* needs the discount\), got 3"):  # n_step > 1 without one
        MixedSampler(online, demo, n_step=3)
