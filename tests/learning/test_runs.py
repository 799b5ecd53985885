"""Run folders: no silent clobbering, resume, metrics lines and their TensorBoard mirror, checkpoints."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from robot_rl.errors import ConfigError
from robot_rl.learning import runs
from robot_rl.learning.runs import (
    MetricsWriter,
    RunDir,
    checkpoint_name,
    config_diff,
    eval_fields,
    latest_checkpoint_path,
    load_latest_checkpoint,
    read_metrics,
    save_checkpoint,
)

WALL_CLOCK_TOL_S = 5.0


@dataclass(frozen=True)
class AgentCfg:
    lr: float = 3e-4
    hidden: tuple[int, ...] = (256, 256)


@dataclass(frozen=True)
class TrainCfg:
    seed: int = 0
    resume: bool = False
    agent: AgentCfg = field(default_factory=AgentCfg)


# --- RunDir ---------------------------------------------------------------------------------------

def test_run_dir_saves_the_resolved_config_and_refuses_to_clobber(tmp_path):
    with RunDir("sac_seed0", root=tmp_path, config=TrainCfg()) as run:
        assert run.path == tmp_path / "sac_seed0" and not run.resumed
    saved = json.loads((tmp_path / "sac_seed0" / "config.json").read_text())
    assert saved == {"seed": 0, "resume": False, "agent": {"lr": 3e-4, "hidden": [256, 256]}}
    with pytest.raises(ConfigError, match="--resume"):
        RunDir("sac_seed0", root=tmp_path, config=TrainCfg())


def test_an_empty_existing_folder_is_not_clobbering(tmp_path):
    (tmp_path / "fresh").mkdir()
    with RunDir("fresh", root=tmp_path) as run:
        assert not run.resumed


def test_resume_reuses_the_folder_and_warns_on_config_changes(tmp_path, caplog):
    with RunDir("r", root=tmp_path, config=TrainCfg()) as run:
        save_checkpoint(run, checkpoint_name(100), {"step": 100})
    with RunDir("r", root=tmp_path, resume=True, config=TrainCfg(resume=True)) as run:
        assert run.resumed and run.config_changes == {}  # `resume` itself may differ
        assert load_latest_checkpoint(run) == {"step": 100}
    caplog.set_level(logging.WARNING, logger="robot_rl.learning.runs")
    with RunDir("r", root=tmp_path, resume=True, config=TrainCfg(agent=AgentCfg(lr=1e-3))) as run:
        assert run.config_changes == {"agent.lr": (3e-4, 1e-3)}
    assert "agent.lr" in caplog.text and "config_resume_001.json" in caplog.text
    assert json.loads((run.path / "config.json").read_text())["agent"]["lr"] == 3e-4  # the first start's
    assert json.loads((run.path / "config_resume_001.json").read_text())["agent"]["lr"] == 1e-3


def test_resume_without_a_folder_starts_fresh(tmp_path):
    with RunDir("new", root=tmp_path, resume=True) as run:
        assert not run.resumed and run.path.is_dir()


def test_a_run_folder_has_one_owner_at_a_time(tmp_path):
    run = RunDir("r", root=tmp_path)
    with pytest.raises(ConfigError, match="in use"):
        RunDir("r", root=tmp_path, resume=True)
    run.close()
    RunDir("r", root=tmp_path, resume=True).close()


def test_a_config_that_is_not_json_is_refused_before_the_folder_is_made(tmp_path):
    with pytest.raises(ConfigError, match="not JSON"):
        RunDir("r", root=tmp_path, config={"net": object()})
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match="dataclass or a mapping"):
        RunDir("r", root=tmp_path, config=[1, 2])


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../up", "with space"])
def test_bad_run_names_are_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="run name"):
        RunDir(name, root=tmp_path)


def test_config_diff_names_dotted_fields_and_honours_ignore():
    saved = {"seed": 0, "agent": {"lr": 1, "utd": 4}, "gone": 1}
    new = {"seed": 1, "agent": {"lr": 2, "utd": 4}, "added": 2}
    assert config_diff(saved, new, ignore=("seed",)) == {"agent.lr": (1, 2), "gone": (1, "<absent>"),
                                                          "added": ("<absent>", 2)}
    assert config_diff(saved, new, ignore=("seed", "agent.lr", "gone", "added")) == {}


# --- metrics -------------------------------------------------------------------------------------

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


@pytest.mark.parametrize("call, error", [
    (lambda mw: mw.write("", 0), ValueError),
    (lambda mw: mw.write("train", -1), ValueError),
    (lambda mw: mw.write("train", 1.5), ValueError),
    (lambda mw: mw.write("train", 0, {"env_step": 3}), ValueError),
    (lambda mw: mw.write("train", 0, {"w": torch.zeros(3)}), TypeError),
    (lambda mw: mw.write("train", 0, {"o": object()}), TypeError),
    (lambda mw: mw.write_eval(0, success_rate=75, episodes=4, mean_steps=1, cycle_time_s=None), ValueError),
    (lambda mw: mw.write_eval(0, success_rate=0.5, episodes=0, mean_steps=1, cycle_time_s=None), ValueError),
])
def test_bad_lines_are_refused_and_nothing_is_written(tmp_path, call, error):
    with MetricsWriter(tmp_path, tensorboard=False) as mw, pytest.raises(error):
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
    code = (f"import os, signal\nfrom robot_rl.learning.runs import MetricsWriter\n"
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


# --- checkpoints ---------------------------------------------------------------------------------

def state_at(step: int) -> dict:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    return {"env_step": step, "model": net.state_dict(), "optim": opt.state_dict(), "rng": torch.get_rng_state(),
            "np_rng": np.random.default_rng(step).bit_generator.state, "tag": f"s{step}"}


def test_latest_points_at_the_newest_and_pruning_keeps_n(tmp_path):
    with RunDir("c", root=tmp_path) as run:
        assert load_latest_checkpoint(run) is None
        save_checkpoint(run, "best", {"env_step": 0})
        for step in range(1000, 6000, 1000):
            path = save_checkpoint(run, checkpoint_name(step), state_at(step), keep_last=2)
            assert (run.checkpoint_dir / "latest").read_text().strip() == path.name
        names = sorted(p.name for p in run.checkpoint_dir.iterdir())
        assert names == ["best.pt", "ckpt_000004000.pt", "ckpt_000005000.pt", "latest"]
        loaded = load_latest_checkpoint(run)
        assert loaded["env_step"] == 5000 and loaded["tag"] == "s5000"
        assert torch.equal(loaded["model"]["weight"], torch.load(path, weights_only=True)["model"]["weight"])
        save_checkpoint(run, "best", {"env_step": 5000})  # latest follows save order, not numbers
        assert load_latest_checkpoint(run) == {"env_step": 5000}
        assert len(list(run.checkpoint_dir.glob("ckpt_*.pt"))) == 2


def test_a_crash_mid_save_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    with RunDir("c", root=tmp_path) as run:
        save_checkpoint(run, checkpoint_name(1000), {"env_step": 1000})

        def torn_save(obj, f):
            f.write(b"PK\x03\x04 half a zip file")
            raise KeyboardInterrupt  # killed mid-write

        monkeypatch.setattr(torch, "save", torn_save)
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(run, checkpoint_name(2000), {"env_step": 2000})
        monkeypatch.undo()
        assert list(run.checkpoint_dir.glob("*.tmp")), "the torn temp file is expected on disk"
        assert not (run.checkpoint_dir / "ckpt_000002000.pt").exists()
        assert load_latest_checkpoint(run) == {"env_step": 1000}
    with RunDir("c", root=tmp_path, resume=True) as run:
        assert not list(run.checkpoint_dir.glob("*.tmp"))  # cleaned by the next owner
        assert load_latest_checkpoint(run) == {"env_step": 1000}


def test_a_leftover_temp_file_is_ignored(tmp_path):
    save_checkpoint(tmp_path, checkpoint_name(10), {"env_step": 10})
    (tmp_path / "checkpoints" / "ckpt_000000020.pt.4242.tmp").write_bytes(b"junk")
    (tmp_path / "checkpoints" / "latest.4242.tmp").write_text("ckpt_000000020.pt.4242.tmp\n")
    assert latest_checkpoint_path(tmp_path).name == "ckpt_000000010.pt"
    assert load_latest_checkpoint(tmp_path) == {"env_step": 10}


def test_without_a_usable_pointer_the_highest_numbered_checkpoint_is_latest(tmp_path):
    for step in (10, 30, 20):
        save_checkpoint(tmp_path, checkpoint_name(step), {"env_step": step}, keep_last=None)
    pointer = tmp_path / "checkpoints" / "latest"
    assert load_latest_checkpoint(tmp_path) == {"env_step": 20}  # the last saved
    pointer.unlink()  # a crash between the first file and its pointer
    assert load_latest_checkpoint(tmp_path) == {"env_step": 30}
    pointer.write_text("ckpt_000000099.pt\n")  # names a file someone deleted
    assert load_latest_checkpoint(tmp_path) == {"env_step": 30}


def test_state_that_weights_only_loading_refuses_is_rejected_at_save(tmp_path):
    with pytest.raises(TypeError, match=r"state\['buffer'\]\['obs'\] is a ndarray"):
        save_checkpoint(tmp_path, "bad", {"buffer": {"obs": np.zeros(3)}})
    with pytest.raises(TypeError, match="float64"):
        save_checkpoint(tmp_path, "bad", {"x": [1, np.float64(2.0)]})
    assert latest_checkpoint_path(tmp_path) is None


@pytest.mark.parametrize("name, keep_last", [("../x", 3), ("a b", 3), ("x.tmp", 3), ("ok", 0)])
def test_bad_checkpoint_arguments_are_refused(tmp_path, name, keep_last):
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path, name, {}, keep_last=keep_last)


def test_a_damaged_checkpoint_says_how_to_recover(tmp_path):
    path = save_checkpoint(tmp_path, checkpoint_name(1), {"env_step": 1})
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(runs.RobotRLError, match="older one"):
        load_latest_checkpoint(tmp_path)
