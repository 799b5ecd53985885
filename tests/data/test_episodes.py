"""Episode files: documented layout, atomic append, crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from robot_rl.data.episodes import (
    EpisodeBuffer,
    EpisodeWriter,
    episode_paths,
    iter_episodes,
)
from robot_rl.errors import ConfigError
from robot_rl.task_spec import load_task, with_twin_arm


def obs(t: int) -> dict:
    return {"tcp_pose": np.full(7, t, np.float32), "gripper_width": np.array([0.04], np.float32),
            "images": {"wrist": np.full((8, 8, 3), t, np.uint8)}, "privileged": {"cube_pose": np.zeros(7, np.float32)}}


def episode(steps: int, success: bool) -> EpisodeBuffer:
    buf = EpisodeBuffer()
    buf.start(obs(0), {"t_capture_ns": 5})
    for t in range(1, steps + 1):
        done = t == steps
        buf.add(np.full(7, t / 10, np.float32), obs(t), float(done and success), done and success,
                done and not success, {"success": done and success, "rtt_ms": 0.5, "t_capture_ns": 5 + t},
                intervention=t % 2 == 0)
    return buf


def test_round_trip(tmp_path):
    task = load_task("pick_cube")
    writer = EpisodeWriter(tmp_path, task)
    writer.save(episode(4, True), {"source": "test", "seed": 3})
    (ep,) = list(iter_episodes(tmp_path))
    assert len(ep) == 4
    assert ep.observation("tcp_pose").shape == (5, 7) and ep.observation("tcp_pose")[3, 0] == 3
    assert ep.observation("images/wrist").dtype == np.uint8 and ep.observation("images/wrist")[2].max() == 2
    np.testing.assert_array_equal(ep.arrays["intervention"], [False, True, False, True])
    np.testing.assert_array_equal(ep.arrays["t_capture_ns"], [5, 6, 7, 8, 9])
    assert ep.arrays["terminated"].tolist() == [False, False, False, True]
    assert ep.meta == {"source": "test", "seed": 3, "steps": 4, "success": True}


def test_append_continues_numbering_and_cleans_partial_files(tmp_path):
    task = load_task("pick_cube")
    EpisodeWriter(tmp_path, task).save(episode(2, False), {})
    (tmp_path / "episode_000001.npz.tmp").write_bytes(b"half an episode")
    writer = EpisodeWriter(tmp_path, task)
    path = writer.save(episode(3, True), {})
    assert path.name == "episode_000001.npz"
    assert not list(tmp_path.glob("*.tmp"))
    assert [len(e) for e in iter_episodes(tmp_path)] == [2, 3]


def test_refuses_to_mix_tasks(tmp_path):
    EpisodeWriter(tmp_path, load_task("pick_cube"))
    with pytest.raises(ConfigError, match="another folder"):
        EpisodeWriter(tmp_path, load_task("peg_insertion"))
    with pytest.raises(ConfigError, match="no meta.json"):
        episode_paths(tmp_path / "nowhere")


def test_refuses_to_mix_twin_arms(tmp_path):
    pick = load_task("pick_cube")
    EpisodeWriter(tmp_path, pick)
    with pytest.raises(ConfigError, match="recorded on the panda twin arm; record the ur5e arm's into another folder"):
        EpisodeWriter(tmp_path, with_twin_arm(pick, "ur5e"))
    EpisodeWriter(tmp_path, pick)  # the same arm appends


def test_kill_during_recording_loses_at_most_the_current_episode(tmp_path):
    out = tmp_path / "demos"
    proc = subprocess.Popen([sys.executable, "-m", "robot_rl.cli.main", "record", "--task", "peg_insertion",
                             "--episodes", "100", "--out", str(out), "--no-images"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(list(out.glob("episode_*.npz"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "recording did not produce episodes"
        time.sleep(0.05)
    time.sleep(0.3)  # mid-way through a later episode
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    episodes = list(iter_episodes(out))  # every finished file is complete and loads
    assert len(episodes) >= 2
    assert all(e.arrays["success"][-1] or e.arrays["truncated"][-1] for e in episodes)
    n = len(episodes)
    writer = EpisodeWriter(out, load_task("peg_insertion"))
    assert writer.next_index == int(episode_paths(out)[-1].stem.split("_")[1]) + 1 == n
