"""Success-classifier scoring: first fires, per-episode false successes, `robot-rl eval-classifier`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from robot_rl.agents.encoders import EncoderConfig
from robot_rl.agents.success_classifier import SuccessClassifier, save_classifier
from robot_rl.rewards.collect import collect_twin_frames
from robot_rl.rewards.evaluate import episode_false_fires, first_fires
from robot_rl.task_spec import CameraSpec, load_task


def test_episode_false_fires_counts_first_fires_on_failure_frames():
    p = np.array([0.9, 0.1, 0.2, 0.95, 0.97, 0.1, 0.1, 0.9, 0.9])
    y = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    ep = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    # Episode 0 fires first on its failure frame 0; episode 1 fires on failure frame 7.
    assert episode_false_fires(p, y, ep, 0.5, 1) == 1.0
    # Two in a row: episode 0 first fires on success frames (3, 4); episode 1 on frames 7, 8 (failures).
    assert episode_false_fires(p, y, ep, 0.5, 2) == 0.5
    assert episode_false_fires(p, y, ep, 0.5, 3) == 0.0


def test_first_fires_give_the_fire_and_the_steps_to_the_next_success():
    p = np.array([0.1, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1])
    y = np.array([0, 0, 0, 1, 0, 0, 0], np.float32)
    episode = np.array([0, 0, 0, 0, 1, 1, 1])
    assert first_fires(p, y, episode, 0.5, 2) == {0: (2, 1), 1: (None, None)}
    assert first_fires(p, y, episode, 0.5, 1) == {0: (1, 2), 1: (0, None)}
    assert first_fires(p, y, episode, 0.95, 1) == {0: (None, None), 1: (None, None)}


@pytest.mark.slow
def test_eval_classifier_scores_recordings_per_episode_kind(tmp_path):
    import json
    import subprocess
    import sys

    task = dataclasses.replace(load_task("pick_cube"), cameras=(CameraSpec("front", 32, 32),))
    summary = collect_twin_frames(task, tmp_path / "data", 3, seed=1, near_miss_fraction=0.3, random_fraction=0.3,
                                  hold_steps=(2, 3))
    model = SuccessClassifier(("front",), EncoderConfig(image_hw=(32, 32), out_dim=8), threshold=0.0)
    save_classifier(model, tmp_path / "c.pt")

    def score(*extra: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "eval-classifier", "--classifier",
                              str(tmp_path / "c.pt"), "--data", str(tmp_path / "data"), *extra],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    always = score("--consecutive", "1")  # p > 0 everywhere: it fires on every reset frame, a failure
    assert always["episodes"] == 3 and always["frames"] == summary["frames"]
    assert (always["fpr"], always["fnr"], always["episode_false_fire_rate"]) == (1.0, 0.0, 1.0)
    assert sum(v["episodes"] for v in always["by_kind"].values()) == 3
    assert set(always["by_kind"]) == {k for k, n in summary["kinds"].items() if n}
    assert sum(always["false_fire_steps_early"].values()) == 3
    never = score("--threshold", "0.999999")
    assert (never["fpr"], never["episode_false_fire_rate"], never["false_fire_steps_early"]) == (0.0, 0.0, {})
    assert never["fnr"] == (1.0 if summary["positives"] else 0.0)
    missing = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "eval-classifier", "--classifier",
                              str(tmp_path / "nope.pt"), "--data", str(tmp_path / "data")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "does not exist" in " ".join(missing.stderr.replace("│", " ").split())
