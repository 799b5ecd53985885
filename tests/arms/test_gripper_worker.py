"""GripperWorker: blocking gripper calls run on their own thread; the control loop never waits."""

from __future__ import annotations

import threading
import time

import pytest

from robot_rl.arms.gripper_worker import GripperWorker

SET_RETURNS_WITHIN_S = 0.005
WAIT_S = 5.0


class SlowGripper:
    """A gripper whose move blocks until the test releases it."""

    def __init__(self) -> None:
        self.width_m = 0.08
        self.moves: list[float] = []
        self.release = threading.Event()
        self.moving = threading.Event()
        self.fail_next: Exception | None = None

    def move(self, width_m: float) -> None:
        self.moving.set()
        self.release.wait(WAIT_S)
        self.release.clear()
        self.moving.clear()
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        self.moves.append(width_m)
        self.width_m = width_m

    def read_width(self) -> float:
        return self.width_m


def wait_until(predicate, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


@pytest.fixture
def gripper():
    g = SlowGripper()
    worker = GripperWorker("test", g.move, g.read_width, poll_s=0.01)
    yield g, worker
    g.release.set()
    worker.close()


def test_set_returns_at_once_while_a_move_blocks(gripper):
    g, worker = gripper
    worker.set(0.0)
    wait_until(g.moving.is_set)
    t = time.perf_counter()
    worker.set(0.04)
    assert time.perf_counter() - t < SET_RETURNS_WITHIN_S
    assert worker.width_m == pytest.approx(0.08)  # the move is still running
    g.release.set()
    wait_until(lambda: worker.width_m == 0.0)


def test_the_newest_request_wins(gripper):
    g, worker = gripper
    worker.set(0.0)
    wait_until(g.moving.is_set)
    for width in (0.01, 0.02, 0.03):  # queued while the first move blocks
        worker.set(width)
    g.release.set()
    wait_until(lambda: len(g.moves) == 1 and g.moving.is_set())
    g.release.set()
    wait_until(lambda: worker.width_m == pytest.approx(0.03))
    assert g.moves == [0.0, 0.03]


def test_a_failed_move_is_reported_until_a_move_succeeds(gripper):
    g, worker = gripper
    g.fail_next = RuntimeError("libfranka gripper: command failed")
    worker.set(0.0)
    wait_until(g.moving.is_set)
    g.release.set()
    wait_until(lambda: worker.error is not None)
    time.sleep(0.05)  # several width polls succeed meanwhile
    assert worker.error == "RuntimeError: libfranka gripper: command failed"
    worker.set(0.02)
    wait_until(g.moving.is_set)
    g.release.set()
    wait_until(lambda: worker.error is None and worker.width_m == pytest.approx(0.02))


def test_close_stops_the_thread(gripper):
    g, worker = gripper
    worker.close()
    assert not worker._thread.is_alive()
    worker.set(0.0)  # ignored after close
    time.sleep(0.05)
    assert g.moves == []
