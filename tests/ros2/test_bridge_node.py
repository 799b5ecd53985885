"""`robot-rl ros2-bridge` in real processes: the bridge node in its own process, teleop devices as
other rclpy processes (`robot_rl.ros2.probe`), and this test process as the subscribing ROS node.

What ROS 2 does with a wrong-typed publisher on `~/cmd_twist` (std_msgs/String): DDS matches
readers and writers by topic name *and* type, so the String writer never connects to the bridge's
TwistStamped reader; nothing is delivered and the bridge sees no message at all (rmw may log an
"incompatible type" notice). test_bad_input checks the bridge keeps running and the arm does not move.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from robot_rl.bench.bridge import free_port
from robot_rl.bridge.client import BridgeClient
from robot_rl.errors import BridgeRemoteError, BridgeTimeout
from robot_rl.ros2.bridge_config import Ros2BridgeConfig, twist_to_delta
from robot_rl.task_spec import load_task

BOX = load_task("pick_cube").workspace
BOX_TOL_M = 0.005
"""The TCP may overshoot the box by compliance, no more than this."""
START_TIMEOUT_S = 90.0


# ---- pure rule ----------------------------------------------------------------------------------

def test_twist_to_delta_scales_to_the_speed_limits_and_refuses_nan():
    d = twist_to_delta(np.array([0.3, 0.4, 0, 0, 0, 2.0]), 0.1, max_m_per_s=0.1, max_rad_per_s=0.5)
    np.testing.assert_allclose(d, [0.006, 0.008, 0, 0, 0, 0.05])
    np.testing.assert_allclose(twist_to_delta(np.full(6, 0.01), 0.1, max_m_per_s=1, max_rad_per_s=1), np.full(6, 1e-3))
    huge = twist_to_delta(np.array([1e308, 1e308, 0, 0, 0, -1e308]), 0.1, max_m_per_s=0.1, max_rad_per_s=0.5)
    np.testing.assert_allclose(huge, [0.01 / math.sqrt(2), 0.01 / math.sqrt(2), 0, 0, 0, -0.05])
    with pytest.raises(ValueError, match="finite"):
        twist_to_delta(np.array([0, math.nan, 0, 0, 0, 0]), 0.1, max_m_per_s=0.1, max_rad_per_s=0.5)
    with pytest.raises(ValueError, match="exactly one"):
        Ros2BridgeConfig()
    with pytest.raises(ValueError, match="command_rate_hz"):
        Ros2BridgeConfig(embedded_twin=True, rate_hz=5.0, command_rate_hz=10.0)


# ---- processes ----------------------------------------------------------------------------------

class BridgeProcess:
    """`robot-rl ros2-bridge …` in a subprocess, output in a log file."""

    def __init__(self, *args: str) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="ros2-bridge-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "robot_rl.cli.main", "ros2-bridge", *args],
                                     env={**os.environ, "ROBOT_RL_LOG": "WARNING", "PYTHONUNBUFFERED": "1"},
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


class ServerProcess:
    """`robot-rl serve --pace realtime` in a subprocess (a robot PC's server, as the bridge node sees it)."""

    def __init__(self) -> None:
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.log = tempfile.NamedTemporaryFile(prefix="robot-rl-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "robot_rl.cli.main", "serve", "--bind", self.address,
                                      "--pub-bind", "", "--pace", "realtime", "--task", "pick_cube"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def monitor(self) -> BridgeClient:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.proc.poll() is None, Path(self.log.name).read_text(errors="replace")[-3000:]
            try:
                return BridgeClient(self.address, name="test-monitor", role="monitor", connect_timeout_s=2.0)
            except BridgeTimeout:
                assert time.monotonic() < deadline, "robot-rl serve did not answer"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def probe(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "robot_rl.ros2.probe", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)


class Listener:
    """This process as a ROS node: records the bridge's topics; calls its services."""

    def __init__(self, namespace: str, cameras: tuple[str, ...] = ()) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import CameraInfo, Image, JointState
        from std_srvs.srv import Trigger

        from robot_rl.ros2.messages import ns_of_stamp
        from robot_rl.ros2.qos import diagnostics_qos, sensor_qos

        self.ns = namespace
        self.ctx = Context()
        rclpy.init(context=self.ctx, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("test_listener", context=self.ctx)
        base = f"/{namespace}/bridge"
        self.joints: list = []   # (stamp ns, receive ns, q)
        self.poses: list = []    # (stamp ns, pose)
        self.images: dict = {c: [] for c in cameras}
        self.infos: dict = {c: [] for c in cameras}
        self.diag: list = []     # dicts of the bridge's status values
        q = sensor_qos(depth=50)
        self.node.create_subscription(JointState, f"{base}/joint_states", lambda m: self.joints.append(
            (ns_of_stamp(m.header.stamp), time.monotonic_ns(), np.array(m.position))), q)
        self.node.create_subscription(PoseStamped, f"{base}/tcp_pose", lambda m: self.poses.append(
            (ns_of_stamp(m.header.stamp), np.array([m.pose.position.x, m.pose.position.y, m.pose.position.z]))), q)
        for c in cameras:
            self.node.create_subscription(Image, f"{base}/{c}/image_raw", lambda m, c=c: self.images[c].append(
                (ns_of_stamp(m.header.stamp), m.height, m.width, m.encoding, len(m.data))), q)
            self.node.create_subscription(CameraInfo, f"{base}/{c}/camera_info", lambda m, c=c: self.infos[c].append(
                (ns_of_stamp(m.header.stamp), m.width, m.height, m.k[0])), q)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, diagnostics_qos())
        self.services = {k: self.node.create_client(Trigger, f"{base}/{k}") for k in ("reset", "clear_error",
                                                                                     "take_control")}
        self._trigger = Trigger
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            if s.name == f"{self.ns}/bridge":
                self.diag.append({kv.key: kv.value for kv in s.values})

    def call(self, kind: str, timeout_s: float = 30.0):
        client = self.services[kind]
        assert client.wait_for_service(timeout_sec=timeout_s), f"~/{kind} not offered"
        future = client.call_async(self._trigger.Request())
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert future.done(), f"~/{kind} did not answer in {timeout_s} s"
        return future.result()

    def wait_for(self, what, timeout_s: float = START_TIMEOUT_S, why: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        while not what():
            assert time.monotonic() < deadline, f"timed out waiting for {why}"
            time.sleep(0.05)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        self.ctx.try_shutdown()


def in_box(p: np.ndarray, tol_m: float = BOX_TOL_M) -> bool:
    return bool(np.all(p >= np.array(BOX.min_m) - tol_m) and np.all(p <= np.array(BOX.max_m) + tol_m))


# ---- the embedded twin --------------------------------------------------------------------------

def test_embedded_twin_streams_state_images_diagnostics_and_answers_services():
    ns = f"emb{os.getpid()}"
    bridge = BridgeProcess("--embedded-twin", "--task", "pick_cube", "--namespace", ns, "--cameras", "wrist,front",
                           "--control")
    listener = Listener(ns, ("wrist", "front"))
    try:
        listener.wait_for(lambda: len(listener.joints) > 5 and all(listener.images.values()) and listener.diag,
                          why=f"the bridge's topics; its output: {bridge.output()[-2000:]}")
        n0, t0 = len(listener.joints), time.monotonic()
        time.sleep(2.0)
        rate_hz = (len(listener.joints) - n0) / (time.monotonic() - t0)
        assert rate_hz > 20, f"joint_states at {rate_hz:.0f} Hz, configured 100 Hz (a busy machine slows it)"
        stamps = np.array([s for s, _, _ in listener.joints])
        assert np.all(np.diff(stamps) > 0), "stamps must increase"
        # The bridge's capture clock is this machine's CLOCK_MONOTONIC: received after captured, recently.
        lag_ms = np.array([(r - s) / 1e6 for s, r, _ in listener.joints])
        assert np.all(lag_ms >= 0) and np.median(lag_ms) < 1000, lag_ms  # a clock check, not a latency one
        assert all(len(q) == 7 and np.all(np.isfinite(q)) for _, _, q in listener.joints)
        assert listener.poses and all(np.all(np.isfinite(p)) for _, p in listener.poses)
        for cam in ("wrist", "front"):
            s, h, w, enc, n = listener.images[cam][-1]
            assert (h, w, enc, n) == (128, 128, "rgb8", 128 * 128 * 3)
            assert len(listener.images[cam]) > 10
            assert np.all(np.diff([i[0] for i in listener.images[cam]]) > 0)
            info = listener.infos[cam][-1]
            assert info[1:3] == (128, 128) and info[2] > 0
        assert listener.diag[-1]["controlling"] == "True" and listener.diag[-1]["mode"] in ("hold", "watchdog_hold")
        answer = listener.call("take_control")
        assert answer.success and "already" in answer.message
        answer = listener.call("reset", timeout_s=60)  # the twin starts at its home pose, outside the box
        assert answer.success, answer.message
        n0 = len(listener.poses)
        answer = listener.call("clear_error")
        assert answer.success, answer.message
        listener.wait_for(lambda: len(listener.poses) > n0 + 10, 10.0, "poses after the reset")
        assert all(in_box(p) for _, p in listener.poses[n0:])
    finally:
        listener.close()
        rc = bridge.stop()
    assert rc == 0, bridge.output()[-3000:]


# ---- a server started by the test, the bridge as a client of it ---------------------------------

@pytest.fixture(scope="module")
def served():
    """A real-time twin server process, a bridge node process for it (monitor at first), a listener."""
    server = ServerProcess()
    monitor = server.monitor()
    ns = f"srv{os.getpid()}"
    bridge = BridgeProcess("--server", server.address, "--namespace", ns, "--cameras", "")
    listener = Listener(ns)
    listener.wait_for(lambda: len(listener.joints) > 5 and listener.diag,
                      why=f"the bridge's topics; its output: {bridge.output()[-2000:]}")
    yield server, monitor, bridge, listener
    listener.close()
    rc = bridge.stop()
    monitor.close()
    server.stop()
    assert rc == 0, bridge.output()[-3000:]


def test_stamps_are_the_bridges_capture_times(served):
    _, monitor, _, listener = served
    obs = monitor.observe()
    listener.wait_for(lambda: listener.joints[-1][0] > obs.state.t_capture_ns, 5.0, "a newer joint state")
    stamps = np.array([s for s, _, _ in listener.joints])
    # The same clock: the monitor's capture time falls among the published stamps, 10 ms apart.
    i = int(np.searchsorted(stamps, obs.state.t_capture_ns))
    assert 0 < i < len(stamps) and stamps[i] - stamps[i - 1] < 50e6
    nearest = listener.joints[i - 1 if obs.state.t_capture_ns - stamps[i - 1] < stamps[i] - obs.state.t_capture_ns
                              else i]
    np.testing.assert_allclose(nearest[2], obs.state.q_rad, atol=2e-3)  # the arm holds still


def test_take_control_follows_the_one_controller_rule(served):
    server, _, _, listener = served
    other = BridgeClient(server.address, name="other", role="control")
    answer = listener.call("take_control")
    assert not answer.success and "control_held" in answer.message
    answer = listener.call("reset")
    assert not answer.success and "reset failed" in answer.message  # a monitor may not reset
    other.close()
    answer = listener.call("take_control")
    assert answer.success, answer.message
    answer = listener.call("reset", timeout_s=60)
    assert answer.success, answer.message
    with pytest.raises(BridgeRemoteError, match="control_held"):
        BridgeClient(server.address, name="third", role="control")


def _tcp_now(monitor) -> np.ndarray:
    return monitor.observe().state.pose_base_tcp[:3].copy()


def test_teleop_moves_the_tcp_and_the_box_clips_it(served):
    _, monitor, _, listener = served
    assert listener.call("take_control").success
    assert listener.call("reset", timeout_s=60).success
    teleop = probe("twist", "--namespace", listener.ns, "--twist", "0", "0.1", "0", "0", "0", "0", "--rate-hz", "50")
    try:  # the probe process needs a moment to start and be discovered
        listener.wait_for(lambda: monitor.observe().state.mode == "track", 15.0, "the teleop stream to drive the arm")
        start = _tcp_now(monitor)
        time.sleep(1.0)
        moved = _tcp_now(monitor) - start
        assert moved[1] > 0.02 and abs(moved[0]) < 0.5 * moved[1] and abs(moved[2]) < 0.5 * moved[1], moved
        n0 = len(listener.poses)
        # The twist keeps pushing past the box's y max (0.2 m): the arm stops at the wall.
        listener.wait_for(lambda: listener.poses[-1][1][1] > BOX.max_m[1] - 0.01, 15.0, "the arm to reach the wall")
        time.sleep(1.0)
    finally:
        teleop.kill()
        teleop.wait()
    ys = [p[1] for _, p in listener.poses[n0:]]
    assert all(in_box(p) for _, p in listener.poses[n0:]), max(ys)


def test_killed_teleop_stream_lets_the_watchdog_hold(served):
    _, monitor, _, listener = served
    assert listener.call("take_control").success
    assert listener.call("reset", timeout_s=60).success
    teleop = probe("twist", "--namespace", listener.ns, "--twist", "0", "-0.02", "0", "0", "0", "0")
    listener.wait_for(lambda: monitor.observe().state.mode == "track", 10.0, "the teleop stream to drive the arm")
    trips = monitor.observe().state.watchdog_trips
    teleop.send_signal(signal.SIGKILL)
    teleop.wait()
    listener.wait_for(lambda: monitor.observe().state.mode == "watchdog_hold", 2.0, "the watchdog hold")
    assert monitor.observe().state.watchdog_trips > trips
    listener.wait_for(lambda: any(d["mode"] == "watchdog_hold" for d in listener.diag[-3:]), 3.0,
                      "diagnostics to report the hold")


@pytest.mark.slow  # about 20 s: a wrong type, NaN twists, then a 4 s flood at 10 kHz
def test_bad_input_never_crashes_the_node_nor_leaves_the_box(served):
    _, monitor, bridge, listener = served
    assert listener.call("take_control").success
    assert listener.call("reset", timeout_s=60).success
    before = _tcp_now(monitor)
    # A wrong type on the topic: never delivered (see the module docstring).
    out, _ = probe("string", "--namespace", listener.ns, "--seconds", "1").communicate(timeout=30)
    np.testing.assert_allclose(_tcp_now(monitor), before, atol=0.002)
    # NaN twists: dropped, nothing sent, so the watchdog holds the arm.
    log0 = len(bridge.output())
    nan = probe("twist", "--namespace", listener.ns, "--nan", "--rate-hz", "200", "--seconds", "3")
    nan.communicate(timeout=30)
    assert monitor.observe().state.mode in ("hold", "watchdog_hold")
    np.testing.assert_allclose(_tcp_now(monitor), before, atol=0.002)
    nan_lines = [ln for ln in bridge.output()[log0:].splitlines() if "cmd_twist dropped" in ln]
    assert 1 <= len(nan_lines) <= 5, nan_lines  # 3 s of NaN at 200 Hz: one line a second, the rest counted
    assert len(nan_lines) == 1 or "more suppressed" in nan_lines[-1], nan_lines
    # A 10 kHz flood toward the box's corner: the newest twist wins, the box holds.
    n0 = len(listener.poses)
    flood = probe("twist", "--namespace", listener.ns, "--twist", "0.5", "0.5", "0.5", "0", "0", "2", "--rate-hz",
                  "10000", "--seconds", "4")
    sent = flood.communicate(timeout=60)[0]
    assert bridge.proc.poll() is None, bridge.output()[-3000:]
    assert '"sent"' in sent.decode()
    assert len(listener.poses) > n0 + 100, "the bridge kept publishing during the flood"
    assert all(in_box(p) for _, p in listener.poses[n0:])
    assert in_box(_tcp_now(monitor))
    assert listener.call("clear_error").success
