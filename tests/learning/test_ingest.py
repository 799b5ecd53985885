"""The learner's ingestion of actor steps: which buffers each step lands in."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from robot_rl.agents.obs_layout import ObsLayout
from robot_rl.learning import wire
from robot_rl.learning.config import TrainConfig, make_agent
from robot_rl.learning.ingest import Ingestor


def _episode(seq0: int, episode: int, n: int, *, success: bool,
             intervene_at: int | tuple[int, ...] | None = None) -> list[wire.Step]:
    takeover = {intervene_at} if isinstance(intervene_at, int) else set(intervene_at or ())
    steps = []
    for t in range(n):
        last = t == n - 1
        steps.append(wire.Step(
            seq=seq0 + t, episode=episode, next_state=np.full(3, 10 * episode + t + 1, np.float32), next_images={},
            action=np.full(2, episode + t / 10, np.float32), reward=float(last and success),
            terminated=last and success, truncated=last and not success, intervention=t in takeover,
            obs_state=np.full(3, 10 * episode, np.float32) if t == 0 else None,
            episode_stats={"success": success} if last else None))
    return steps


def _ingestor(demo_successes: bool) -> Ingestor:
    layout = ObsLayout.of(spaces.Box(-1, 1, (3,)))
    cfg = TrainConfig(env="x", demo_successes=demo_successes)
    return Ingestor(make_agent(cfg, layout, 2), layout, cfg)


def test_own_successes_join_the_demo_buffer_whole_and_failures_do_not():
    steps = (_episode(0, 1, 4, success=True) + _episode(4, 2, 3, success=False)
             + _episode(7, 3, 3, success=True, intervene_at=1) + _episode(10, 4, 2, success=True))
    on, off = _ingestor(True), _ingestor(False)
    for msg in steps:
        on.add_step(msg)
        off.add_step(msg)
    on.flush()
    off.flush()
    assert len(on.online) == len(off.online) == 12
    # Without the option only the intervention step is a demo; with it, episodes 1 and 4 (not 3:
    # its correction is there already) are copied whole.
    assert len(off.demo) == 1
    demo = on.demo.transitions()
    assert len(on.demo) == 1 + 4 + 2
    np.testing.assert_allclose(demo["action"][0:4, 0], [1.0, 1.1, 1.2, 1.3], rtol=1e-6)
    np.testing.assert_allclose(demo["obs"]["state"][0:4, 0], [10, 11, 12, 13])
    np.testing.assert_allclose(demo["next_obs"]["state"][0:4, 0], [11, 12, 13, 14])
    assert demo["mask"][0:4].tolist() == [1, 1, 1, 0]
    assert demo["reward"][0:4].tolist() == [0, 0, 0, 1]
    np.testing.assert_allclose(demo["action"][4:, 0], [3.1, 4.0, 4.1], rtol=1e-6)  # in arrival order
    # n-step returns run through a copied episode: 3 steps from its first transition reach the end.
    batch = on.demo.gather(np.array([0]), n_step=3, discount=0.5)
    np.testing.assert_allclose(batch["next_obs"]["state"][0, 0], 13)


def test_each_takeover_is_one_linked_segment_in_the_demo_buffer():
    # Steps 1–2 and 4–5 of a 6-step episode are the human's; the episode ends (success) inside the second.
    ing = _ingestor(False)
    for msg in _episode(0, 1, 6, success=True, intervene_at=(1, 2, 4, 5)) + _episode(6, 2, 2, success=False):
        ing.add_step(msg)
    ing.flush()
    assert len(ing.online) == 8
    demo = ing.demo.transitions()
    assert len(ing.demo) == 4 and demo["intervention"].all()
    assert demo["seq"].tolist() == [1, 2, 4, 5]
    np.testing.assert_allclose(demo["obs"]["state"][:, 0], [11, 12, 14, 15])
    np.testing.assert_allclose(demo["next_obs"]["state"][:, 0], [12, 13, 15, 16])
    assert demo["mask"].tolist() == [1, 1, 1, 0]
    # Each segment stores its first observation once: 3 + 3 observations, not 2 per step.
    assert ing.demo.obs_written == 6
    # n-step returns run inside a segment and stop where the policy took back over (bootstrapping
    # from the observation there), not across the policy's steps into the next takeover.
    batch = ing.demo.gather(np.array([0, 2]), n_step=3, discount=0.5)
    np.testing.assert_allclose(batch["next_obs"]["state"][:, 0], [13, 16])
    np.testing.assert_allclose(batch["discount"], [0.25, 0.25])
    np.testing.assert_allclose(batch["mask"], [1, 0])
    np.testing.assert_allclose(batch["reward"], [0, 0.5])
