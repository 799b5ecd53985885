"""`robot-rl bench bridge`: step round-trip time of the ZeroMQ bridge vs SERL-style HTTP/JSON.

Both servers run as separate processes on loopback, as they would on a robot PC. The bridge
server is the twin (`pace fast`: a command with hold_s = 0 advances no simulated time, so the
figure is the bridge's own cost). For the image figures its cameras stream from a render process
at 30 Hz, so a request carries the newest frames as it would from real camera drivers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import zmq

from robot_rl.bench.http_baseline import serl_step
from robot_rl.bridge.client import BridgeClient
from robot_rl.errors import BridgeTimeout


@dataclass(frozen=True)
class BridgeBench:
    """Bridge step RTT (p50/p99, with and without 2×128×128 frames) and the HTTP baseline."""

    steps: int = 5000
    image_steps: int = 2000
    http_steps: int = 300
    task: str = "pick_cube"
    json: bool = False
    """Print one JSON line."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve_process(args: list[str], port: int, *, timeout_s: float = 60.0) -> tuple[subprocess.Popen, BridgeClient]:
    """`robot-rl serve …` in a subprocess, and a control client once it answers hello."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = tempfile.TemporaryFile()  # not a pipe: an unread pipe blocks the server once it fills
    proc = subprocess.Popen([sys.executable, "-m", "robot_rl.cli.main", "serve", "--bind",
                             f"tcp://127.0.0.1:{port}", "--pub-bind", f"tcp://127.0.0.1:{free_port()}", *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"robot-rl serve exited with {proc.returncode}: {log.read().decode()[-2000:]}")
        try:
            return proc, BridgeClient(f"tcp://127.0.0.1:{port}", name="bench", connect_timeout_s=2.0)
        except BridgeTimeout:
            if time.monotonic() > deadline:
                proc.kill()
                raise


def _percentiles(ms: list[float]) -> tuple[float, float, float]:
    a = np.asarray(ms)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def _measure(args: list[str], steps: int, *, cameras: bool) -> tuple[list[float], list]:
    port = free_port()
    proc, client = start_serve_process(args, port)
    try:
        client.reset(seed=0)
        cams = tuple(c.name for c in client.welcome.cameras)[:2] if cameras else ()
        delta = np.zeros(6)
        rtt, shapes = [], []
        for i in range(steps + 200):
            delta[0] = 0.001 if i % 2 else -0.001  # stay in place, but a real command every step
            obs = client.step(delta, hold_s=0.0, cameras=cams)
            if i >= 200:
                rtt.append(client.last_timing.rtt_ms)
        shapes = [list(f.image.shape) for f in obs.frames]
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)
    return rtt, shapes


_ECHO = """
import sys, zmq
s = zmq.Context().socket(zmq.ROUTER)
s.bind(sys.argv[1])
while True:
    s.send_multipart(s.recv_multipart())
"""


def zmq_echo_rtt(steps: int) -> list[float]:
    """Round trips of a 256-byte message to a bare ZeroMQ echo process: the floor any bridge on
    this machine, at this moment, can reach (this VM's wake-up latency drifts 2-3× over minutes)."""
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-c", _ECHO, address])
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    try:
        out = []
        msg = [b"x" * 256]
        for i in range(steps + 100):
            t0 = time.perf_counter()
            sock.send_multipart(msg)
            if not sock.poll(5000):
                raise RuntimeError("the zmq echo process did not answer")
            sock.recv_multipart()
            if i >= 100:
                out.append((time.perf_counter() - t0) * 1e3)
        return out
    finally:
        sock.close(0)
        proc.kill()
        proc.wait()


def run(cfg: BridgeBench) -> dict:
    base = ["--task", cfg.task, "--pace", "fast"]
    echo = zmq_echo_rtt(cfg.steps)
    # Without images the server renders nothing; with images its cameras stream from their own
    # process (newest frame per request), as camera drivers do on a robot PC.
    rtt, _ = _measure(base + ["--stream-cameras", "False"], cfg.steps, cameras=False)
    rtt_img, frame_shapes = _measure(base + ["--stream-cameras", "True"], cfg.image_steps, cameras=True)

    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}/"
    http_proc = subprocess.Popen([sys.executable, "-c", f"from robot_rl.bench.http_baseline import serve; serve({http_port})"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                serl_step(url, [0.5, 0, 0.2, 0, 1, 0, 0])
                break
            except OSError as exc:
                if time.monotonic() > deadline or http_proc.poll() is not None:
                    raise RuntimeError("the Flask baseline server did not start (is flask installed?)") from exc
                time.sleep(0.1)
        http_ms = []
        for i in range(cfg.http_steps + 20):
            t0 = time.perf_counter()
            serl_step(url, [0.5, 0, 0.2, 0, 1, 0, 0])
            if i >= 20:
                http_ms.append((time.perf_counter() - t0) * 1e3)
    finally:
        http_proc.terminate()
        http_proc.wait(timeout=10)

    p50, p99, mx = _percentiles(rtt)
    ip50, ip99, imx = _percentiles(rtt_img)
    h50, h99, _ = _percentiles(http_ms)
    return {
        "bench": "bridge",
        "step_rtt_p50_ms": round(p50, 4), "step_rtt_p99_ms": round(p99, 4), "step_rtt_max_ms": round(mx, 3),
        "step_rtt_images_p50_ms": round(ip50, 4), "step_rtt_images_p99_ms": round(ip99, 4),
        "step_rtt_images_max_ms": round(imx, 3),
        "http_baseline_p50_ms": round(h50, 3), "http_baseline_p99_ms": round(h99, 3),
        "speedup_vs_http": round(h50 / p50, 2),
        "zmq_echo_p50_ms": round(_percentiles(echo)[0], 4), "zmq_echo_p99_ms": round(_percentiles(echo)[1], 4),
        "setup": {"transport": "tcp loopback, server in its own process (PUB on), twin pace fast, hold_s 0",
                  "images": "2 cameras streaming from a render process; newest frames per request",
                  "steps": cfg.steps,
                  "image_steps": cfg.image_steps, "frames": [list(s) for s in frame_shapes],
                  "http": "Flask server, 3 sequential requests.post per step (SERL's pattern)",
                  "cpus": os.cpu_count()},
    }
