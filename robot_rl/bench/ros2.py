"""`robot-rl bench ros2`: latency and loss of `robot-rl ros2-bridge`'s streams, seen from another process.

The bridge node runs here on an embedded real-time twin (pick_cube: two 128×128 cameras at 30 Hz,
state at 100 Hz); a subscriber (`python -m robot_rl.ros2.probe record`) runs in a child process in
the same DDS domain. Latency = receive time in the subscriber (time.monotonic_ns) − the header
stamp (the bridge's capture time, t_capture_ns, on the same machine's CLOCK_MONOTONIC), so it
includes the bridge read, conversion, DDS and the subscriber's executor. Images are stamped when the
twin's renderer sampled the state, so their latency also includes rendering.

`dropped`: messages the node published in the measured window (recorded here by stamp) that the
subscriber never received, summed over joint_states and the image streams.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ros2Bench:
    """ROS 2 bridge node: state and image latency p50/p99 in another process, and dropped messages."""

    seconds: float = 60.0
    """Measured window (after the subscriber has seen every topic)."""
    task: str = "pick_cube"
    rate_hz: float = 100.0
    """State rate of the bridge node."""
    camera_rate_hz: float = 30.0
    cameras: str = "wrist,front"
    json: bool = False
    """Print one JSON line."""


class _Recording:
    """Wraps a publisher and records the header stamps it published (worker thread appends)."""

    def __init__(self, pub) -> None:
        self._pub, self.stamps = pub, []

    def publish(self, msg) -> None:
        self._pub.publish(msg)
        self.stamps.append(int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec))


def _stats(received: list, published: list, lo_ns: int, hi_ns: int) -> dict:
    rec = {int(s): int(r) for s, r in received}
    sent = [s for s in published if lo_ns <= s <= hi_ns]
    got = [s for s in sent if s in rec]
    lat_ms = np.array([(rec[s] - s) / 1e6 for s in got]) if got else np.array([np.nan])
    return {"published": len(sent), "received": len(got), "dropped": len(sent) - len(got),
            "p50_ms": round(float(np.percentile(lat_ms, 50)), 3), "p99_ms": round(float(np.percentile(lat_ms, 99)), 3),
            "max_ms": round(float(np.max(lat_ms)), 3)}


def _read_all(f) -> bytes:
    f.seek(0)
    return f.read()


def run(cfg: Ros2Bench) -> dict:
    from robot_rl.ros2.bridge_node import Ros2BridgeConfig, RunningBridge

    os.environ.setdefault("ROS_DOMAIN_ID", str(50 + os.getpid() % 50))  # children inherit it
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    node_cfg = Ros2BridgeConfig(embedded_twin=True, task=cfg.task, rate_hz=cfg.rate_hz, cameras=cfg.cameras,
                                camera_rate_hz=cfg.camera_rate_hz, namespace=f"bench{os.getpid()}")
    bridge = RunningBridge(node_cfg)
    b = bridge.bridge
    b.pub_joints = _Recording(b.pub_joints)
    b.pub_images = {c: _Recording(p) for c, p in b.pub_images.items()}
    render_ms: list[float] = []  # capture → rendered (t_receive_ns): the part of image latency before the bridge
    publish_frames = b._publish_frames

    def publish_and_time(obs):
        before = dict(b._last_frame)
        newest = publish_frames(obs)
        render_ms.extend((f.t_receive_ns - f.t_capture_ns) / 1e6 for f in obs.frames
                         if b._last_frame.get(f.camera) != before.get(f.camera))  # published ones only
        return newest
    b._publish_frames = publish_and_time
    err = tempfile.TemporaryFile()
    sub = subprocess.Popen([sys.executable, "-m", "robot_rl.ros2.probe", "record", "--namespace", node_cfg.namespace,
                            "--cameras", ",".join(b.cameras)], stdout=subprocess.PIPE, stderr=err)
    try:
        deadline = time.monotonic() + 60.0
        while b"ready" not in _read_all(err):
            if sub.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the subscriber did not start: {_read_all(err).decode()[-2000:]}")
            time.sleep(0.1)
        time.sleep(1.0)  # let discovery settle
        lo_ns = time.monotonic_ns()
        load0 = os.getloadavg()[0]
        counts0 = dict(b.counts)
        time.sleep(cfg.seconds)
        hi_ns = time.monotonic_ns()
        counts1 = dict(b.counts)
        time.sleep(1.0)  # messages in flight arrive
        sub.terminate()
        out, _ = sub.communicate(timeout=30)
    finally:
        if sub.poll() is None:
            sub.kill()
        bridge.close()
    got = json.loads(out)
    state = _stats(got["topics"].get("joint_states", []), b.pub_joints.stamps, lo_ns, hi_ns)
    images = {c: _stats(got["topics"].get(f"{c}/image_raw", []), b.pub_images[c].stamps, lo_ns, hi_ns)
              for c in b.cameras}
    image_lat = [((r - s) / 1e6) for c in b.cameras for s, r in got["topics"].get(f"{c}/image_raw", [])
                 if lo_ns <= s <= hi_ns]
    return {
        "state_latency_p50_ms": state["p50_ms"], "state_latency_p99_ms": state["p99_ms"],
        "image_latency_p50_ms": round(float(np.percentile(image_lat, 50)), 3) if image_lat else None,
        "image_latency_p99_ms": round(float(np.percentile(image_lat, 99)), 3) if image_lat else None,
        "image_render_p50_ms": round(float(np.percentile(render_ms, 50)), 3) if render_ms else None,
        "dropped": state["dropped"] + sum(v["dropped"] for v in images.values()),
        "state_rate_hz": round(state["published"] / cfg.seconds, 1),
        "image_rate_hz": {c: round(v["published"] / cfg.seconds, 1) for c, v in images.items()},
        "state": state, "images": images, "seconds": cfg.seconds,
        "node_errors": counts1["errors"] - counts0["errors"],
        # Other work on the machine shows up in every figure above: the 1-min load before and after.
        "load_avg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "setup": f"{cfg.task} twin (realtime, embedded), state {cfg.rate_hz:g} Hz, cameras {list(b.cameras)} "
                 f"{[got['image_hw'].get(c) for c in b.cameras]} at {cfg.camera_rate_hz:g} Hz, subscriber in a child "
                 f"process (rclpy SingleThreadedExecutor), loopback DDS, {os.cpu_count()} CPUs",
    }
