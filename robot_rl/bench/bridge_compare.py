"""`robot-rl bench bridge --against DIR`: this tree's bridge and another robot_rl tree's, side by side.

Each side runs in a worker process with its own PYTHONPATH (this checkout, or DIR: e.g. a git
worktree of an older commit), which starts its own `robot-rl serve` and control client from that
tree. The coordinator asks the two workers for blocks of steps in turn (ABBA), so both see the same
machine noise; the figures come with their ratios. The worker uses only calls every version of the
client has had (BridgeClient.reset/step/last_timing, bench.bridge.start_serve_process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from robot_rl.errors import ConfigError

_WORKER = """
import json, subprocess, sys
import numpy as np
from robot_rl.bench.bridge import free_port, start_serve_process
args = json.loads(sys.argv[1])
proc, client = start_serve_process(args, free_port())
client.reset(seed=0)
cams = {"none": (), "images": tuple(c.name for c in client.welcome.cameras)[:2]}
delta = np.zeros(6)
print(json.dumps({"ready": True}), flush=True)
try:
    for line in sys.stdin:
        n, which = json.loads(line)
        rtt = []
        for i in range(n):
            delta[0] = 0.001 if i % 2 else -0.001
            client.step(delta, hold_s=0.0, cameras=cams[which])
            rtt.append(client.last_timing.rtt_ms)
        print(json.dumps(rtt), flush=True)
finally:
    client.close()
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # a loaded machine: the measurements are in, just stop it
        proc.kill()
        proc.wait()
"""


class _Worker:
    def __init__(self, tree: Path, serve_args: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(tree), PYTHONUNBUFFERED="1")
        self.tree = tree
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(serve_args)], cwd=tree, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if json.loads(self._line()).get("ready") is not True:
            raise RuntimeError(f"the bench worker for {tree} did not start")

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the bench worker for {self.tree} exited with {self.proc.wait()}")
        return line

    def steps(self, n: int, which: str) -> list[float]:
        self.proc.stdin.write(json.dumps([n, which]) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _figures(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 4), "p99_ms": round(float(np.percentile(a, 99)), 4),
            "max_ms": round(float(a.max()), 3)}


def compare(against: str, *, task: str, steps: int, image_steps: int, blocks: int = 10) -> dict:
    """Step RTT of this tree's bridge and `against`'s, in alternating blocks (see module docstring)."""
    other = Path(against).resolve()
    if not (other / "robot_rl" / "bridge" / "server.py").is_file():
        raise ConfigError(f"--against {against}: no robot_rl source tree there (expected robot_rl/bridge/server.py); "
                          "make one with `git worktree add DIR COMMIT`")
    here = Path(__file__).resolve().parents[2]
    out: dict = {"bench": "bridge", "mode": "against", "against": str(other)}
    for which, n_steps, stream in (("none", steps, "False"), ("images", image_steps, "True")):
        args = ["--task", task, "--pace", "fast", "--stream-cameras", stream]
        sides = {"this": _Worker(here, args), "against": _Worker(other, args)}
        try:
            for w in sides.values():
                w.steps(200, which)  # warm-up, unmeasured
            rtt: dict[str, list[float]] = {"this": [], "against": []}
            per_block = max(1, n_steps // blocks)
            for b in range(blocks):
                for name in (("this", "against") if b % 2 == 0 else ("against", "this")):
                    rtt[name] += sides[name].steps(per_block, which)
        finally:
            for w in sides.values():
                w.close()
        this, base = _figures(rtt["this"]), _figures(rtt["against"])
        out[which] = {"this": this, "against": base,
                      "p50_ratio": round(this["p50_ms"] / base["p50_ms"], 3),
                      "p99_ratio": round(this["p99_ms"] / base["p99_ms"], 3)}
    out["setup"] = {"transport": "tcp loopback, each server in its own process (PUB on), twin pace fast, hold_s 0",
                    "order": f"{blocks} blocks per side, ABBA, after 200 unmeasured steps each",
                    "steps": steps, "image_steps": image_steps, "cpus": os.cpu_count()}
    return out
