"""Who may talk to the robot server, and who holds the arm: eviction, expiry, re-handshake,
explicit takeover, watchdog holds that the controller must see, stalled connections."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from robot_rl.bridge import protocol as P
from robot_rl.bridge.client import BridgeClient
from robot_rl.bridge.serve import ServeConfig, start_server
from robot_rl.bridge.server_config import ServerConfig
from robot_rl.errors import BridgeRemoteError
from conftest import raw_socket


@pytest.fixture
def stepped():
    stack = start_server(ServeConfig(task="pick_cube", bind="tcp://127.0.0.1:0", pub_bind=""),
                         server=ServerConfig(client_ttl_s=1.0))
    yield stack
    stack.close()


@pytest.fixture
def realtime():
    stack = start_server(ServeConfig(task="pick_cube", bind="tcp://127.0.0.1:0", pub_bind="", pace="realtime",
                                     rt_priority=None, stream_cameras=False),
                         server=ServerConfig(heartbeat_ivl_s=0.2, heartbeat_timeout_s=1.0))
    yield stack
    stack.close()


def test_monitor_hellos_never_evict_the_controller(stepped):
    controller = BridgeClient(stepped.address, name="actor")
    controller.reset(seed=0)
    sockets = []
    for i in range(300):
        s = raw_socket(stepped.address)
        s.send_multipart(P.encode(P.Hello(P.PROTOCOL_VERSION, f"monitor{i}", "monitor")))
        assert isinstance(P.decode(s.recv_multipart()), P.Welcome)
        sockets.append(s)
    obs = controller.step(np.zeros(6), hold_s=0.01)  # was: hello_required (the controller was evicted)
    assert obs.state.mode == "track"
    assert len(stepped.server.clients) <= stepped.server.clients.max_clients
    # The newest monitors are still known; the oldest were forgotten first.
    sockets[-1].send_multipart(P.encode(P.GetObservation(1)))
    assert isinstance(P.decode(sockets[-1].recv_multipart()), P.Observation)
    sockets[0].send_multipart(P.encode(P.GetObservation(1)))
    assert P.decode(sockets[0].recv_multipart()).code == "hello_required"
    for s in sockets:
        s.close()
    controller.close()


def test_silent_clients_expire_and_say_hello_again(stepped, caplog):
    monitor = BridgeClient(stepped.address, name="viewer", role="monitor")
    controller = BridgeClient(stepped.address, name="actor")
    controller.reset(seed=0)
    time.sleep(2.3)  # past client_ttl_s = 1 s and the once-a-second sweep
    with caplog.at_level(logging.WARNING, logger="robot_rl.bridge.client"):
        assert isinstance(monitor.observe(), P.Observation)  # re-handshakes transparently
    assert any("asked for a new hello" in r.getMessage() for r in caplog.records)
    assert controller.step(np.zeros(6), hold_s=0.01).state.mode == "track"  # the controller never expires
    monitor.close()
    controller.close()


def test_takeover_needs_take_control_and_overtaken_replies_say_so(realtime):
    first = BridgeClient(realtime.address, name="first", timeout_s=5.0)
    first.reset(seed=0, randomize=False)
    with pytest.raises(BridgeRemoteError) as err:
        BridgeClient(realtime.address, name="started by mistake")
    assert err.value.code == "control_held" and "'first'" in str(err.value)
    outcome = {}

    def long_step():
        try:
            outcome["obs"] = first.step(np.zeros(6), hold_s=1.5)
        except BridgeRemoteError as exc:
            outcome["error"] = exc

    t = threading.Thread(target=long_step)
    t0 = time.monotonic()
    t.start()
    time.sleep(0.3)
    second = BridgeClient(realtime.address, name="second", take_control=True)
    t.join(timeout=10)
    took_s = time.monotonic() - t0
    assert "obs" not in outcome, "the overtaken command was answered with a normal observation"
    assert outcome["error"].code == "control_taken" and "in flight" in str(outcome["error"])
    assert took_s < 1.5  # answered at the takeover, not when the hold ended
    second.step(np.zeros(6), hold_s=0.05)
    with pytest.raises(BridgeRemoteError) as err:
        first.step(np.zeros(6))
    assert err.value.code == "control_taken"
    second.close()
    first.close()


def test_a_controller_is_not_silent_while_its_long_request_runs(realtime):
    """Silence counts from the last answer: right after a request that took longer than
    release_s (a slow real-time reset, a long hold) the controller still holds the arm."""
    realtime.server.clients.release_ns = int(0.3e9)
    first = BridgeClient(realtime.address, name="busy", timeout_s=5.0)
    first.reset(seed=0, randomize=False)
    first.step(np.zeros(6), hold_s=0.8)  # arrived 0.8 s before its answer
    with pytest.raises(BridgeRemoteError) as err:
        BridgeClient(realtime.address, name="started by mistake")
    assert err.value.code == "control_held" and "'busy'" in str(err.value)
    first.close()


def test_a_controller_gone_silent_releases_the_arm(stepped):
    stepped.server.clients.release_ns = int(0.3e9)
    first = BridgeClient(stepped.address, name="crashed")
    first.reset(seed=0)
    time.sleep(0.5)
    second = BridgeClient(stepped.address, name="after the crash")  # no take_control needed
    assert second.step(np.zeros(6), hold_s=0.01).state.mode == "track"
    second.close()
    first.close()


def test_after_a_watchdog_hold_the_first_command_is_answered_with_the_hold(realtime):
    client = BridgeClient(realtime.address, name="frozen", timeout_s=5.0)
    client.reset(seed=0, randomize=False)
    obs = client.step(np.array([0.0, 0.01, 0.0, 0, 0, 0]), hold_s=0.05)
    assert obs.state.mode == "track"
    time.sleep(0.6)  # as if SIGSTOPped: silent longer than watchdog_s = 0.2 s
    held = client.step(np.array([0.0, 0.02, 0.0, 0, 0, 0]), hold_s=0.05)
    assert held.state.mode == "watchdog_hold"
    assert held.state.command_seq == obs.seq  # the command was not applied
    resumed = client.step(np.array([0.0, 0.02, 0.0, 0, 0, 0]), hold_s=0.05)
    assert resumed.state.mode == "track" and resumed.state.command_seq == resumed.seq
    client.close()


STALLED_CLIENT = textwrap.dedent("""
    import sys, time
    from robot_rl.bridge.client import BridgeClient
    c = BridgeClient(sys.argv[1], name="staller", role="monitor", connect_timeout_s=20)
    c.observe()
    print("ready", flush=True)
    time.sleep(60)
""")


def established_from(port: int) -> int:
    """TCP connections in ESTABLISHED state whose local port is `port` (server side)."""
    n = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
            n += 1
    return n


def test_a_stalled_connection_is_dropped(realtime):
    port = int(realtime.address.rsplit(":", 1)[1])
    before = established_from(port)
    child = subprocess.Popen([sys.executable, "-c", STALLED_CLIENT, realtime.address], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert established_from(port) == before + 1
        os.kill(child.pid, signal.SIGSTOP)  # handshake done, then silence: no heartbeat answers
        deadline = time.monotonic() + 5.0
        while established_from(port) > before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert established_from(port) == before, "the stalled connection was not dropped"
    finally:
        child.kill()
        child.wait()
