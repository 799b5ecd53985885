"""The control loop in a process of its own: commands through a pipe, state through shared memory.

Socket, camera and Python work in the server process cannot hold this loop's GIL.
`robot-rl bench controller` compares it with the thread runtime; it is the default for real-time
serving. Same calls as the other runtimes (see `control/runtime.py`).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import signal
import time

import numpy as np

from robot_rl.control.commands import CoreConfig, CoreEvent
from robot_rl.control.core import ControlCore
from robot_rl.control.runtime import (
    BackendFactory,
    ControlLoopDied,
    LoopStats,
    TickRecorder,
    paced_loop,
    period_ns_of,
    set_fifo,
    wait_first_snapshot,
)
from robot_rl.control.snapshot import SharedSnapshot, Snapshot, attach_snapshot
from robot_rl.errors import RobotRLError

log = logging.getLogger(__name__)

_STATS = "stats"
_RESET_STATS = "reset_stats"
_STOP = "stop"


class _BuildFailed:
    """The control process could not build its backend; the parent raises `error` (typed, with its
    fix: no arm at that address, FCI off) instead of reporting a process that exited."""

    def __init__(self, error: RobotRLError) -> None:
        self.error = error


def _child_main(factory: BackendFactory, config: CoreConfig, shm_name: str, conn, rt_priority: int | None,
                resume_sim_state: np.ndarray | None = None) -> None:
    """Entry point of the control process: build the backend here, then tick until told to stop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s control[%(process)d] %(levelname)s %(message)s")
    if rt_priority is not None:
        set_fifo(rt_priority)
    try:
        backend, scene = factory.build(realtime=True, resume_sim_state=resume_sim_state)
    except RobotRLError as exc:
        conn.send(_BuildFailed(exc))
        return
    buffer, shm = attach_snapshot(shm_name, factory.layout())  # the parent created it and unlinks it
    core = ControlCore(backend, config, scene=scene, buffer=buffer)
    recorder = TickRecorder(period_ns=period_ns_of(backend.spec))
    state = {"stop": False}

    def on_tick() -> None:
        try:
            for event in core.events():
                conn.send(event)
            while conn.poll():  # everything queued since the last tick (the newest target wins)
                msg = conn.recv()
                if msg == _STOP:
                    state["stop"] = True
                elif msg == _STATS:
                    conn.send(recorder.stats())
                elif msg == _RESET_STATS:
                    recorder.reset()
                else:
                    core.submit(msg)
        except (EOFError, BrokenPipeError, ConnectionResetError):
            # The server process is gone: stop commanding the arm (a real arm's own watchdog
            # then stops it; libfranka after 20 missed packets).
            log.error("server process is gone; stopping the control loop")
            state["stop"] = True
        except Exception as exc:  # a message the pipe could not unpickle: drop it, keep ticking
            log.error("control process dropped a message from the server: %s: %s", type(exc).__name__, exc)

    try:
        paced_loop(core, lambda: state["stop"], recorder, on_tick, paced_by_hardware=backend.spec.paced_by_hardware,
                    own_gc=True)
    finally:
        backend.close()
        core = buffer = None  # drop the views into the shared segment before unmapping it
        gc.collect()
        try:
            shm.close()
        except BufferError:  # a view survived; the mapping goes away with the process anyway
            pass


class ProcessRuntime:
    """Core in a child process (spawned, so it shares no locks or sockets with the server).

    Only the server thread may call its methods. If the child dies, calls raise ControlLoopDied;
    a real arm then falls back to its own watchdog (libfranka stops after 20 missed packets).
    """

    realtime = True

    def __init__(self, factory: BackendFactory, config: CoreConfig, *, rt_priority: int | None = None,
                 start_timeout_s: float = 60.0) -> None:
        self._factory, self._config, self._rt_priority = factory, config, rt_priority
        self._start_timeout_s = start_timeout_s
        self.layout = factory.layout()
        self.shared = SharedSnapshot(self.layout)
        self._buffer = self.shared.buffer
        try:
            self._start(None)
        except BaseException as exc:
            if isinstance(exc, RobotRLError):
                # Its message says it all, and its traceback's frames hold views of the segment.
                exc.__traceback__ = None
            del self._buffer
            self.shared.close()
            raise

    def _start(self, resume_sim_state: np.ndarray | None) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(target=_child_main, name="robot_rl-control",
                                 args=(self._factory, self._config, self.shared.name, child_conn, self._rt_priority,
                                       resume_sim_state), daemon=True)
        self._proc.start()
        child_conn.close()  # the child holds its end: EOF here when it dies
        log.info("control loop runs in process %d", self._proc.pid)
        self._pending: list[object] = []
        wait_first_snapshot(self._buffer, self._check_started, self._start_timeout_s)

    def _check_started(self) -> None:
        """`check_alive`, but a backend the child could not build raises the child's own error."""
        msg = None
        try:
            if self._conn.poll():
                msg = self._conn.recv()
        except (EOFError, OSError):
            pass  # the child is gone: check_alive says how
        if isinstance(msg, _BuildFailed):
            self._proc.join(timeout=2.0)
            raise msg.error
        if msg is not None:
            self._pending.append(msg)
        self.check_alive()

    @property
    def pid(self) -> int | None:
        """Process id of the control process."""
        return self._proc.pid

    def check_alive(self) -> None:
        if not self._proc.is_alive():
            code = self._proc.exitcode
            how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
                   and -code in signal.valid_signals() else f"exited with code {code}")
            raise ControlLoopDied(f"the control process (pid {self._proc.pid}) {how}")

    def restart(self, resume_sim_state: np.ndarray | None = None) -> None:
        """A fresh control process on the same snapshot segment after the old one died."""
        if self._proc.is_alive():
            raise ControlLoopDied("the control process is still running; restart refused")
        self._proc.join(timeout=1.0)
        self._conn.close()
        self._buffer.clear()  # a process killed mid-write leaves the sequence lock odd
        self._start(resume_sim_state)

    def submit(self, command: object) -> None:
        self.check_alive()
        try:
            self._conn.send(command)
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            self.check_alive()
            raise ControlLoopDied(f"the control process stopped reading commands ({exc})") from exc

    def snapshot(self) -> Snapshot:
        snap = self._buffer.read()
        assert snap is not None
        return snap

    def _drain(self) -> None:
        try:
            while self._conn.poll():
                self._pending.append(self._conn.recv())
        except (EOFError, OSError) as exc:
            self.check_alive()
            raise ControlLoopDied(f"lost the pipe to the control process ({exc!r})") from exc

    def events(self) -> list[CoreEvent]:
        self._drain()
        events = [m for m in self._pending if isinstance(m, CoreEvent)]
        self._pending = [m for m in self._pending if not isinstance(m, CoreEvent)]
        return events

    def advance(self, duration_s: float) -> None:
        """Real time passes by itself."""

    def wait_event(self, timeout_s: float) -> list[CoreEvent]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            events = self.events()
            if events:
                return events
            self._conn.poll(0.002)
        return []

    def stats(self) -> LoopStats:
        self._conn.send(_STATS)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            self.check_alive()
            self._drain()
            for m in self._pending:
                if isinstance(m, LoopStats):
                    self._pending.remove(m)
                    return m
            self._conn.poll(0.01)
        raise ControlLoopDied("control process did not answer a stats request within 2 s")

    def reset_stats(self) -> None:
        self._conn.send(_RESET_STATS)

    @property
    def snapshot_name(self) -> str:
        return self.shared.name

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(_STOP)
            except (BrokenPipeError, OSError):
                pass
            self._proc.join(timeout=3.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=2.0)
        del self._buffer
        self.shared.close()
