"""Demos and checkpoints made for another observation are refused by name, not by a torch shape
error deep in loading. Real recordings, checkpoints and `robot-rl` processes on the twin."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from robot_rl.learning.checkpoints import latest_checkpoint_path


def robot_rl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_rl.cli.main", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_stale_demos_and_checkpoints_are_refused_by_observation_part(tmp_path):
    demos = tmp_path / "demos"
    out = robot_rl("record", "--task", "pick_cube", "--episodes", "1", "--out", str(demos), "--no-images")
    assert out.returncode == 0, out.stderr[-3000:]
    train = ("train", "--task", "pick_cube", "--learning-starts", "30", "--eval-episodes", "0", "--no-compile",
             "--checkpoint-every", "20", "--run", "r", "--runs-dir", str(tmp_path))
    out = robot_rl(*train, "--env-steps", "60", "--demos", str(demos))
    assert out.returncode == 0, out.stderr[-3000:]

    # The checkpoint names what it was trained on; `eval` accepts the checkpoints/latest pointer.
    ckpt = latest_checkpoint_path(tmp_path / "r")
    state = torch.load(ckpt, weights_only=True)
    names = dict(state["obs_layout"]["state"])
    assert names["privileged/cube_from_tcp_m"] == 3 and names["tcp_pose"] == 7
    out = robot_rl("eval", "--checkpoint", str(tmp_path / "r" / "checkpoints" / "latest"), "--episodes", "1")
    assert out.returncode == 0, out.stderr[-3000:]

    # A demo recorded before the twin gained a feature (here: that array removed) is refused by name.
    ep_path = sorted(demos.glob("episode_*.npz"))[0]
    with np.load(ep_path) as z:
        arrays = {k: z[k] for k in z.files if k != "obs/privileged/cube_from_tcp_m"}
    np.savez_compressed(ep_path, **arrays)
    out = robot_rl(*train, "--env-steps", "60", "--demos", str(demos), "--run", "r2")
    assert out.returncode == 2, out.stderr[-3000:]
    assert "privileged/cube_from_tcp_m should have 3 numbers" in out.stderr and "robot-rl record" in out.stderr

    # A checkpoint trained on another observation: eval and --resume both name the part.
    state["obs_layout"]["state"] = [[("privileged/cube_rel" if n == "privileged/cube_from_tcp_m" else n), s]
                                    for n, s in state["obs_layout"]["state"]]
    torch.save(state, ckpt)
    out = robot_rl("eval", "--checkpoint", str(ckpt), "--episodes", "1")
    assert out.returncode == 2 and "privileged/cube_rel missing now" in out.stderr, out.stderr[-3000:]
    assert "privileged/cube_from_tcp_m new" in out.stderr
    out = robot_rl(*train, "--env-steps", "80", "--resume")
    assert out.returncode == 2 and "privileged/cube_rel missing now" in out.stderr, out.stderr[-3000:]
