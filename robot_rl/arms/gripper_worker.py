"""A gripper driven off the control thread: blocking vendor calls run on a daemon thread of their own.

Grippers answer in tens to hundreds of milliseconds (Franka Hand `grasp`, Robotiq over its URCap
socket) and their calls block until the fingers stop, so the 1 kHz (or 500 Hz) control loop can
never make them itself. It hands the newest requested opening to a `GripperWorker` and reads back
the last measured width; a daemon thread executes the requests and polls the width.

Threads: `set`, `width_m`, `error` and `close` may be called from any thread (the control loop
calls `set` and reads `width_m` every tick: neither waits on a lock). Only the worker thread calls
`move` and `read_width`. `close()` stops the thread after the call in progress returns.

The vendor calls must release the GIL while they block (socket waits do; a C extension that holds
the GIL stalls the control loop however the threads are arranged: run it in a process of its own
and pass callables that talk to that process, as `arms/franka_hand.py` does for pylibfranka).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_STOP = object()


class GripperWorker:
    """Executes gripper requests on a daemon thread; the newest request wins.

    Args:
        name: shown in the thread name and in log lines, e.g. "franka-hand".
        move: blocking call that drives the fingers to an opening [m] and returns when they stop.
        read_width: blocking call returning the current opening [m].
        poll_s: the width is read this often [s] while no request is pending, and after each move.
    """

    def __init__(self, name: str, move: Callable[[float], None], read_width: Callable[[], float], *,
                 poll_s: float = 0.05) -> None:
        if not poll_s > 0.0:
            raise ValueError(f"poll_s must be > 0 s, got {poll_s}")
        self.name = name
        self._move, self._read_width, self._poll_s = move, read_width, poll_s
        # SimpleQueue.put never blocks and takes no lock a waiting thread could hold for long.
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._width_m = 0.0
        self._error: str | None = None
        self._error_of: Callable | None = None
        self._closed = False
        self._read_once()
        self._thread = threading.Thread(target=self._run, name=f"robot_rl-gripper-{name}", daemon=True)
        self._thread.start()

    @property
    def width_m(self) -> float:
        """Opening [m] at the last read (before, not during, a blocking move)."""
        return self._width_m

    @property
    def error(self) -> str | None:
        """Text of the last failed call ("TypeName: message"), or None. A failed move stays here
        until a move succeeds (the polls in between do not hide it); a failed read until a read does."""
        return self._error

    def set(self, width_m: float) -> None:
        """Request an opening [m]; returns at once. A request still waiting is replaced."""
        if self._closed:
            return
        self._requests.put(float(width_m))

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the worker after its current call (waits up to `timeout_s` for it)."""
        if self._closed:
            return
        self._closed = True
        self._requests.put(_STOP)
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            log.warning("gripper %s: a call still blocks after %.1f s; leaving its daemon thread behind",
                        self.name, timeout_s)

    # ---- worker thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                request = self._requests.get(timeout=self._poll_s)
            except queue.Empty:
                request = None
            # Newest wins: drain what queued up while the last call blocked.
            while True:
                try:
                    request = self._requests.get_nowait()
                except queue.Empty:
                    break
            if request is _STOP or self._closed:
                return
            if request is not None:
                self._call(self._move, request)
            self._read_once()

    def _read_once(self) -> None:
        width = self._call(self._read_width)
        if width is not None:
            self._width_m = float(width)

    def _call(self, fn: Callable, *args):
        try:
            out = fn(*args)
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if text != self._error:  # once per distinct failure, not every poll
                log.error("gripper %s: %s", self.name, text)
            self._error, self._error_of = text, fn
            return None
        if self._error_of is fn:
            self._error = self._error_of = None
        return out
