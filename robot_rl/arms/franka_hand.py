"""The Franka Hand: how an opening request becomes a `grasp` or a `move`, and where those calls run.

`FrankaHand` turns "open to w metres" into pylibfranka calls: closing (w below the current opening)
grasps with force control, so the fingers hold whatever they close on; opening moves. Both block
until the fingers stop.

pylibfranka's `Gripper` calls hold the GIL while they block (its bindings release nothing: a
`grasp` would stall the 1 kHz loop of the process that makes it for up to a second, and libfranka
aborts torque control after 20 missed packets). On a physical arm the hand therefore runs in a
process of its own, `python -m robot_rl.arms.franka_hand IP`, and `HandProcess` gives the control
process's `GripperWorker` thread blocking callables that wait on that process's pipe (which
releases the GIL). The pylibfranka double's gripper waits in Python and can run in-process.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from types import ModuleType

log = logging.getLogger(__name__)

GRASP_FORCE_N = 20.0
"""Grasp force [N]: the twin's finger force limit; the Franka Hand allows up to 70 N continuous.
The task's contact-force reflex (80 N) leaves room for it."""
FINGER_SPEED_M_PER_S = 0.1
"""Opening/closing speed [m/s] of the width (the Franka Hand's maximum, 50 mm/s per finger)."""
CLOSING_TOL_M = 0.001
"""A request this far below the current opening or more counts as closing (a grasp)."""


class FrankaHand:
    """Blocking Franka Hand calls for one opening request. Used by one thread at a time.

    Args:
        gripper: a connected `pylibfranka.Gripper` (or the double's).
    """

    def __init__(self, gripper, *, force_n: float = GRASP_FORCE_N, speed_m_per_s: float = FINGER_SPEED_M_PER_S):
        self.gripper, self.force_n, self.speed_m_per_s = gripper, force_n, speed_m_per_s

    def move(self, width_m: float) -> None:
        """Close (grasp) or open the fingers to `width_m`; returns when they stop.

        Closing grasps toward `width_m` with `force_n` and tolerances spanning the whole stroke,
        so closing on an object of any size counts as a grasp and keeps the force on it (a plain
        `move` would stop at the object without holding it). Opening is a `move`.
        """
        state = self.gripper.read_once()
        width_m = min(max(width_m, 0.0), state.max_width or width_m)
        if width_m < state.width - CLOSING_TOL_M:
            self.gripper.grasp(width_m, self.speed_m_per_s, self.force_n,
                               epsilon_inner=width_m, epsilon_outer=max(state.max_width, 0.1))
        else:
            self.gripper.move(width_m, self.speed_m_per_s)

    def read_width(self) -> float:
        """Current opening [m]."""
        return float(self.gripper.read_once().width)


# ---- the hand in its own process (physical arms) ---------------------------------------------------


class HandProcess:
    """`python -m robot_rl.arms.franka_hand IP` and blocking calls into it (one JSON line each way).

    `move` and `read_width` may be called from one thread at a time (the `GripperWorker`'s);
    a lock serializes them anyway. `close()` ends the process.

    Raises:
        DeviceNotFound: the process could not connect to the hand (its message says why).
    """

    def __init__(self, robot_ip: str, *, vendor: str = "pylibfranka", start_timeout_s: float = 10.0) -> None:
        from robot_rl.errors import DeviceNotFound

        self._lock = threading.Lock()
        self._proc = subprocess.Popen([sys.executable, "-m", "robot_rl.arms.franka_hand", robot_ip, "--vendor", vendor],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        hello = self._reply(start_timeout_s)
        if "error" in hello:
            self.close()
            raise DeviceNotFound(f"the Franka Hand at {robot_ip} did not answer ({hello['error']}): is the hand "
                                 "mounted and initialized in Desk? Serve without it with FrankaBackend(hand=False)")

    def move(self, width_m: float) -> None:
        self._call({"op": "move", "width_m": width_m})

    def read_width(self) -> float:
        return float(self._call({"op": "read"})["width_m"])

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(json.dumps({"op": "stop"}) + "\n")
                self._proc.stdin.flush()
                self._proc.wait(timeout=3.0)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self._proc.kill()
                self._proc.wait(timeout=2.0)

    def _call(self, request: dict) -> dict:
        with self._lock:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the Franka Hand process exited with code {self._proc.returncode}")
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            reply = self._reply(None)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def _reply(self, timeout_s: float | None) -> dict:
        if timeout_s is not None:
            timer = threading.Timer(timeout_s, self._proc.kill)
            timer.start()
        try:
            line = self._proc.stdout.readline()  # blocks in read(2): the GIL is released
        finally:
            if timeout_s is not None:
                timer.cancel()
        if not line:
            return {"error": f"the hand process ended (exit code {self._proc.poll()})"}
        return json.loads(line)


def serve_hand(robot_ip: str, vendor: ModuleType, stdin=sys.stdin, stdout=sys.stdout) -> None:
    """The hand process: connect, say hello, then answer one JSON line per request until "stop"."""

    def send(msg: dict) -> None:
        stdout.write(json.dumps(msg) + "\n")
        stdout.flush()

    try:
        hand = FrankaHand(vendor.Gripper(robot_ip))
        send({"ok": True, "width_m": hand.read_width()})
    except Exception as exc:
        send({"error": f"{type(exc).__name__}: {exc}"})
        return
    for line in stdin:
        request = json.loads(line)
        try:
            if request["op"] == "stop":
                return  # no Gripper.stop(): it would release a held object's grasp force
            if request["op"] == "move":
                hand.move(float(request["width_m"]))
                send({"ok": True})
            else:
                send({"ok": True, "width_m": hand.read_width()})
        except Exception as exc:
            send({"error": f"{type(exc).__name__}: {exc}"})


def _main(argv: list[str]) -> None:
    import argparse
    import importlib

    parser = argparse.ArgumentParser(
        prog="python -m robot_rl.arms.franka_hand",
        description="The Franka Hand in a process of its own (started by the Franka backend).")
    parser.add_argument("robot_ip")
    parser.add_argument("--vendor", default="pylibfranka", help="module providing Gripper (tests pass a fake)")
    args = parser.parse_args(argv)
    try:  # started by the control process: do not inherit its FIFO priority
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):
        pass
    serve_hand(args.robot_ip, importlib.import_module(args.vendor))


if __name__ == "__main__":
    _main(sys.argv[1:])
