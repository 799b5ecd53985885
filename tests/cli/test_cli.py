"""`robot-rl` subcommands as real subprocesses, with tiny budgets; assertions on what they write."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from robot_rl.data.episodes import iter_episodes, read_meta


def robot_rl(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_rl.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_subcommands():
    out = robot_rl("--help")
    assert out.returncode == 0
    for name in ("serve", "record", "bench", "keys", "tasks"):
        assert name in out.stdout


def test_tasks_lists_both_tasks():
    out = robot_rl("tasks")
    assert out.returncode == 0 and "pick_cube" in out.stdout and "peg_insertion" in out.stdout
    spec = json.loads(robot_rl("tasks", "--name", "peg_insertion").stdout)
    assert spec["action"]["gripper"] == "fixed"


def test_serve_refuses_wide_bind_without_keys():
    out = robot_rl("serve", "--bind", "tcp://0.0.0.0:5599")
    assert out.returncode == 2
    assert "requires CurveZMQ keys" in out.stderr and "robot-rl keys" in out.stderr


def test_serve_a_physical_arm_without_its_address_is_a_clear_error():
    out = robot_rl("serve", "--backend", "franka", "--bind", "tcp://127.0.0.1:5598")
    assert out.returncode == 2 and "--robot-ip" in out.stderr and "franka-double" in out.stderr


def test_keys_writes_the_key_pairs(tmp_path):
    out = robot_rl("keys", "--out", str(tmp_path / "k"))
    assert out.returncode == 0, out.stderr
    for name in ("server.key", "server.key_secret", "client.key", "client.key_secret",
                 "authorized_clients/client.key"):
        assert (tmp_path / "k" / name).is_file()


def test_record_scripted_episodes(tmp_path):
    out = robot_rl("record", "--task", "pick_cube", "--teleop", "scripted", "--episodes", "2", "--out",
                   str(tmp_path / "demos"), "--no-images")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and summary["success_rate"] == 1.0
    episodes = list(iter_episodes(tmp_path / "demos"))
    assert len(episodes) == 2 and read_meta(tmp_path / "demos")["task"] == "pick_cube"
    ep = episodes[0]
    assert ep.arrays["success"][-1] and ep.arrays["terminated"][-1]
    assert ep.observation("tcp_pose").shape == (len(ep) + 1, 7)
    assert "obs/images/wrist" not in ep.arrays and "obs/privileged/cube_pose" in ep.arrays
    assert ep.meta["source"] == "scripted"
    assert "recorded 2 episodes" in out.stderr  # the rich progress display and summary go to stderr


def test_bench_expert_prints_one_json_line():
    out = robot_rl("bench", "expert", "--task", "peg_insertion", "--episodes", "2", "--json")
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["bench"] == "expert" and result["episodes"] == 2 and 0.0 <= result["success_rate"] <= 1.0


def test_bad_flag_value_is_refused():
    out = robot_rl("record", "--out", "x", "--teleop", "telepathy")
    assert out.returncode != 0 and "telepathy" in (out.stderr + out.stdout)


@pytest.mark.parametrize("episodes", ["0"])
def test_record_validates_its_config(tmp_path, episodes):
    out = robot_rl("record", "--out", str(tmp_path / "x"), "--episodes", episodes)
    assert out.returncode != 0 and "episodes must be" in (out.stderr + out.stdout)
