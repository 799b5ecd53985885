"""What a training run shows while it runs, on stderr (stdout keeps the final JSON summary, as for
every robot-rl command): a live rich panel on a terminal, one plain line every 30 s (and at each
change of phase) when it goes to a file or a pipe.

`RunStatus` holds the counters the learner updates (env steps, updates, recent episodes, latest
evaluation, the phase it is in); `ProgressView` renders them. The learner's loop feeds the status;
the view reads it from its own refresh thread (ints and floats, read without locks: a display
may be one refresh stale, never wrong for long).
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

LINE_EVERY_S = 30.0
"""Plain-line mode: seconds between status lines."""
RECENT_EPISODES = 20
RATE_WINDOW_S = 30.0
"""Rates (env steps/s, updates/s) are measured over this trailing window."""


@dataclass
class RunStatus:
    """Counters of one run as the learner sees them."""

    run: str
    env_steps_total: int
    phase: str = "starting"
    env_steps: int = 0
    updates: int = 0
    update_budget: int = 0
    """Updates owed for the env steps so far (`TrainConfig.update_budget`)."""
    episodes: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RECENT_EPISODES))
    """Recent training episodes: (success, return, intervention steps, length)."""
    eval_env_step: int | None = None
    eval_success: float | None = None
    started: float = field(default_factory=time.monotonic)
    _env_marks: collections.deque = field(default_factory=collections.deque)
    _update_marks: collections.deque = field(default_factory=collections.deque)

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def on_counters(self, env_steps: int, updates: int, update_budget: int) -> None:
        now = time.monotonic()
        self.env_steps, self.updates, self.update_budget = env_steps, updates, update_budget
        for marks, value in ((self._env_marks, env_steps), (self._update_marks, updates)):
            if not marks or now - marks[-1][0] >= 0.5:
                marks.append((now, value))
            while len(marks) > 2 and now - marks[1][0] > RATE_WINDOW_S:
                marks.popleft()

    def on_episode(self, stats: dict[str, Any]) -> None:
        self.episodes.append((bool(stats.get("success")), float(stats.get("return", 0.0)),
                              int(stats.get("interventions", 0)), int(stats.get("length", 0))))

    def on_eval(self, env_step: int, success_rate: float) -> None:
        self.eval_env_step, self.eval_success = env_step, success_rate

    # ---- derived -----------------------------------------------------------------------------

    @staticmethod
    def _rate(marks: collections.deque) -> float | None:
        if len(marks) < 2 or marks[-1][0] - marks[0][0] < 1.0:
            return None
        return (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])

    @property
    def env_steps_per_s(self) -> float | None:
        return self._rate(self._env_marks)

    @property
    def updates_per_s(self) -> float | None:
        return self._rate(self._update_marks)

    @property
    def eta_s(self) -> float | None:
        rate = self.env_steps_per_s
        if not rate or rate <= 0:
            return None
        return max(0.0, self.env_steps_total - self.env_steps) / rate

    @property
    def recent_success(self) -> float | None:
        return sum(e[0] for e in self.episodes) / len(self.episodes) if self.episodes else None

    @property
    def recent_return(self) -> float | None:
        return sum(e[1] for e in self.episodes) / len(self.episodes) if self.episodes else None

    @property
    def intervention_share(self) -> float | None:
        steps = sum(e[3] for e in self.episodes)
        return sum(e[2] for e in self.episodes) / steps if steps else None

    @property
    def updates_behind(self) -> int:
        """Updates the learner owes for steps the actor already took (the actor/learner lag)."""
        return max(0, self.update_budget - self.updates)

    def line(self) -> str:
        """One plain status line."""
        pct = 100.0 * self.env_steps / max(self.env_steps_total, 1)
        parts = [f"{self.run}: {self.phase}", f"env steps {self.env_steps}/{self.env_steps_total} ({pct:.0f} %)",
                 f"ETA {_duration(self.eta_s)}"]
        if self.episodes:
            parts.append(f"train success {self.recent_success:.2f} return {self.recent_return:.2f} "
                         f"(last {len(self.episodes)} ep)")
        if self.eval_success is not None:
            parts.append(f"eval {self.eval_success:.2f} @ {self.eval_env_step}")
        ups = self.updates_per_s
        per_step = self.updates / self.env_steps if self.env_steps else 0.0
        parts.append(f"updates {self.updates} ({'-' if ups is None else f'{ups:.1f}'}/s, {per_step:.2f}/env step)")
        if self.intervention_share is not None:
            parts.append(f"interventions {100 * self.intervention_share:.0f} %")
        parts.append(f"learner behind {self.updates_behind} updates")
        return " | ".join(parts)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


class ProgressView:
    """Renders a `RunStatus`: a rich Live panel when `stream` is a terminal, else `status.line()`
    every `LINE_EVERY_S` (and at each phase change). Use as a context manager."""

    def __init__(self, status: RunStatus, *, stream: IO[str] | None = None, live: bool | None = None,
                 line_every_s: float = LINE_EVERY_S) -> None:
        self.status = status
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.line_every_s = line_every_s
        self._live: Live | None = None
        self._progress: Progress | None = None
        self._task = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_phase = ""

    def __enter__(self) -> ProgressView:
        if self.live:
            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TaskProgressColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                      console=Console(file=self.stream))
            self._task = self._progress.add_task("env steps", total=self.status.env_steps_total)
            self._live = Live(get_renderable=self._renderable, console=Console(file=self.stream),
                              refresh_per_second=2, transient=False)
            self._live.start()
        else:
            self._thread = threading.Thread(target=self._lines, name="progress-lines", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._print_line()  # the final state
        if self._live is not None:
            self._live.stop()

    def _print_line(self) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {self.status.line()}", file=self.stream, flush=True)

    def _lines(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.25):
            now = time.monotonic()
            if self.status.phase != self._last_phase or now - last >= self.line_every_s:
                self._last_phase = self.status.phase
                last = now
                self._print_line()

    def _renderable(self) -> Group:
        s = self.status
        assert self._progress is not None
        self._progress.update(self._task, completed=s.env_steps)
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("run", f"{s.run} — {s.phase}")
        table.add_row("training episodes",
                      f"success {_fmt(s.recent_success)}  return {_fmt(s.recent_return)}  (last {len(s.episodes)})")
        table.add_row("latest evaluation",
                      "-" if s.eval_success is None else f"success {s.eval_success:.2f} at {s.eval_env_step} env steps")
        per_step = s.updates / s.env_steps if s.env_steps else 0.0
        table.add_row("updates", f"{s.updates}  ({_fmt(s.updates_per_s, '.1f')}/s, {per_step:.2f} per env step)")
        share = s.intervention_share
        table.add_row("interventions", "-" if share is None else f"{100 * share:.0f} % of recent steps")
        table.add_row("actor/learner lag", f"{s.updates_behind} updates behind the actor's steps")
        table.add_row("elapsed", _duration(time.monotonic() - s.started))
        return Group(self._progress, table)
