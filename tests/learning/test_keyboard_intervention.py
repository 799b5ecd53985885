"""Keyboard interventions for real: `robot-rl train --intervention keyboard` under Xvfb, keys
pressed with xdotool; the takeover steps reach the learner flagged, in both buffers."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from xvfb_display import start_xvfb

from robot_rl.learning import wire
from robot_rl.learning.metrics import read_metrics
from robot_rl.learning.step_log import StepLog

pytestmark = pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool")),
                                reason="needs the Xvfb and xdotool binaries (apt install xvfb xdotool)")


def xdotool(display: str, *args: str) -> None:
    subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display}, check=True, timeout=10)


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_keyboard_takeover_reaches_both_buffers(tmp_path):
    xvfb, display = start_xvfb(tmp_path / "xvfb.log")
    steps = 120
    proc = subprocess.Popen([sys.executable, "-m", "robot_rl.cli.main", "train", "--task", "pick_cube",
                             "--intervention", "keyboard", "--env-steps", str(steps), "--eval-episodes", "0",
                             "--learning-starts", "10000", "--runs-dir", str(tmp_path), "--run", "kb"],
                            env={**os.environ, "DISPLAY": display}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stderr], daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        while True:  # the actor says when its keyboard listener is up
            try:
                if "keyboard intervention ready" in lines.get(timeout=1):
                    break
            except queue.Empty:
                pass
            assert proc.poll() is None, f"train exited early: {proc.stdout.read()}"
            assert time.monotonic() < deadline, "the actor never reported a ready keyboard"
        time.sleep(2.0)
        xdotool(display, "keydown", "w")
        time.sleep(1.5)  # ~15 steps of +x at the task's 10 Hz
        xdotool(display, "keyup", "w")
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
        xvfb.terminate()
        xvfb.wait(timeout=10)
    summary = json.loads(out.strip().splitlines()[-1])
    sent = [wire.decode(frames) for frames in StepLog(tmp_path / "kb" / "replay").replay()]
    assert [s.seq for s in sent] == list(range(steps))
    taken = [s for s in sent if s.intervention]
    assert len(taken) >= 8, f"only {len(taken)} steps flagged as interventions"
    for s in taken:  # the human's action, not the policy's
        assert s.action[0] == pytest.approx(1.0) and np.all(s.action[1:6] == 0.0)
    assert not any(s.intervention and s.action[0] < 0.99 for s in sent)
    # Interventions go into the demo buffer too (the run had no recorded demos).
    assert summary["demo_transitions"] == len(taken)
    assert summary["online_transitions"] == steps
    episodes = [m for m in read_metrics(tmp_path / "kb") if m["kind"] == "episode"]
    assert sum(m["interventions"] for m in episodes) == len(taken)
