"""Metrics lines: round trip, refused lines, torn tails, SIGKILL, and their TensorBoard mirror."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from robot_rl.errors import ConfigError
from robot_rl.learning.metrics import MetricsWriter, eval_fields, read_metrics
from robot_rl.learning.run_dir import RunDir

WALL_CLOCK_TOL_S = 5.0


def test_metrics_lines_round_trip(tmp_path):
    with RunDir("m", root=tmp_path) as run, MetricsWriter(run, tensorboard=False) as mw:
        a = mw.write("train", 10, {"loss": np.float32(0.25), "q": torch.tensor(2.0), "note": "hi",
                                   "nan": float("nan"), "hist": [1, 2]}, update=5)
        b = mw.write_eval(20, **eval_fields([True, False, True, True], [40, 100, 60, 50], [4.0, 10.0, 6.0, 5.0]))
        c = mw.write("actor", 20, {"episodes": 3})
    lines = read_metrics(run.path)
    assert lines == [a, b, c]
    assert read_metrics(run.metrics_path, kind="eval") == [b]
    assert a["loss"] == 0.25 and a["q"] == 2.0 and a["nan"] is None and a["update"] == 5
    assert b == {**b, "kind": "eval", "env_step": 20, "success_rate": 0.75, "episodes": 4, "mean_steps": 62.5,
                 "cycle_time_s": 5.0}
    walls = [d["wall_s"] for d in lines]
    assert walls == sorted(walls) and walls[0] >= 0
    assert all(abs(d["time_unix_s"] - time.time()) < WALL_CLOCK_TOL_S for d in lines)
    for text in run.metrics_path.read_text().splitlines():
        json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_eval_without_success_has_null_cycle_time(tmp_path):
    fields = eval_fields([False, False], [100, 100], [10.0, 10.0])
    assert fields == {"success_rate": 0.0, "episodes": 2, "mean_steps": 100.0, "cycle_time_s": None}
    with MetricsWriter(tmp_path, tensorboard=False) as mw:
        assert mw.write_eval(0, **fields)["cycle_time_s"] is None


@pytest.mark.parametrize("call, error, words", [
    (lambda mw: mw.write("", 0), ValueError, "kind must be a non-empty string"),
    (lambda mw: mw.write("train", -1), ValueError, "env_step must be an integer ≥ 0, got -1"),
    (lambda mw: mw.write("train", 1.5), ValueError, "env_step must be an integer ≥ 0, got 1.5"),
    (lambda mw: mw.write("train", 0, {"env_step": 3}), ValueError, "key 'env_step' is reserved"),
    (lambda mw: mw.write("train", 0, {"w": torch.zeros(3)}), TypeError, r"metrics\['w'\] is a Tensor"),
    (lambda mw: mw.write("train", 0, {"o": object()}), TypeError, r"metrics\['o'\] is a object, not a JSON value"),
    (lambda mw: mw.write_eval(0, success_rate=75, episodes=4, mean_steps=1, cycle_time_s=None), ValueError,
     r"success_rate must be in \[0, 1\] \(a fraction, not a percentage\), got 75"),
    (lambda mw: mw.write_eval(0, success_rate=0.5, episodes=0, mean_steps=1, cycle_time_s=None), ValueError,
     "episodes must be an integer ≥ 1, got 0"),
])
def test_bad_lines_are_refused_and_nothing_is_written(tmp_path, call, error, words):
    with MetricsWriter(tmp_path, tensorboard=False) as mw, pytest.raises(error, match=words):
        call(mw)
    assert read_metrics(tmp_path) == []


def test_torn_last_line_is_skipped_and_a_corrupt_middle_line_raises(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as mw:
        full = [mw.write("train", s, {"loss": 1.0}) for s in range(3)]
    path = tmp_path / "metrics.jsonl"
    with open(path, "a") as f:
        f.write('{"kind": "train", "env_step": 3, "lo')  # a crash mid-write
    assert read_metrics(tmp_path) == full
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(ConfigError, match=r"metrics.jsonl:2"):
        read_metrics(tmp_path)


def test_writer_drops_a_torn_tail_and_continues_wall_time(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as mw:
        first = mw.write("train", 0)
    path = tmp_path / "metrics.jsonl"
    text = path.read_text().replace(f'"wall_s": {first["wall_s"]}', '"wall_s": 1000.0')
    path.write_text(text + '{"kind": "tra')
    with MetricsWriter(tmp_path, tensorboard=False) as mw:
        second = mw.write("train", 1)
    assert read_metrics(tmp_path) == [{**first, "wall_s": 1000.0}, second]
    assert second["wall_s"] >= 1000.0  # run time adds up across resumes


def test_sigkill_loses_no_written_line(tmp_path):
    code = (f"import os, signal\nfrom robot_rl.learning.metrics import MetricsWriter\n"
            f"mw = MetricsWriter({str(tmp_path)!r}, tensorboard=False)\n"
            f"for s in range(50): mw.write('train', s, {{'loss': s / 10}})\n"
            f"os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    assert [d["env_step"] for d in read_metrics(tmp_path)] == list(range(50))


def test_tensorboard_mirrors_numeric_fields_by_kind_and_env_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunDir("tb", root=tmp_path) as run, MetricsWriter(run) as mw:
        for step in (100, 200):
            mw.write("train", step, {"loss": step / 100, "note": "text", "flag": True}, update=step // 10)
        mw.write_eval(200, success_rate=0.5, episodes=10, mean_steps=80, cycle_time_s=7.5)
    acc = EventAccumulator(str(run.path))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/update", "train/wall_s", "eval/success_rate", "eval/episodes",
            "eval/mean_steps", "eval/cycle_time_s"} <= tags
    assert not tags & {"train/env_step", "train/time_unix_s", "train/note", "train/flag", "train/kind"}
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(100, 1.0), (200, 2.0)]
    assert [(e.step, e.value) for e in acc.Scalars("eval/success_rate")] == [(200, 0.5)]
