"""`robot-rl record --teleop keyboard` for real: Xvfb, xdotool key presses, episode on disk."""

from __future__ import annotations

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

from robot_rl.data.episodes import iter_episodes
from robot_rl.rewards.data import frame_labels

pytestmark = pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool")),
                                reason="needs the Xvfb and xdotool binaries (apt install xvfb xdotool)")


def xdotool(display: str, *args: str) -> None:
    subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display}, check=True, timeout=10)


@pytest.mark.timeout(120)
def test_keyboard_drives_the_arm_and_ends_the_episode(tmp_path):
    xvfb, display = start_xvfb(tmp_path / "xvfb.log")
    out = tmp_path / "demos"
    proc = subprocess.Popen([sys.executable, "-m", "robot_rl.cli.main", "record", "--task", "pick_cube",
                             "--teleop", "keyboard", "--episodes", "1", "--out", str(out), "--no-images",
                             "--max-steps", "150"], env={**os.environ, "DISPLAY": display},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stderr], daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while True:  # the recorder says when its keyboard listener is up
            try:
                if "keyboard teleop ready" in lines.get(timeout=1):
                    break
            except queue.Empty:
                pass
            assert proc.poll() is None, f"record exited early: {proc.stdout.read()}"
            assert time.monotonic() < deadline, "record never reported a ready keyboard"
        time.sleep(1.0)  # the first reset
        xdotool(display, "keydown", "w")
        time.sleep(1.5)  # ~15 steps of +x at 10 Hz
        xdotool(display, "keyup", "w")
        time.sleep(0.5)
        xdotool(display, "key", "1")  # label: success from here on (sticky)
        time.sleep(0.5)
        xdotool(display, "key", "Return")
        assert proc.wait(timeout=60) == 0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        xvfb.terminate()
        xvfb.wait(timeout=10)
    (ep,) = list(iter_episodes(out))
    actions = ep.arrays["action"]
    pushed = np.flatnonzero(actions[:, 0] > 0.99)
    assert len(pushed) >= 8, f"only {len(pushed)} steps saw the held w key"
    assert np.all(actions[pushed, 1:6] == 0.0)
    assert ep.arrays["intervention"][pushed].all() and not ep.arrays["intervention"][-1]
    x = ep.observation("tcp_pose")[:, 0]
    assert x[pushed[-1] + 1] - x[pushed[0]] > 0.03  # the arm followed the key
    assert len(ep) < 150 and ep.meta["source"] == "keyboard"  # Return ended it before max_steps
    # The "1" hotkey labeled the last few frames success for the reward classifier, and the episode too.
    label = ep.arrays["label"]
    first = int(np.argmax(label >= 0))
    assert first > pushed[-1] and np.all(label[:first] == -1) and np.all(label[first:] == 1)
    assert ep.meta["operator_label"] is True
    labels = frame_labels(ep.arrays, ep.meta)
    assert labels[first + 1:].all() and not labels[: first + 1].any()
