"""The flooder of `robot-rl bench bridge --flood`: paced, stops by itself and with its parent,
loopback only. Counts only; no latency assertions."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import zmq

from robot_rl.bench.bridge import flood_command, free_port
from robot_rl.bench.flood import FloodConfig, flood


def _router(address: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(address)
    return sock


def _drain(sock: zmq.Socket, proc: subprocess.Popen, timeout_s: float) -> tuple[int, set[bytes]]:
    """Messages received (and from how many peers) until the process exits, plus 0.3 s."""
    n, peers = 0, set()
    deadline, grace_end = time.monotonic() + timeout_s, None
    while time.monotonic() < (grace_end or deadline):
        if grace_end is None and proc.poll() is not None:
            grace_end = time.monotonic() + 0.3
        if sock.poll(50):
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                n += 1
                peers.add(frames[0])
    return n, peers


def test_flooder_sends_at_its_paced_rate_and_stops_by_itself():
    address = f"tcp://127.0.0.1:{free_port()}"
    sock = _router(address)
    try:
        proc = subprocess.Popen(flood_command(address, rate_per_s=4000, duration_s=0.5, cameras=("wrist",)),
                                stdout=subprocess.PIPE, text=True)
        received, peers = _drain(sock, proc, timeout_s=10.0)
        out, _ = proc.communicate(timeout=10)  # it stopped by itself (duration_s)
    finally:
        sock.close(0)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["event"] == "flooding" and lines[-1]["event"] == "done"
    report = lines[-1]
    assert 0.4 <= report["elapsed_s"] < 2.0
    assert 1000 <= report["sent"] <= 4000 * report["elapsed_s"] + 1000  # paced: never above the rate
    assert received == report["sent"] + 1  # every message arrives, plus the monitor socket's first hello
    assert len(peers) == 3  # anonymous, monitor, never-said-hello
    assert set(report["by_kind"]) == {"garbage", "bad_header", "hello_monitor", "observe", "observe_cameras",
                                      "command_no_hello"} and min(report["by_kind"].values()) > 0


def test_flooder_stops_when_its_parent_dies():
    address = f"tcp://127.0.0.1:{free_port()}"
    parent = (f"import subprocess, time; subprocess.Popen({flood_command(address, rate_per_s=1000, duration_s=60)!r});"
              "time.sleep(1.5)")
    # run() returns once every holder of the stdout pipe has closed it: the parent and the flooder.
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=30)
    events = [json.loads(line)["event"] for line in out.stdout.splitlines()]
    assert events == ["flooding", "done"], out.stderr


def test_flooder_refuses_non_loopback_addresses():
    with pytest.raises(ValueError, match="loopback"):
        flood(FloodConfig("tcp://10.0.0.2:5555", duration_s=0.1))
