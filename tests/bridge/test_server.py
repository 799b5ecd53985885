"""The robot server behind a real ZeroMQ socket: roles, bad input, replies, PUB stream."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
import zmq

from robot_rl.bridge import protocol as P
from robot_rl.bridge.client import BridgeClient, BridgeMonitor
from robot_rl.bridge.serve import ServeConfig, start_server
from robot_rl.errors import BridgeRemoteError, BridgeTimeout
from conftest import raw_socket

POSE_ATOL_M = 1e-6


@pytest.fixture(scope="module")
def server():
    stack = start_server(ServeConfig(task="pick_cube", bind="tcp://127.0.0.1:0"))
    yield stack
    stack.close()


@pytest.fixture
def client(server):
    c = BridgeClient(server.address, name="test")
    c.reset(seed=1)
    yield c
    c.close()


def test_hello_required_before_anything_else(server):
    s = raw_socket(server.address)
    s.send_multipart(P.encode(P.GetObservation(1)))
    reply = P.decode(s.recv_multipart())
    assert isinstance(reply, P.Error) and reply.code == "hello_required"
    s.close()


def test_version_mismatch_refused(server):
    s = raw_socket(server.address)
    s.send_multipart(P.encode(P.Hello(P.PROTOCOL_VERSION + 1, "old", "control")))
    reply = P.decode(s.recv_multipart())
    assert reply.code == "protocol_version_mismatch" and "same robot_rl version" in reply.message
    header = msgpack.packb({"v": 0, "kind": "hello", "body": {}, "arrays": []})
    s.send_multipart([header])
    assert P.decode(s.recv_multipart()).code == "protocol_version_mismatch"
    s.close()


def _bad_messages() -> list[tuple[str, str, list[bytes]]]:
    """(name, expected error code, frames)."""
    def cmd(**body):
        base = {"seq": 50, "mode": "delta", "target": 0}
        base.update(body)
        return msgpack.packb({"v": P.PROTOCOL_VERSION, "kind": "command", "body": base, "arrays": [["<f8", [6]]]})

    ok6 = np.zeros(6).tobytes()
    return [
        ("garbage", "bad_header", [b"\x00\xff\x13garbage"]),
        ("empty frame", "bad_header", [b""]),
        ("unknown kind", "unknown_kind",
         [msgpack.packb({"v": P.PROTOCOL_VERSION, "kind": "jump", "body": {}, "arrays": []})]),
        ("wrong dtype", "bad_arrays", [cmd(), np.zeros(6, np.float32).tobytes()]),
        ("wrong shape", "bad_arrays", [cmd(), np.zeros(7).tobytes()]),
        ("nan", "non_finite", [cmd(), np.array([math.nan, 0, 0, 0, 0, 0]).tobytes()]),
        ("inf hold", "non_finite", [cmd(hold_s=math.inf), ok6]),
        ("oversized", "too_large", [cmd(), np.zeros((2 << 20) // 8).tobytes()]),
        ("huge step", "step_too_large",
         [bytes(f) for f in P.encode(P.Command(51, "delta", np.array([0.5, 0, 0, 0, 0, 0])))]),
        ("out of box", "outside_workspace",
         [bytes(f) for f in P.encode(P.Command(52, "absolute", np.array([0.5, 0, -0.5, 0, 1, 0, 0])))]),
        ("bad quaternion", "bad_quaternion",
         [bytes(f) for f in P.encode(P.Command(53, "absolute", np.array([0.5, 0, 0.2, 1, 1, 1, 1.0])))]),
        ("unknown camera", "unknown_camera",
         [bytes(f) for f in P.encode(P.Command(54, "delta", np.zeros(6), cameras=("rear",)))]),
        ("hold too long", "bad_hold", [bytes(f) for f in P.encode(P.Command(55, "delta", np.zeros(6), hold_s=5.0))]),
        ("reply kind", "unexpected_kind", [bytes(f) for f in P.encode(P.Ok(56))]),
        ("bad gains", "bad_params",
         [bytes(f) for f in P.encode(P.SetParams(57, {"stiffness_trans_n_per_m": [-5, 0, 0]}))]),
        ("unknown param", "bad_params", [bytes(f) for f in P.encode(P.SetParams(58, None, {"radius": 3}))]),
    ]


@pytest.mark.parametrize("name,code,frames", _bad_messages(), ids=[n for n, _, _ in _bad_messages()])
def test_bad_input_gets_error_reply_and_arm_does_not_move(server, client, name, code, frames):
    before = client.observe().state
    reply = client.send_raw(frames)
    assert isinstance(reply, P.Error), f"{name}: expected an error reply, got {type(reply).__name__}"
    assert reply.code == code and len(reply.message) > 10, reply
    after = client.observe().state
    np.testing.assert_allclose(after.target_base_tcp, before.target_base_tcp, atol=POSE_ATOL_M)
    assert after.command_seq == before.command_seq
    client.step(np.zeros(6), hold_s=0.01)  # still serving
    assert server.thread.is_alive()


def test_error_codes_name_the_problem(client):
    with pytest.raises(BridgeRemoteError, match="max_step_m") as err:
        client.step(np.array([0.3, 0, 0, 0, 0, 0]))
    assert err.value.code == "step_too_large"
    with pytest.raises(BridgeRemoteError, match=r"z=-0\.5000 m is outside the workspace box") as err:
        client.step(np.array([0.5, 0, -0.5, 0, 1, 0, 0]), mode="absolute")
    assert err.value.code == "outside_workspace"


def test_step_advances_simulated_time_and_moves(client):
    obs0 = client.observe()
    obs = client.step(np.array([0.0, 0.02, 0.0, 0, 0, 0]), hold_s=0.1)
    assert obs.state.tick - obs0.state.tick == 100
    assert obs.state.t_capture_ns - obs0.state.t_capture_ns == pytest.approx(0.1e9, abs=2e6)
    assert obs.state.mode == "track" and obs.state.command_seq == obs.seq
    for _ in range(5):
        obs = client.step(np.array([0.0, 0.02, 0.0, 0, 0, 0]), hold_s=0.1)
    assert obs.state.pose_base_tcp[1] - obs0.state.pose_base_tcp[1] > 0.03


def test_frames_come_with_the_reply(client):
    obs = client.step(np.zeros(6), hold_s=0.1, cameras=("wrist", "front"))
    assert [f.camera for f in obs.frames] == ["wrist", "front"]
    for f in obs.frames:
        assert f.image.shape == (128, 128, 3) and f.image.dtype == np.uint8
        assert f.image.std() > 5  # a rendered scene, not a blank buffer
        assert f.t_capture_ns == obs.state.t_capture_ns  # stepped twin: rendered at the state's tick


def test_monitor_cannot_move_the_arm(server, client):
    monitor = BridgeClient(server.address, name="monitor", role="monitor")
    assert monitor.observe().state.mode in ("hold", "track", "watchdog_hold")
    with pytest.raises(BridgeRemoteError) as err:
        monitor.step(np.zeros(6))
    assert err.value.code == "not_controller"
    monitor.close()
    client.step(np.zeros(6))  # the control client keeps control


def test_second_control_client_needs_take_control(server, client):
    with pytest.raises(BridgeRemoteError) as err:
        BridgeClient(server.address, name="by mistake")
    assert err.value.code == "control_held" and "'test' holds the arm" in str(err.value)
    client.step(np.zeros(6))  # the holder was not disturbed
    newer = BridgeClient(server.address, name="newer", take_control=True)
    newer.step(np.zeros(6))
    with pytest.raises(BridgeRemoteError) as err:
        client.step(np.zeros(6))
    assert err.value.code == "control_taken"
    newer.close()  # says bye: the arm is free again
    BridgeClient(server.address, name="again").close()


def test_req_socket_clients_work(server):
    s = raw_socket(server.address, zmq.REQ)
    s.send_multipart(P.encode(P.Hello(P.PROTOCOL_VERSION, "req", "monitor")))
    assert isinstance(P.decode(s.recv_multipart()), P.Welcome)
    s.send_multipart(P.encode(P.GetObservation(2, ("wrist",))))
    obs = P.decode(s.recv_multipart())
    assert isinstance(obs, P.Observation) and obs.seq == 2 and obs.frames[0].camera == "wrist"
    s.close()


def test_set_params_validated_and_applied(client):
    params = client.set_params(gains={"stiffness_trans_n_per_m": [1500, 1500, 1500]}, limits={"max_step_m": 0.04})
    assert params["gains"]["stiffness_trans_n_per_m"] == [1500.0, 1500.0, 1500.0]
    with pytest.raises(BridgeRemoteError, match="max_step_m 0.04"):
        client.step(np.array([0.045, 0, 0, 0, 0, 0]))
    with pytest.raises(BridgeRemoteError, match="stiffness_trans_n_per_m") as err:
        client.set_params(gains={"stiffness_trans_n_per_m": [9e9, 0, 0]})
    assert err.value.code == "bad_params"
    client.set_params(gains={"stiffness_trans_n_per_m": [2000, 2000, 2000]}, limits={"max_step_m": 0.05})


def test_reset_to_pose_and_refused_outside_box(client):
    obs = client.reset(pose=np.array([0.45, -0.05, 0.15, 0, 1, 0, 0]), randomize=False)
    np.testing.assert_allclose(obs.state.pose_base_tcp[:3], [0.45, -0.05, 0.15], atol=0.002)
    with pytest.raises(BridgeRemoteError) as err:
        client.reset(pose=np.array([0.45, -0.05, 0.9, 0, 1, 0, 0]))
    assert err.value.code == "outside_workspace"


def test_reset_pose_and_object_placement_are_independent(server, client):
    """Both are seeded by the reset's seed, but from different streams: the start pose must not
    follow the cube."""
    spec = server.service.task.reset
    tcp, cube = [], []
    for seed in range(40):
        obs = client.reset(seed=seed)
        tcp.append(obs.state.pose_base_tcp[:2] - np.asarray(spec.pose[:2]))
        cube.append(obs.state.privileged["cube_pose"][:2])
    tcp, cube = np.array(tcp), np.array(cube)
    assert np.all(np.abs(tcp) <= np.asarray(spec.randomize_xyz_m[:2]) + 0.003)
    for axis in range(2):
        assert tcp[:, axis].std() > 0.005 and cube[:, axis].std() > 0.01  # both randomized
        assert abs(np.corrcoef(tcp[:, axis], cube[:, axis])[0, 1]) < 0.6  # was 1.0: the same draws
    assert np.allclose(client.reset(seed=7).state.pose_base_tcp, client.reset(seed=7).state.pose_base_tcp, atol=1e-3)


def test_pub_stream_carries_observations(server, client):
    monitor = BridgeMonitor(client.welcome.pub_address)
    obs = None
    for _ in range(50):  # the subscription connects asynchronously; older replies may come first
        client.step(np.zeros(6), hold_s=0.01, cameras=("wrist",))
        try:
            obs = monitor.latest(timeout_s=0.1)
        except BridgeTimeout:
            continue
        if obs.frames:
            break
    assert isinstance(obs, P.Observation) and obs.frames and obs.frames[0].camera == "wrist"
    monitor.close()
