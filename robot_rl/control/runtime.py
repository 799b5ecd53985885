"""Where the control core runs: stepped (as fast as possible), a thread, or its own process.

- `SteppedRuntime`: the caller advances time (`advance(duration_s)`); simulated time, no pacing.
  Used for training on the twin and for the in-process twin env.
- `ThreadRuntime`: a 1 kHz thread in the server process, paced with an absolute deadline.
- `ProcessRuntime` (`control/process_runtime.py`): the same loop in a child process; commands go
  through a pipe, state comes back through a shared-memory snapshot, so socket, camera and Python
  work in the server process cannot hold the loop's GIL. `robot-rl bench controller` measures both
  real-time options side by side; the process runtime is the default for real-time serving.

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
import os
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
)
from robot_rl.drivers.arm import ArmBackend, ArmSpec
from robot_rl.errors import RobotRLError

log = logging.getLogger(__name__)

PERIOD_NS = 1_000_000
"""Default control period (1 kHz); an arm with another (UR: 2 ms) says so in `ArmSpec.period_s`."""
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


class TickRecorder:
    """Ring buffer of tick start times and compute durations (ns)."""

    def __init__(self, size: int = 20_000, period_ns: int = PERIOD_NS) -> None:
        self.period_ns = period_ns
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
        jitter = np.abs(periods - self.period_ns / 1e3)
        return LoopStats(k, float(np.median(periods)), float(np.percentile(jitter, 50)),
                         float(np.percentile(jitter, 99)), float(jitter.max()), self.overruns,
                         float(np.percentile(self.compute[idx] / 1e3, 99)))


def paced_loop(core: ControlCore, stop: Callable[[], bool], recorder: TickRecorder,
                on_tick: Callable[[], None], *, paced_by_hardware: bool, own_gc: bool) -> None:
    """Run `core.step()` every arm period (`ArmSpec.period_s`) with an absolute deadline until `stop()`.

    With `own_gc` (a process of its own), automatic garbage collection is off and young
    generations are collected only in a tick's slack, so a collection never lands mid-tick.
    """
    if own_gc:
        gc.freeze()
        gc.disable()
    period_ns = period_ns_of(core.spec)
    deadline = time.monotonic_ns()
    ticks = 0
    while not stop():
        ticks += 1
        if own_gc and ticks % 500 == 0 and deadline + period_ns - time.monotonic_ns() > 600_000:
            gc.collect(1 if ticks % 50_000 else 2)
        if not paced_by_hardware:
            deadline += period_ns
            now = time.monotonic_ns()
            if now > deadline + period_ns:  # more than a period late: skip ahead, don't burst
                recorder.overruns += 1
                deadline = now
            elif deadline - now > SPIN_NS:
                time.sleep((deadline - now - SPIN_NS) / 1e9)
            while time.monotonic_ns() < deadline:
                pass
        start = time.monotonic_ns()
        if paced_by_hardware:
            # The packet arrives about now (read() returns with it): the next is one period
            # later, so the slack test above measures from here.
            deadline = start
        on_tick()
        core.step()
        recorder.add(start, time.monotonic_ns() - start)


def period_ns_of(spec: ArmSpec) -> int:
    return int(round(spec.period_s * 1e9))


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
        self.tick_s = factory.arm_spec().period_s
        self._error: str | None = None
        _start_or_close(self, self.shared)

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
        # A positive duration runs at least one tick: the server's "apply this now" advance(0.001)
        # would otherwise round to no tick on a 2 ms arm (UR) and leave the command queued.
        n = max(1, int(round(duration_s / self.tick_s))) if duration_s > 0 else 0
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
        self._recorder = TickRecorder(period_ns=period_ns_of(factory.arm_spec()))
        _start_or_close(self, self.shared)

    def _start(self, resume_sim_state: np.ndarray | None) -> None:
        backend, scene = self._factory.build(realtime=True, resume_sim_state=resume_sim_state)
        self.core = ControlCore(backend, self._config, scene=scene, buffer=self.shared.buffer)
        self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="robot_rl-control-1kHz", daemon=True)
        self._thread.start()
        wait_first_snapshot(self.core.buffer, self.check_alive)

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
                set_fifo(self._rt_priority)  # applies to this thread only (Linux)
            paced_loop(self.core, lambda: self._stop, self._recorder, lambda: None,
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


def _start_or_close(runtime, shared: SharedSnapshot) -> None:
    """`runtime._start(None)`; if the backend cannot be built (no arm at that address), release
    the shared snapshot before the error propagates."""
    try:
        runtime._start(None)
    except BaseException:
        shared.close()
        raise


def _close_quietly(backend: ArmBackend) -> None:
    """Close a backend whose loop died; a failure to close must not stop the restart."""
    try:
        backend.close()
    except Exception as exc:
        log.warning("closing the old arm backend failed: %s: %s", type(exc).__name__, exc)


def set_fifo(priority: int) -> bool:
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


def wait_first_snapshot(buffer: SnapshotBuffer, check_alive: Callable[[], None], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while buffer.read() is None:
        check_alive()
        if time.monotonic() > deadline:
            raise ControlLoopDied(f"control loop produced no state within {timeout_s} s")
        time.sleep(0.005)
