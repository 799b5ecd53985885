"""`robot-rl bench bridge --against DIR`: two source trees' bridges stepped in alternating blocks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_against_a_tree_reports_both_sides_and_their_ratios():
    out = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "bench", "bridge", "--against", str(REPO),
                          "--steps", "40", "--image-steps", "20", "--json"], capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["mode"] == "against" and result["against"] == str(REPO)
    for which in ("none", "images"):
        fig = result[which]
        assert fig["this"]["p50_ms"] > 0 and fig["against"]["p50_ms"] > 0
        assert fig["p50_ratio"] == round(fig["this"]["p50_ms"] / fig["against"]["p50_ms"], 3)


def test_against_something_that_is_not_a_tree_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "bench", "bridge", "--against", str(tmp_path),
                          "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no robot_rl source tree there" in out.stderr and "git worktree" in out.stderr
