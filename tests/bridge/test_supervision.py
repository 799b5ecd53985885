"""A dead or failing control loop never takes the server down: it reports `fault`, refuses motion,
keeps the arm held, and an operator's restart_control brings control back."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from robot_rl.bridge.client import BridgeClient
from robot_rl.bridge.local import LocalLink
from robot_rl.bridge.serve import ServeConfig, build_service, start_server
from robot_rl.control import impedance
from robot_rl.errors import BridgeRemoteError

HOLD_ATOL_M = 0.005
"""The restarted twin resumes from the dead loop's last snapshot: the TCP stays where it was."""


def control_pid(server) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = re.findall(r"control loop runs in process (\d+)", server.output())
        if found:
            return int(found[-1])
        time.sleep(0.1)
    raise AssertionError(f"the server never logged its control process: {server.output()[-2000:]}")


@pytest.mark.slow
def test_sigkill_of_the_control_process_is_a_fault_until_restart(serve_process):
    server = serve_process("--task", "pick_cube", "--pace", "realtime", env={"ROBOT_RL_LOG": "INFO"})
    client = server.client(timeout_s=5.0)
    client.reset(seed=3, randomize=False)
    for _ in range(5):
        client.step(np.array([0.0, 0.01, 0.0, 0, 0, 0]), hold_s=0.05)
    pid = control_pid(server)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert server.alive(), server.output()[-3000:]
    state = client.observe().state
    assert state.mode == "fault" and "SIGKILL" in state.fault, state.fault
    pose_at_death = state.pose_base_tcp.copy()
    for attempt in (lambda: client.step(np.zeros(6), hold_s=0.02), lambda: client.reset(seed=1),
                    lambda: client.clear_error(), lambda: client.set_params(limits={"watchdog_s": 0.1})):
        with pytest.raises(BridgeRemoteError) as err:
            attempt()
        assert err.value.code == "fault" and "restart_control" in str(err.value)
    monitor = server.client(role="monitor")
    assert monitor.observe().state.mode == "fault"  # monitors see it too
    status = robot_rl("robot", "status", "--server", server.address)
    assert status.returncode == 0 and "mode            fault" in status.stdout and "SIGKILL" in status.stdout

    restart = robot_rl("robot", "restart-control", "--server", server.address)  # the operator's command
    assert restart.returncode == 0, restart.stderr
    assert "mode            hold" in restart.stdout
    obs = monitor.observe()
    assert obs.state.mode == "hold"
    np.testing.assert_allclose(obs.state.pose_base_tcp[:3], pose_at_death[:3], atol=HOLD_ATOL_M)
    assert control_pid(server) != pid
    with pytest.raises(BridgeRemoteError) as err:
        client.step(np.zeros(6))  # the operator took control to restart: the old actor must stop
    assert err.value.code == "control_taken"
    again = robot_rl("robot", "restart-control", "--server", server.address)
    assert again.returncode == 2 and "control_alive" in again.stderr  # only a dead loop restarts
    client = server.client(timeout_s=5.0)
    client.reset(seed=4)
    assert client.step(np.array([0.0, 0.01, 0.0, 0, 0, 0]), hold_s=0.05).state.mode == "track"
    assert server.alive()
    assert "Traceback" not in server.output()
    monitor.close()
    client.close()


def robot_rl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_rl.cli.main", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def stepped_stack():
    stack = start_server(ServeConfig(task="pick_cube", bind="tcp://127.0.0.1:0", pub_bind=""))
    yield stack
    stack.close()


def test_unexpected_request_failure_answers_internal_error_without_details(stepped_stack, monkeypatch, caplog):
    client = BridgeClient(stepped_stack.address, name="t")
    client.reset(seed=0)
    real = stepped_stack.service.observation
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 3:
            raise RuntimeError("secret detail /home/lab/robot_rl/bridge/service.py line 99")
        return real(*args, **kwargs)

    monkeypatch.setattr(stepped_stack.service, "observation", flaky)
    with caplog.at_level(logging.ERROR, logger="robot_rl.bridge.server"):
        for _ in range(3):
            with pytest.raises(BridgeRemoteError) as err:
                client.observe()
            assert err.value.code == "internal_error"
            assert "secret" not in str(err.value) and "Traceback" not in str(err.value)
            assert "robot PC's log" in str(err.value)
        assert client.step(np.zeros(6), hold_s=0.01).state.mode == "track"  # still serving
    lines = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert 1 <= len(lines) <= 3 and sum(bool(r.exc_info) for r in lines) == 1  # one traceback, then lines
    assert stepped_stack.thread.is_alive()
    client.close()


def test_control_step_failure_brakes_then_faults_and_restart_recovers(stepped_stack, monkeypatch):
    """The stepped runtime's core: a step that raises brakes with damping (REFLEX, internal fault);
    one that keeps raising ends the loop, which the server reports as `fault` until restarted."""
    client = BridgeClient(stepped_stack.address, name="t")
    client.reset(seed=0)
    client.step(np.array([0.02, 0, 0, 0, 0, 0]), hold_s=0.05)
    real = impedance.cartesian_impedance_step
    broken = {"on": True}

    def failing(*args, **kwargs):
        if broken["on"]:
            raise FloatingPointError("injected")
        return real(*args, **kwargs)

    monkeypatch.setattr(impedance, "cartesian_impedance_step", failing)
    assert client.observe().state.mode == "track"  # an observation does not tick the stepped loop
    obs = client.step(np.zeros(6), hold_s=0.05)  # 50 failing ticks: braked, not dead
    assert obs.state.mode == "reflex" and "failed" in obs.state.fault
    assert np.linalg.norm(obs.state.twist_base_tcp[:3]) < 0.05
    with pytest.raises(BridgeRemoteError) as err:
        client.step(np.zeros(6))
    assert err.value.code == "reflex_active"
    broken["on"] = False
    client.clear_error()
    assert client.step(np.zeros(6), hold_s=0.05).state.mode == "track"

    # Now the damping brake fails too (the arm's torque interface is gone): the loop must stop.
    core = stepped_stack.service.runtime.core

    def dead_link(tau_nm):
        raise ConnectionError("arm link lost")

    monkeypatch.setattr(core.backend, "write", dead_link)
    with pytest.raises(BridgeRemoteError) as err:
        client.step(np.zeros(6), hold_s=0.05)
    assert err.value.code == "fault" and "arm link lost" in str(err.value)
    assert client.observe().state.mode == "fault"
    assert client.restart_control().state.mode == "hold"  # a fresh backend and core
    client.reset(seed=1)
    assert client.step(np.zeros(6), hold_s=0.05).state.mode == "track"
    client.close()


def test_in_process_link_refuses_a_bad_seed_like_the_wire():
    link = LocalLink(build_service(ServeConfig(task="pick_cube")))
    with pytest.raises(BridgeRemoteError) as err:
        link.reset(seed=-5)
    assert err.value.code == "bad_field" and "seed" in str(err.value)
    assert link.reset(seed=5).state.mode == "hold"
    link.close()
