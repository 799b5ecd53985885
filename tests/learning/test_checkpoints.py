"""Checkpoints: atomic saves, the `latest` pointer, pruning, crash leftovers, weights-only state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.errors import RobotRLError
from robot_rl.learning.checkpoints import (
    checkpoint_name,
    latest_checkpoint_path,
    load_latest_checkpoint,
    save_checkpoint,
)
from robot_rl.learning.run_dir import RunDir


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


@pytest.mark.parametrize("name, keep_last, words", [
    ("../x", 3, r"checkpoint name '\.\./x': use letters"), ("a b", 3, "checkpoint name 'a b': use letters"),
    ("x.tmp", 3, r"checkpoint name 'x\.tmp': use letters"), ("ok", 0, "keep_last must be ≥ 1 or None"),
])
def test_bad_checkpoint_arguments_are_refused(tmp_path, name, keep_last, words):
    with pytest.raises(ValueError, match=words):
        save_checkpoint(tmp_path, name, {}, keep_last=keep_last)


def test_a_damaged_checkpoint_says_how_to_recover(tmp_path):
    path = save_checkpoint(tmp_path, checkpoint_name(1), {"env_step": 1})
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RobotRLError, match="older one"):
        load_latest_checkpoint(tmp_path)
