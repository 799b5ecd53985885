"""The bring-up check a lab runs on its arm (hardware tests), also run in CI against the doubles.

Connect, hold 5 s, move 2 cm along each axis inside the box and back, let the watchdog hold the
arm, disconnect. The same client code as a learner: a real server process, real sockets.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import yaml

from robot_rl import paths

HOLD_S = 5.0
HOLD_DRIFT_M = 0.005
MOVE_M = 0.02
REACH_TOL_M = 0.005
STILL_M_PER_S = 0.01


def task_without_cameras(tmp_path: Path, task: str = "pick_cube") -> str:
    """The task's YAML with no cameras (a bring-up needs none), written to tmp_path."""
    data = yaml.safe_load((paths.user_dir("tasks") / f"{task}.yaml").read_text())
    data["cameras"] = []
    path = tmp_path / f"{task}_bringup.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _speed(client) -> float:
    return float(np.linalg.norm(client.observe().state.twist_base_tcp[:3]))


def run_bringup(server, watchdog_s: float) -> dict:
    """Run the check against a started `ServeProcess`; returns what it measured. Asserts."""
    client = server.client(name="bringup", start_timeout_s=60.0)
    out = {}
    try:
        state = client.observe().state
        assert state.mode != "fault", state.fault
        if state.mode == "reflex":
            client.clear_error()
        start = client.reset(randomize=False).state.pose_base_tcp
        # 1. Hold 5 s without commands beyond the watchdog: the pose must not drift.
        poses = []
        t_end = time.monotonic() + HOLD_S
        while time.monotonic() < t_end:
            poses.append(client.observe().state.pose_base_tcp[:3])
            time.sleep(0.05)
        drift = float(np.max(np.linalg.norm(np.array(poses) - start[:3], axis=1)))
        out["hold_drift_m"] = drift
        assert drift < HOLD_DRIFT_M, f"the arm drifted {drift * 1e3:.1f} mm while holding"
        # 2. 2 cm along each axis and back, absolute targets inside the box.
        errors = []
        for axis in range(3):
            for sign in (1.0, -1.0):
                goal = start.copy()
                goal[axis] += sign * MOVE_M
                obs = None
                for _ in range(30):  # 3 s of 10 Hz commands
                    obs = client.step(goal, mode="absolute", hold_s=0.1)
                err = float(np.linalg.norm(obs.state.pose_base_tcp[:3] - goal[:3]))
                errors.append(err)
                assert obs.state.mode == "track", (obs.state.mode, obs.state.fault)
                assert err < REACH_TOL_M, f"axis {'xyz'[axis]} {sign:+.0f}: {err * 1e3:.1f} mm from the goal"
        out["move_error_max_m"] = max(errors)
        # 3. Stop commanding: the watchdog takes over and the arm stays still.
        client.step(start, mode="absolute", hold_s=0.0)
        time.sleep(watchdog_s + 0.3)
        state = client.observe().state
        assert state.mode == "watchdog_hold", state.mode
        out["speed_after_watchdog_m_per_s"] = _speed(client)
        assert out["speed_after_watchdog_m_per_s"] < STILL_M_PER_S
    finally:
        client.close()
    return out
