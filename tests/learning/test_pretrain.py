"""`--pretrain-updates`: the learner trains on the demos before its per-env-step budget starts,
once (a resumed run does not pretrain again). Real processes on the twin."""

from __future__ import annotations

import subprocess
import sys

import pytest

from robot_rl.learning.metrics import read_metrics


def robot_rl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_rl.cli.main", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_pretraining_runs_once_before_the_budget_and_fits_the_demos(tmp_path):
    out = robot_rl("record", "--task", "pick_cube", "--episodes", "2", "--out", str(tmp_path / "demos"), "--no-images")
    assert out.returncode == 0, out.stderr[-3000:]
    args = ("train", "--task", "pick_cube", "--demos", str(tmp_path / "demos"), "--pretrain-updates", "60",
            "--learning-starts", "40", "--eval-episodes", "0", "--log-every", "10", "--no-compile",
            "--run", "r", "--runs-dir", str(tmp_path))
    out = robot_rl(*args, "--env-steps", "100")
    assert out.returncode == 0, out.stderr[-3000:]
    train = read_metrics(tmp_path / "r", "train")
    done = [m for m in train if m.get("pretrain_done")]
    assert [m["update"] for m in done] == [60]
    before = [m["actor_bc_mse"] for m in train if m["update"] <= 60 and "actor_bc_mse" in m]
    assert before[-1] < before[0]  # the actor moved toward the demo actions
    assert max(m["update"] for m in train) == 60 + (100 - 40)  # then one update per env step after learning_starts

    out = robot_rl(*args, "--env-steps", "150", "--resume")
    assert out.returncode == 0, out.stderr[-3000:]
    train = read_metrics(tmp_path / "r", "train")
    assert len([m for m in train if m.get("pretrain_done")]) == 1  # not again
    assert max(m["update"] for m in train) == 60 + (150 - 40)


def test_pretraining_without_demos_is_refused():
    out = robot_rl("train", "--task", "pick_cube", "--pretrain-updates", "10")
    assert out.returncode == 2 and "--demos" in out.stderr
