"""The bring-up check on each arm: on the physical arm (hardware tests, a lab runs them) and,
in CI, the same check through each backend's vendor-API double in real time."""

from __future__ import annotations

import os

import pytest

from robot_rl.task_spec import load_task
from bringup import run_bringup, task_without_cameras

WATCHDOG_S = load_task("pick_cube").limits.watchdog_s


@pytest.mark.hardware
@pytest.mark.parametrize("backend, ip_env", [("franka", "ROBOT_RL_FRANKA_IP"), ("ur", "ROBOT_RL_UR_IP")])
def test_bringup_on_the_arm(serve_process, tmp_path, backend, ip_env):
    """ROBOT_RL_HARDWARE=1 ROBOT_RL_FRANKA_IP=172.16.0.2 pytest tests/arms/test_bringup.py -k franka
    (the arm in its workspace, FCI / remote control on, a hand on the e-stop)."""
    ip = os.environ.get(ip_env)
    if not ip:
        pytest.skip(f"set {ip_env} to the arm's address")
    server = serve_process("--backend", backend, "--robot-ip", ip, "--task", task_without_cameras(tmp_path),
                           "--pace", "realtime")
    run_bringup(server, WATCHDOG_S)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["franka-double", "ur-double"])
def test_bringup_through_the_double(serve_process, tmp_path, backend):
    server = serve_process("--backend", backend, "--task", task_without_cameras(tmp_path), "--pace", "realtime",
                           "--reset-motion", "motion")
    run_bringup(server, WATCHDOG_S)
