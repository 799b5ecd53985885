"""Single messages that used to kill a real-time server: integers beyond int64, negative seeds,
degenerate reset poses. Each is refused with an error code at decode time; the server lives on."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest

from robot_rl.bridge import protocol as P
from conftest import ServeProcess

SURVIVE_S = 0.8
"""The seq overflow killed `robot-rl serve` within 0.5 s: wait longer than that before checking."""


@pytest.fixture(scope="module")
def realtime_server():
    server = ServeProcess("--task", "pick_cube", "--pace", "realtime")
    client = server.client(timeout_s=5.0)
    client.reset(seed=0, randomize=False)
    yield server, client
    client.close()
    server.stop()


def raw(kind: str, body: dict, arrays: list | None = None, bufs: list[bytes] | None = None) -> list[bytes]:
    return [msgpack.packb({"v": P.PROTOCOL_VERSION, "kind": kind, "body": body, "arrays": arrays or []}),
            *(bufs or [])]


def assert_still_serving(server, client) -> None:
    time.sleep(SURVIVE_S)
    assert server.alive(), server.output()[-3000:]
    obs = client.step(np.zeros(6), hold_s=0.02)
    if obs.state.mode == "watchdog_hold":  # the pause let the watchdog hold a tracking arm
        obs = client.step(np.zeros(6), hold_s=0.02)
    assert obs.state.mode == "track", obs.state.mode


@pytest.mark.parametrize("seq", [2**63, 2**64 - 1, -1])
def test_command_seq_outside_int64_is_refused(realtime_server, seq):
    server, client = realtime_server
    client.step(np.zeros(6), hold_s=0.02)
    reply = client.send_raw(raw("command", {"seq": seq, "mode": "delta", "target": 0}, [["<f8", [6]]],
                                [np.zeros(6).tobytes()]))
    assert isinstance(reply, P.Error) and reply.code == "bad_field" and "seq" in reply.message
    assert_still_serving(server, client)


@pytest.mark.parametrize("randomize", [False, True])
@pytest.mark.parametrize("seed", [-5, 2**63, 2**64 - 1])
def test_reset_seed_out_of_range_is_refused(realtime_server, seed, randomize):
    server, client = realtime_server
    reply = client.send_raw(raw("reset", {"seq": 7, "seed": seed, "randomize": randomize}))
    assert isinstance(reply, P.Error) and reply.code == "bad_field" and "seed" in reply.message
    assert_still_serving(server, client)


def test_largest_seed_resets(realtime_server):
    server, client = realtime_server
    obs = client.reset(seed=2**63 - 1)
    assert obs.state.mode == "hold"
    assert_still_serving(server, client)


@pytest.mark.parametrize("quat,code", [([0, 0, 0, 0], "bad_quaternion"), ([5e-324, 0, 0, 0], "bad_quaternion"),
                                       ([1e-200, 1e-200, 0, 0], "bad_quaternion")])
def test_degenerate_reset_quaternions_get_an_error_code(realtime_server, quat, code):
    server, client = realtime_server
    reply = client.send_raw(raw("reset", {"seq": 8, "pose": 0, "randomize": False}, [["<f8", [7]]],
                                [np.array([0.5, 0.0, 0.2, *quat]).tobytes()]))
    assert isinstance(reply, P.Error) and reply.code == code, reply
    assert_still_serving(server, client)


@pytest.mark.parametrize("width", [-0.5, 3.0])
def test_reset_gripper_width_out_of_range_gets_an_error_code(realtime_server, width):
    server, client = realtime_server
    reply = client.send_raw(raw("reset", {"seq": 9, "gripper_width_m": width}))
    assert isinstance(reply, P.Error) and reply.code == "bad_field" and "gripper_width_m" in reply.message
    assert_still_serving(server, client)
