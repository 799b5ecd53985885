"""Success-classifier data: frame labels, loading recordings, the episode split."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.errors import ConfigError
from robot_rl.rewards.data import frame_labels, load_frames, split_episodes
from robot_rl.task_spec import load_task


def arrays(success: list[bool], label: list[int] | None = None) -> dict[str, np.ndarray]:
    out = {"action": np.zeros((len(success), 7), np.float32), "success": np.asarray(success, bool)}
    if label is not None:
        out["label"] = np.asarray(label, np.int8)
    return out


# ---- labels ----------------------------------------------------------------------------------------


def test_labels_shift_success_by_one_observation():
    # Observation t+1 follows step t; the reset observation is a failure.
    assert frame_labels(arrays([False, False, True, True]), {}).tolist() == [0, 0, 0, 1, 1]
    assert frame_labels(arrays([True, False]), {"success_at_reset": True}).tolist() == [1, 1, 0]


def test_operator_labels_override_ground_truth():
    ep = arrays([False, False, True, True])
    # Per step (T,): label[t] → observation t+1; −1 keeps the ground truth.
    assert frame_labels({**ep, "label": np.array([-1, 1, -1, 0])}, {}).tolist() == [0, 0, 1, 1, 0]
    # Per observation (T+1,).
    assert frame_labels({**ep, "label": np.array([1, -1, -1, -1, 0])}, {}).tolist() == [1, 0, 0, 1, 0]
    # Episode verdict labels the last observation when there is no per-step label.
    assert frame_labels(ep, {"operator_label": False}).tolist() == [0, 0, 0, 1, 0]
    assert frame_labels(arrays([False, False]), {"operator_label": True}).tolist() == [0, 0, 1]
    # skip: only operator-labeled frames are used.
    assert frame_labels({**ep, "label": np.array([-1, 1, -1, 0])}, {}, unlabeled="skip").tolist() == [-1, -1, 1, -1, 0]
    with pytest.raises(ConfigError, match="label array"):
        frame_labels({**ep, "label": np.array([0, 1])}, {})
    with pytest.raises(ConfigError, match="label array"):
        frame_labels({**ep, "label": np.array([0, 1, 2, 0])}, {})


def test_labels_come_out_right_from_a_recorded_episode(tmp_path):
    from robot_rl.data.episodes import EpisodeBuffer, EpisodeWriter

    def obs(t):
        return {"tcp_pose": np.zeros(7, np.float32), "images": {"front": np.full((16, 16, 3), t * 10, np.uint8)}}

    writer = EpisodeWriter(tmp_path, load_task("pick_cube"))
    for success in ([False, False, True], [False, False, False, False]):
        buf = EpisodeBuffer()
        buf.start(obs(0), {})
        for t, s in enumerate(success, 1):
            buf.add(np.zeros(7), obs(t), float(s), s, False, {"success": s}, intervention=False)
        writer.save(buf, {"source": "test"})
    data = load_frames([str(tmp_path)], None, (8, 8))
    assert data.labels.tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert data.episode.tolist() == [0] * 4 + [1] * 5 and data.has_positive.tolist() == [True, False]
    # Frame t of episode 0 is the constant t·10 image, area-resized to 8×8.
    assert data.images["front"].shape == (9, 8, 8, 3) and data.images["front"][3].min() == 30
    with pytest.raises(ConfigError, match="wrist"):
        load_frames([str(tmp_path)], ["wrist"], (8, 8))


# ---- episode split ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 7, 30])
def test_split_is_by_episode_and_stratified(n):
    has_pos = np.random.default_rng(n).random(n) < 0.4
    has_pos[0] = True
    train, held = split_episodes(has_pos, 0.25, seed=3)
    assert not set(train) & set(held)
    assert sorted([*train, *held]) == list(range(n))
    assert len(train) >= 1 and len(held) >= 1
    if has_pos.sum() >= 4:
        assert has_pos[train].any() and has_pos[held].any()
    # Frames follow their episode: no episode's frames on both sides.
    frame_episode = np.repeat(np.arange(n), 5)
    assert not set(frame_episode[np.isin(frame_episode, train)]) & set(frame_episode[np.isin(frame_episode, held)])
