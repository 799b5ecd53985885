"""`robot-rl bench bridge`: step round-trip time of the ZeroMQ bridge vs SERL-style HTTP/JSON.

Both servers run as separate processes on loopback, as they would on a robot PC. The bridge
server is the twin (`pace fast`: a command with hold_s = 0 advances no simulated time, so the
figure is the bridge's own cost). For the image figures its cameras stream from a render process
at 30 Hz, so a request carries the newest frames as it would from real camera drivers.

`--flood` measures something else instead: the controlling client's step RTT while another process
(`robot_rl.bench.flood`) sends ~8 000 garbage and valid requests/s to the same server, in blocks
alternating with quiet ones so both conditions see the same machine noise in one run.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import zmq

from robot_rl.bench.bridge_compare import compare
from robot_rl.bench.flood import MIX as FLOOD_MIX
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
    flood: bool = False
    """Instead of the figures above: the controller's step RTT with and without another process
    flooding the request socket (garbage and valid requests), side by side in one run."""
    flood_steps: int = 3000
    """Measured steps per condition (quiet and flood), split evenly over the blocks."""
    flood_blocks: int = 6
    """Blocks per condition; quiet and flood blocks alternate (ABBA order)."""
    flood_rate_per_s: float = 8000.0
    """The flooder's paced send rate."""
    flood_paces: tuple[Literal["realtime", "fast"], ...] = ("realtime", "fast")
    """Server paces to measure, one server each: realtime as a physical robot is served; fast (stepped twin)."""
    against: str | None = None
    """Another robot_rl source tree (e.g. `git worktree add /tmp/old COMMIT`): instead of the figures
    above, step RTT of this tree's bridge and that one's in alternating blocks, with their ratios."""


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
    if cfg.flood:
        return run_flood(cfg)
    if cfg.against is not None:
        return compare(cfg.against, task=cfg.task, steps=cfg.steps, image_steps=cfg.image_steps)
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


# ---- flood -------------------------------------------------------------------------------------

FLOOD_WARMUP_S = 3.0
"""Unmeasured controller steps before the first block."""
FLOOD_SETTLE_S = 0.5
"""Unmeasured controller steps after the flood starts (its queues fill) and after it stops (the
server drains what it still holds), so each block measures one condition only."""
_FLOOD_SCRIPT = Path(__file__).with_name("flood.py")
# Run flood.py as a file: `python -m robot_rl.bench.flood` would first import robot_rl.bench and
# with it torch (2–3 s per block); flood.py itself only needs numpy, msgpack, zmq and the protocol.
_RUN_FLOOD = "import runpy, sys; runpy.run_path(sys.argv.pop(1), run_name='__main__')"


def flood_command(address: str, *, rate_per_s: float, duration_s: float, cameras: tuple[str, ...] = ()) -> list[str]:
    """argv of a flooder process (`robot_rl.bench.flood`) that starts in well under a second."""
    return [sys.executable, "-c", _RUN_FLOOD, str(_FLOOD_SCRIPT), address, "--rate-per-s", str(rate_per_s),
            "--duration-s", str(duration_s), "--cameras", *cameras]


class _Flooder:
    """A `robot_rl.bench.flood` process; `poll()` reads its JSON lines without blocking."""

    def __init__(self, address: str, rate_per_s: float, cameras: tuple[str, ...], duration_s: float) -> None:
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(flood_command(address, rate_per_s=rate_per_s, duration_s=duration_s,
                                                   cameras=cameras), stdout=subprocess.PIPE, stderr=self.log)
        self._buf = b""
        self.events: list[dict] = []

    def poll(self) -> None:
        if not self.proc.stdout.closed:
            fd = self.proc.stdout.fileno()
            while select.select([fd], [], [], 0)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        self.events += [json.loads(line) for line in lines if line.strip()]

    def started(self) -> bool:
        self.poll()
        if self.proc.poll() is not None and not any(e["event"] == "flooding" for e in self.events):
            self.log.seek(0)
            raise RuntimeError(f"the flooder exited with {self.proc.returncode} before flooding: "
                               f"{self.log.read().decode()[-2000:]}")
        return any(e["event"] == "flooding" for e in self.events)

    def stop(self) -> dict:
        """SIGTERM, then its final report {"sent", "dropped", "elapsed_s", "sent_per_s", …}."""
        if self.proc.poll() is None:
            self.proc.terminate()
        self.poll()
        out, _ = self.proc.communicate(timeout=10)  # the rest of its output; closes the pipe
        self._buf += out + b"\n"
        self.poll()
        done = [e for e in self.events if e["event"] == "done"]
        if not done:
            self.log.seek(0)
            raise RuntimeError(f"the flooder exited with {self.proc.returncode} without its report: "
                               f"{self.log.read().decode()[-2000:]}")
        return done[-1]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _flood_pace(cfg: BridgeBench, pace: str) -> dict:
    """Quiet and flood blocks against one `robot-rl serve --pace PACE` process."""
    port = free_port()
    proc, client = start_serve_process(["--task", cfg.task, "--pace", pace, "--stream-cameras", "True"], port)
    flooder: _Flooder | None = None
    try:
        client.reset(seed=0)
        cameras = tuple(c.name for c in client.welcome.cameras)
        delta = np.zeros(6)
        n = 0

        def step() -> float:
            nonlocal n
            delta[0] = 0.001 if n % 2 else -0.001  # stay in place, but a real command every step
            n += 1
            client.step(delta, hold_s=0.0)  # a BridgeRemoteError or BridgeTimeout ends the bench
            return client.last_timing.rtt_ms

        # Between blocks the controller keeps commanding, unmeasured (no watchdog trips).
        def step_for(seconds: float) -> None:
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                step()

        def step_until_flooding(f: _Flooder) -> None:
            t_end = time.monotonic() + 60
            while not f.started():
                step()
                if time.monotonic() > t_end:
                    raise RuntimeError("the flooder did not start flooding within 60 s")

        step_for(FLOOD_WARMUP_S)  # the first seconds after a start are slower (caches, the render process)
        per_block = max(1, cfg.flood_steps // cfg.flood_blocks)
        rtt: dict[bool, list[float]] = {False: [], True: []}
        block_p99: dict[bool, list[float]] = {False: [], True: []}
        reports = []
        for b in range(cfg.flood_blocks):
            for flooding in ((False, True) if b % 2 == 0 else (True, False)):
                if flooding:
                    flooder = _Flooder(client.address, cfg.flood_rate_per_s, cameras, duration_s=600.0)
                    step_until_flooding(flooder)
                    step_for(FLOOD_SETTLE_S)
                block = [step() for _ in range(per_block)]
                if flooding:
                    reports.append(flooder.stop())
                    flooder = None
                    step_for(FLOOD_SETTLE_S)
                rtt[flooding] += block
                block_p99[flooding].append(round(float(np.percentile(block, 99)), 3))
    finally:
        if flooder is not None:
            flooder.kill()
        client.close()
        proc.terminate()
        proc.wait(timeout=10)
    q50, q99, qmx = _percentiles(rtt[False])
    f50, f99, fmx = _percentiles(rtt[True])
    sent = sum(r["sent"] for r in reports)
    elapsed_s = sum(r["elapsed_s"] for r in reports)
    return {
        "quiet_step_rtt_p50_ms": round(q50, 4), "quiet_step_rtt_p99_ms": round(q99, 4),
        "quiet_step_rtt_max_ms": round(qmx, 3),
        "flood_step_rtt_p50_ms": round(f50, 4), "flood_step_rtt_p99_ms": round(f99, 4),
        "flood_step_rtt_max_ms": round(fmx, 3),
        "flood_p99_ratio": round(f99 / q99, 2), "flood_p50_ratio": round(f50 / q50, 2),
        # Median over blocks of each block's p99: one block hit by outside load moves it less.
        "flood_block_p99_ratio": round(float(np.median(block_p99[True]) / np.median(block_p99[False])), 2),
        "flood_sent_per_s": round(sent / elapsed_s, 1) if elapsed_s else 0.0,
        "flood_sent": sent, "flood_dropped": sum(r["dropped"] for r in reports),
        "flood_block_sent_per_s": [r["sent_per_s"] for r in reports],
        "quiet_block_p99_ms": block_p99[False], "flood_block_p99_ms": block_p99[True],
    }


def run_flood(cfg: BridgeBench) -> dict:
    """`robot-rl bench bridge --flood`: the first pace's figures at the top level, the others
    prefixed with their pace ("fast_flood_p99_ratio", …)."""
    if not cfg.flood_paces:
        raise ValueError("--flood-paces is empty: give realtime, fast or both")
    if cfg.flood_steps < cfg.flood_blocks or cfg.flood_blocks < 1:
        raise ValueError(f"--flood-steps ({cfg.flood_steps}) must be ≥ --flood-blocks ({cfg.flood_blocks}) ≥ 1")
    result: dict = {"bench": "bridge", "mode": "flood"}
    t0 = time.monotonic()
    for i, pace in enumerate(cfg.flood_paces):
        figures = _flood_pace(cfg, pace)
        result.update(figures if i == 0 else {f"{pace}_{k}": v for k, v in figures.items()})
    per_block = cfg.flood_steps // cfg.flood_blocks
    result["setup"] = {
        "transport": "tcp loopback, `robot-rl serve` in its own process (PUB on, cameras streaming), hold_s 0",
        "paces": list(cfg.flood_paces), "task": cfg.task,
        "controller": "one control client (first and only), reset(seed=0), then ±1 mm x delta steps",
        "blocks": f"{cfg.flood_blocks} quiet + {cfg.flood_blocks} flood blocks of {per_block} steps, ABBA order, "
                  f"after {FLOOD_WARMUP_S} s of warm-up steps; {FLOOD_SETTLE_S} s of unmeasured steps after "
                  "each flood start and stop",
        "flooder": f"separate process, 3 DEALER sockets, paced {cfg.flood_rate_per_s:.0f} msg/s, never reads replies; "
                   "mix " + ", ".join(f"{k} {w:.0%}" for k, w in FLOOD_MIX),
        "cpus": os.cpu_count(),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    return result

