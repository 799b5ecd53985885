"""Run folders: no silent clobbering, resume, one owner at a time, config changes named."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import pytest

from robot_rl.errors import ConfigError
from robot_rl.learning.checkpoints import checkpoint_name, load_latest_checkpoint, save_checkpoint
from robot_rl.learning.run_dir import RunDir, config_diff


@dataclass(frozen=True)
class AgentCfg:
    lr: float = 3e-4
    hidden: tuple[int, ...] = (256, 256)


@dataclass(frozen=True)
class TrainCfg:
    seed: int = 0
    resume: bool = False
    agent: AgentCfg = field(default_factory=AgentCfg)


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
    caplog.set_level(logging.WARNING, logger="robot_rl.learning.run_dir")
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
