"""Where the control core runs: stepped (as fast as possible), a thread, or its own process.

- `SteppedRuntime`: the caller advances time (`advance(duration_s)`); simulated time, no pacing.
  Used for training on the twin and for the in-process twin env.
- `ThreadRuntime`: a 1 kHz thread in the server process, paced with an absolute deadline.
- `ProcessRuntime`: the same loop in a child process; commands go through a pipe, state comes
  back through a shared-memory snapshot, so socket, camera and Python work in the server process
  cannot hold the loop's GIL. `robot-rl bench controller` measures both real-time options side
  by side; the process runtime is the default for real-time serving (see README for figures).

All runtimes offer the same calls to the server (one thread: the server's): `submit`,
`snapshot`, `events`, `advance`, `wait_event`, `stats`, `check_alive`, `restart`, `close`.

Supervision: a loop that dies (an exception the core's damping fallback could not absorb, a
crash, SIGKILL) makes `check_alive()` raise `ControlLoopDied` naming the cause; the server then
refuses motion and reports a fault until an operator's `restart()` starts a fresh loop on the
same snapshot buffer, holding the arm where it is.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from robot_rl.control.commands import CoreConfig, CoreEvent, SceneHooks
from robot_rl.control.core import ControlCore
from robot_rl.control.snapshot import (
    SharedSnapshot,
    Snapshot,
    SnapshotBuffer,
    SnapshotLayout,
    attach_snapshot,
)
from robot_rl.drivers.arm import ArmBackend, ArmSpec
from robot_rl.errors import RobotRLError

log = logging.getLogger(__name__)

PERIOD_NS = 1_000_000
SPIN_NS = 300_000
"""Sleep until this long before each deadline, then spin: `time.sleep` overshoots by ~60–100 µs."""


class BackendFactory(Protocol):
    """Picklable recipe that builds the arm backend (and scene hooks) inside the control process."""

    def build(self, *, realtime: bool, resume_sim_state: np.ndarray | None = None
              ) -> tuple[ArmBackend, SceneHooks | None]:
        """`resume_sim_state`: a simulated backend restarted after its control loop died starts
        from this state (the last snapshot's `sim_state`) at rest; real arms are where they are."""
        ...

    def layout(self) -> SnapshotLayout:
        """Snapshot layout the built backend will produce (known before building it)."""
        ...

    def arm_spec(self) -> ArmSpec:
        """Static facts of the arm (known before building it)."""
        ...


class ControlLoopDied(RobotRLError):
    """The control loop stopped (exception or crash); the arm is no longer commanded."""


@dataclass(frozen=True)
class LoopStats:
    """Timing of the paced loop over its recent ticks."""

    n_ticks: int
    period_p50_us: float
    period_jitter_p50_us: float
    period_jitter_p99_us: float
    period_jitter_max_us: float
    overruns: int
    """Ticks that started more than one period late."""
    compute_p99_us: float
    """Time spent inside `ControlCore.step` (read, law, write, snapshot), p99."""


class _TickRecorder:
    """Ring buffer of tick start times and compute durations (ns)."""

    def __init__(self, size: int = 20_000) -> None:
        self.starts = np.zeros(size, dtype=np.int64)
        self.compute = np.zeros(size, dtype=np.int64)
        self.n = 0
        self.overruns = 0

    def add(self, start_ns: int, compute_ns: int) -> None:
        i = self.n % len(self.starts)
        self.starts[i] = start_ns
        self.compute[i] = compute_ns
        self.n += 1

    def reset(self) -> None:
        self.n = 0
        self.overruns = 0

    def stats(self) -> LoopStats:
        k = min(self.n, len(self.starts))
        if k < 3:
            return LoopStats(k, 0.0, 0.0, 0.0, 0.0, self.overruns, 0.0)
        idx = (np.arange(self.n - k, self.n)) % len(self.starts)
        periods = np.diff(self.starts[idx]) / 1e3
        jitter = np.abs(periods - PERIOD_NS / 1e3)
        return LoopStats(k, float(np.median(periods)), float(np.percentile(jitter, 50)),
                         float(np.percentile(jitter, 99)), float(jitter.max()), self.overruns,
                         float(np.percentile(self.compute[idx] / 1e3, 99)))


def _paced_loop(core: ControlCore, stop: Callable[[], bool], recorder: _TickRecorder,
                on_tick: Callable[[], None], *, paced_by_hardware: bool, own_gc: bool) -> None:
    """Run `core.step()` every PERIOD_NS with an absolute deadline until `stop()`.

    With `own_gc` (a process of its own), automatic garbage collection is off and young
    generations are collected only in a tick's slack, so a collection never lands mid-tick.
    """
    if own_gc:
        gc.freeze()
        gc.disable()
    deadline = time.monotonic_ns()
    ticks = 0
    while not stop():
        ticks += 1
        if own_gc and ticks % 500 == 0 and deadline + PERIOD_NS - time.monotonic_ns() > 600_000:
            gc.collect(1 if ticks % 50_000 else 2)
        if not paced_by_hardware:
            deadline += PERIOD_NS
            now = time.monotonic_ns()
            if now > deadline + PERIOD_NS:  # more than a period late: skip ahead, don't burst
                recorder.overruns += 1
                deadline = now
            elif deadline - now > SPIN_NS:
                time.sleep((deadline - now - SPIN_NS) / 1e9)
            while time.monotonic_ns() < deadline:
                pass
        start = time.monotonic_ns()
        on_tick()
        core.step()
        recorder.add(start, time.monotonic_ns() - start)


class _InProcessRuntime:
    """What the stepped and thread runtimes share: a core in this process over a shared snapshot."""

    core: ControlCore
    shared: SharedSnapshot

    @property
    def snapshot_name(self) -> str:
        """Shared-memory name of the snapshot buffer (for camera processes)."""
        return self.shared.name

    def snapshot(self) -> Snapshot:
        snap = self.core.buffer.read()
        assert snap is not None  # both runtimes tick once before serving
        return snap

    def events(self) -> list[CoreEvent]:
        return self.core.events()


class SteppedRuntime(_InProcessRuntime):
    """Core stepped by the caller in simulated time: `advance(0.1)` runs 100 ticks now."""

    realtime = False

    def __init__(self, factory: BackendFactory, config: CoreConfig) -> None:
        self._factory, self._config = factory, config
        self.layout = factory.layout()
        self.shared = SharedSnapshot(self.layout)
        self.tick_s = config.law.tick_s
        self._error: str | None = None
        self._start(None)

    def _start(self, resume_sim_state: np.ndarray | None) -> None:
        backend, scene = self._factory.build(realtime=False, resume_sim_state=resume_sim_state)
        self.core = ControlCore(backend, self._config, scene=scene, buffer=self.shared.buffer)
        self.core.step()  # one tick so a snapshot exists

    def _tick(self, *, publish: bool) -> None:
        self.check_alive()
        try:
            self.core.step(publish=publish)
        except Exception as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            log.error("control loop stopped: %s", self._error)
            raise ControlLoopDied(f"control loop stopped: {self._error}") from exc

    def submit(self, command: object) -> None:
        self.check_alive()
        self.core.submit(command)

    def advance(self, duration_s: float) -> None:
        n = int(round(duration_s / self.tick_s))
        for i in range(n):
            self._tick(publish=i == n - 1)

    def wait_event(self, timeout_s: float) -> list[CoreEvent]:
        """Tick until the core emits an event or `timeout_s` of simulated time passes."""
        for _ in range(int(timeout_s / self.tick_s)):
            self._tick(publish=False)  # a tick that emits an event publishes anyway
            events = self.core.events()
            if events:
                return events
        return []

    def stats(self) -> LoopStats | None:
        return None

    def check_alive(self) -> None:
        if self._error is not None:
            raise ControlLoopDied(f"control loop stopped: {self._error}")

    def restart(self, resume_sim_state: np.ndarray | None = None) -> None:
        """A fresh core (and backend) after the loop died, from `resume_sim_state` on the twin."""
        _close_quietly(self.core.backend)
        self.shared.buffer.clear()
        self._start(resume_sim_state)
        self._error = None

    def close(self) -> None:
        self.core.backend.close()
        self.core = None
        self.shared.close()


class ThreadRuntime(_InProcessRuntime):
    """Core on a paced 1 kHz thread of this process."""

    realtime = True

    def __init__(self, factory: BackendFactory, config: CoreConfig, *, rt_priority: int | None = None) -> None:
        self._factory, self._config = factory, config
        self.layout = factory.layout()
        self.shared = SharedSnapshot(self.layout)
        self._rt_priority = rt_priority
        self._recorder = _TickRecorder()
        self._start(None)

    def _start(self, resume_sim_state: np.ndarray | None) -> None:
        backend, scene = self._factory.build(realtime=True, resume_sim_state=resume_sim_state)
        self.core = ControlCore(backend, self._config, scene=scene, buffer=self.shared.buffer)
        self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="robot_rl-control-1kHz", daemon=True)
        self._thread.start()
        _wait_first_snapshot(self.core.buffer, self.check_alive)

    def restart(self, resume_sim_state: np.ndarray | None = None) -> None:
        """A fresh loop (and backend) on the same snapshot buffer after the old one died."""
        self._stop = True
        self._thread.join(timeout=2.0)
        if self._thread.is_alive():
            raise ControlLoopDied("the old control thread did not stop within 2 s; restart the server")
        self.shared.buffer.clear()
        self._start(resume_sim_state)

    def _run(self) -> None:
        try:
            if self._rt_priority is not None:
                _set_fifo(self._rt_priority)  # applies to this thread only (Linux)
            _paced_loop(self.core, lambda: self._stop, self._recorder, lambda: None,
                        paced_by_hardware=self.core.spec.paced_by_hardware, own_gc=False)
        except BaseException as exc:
            log.error("control loop stopped: %s: %s", type(exc).__name__, exc)
            self._error = exc
        finally:
            _close_quietly(self.core.backend)

    def submit(self, command: object) -> None:
        self.check_alive()
        self.core.submit(command)

    def advance(self, duration_s: float) -> None:
        """Real time passes by itself."""

    def wait_event(self, timeout_s: float) -> list[CoreEvent]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            events = self.core.events()
            if events:
                return events
            time.sleep(0.001)
        return []

    def stats(self) -> LoopStats:
        return self._recorder.stats()

    def reset_stats(self) -> None:
        self._recorder.reset()

    def check_alive(self) -> None:
        if self._error is not None or not self._thread.is_alive():
            why = f"{type(self._error).__name__}: {self._error}" if self._error is not None else "it exited"
            raise ControlLoopDied(f"control thread stopped ({why})")

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self.core = None
            self.shared.close()


def _close_quietly(backend: ArmBackend) -> None:
    """Close a backend whose loop died; a failure to close must not stop the restart."""
    try:
        backend.close()
    except Exception as exc:
        log.warning("closing the old arm backend failed: %s: %s", type(exc).__name__, exc)


def _set_fifo(priority: int) -> bool:
    """SCHED_FIFO for the calling thread; a warning (not an error) when the OS refuses."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        log.info("control loop runs SCHED_FIFO priority %d", priority)
        return True
    except (AttributeError, PermissionError, OSError) as exc:
        log.warning("could not set SCHED_FIFO priority %d (%s): the 1 kHz loop runs at normal priority and "
                    "will miss deadlines under load. Grant CAP_SYS_NICE / rtprio (see hardware/README.md).",
                    priority, exc)
        return False


def _wait_first_snapshot(buffer: SnapshotBuffer, check_alive: Callable[[], None], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while buffer.read() is None:
        check_alive()
        if time.monotonic() > deadline:
            raise ControlLoopDied(f"control loop produced no state within {timeout_s} s")
        time.sleep(0.005)


# ---- process runtime --------------------------------------------------------------------------

_STATS = "stats"
_RESET_STATS = "reset_stats"
_STOP = "stop"


def _child_main(factory: BackendFactory, config: CoreConfig, shm_name: str, conn, rt_priority: int | None,
                resume_sim_state: np.ndarray | None = None) -> None:
    """Entry point of the control process: build the backend here, then tick until told to stop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s control[%(process)d] %(levelname)s %(message)s")
    if rt_priority is not None:
        _set_fifo(rt_priority)
    backend, scene = factory.build(realtime=True, resume_sim_state=resume_sim_state)
    buffer, shm = attach_snapshot(shm_name, factory.layout())  # the parent created it and unlinks it
    core = ControlCore(backend, config, scene=scene, buffer=buffer)
    recorder = _TickRecorder()
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
        _paced_loop(core, lambda: state["stop"], recorder, on_tick, paced_by_hardware=backend.spec.paced_by_hardware,
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
        self._start(None)

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
        _wait_first_snapshot(self._buffer, self.check_alive, self._start_timeout_s)

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
