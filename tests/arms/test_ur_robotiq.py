"""The Robotiq URCap client against the socket double (a real TCP server on 127.0.0.1)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from robot_rl.arms.robotiq import (
    STROKE_2F85_M,
    RobotiqError,
    RobotiqGripper,
    position_to_width,
    width_to_position,
)
from robot_rl.twin.doubles.robotiq import RobotiqSocketDouble

WIDTH_ATOL_M = STROKE_2F85_M / 255 + 1e-9
"""One register count of the 2F-85's stroke."""


class Fingers:
    """The gripper's fingers: they jump to the requested opening (the twin's ramp is tested elsewhere)."""

    def __init__(self) -> None:
        self.width_m = STROKE_2F85_M
        self.requests: list[float] = []

    def set(self, width_m: float) -> None:
        self.requests.append(width_m)
        self.width_m = width_m


@pytest.fixture
def double():
    fingers = Fingers()
    server = RobotiqSocketDouble(fingers.set, lambda: fingers.width_m).start()
    yield server, fingers
    server.close()


def test_width_maps_onto_the_2f85_stroke():
    assert width_to_position(STROKE_2F85_M) == 0
    assert width_to_position(0.0) == 255
    assert width_to_position(-0.01) == 255 and width_to_position(0.2) == 0
    for pos in (0, 17, 128, 254, 255):
        assert width_to_position(position_to_width(pos)) == pos


def test_activate_move_and_read_width(double):
    server, fingers = double
    gripper = RobotiqGripper("127.0.0.1", port=server.port)
    gripper.connect()
    try:
        assert gripper.get("STA") == 0
        gripper.move(0.04)
        assert fingers.requests == []  # not activated: the fingers do not move
        gripper.activate()
        assert gripper.get("STA") == 3 and gripper.get("GTO") == 1
        gripper.move(0.04)
        assert abs(fingers.requests[-1] - 0.04) <= WIDTH_ATOL_M
        assert abs(gripper.read_width() - 0.04) <= WIDTH_ATOL_M
        assert gripper.get("OBJ") == 3
        gripper.move(0.0)
        assert gripper.read_width() == pytest.approx(0.0, abs=WIDTH_ATOL_M)
    finally:
        gripper.close()


def test_object_detection_when_the_fingers_stop_short(double):
    server, fingers = double
    gripper = RobotiqGripper("127.0.0.1", port=server.port)
    gripper.connect()
    gripper.activate()
    gripper.move(0.0)
    fingers.width_m = 0.04  # a 4 cm cube between the fingers
    assert gripper.get("OBJ") == 2
    gripper.close()


def test_one_set_line_carries_several_variables(double):
    server, _ = double
    assert server.answer("SET POS 10 SPE 200 FOR 30") == b"ack"
    assert server.answer("GET SPE") == b"SPE 200\n"
    assert server.answer("GET FOR") == b"FOR 30\n"
    assert server.answer("SET NOPE 1") == b"?"
    assert server.answer("DANCE") == b"?"


def test_connection_refused_says_what_to_check():
    port = socket.create_server(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()
    gripper = RobotiqGripper("127.0.0.1", port=free, timeout_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(RobotiqError, match="URCap"):
        gripper.connect()
    assert time.monotonic() - t0 < 1.5


def test_a_wrong_reply_is_an_error_naming_it():
    """A server that answers nonsense: the client says what it got and what it expected."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(64)
            conn.sendall(b"nak")
            conn.recv(64)
            conn.sendall(b"POS abc\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    gripper = RobotiqGripper("127.0.0.1", port=server.getsockname()[1], timeout_s=2.0)
    gripper.connect()
    with pytest.raises(RobotiqError, match="'nak'.*expected 'ack'"):
        gripper.set(GTO=1)
    with pytest.raises(RobotiqError, match="expected 'POS <int>'"):
        gripper.get("POS")
    gripper.close()
    server.close()
    t.join(timeout=2)


def test_silence_times_out_with_a_clear_error():
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []
    t = threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True)
    t.start()
    gripper = RobotiqGripper("127.0.0.1", port=server.getsockname()[1], timeout_s=0.3)
    gripper.connect()
    with pytest.raises(RobotiqError, match="no reply"):
        gripper.get("POS")
    gripper.close()
    server.close()
