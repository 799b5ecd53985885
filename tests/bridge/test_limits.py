"""Limits a client cannot walk around: the task file's box and limits, the step from where the arm
is, the size of a reply, the memory a non-reading client can pin, the share of a flooding client."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from robot_rl.bridge import protocol as P
from robot_rl.bridge.client import BridgeClient
from robot_rl.bridge.serve import ServeConfig, start_server
from robot_rl.config import to_dict
from robot_rl.errors import BridgeRemoteError
from robot_rl.task_spec import load_task


@pytest.fixture
def stack():
    s = start_server(ServeConfig(task="pick_cube", bind="tcp://127.0.0.1:0", pub_bind=""))
    yield s
    s.close()


WIDENINGS = [
    ({"workspace": {"max_m": [5.0, 5.0, 5.0]}}, "workspace.max_m[0]"),
    ({"workspace": {"min_m": [0.35, -0.2, -1.0]}}, "workspace.min_m[2]"),
    ({"workspace": {"rot_bound_rad": [0.1, 0.1, 3.0]}}, "workspace.rot_bound_rad[2]"),
    ({"workspace": {"nominal_quat_wxyz": [1.0, 0.0, 0.0, 0.0]}}, "workspace.nominal_quat_wxyz"),
    ({"limits": {"max_contact_force_n": 500.0}}, "limits.max_contact_force_n"),
    ({"limits": {"watchdog_s": 10.0}}, "limits.watchdog_s"),
    ({"limits": {"max_step_m": 0.3}}, "limits.max_step_m"),
    ({"limits": {"max_step_rad": 1.0}}, "limits.max_step_rad"),
    ({"limits": {"max_hold_s": 10.0}}, "limits.max_hold_s"),
]


@pytest.mark.parametrize("request_,limit", WIDENINGS, ids=[w[1] for w in WIDENINGS])
def test_set_params_cannot_widen_the_task_files_limits(stack, request_, limit):
    task = load_task("pick_cube")
    client = BridgeClient(stack.address, name="t")
    client.reset(seed=0)
    with pytest.raises(BridgeRemoteError) as err:
        client.set_params(**request_)
    assert err.value.code == "limit_widened"
    assert limit in str(err.value) and "pick_cube.yaml" in str(err.value)
    in_force = client.set_params()
    assert in_force["workspace"] == to_dict(task.workspace) and in_force["limits"] == to_dict(task.limits)
    client.close()


@pytest.mark.parametrize("backend,ur_mode", [("twin", "torque"), ("ur-double", "servo")],
                         ids=["twin", "ur-double-servo"])
def test_set_params_may_tighten_and_the_core_follows(backend, ur_mode):
    """Also on the UR backend's admittance mode, where the arm follows the core's clipped reference
    through servoL rather than the law's torques."""
    stack = start_server(ServeConfig(task="pick_cube", bind="tcp://127.0.0.1:0", pub_bind="", backend=backend,
                                     ur_mode=ur_mode))
    try:
        with BridgeClient(stack.address, name="t") as client:
            client.reset(seed=0, randomize=False)
            x0 = client.observe().state.pose_base_tcp[0]
            params = client.set_params(workspace={"max_m": [x0 + 0.01, 0.2, 0.3]},
                                       limits={"max_contact_force_n": 40.0})
            assert params["workspace"]["max_m"][0] == pytest.approx(x0 + 0.01)
            for _ in range(10):
                obs = client.step(np.array([0.04, 0, 0, 0, 0, 0]), hold_s=0.1)
            assert obs.state.target_clipped and obs.state.pose_base_tcp[0] < x0 + 0.01 + 0.005
    finally:
        stack.close()


def test_motion_is_refused_until_a_reset_brings_the_arm_into_the_box(stack):
    """The twin starts at the arm's home pose, 0.19 m outside pick_cube's box."""
    client = BridgeClient(stack.address, name="t")
    before = client.observe().state
    assert stack.service.box.violation(before.pose_base_tcp) is not None
    for target in (np.zeros(6), np.array([0.04, 0, 0, 0, 0, 0])):
        with pytest.raises(BridgeRemoteError) as err:
            client.step(target, hold_s=0.1)
        assert err.value.code == "reset_required" and "send reset" in str(err.value)
    after = client.observe().state
    np.testing.assert_allclose(after.pose_base_tcp[:3], before.pose_base_tcp[:3], atol=1e-4)
    client.reset(seed=0)
    assert client.step(np.zeros(6), hold_s=0.05).state.mode == "track"
    client.close()


@pytest.mark.parametrize("cameras,code", [(("wrist", "wrist"), "duplicate_camera"), (("wrist",) * 256, "duplicate_camera"),
                                          (("wrist", "thermal"), "unknown_camera")])
def test_camera_lists_are_bounded_by_the_configured_cameras(stack, cameras, code):
    client = BridgeClient(stack.address, name="t")
    client.reset(seed=0)
    for call in (lambda: client.observe(cameras), lambda: client.step(np.zeros(6), cameras=cameras)):
        with pytest.raises(BridgeRemoteError) as err:
            call()
        assert err.value.code == code
    client.close()


def test_reply_queue_is_bounded_in_bytes():
    from robot_rl.bridge.server import reply_hwm

    cams = {"wrist": (128, 128), "front": (128, 128)}
    assert reply_hwm(8 << 20, cams) == (8 << 20) // (16_384 + 2 * 128 * 128 * 3)
    assert reply_hwm(8 << 20, {"rs": (1080, 1920)}) == 2  # never below two replies
    assert reply_hwm(8 << 20, {}) == 512


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


MEMORY_GROWTH_LIMIT_MB = 40.0
"""The reply queue holds ≈ 8 MiB; 1500 unread two-camera replies are 150 MB without the bound."""


@pytest.mark.slow
def test_a_client_that_never_reads_cannot_grow_the_servers_memory(serve_process):
    server = serve_process("--task", "pick_cube", "--pace", "fast", "--stream-cameras", "False")
    monitor = server.client(role="monitor", timeout_s=10.0)  # a monitor's requests wait for its share
    for _ in range(5):  # renderers and their buffers exist before the baseline is taken
        monitor.observe(("wrist", "front"))
    baseline = rss_mb(server.proc.pid)
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVHWM, 1)
    s.setsockopt(zmq.RCVBUF, 4096)
    s.connect(server.address)
    s.send_multipart(P.encode(P.Hello(P.PROTOCOL_VERSION, "never reads", "control")))
    assert isinstance(P.decode(s.recv_multipart()), P.Welcome)
    for i in range(1500):
        s.send_multipart(P.encode(P.GetObservation(i + 1, ("wrist", "front"))))
    wait_until_idle(server.proc.pid, timeout_s=120)
    grown = rss_mb(server.proc.pid) - baseline
    assert server.alive()
    assert grown < MEMORY_GROWTH_LIMIT_MB, f"server memory grew {grown:.0f} MB"
    assert isinstance(monitor.observe(), P.Observation)
    s.close()
    monitor.close()


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, clock ticks at 100 Hz


def wait_until_idle(pid: int, *, timeout_s: float) -> None:
    """Until the process used under 0.05 s of CPU in half a second: it has worked through its queue."""
    deadline = time.monotonic() + timeout_s
    last = cpu_s(pid)
    while True:
        time.sleep(0.5)
        now = cpu_s(pid)
        if now - last < 0.05:
            return
        assert time.monotonic() < deadline, "the server never finished the requests"
        last = now
