"""Run metrics: append-only `metrics.jsonl` lines mirrored to TensorBoard, and reading them back.

Metrics schema (metrics.jsonl), one dict per line:

    kind          str    "train", "eval", or free-form ("actor", "system", ...); TensorBoard tag prefix
    env_step      int    environment steps taken so far: the x axis of plots and the TensorBoard step
    update        int    optional: learner gradient updates so far
    wall_s        float  seconds of run time since the run started (time.monotonic), summed over
                         resumed segments: downtime between a crash and the resume is not counted
    time_unix_s   float  wall-clock time of the write (time.time(); for logs only, never for rates)
    <key>         any JSON value; int and float values also go to TensorBoard as `<kind>/<key>`
                  (all keys but kind, env_step and time_unix_s, which float32 cannot hold)

  Eval lines (kind "eval", written by `MetricsWriter.write_eval`) also carry:

    success_rate  float  in [0, 1]: fraction of the evaluation episodes that succeeded
    episodes      int    ≥ 1: evaluation episodes behind success_rate
    mean_steps    float  mean env steps per evaluation episode, over all episodes
    cycle_time_s  float | null  mean duration of the successful episodes (wall time on a robot,
                         simulated time on a stepped twin); null when none succeeded

Non-finite floats (NaN, ±inf) are written as null so that every line is strict JSON; TensorBoard
receives them unchanged. After a resume, env_steps past the restored checkpoint appear twice:
readers keep the last line of a kind per env_step (see plot.py).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robot_rl.errors import ConfigError, DependencyMissing
from robot_rl.learning.run_dir import METRICS_FILE, RunDir

log = logging.getLogger(__name__)

_RESERVED = ("kind", "env_step", "update", "wall_s", "time_unix_s")
_NOT_MIRRORED = ("kind", "env_step", "time_unix_s")


class MetricsWriter:
    """Appends lines to `metrics.jsonl` of a run and mirrors their numbers to TensorBoard.

    Ownership: one writer per run folder, called from one thread (the learner loop). Each `write`
    hands its whole line to the OS before returning, so killing the process (even SIGKILL) loses no
    written line; `fsync=True` also survives a power cut, at about 1–10 ms per line. `close()` (or
    the context manager) flushes TensorBoard and closes both files.
    """

    def __init__(self, run: RunDir | str | Path, *, tensorboard: bool = True, fsync: bool = False,
                 tb_flush_s: float = 10.0) -> None:
        """Open (append) the metrics of `run`: a RunDir, or a run folder path (not locked then).

        wall_s continues from the last line already in the file and counts from the RunDir's
        creation (or from now, given a path). A torn last line left by a crash is dropped first.

        Raises:
            DependencyMissing: tensorboard=True and the tensorboard package is not installed.
        """
        path = run.path if isinstance(run, RunDir) else Path(run)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / METRICS_FILE
        self._t0_ns = run.t_start_ns if isinstance(run, RunDir) else time.monotonic_ns()
        self._wall_offset_s = _repair_tail(self.path)
        self._fsync = fsync
        self._tb = None
        if tensorboard:
            try:
                # Lazy: importing torch's TensorBoard writer costs ~1 s; plotting and reading never need it.
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise DependencyMissing(f"TensorBoard logging needs the tensorboard package ({exc}): "
                                        "pip install -e '.[learn]', or pass tensorboard=False") from exc
            self._tb = SummaryWriter(log_dir=str(path), flush_secs=max(1, round(tb_flush_s)))
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, kind: str, env_step: int, metrics: Mapping[str, Any] | None = None, *,
              update: int | None = None) -> dict[str, Any]:
        """Append one line (schema in the module docstring); returns it as written to JSON.

        Args:
            kind: "train", "eval" or a free-form name; the TensorBoard tag prefix.
            env_step: environment steps so far, ≥ 0.
            metrics: further fields: JSON values, or numpy/torch scalars (stored as Python numbers).
            update: learner gradient updates so far, if any.

        Raises:
            ValueError: empty kind, negative env_step or update, a reserved key in metrics.
            TypeError: a value that is not JSON (e.g. a tensor with more than one element).
        """
        if self._file.closed:
            raise ValueError(f"MetricsWriter of {self.path} is closed")
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty string such as 'train' or 'eval', got {kind!r}")
        env_step = as_count("env_step", env_step)
        line: dict[str, Any] = {"kind": kind, "env_step": env_step}
        if update is not None:
            line["update"] = as_count("update", update)
        line["wall_s"] = round(self._wall_offset_s + (time.monotonic_ns() - self._t0_ns) / 1e9, 6)
        line["time_unix_s"] = round(time.time(), 6)
        for key, value in (metrics or {}).items():
            if key in _RESERVED:
                raise ValueError(f"metrics key {key!r} is reserved (set by MetricsWriter): rename it")
            line[key] = _plain(value, key)
        strict = _finite_or_null(line)
        self._file.write(json.dumps(strict, allow_nan=False) + "\n")  # one write call: whole line or none
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())
        if self._tb is not None:
            for key, value in line.items():
                if key not in _NOT_MIRRORED and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{kind}/{key}", value, global_step=env_step)
        return strict

    def write_eval(self, env_step: int, *, success_rate: float, episodes: int, mean_steps: float,
                   cycle_time_s: float | None, update: int | None = None,
                   extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Append an eval line; fields as in the module docstring (see `eval_fields` to compute them).

        Raises:
            ValueError: success_rate outside [0, 1], episodes < 1, negative mean_steps or cycle_time_s.
        """
        if not 0.0 <= success_rate <= 1.0:
            raise ValueError(f"success_rate must be in [0, 1] (a fraction, not a percentage), got {success_rate}")
        if isinstance(episodes, bool) or int(episodes) != episodes or episodes < 1:
            raise ValueError(f"episodes must be an integer ≥ 1, got {episodes}")
        if not mean_steps >= 0:
            raise ValueError(f"mean_steps must be ≥ 0, got {mean_steps}")
        if cycle_time_s is not None and not cycle_time_s >= 0:
            raise ValueError(f"cycle_time_s must be ≥ 0 or None (no success), got {cycle_time_s}")
        fields = {"success_rate": float(success_rate), "episodes": int(episodes), "mean_steps": float(mean_steps),
                  "cycle_time_s": None if cycle_time_s is None else float(cycle_time_s)}
        return self.write("eval", env_step, {**fields, **(extra or {})}, update=update)

    def close(self) -> None:
        """Flush and close the metrics file and the TensorBoard writer. Idempotent."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def eval_fields(successes: list[bool], steps: list[int], durations_s: list[float]) -> dict[str, Any]:
    """success_rate, episodes, mean_steps and cycle_time_s of evaluation episodes (one entry each).

    durations_s: each episode's duration [s] (wall on a robot, simulated on a twin).
    """
    n = len(successes)
    if n == 0 or len(steps) != n or len(durations_s) != n:
        raise ValueError(f"need one entry per episode in successes, steps and durations_s, got "
                         f"{n}, {len(steps)}, {len(durations_s)} (and at least one episode)")
    ok = [d for s, d in zip(successes, durations_s) if s]
    return {"success_rate": sum(map(bool, successes)) / n, "episodes": n, "mean_steps": sum(steps) / n,
            "cycle_time_s": sum(ok) / len(ok) if ok else None}


def as_count(name: str, value: Any) -> int:
    """`value` as an int ≥ 0 (numpy and torch integers too), for step and update counters.

    Raises:
        TypeError: not an integer; ValueError: negative, a bool, or a non-integral float.
    """
    try:
        v = int(value.__index__()) if hasattr(value, "__index__") else int(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or v < 0 or v != value:
        raise ValueError(f"{name} must be an integer ≥ 0, got {value!r}")
    return v


def _plain(value: Any, key: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, key) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in value.items()}
    if hasattr(value, "item"):  # numpy and torch scalars, 1-element arrays and tensors
        try:
            return value.item()
        except (ValueError, RuntimeError):
            pass
    raise TypeError(f"metrics[{key!r}] is a {type(value).__name__}, not a JSON value: log a scalar "
                    "(e.g. tensor.mean().item()) or a list")


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    return value


def _repair_tail(path: Path) -> float:
    """Make the file end at a line boundary; returns the last line's wall_s (0 when none)."""
    if not path.exists():
        return 0.0
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        try:
            json.loads(data[cut:])
            complete = True
        except ValueError:
            complete = False
        with open(path, "r+b") as f:
            if complete:
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
            else:
                f.truncate(cut)
                log.warning("dropped a torn last line (%d bytes) of %s left by a crash mid-write",
                            len(data) - cut, path)
    lines = _parse(path, data.decode("utf-8", errors="replace"))
    return float(lines[-1].get("wall_s") or 0.0) if lines else 0.0


def read_metrics(path_or_run_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Lines of a metrics.jsonl (given it or its run folder), in file order; only `kind` if given.

    A last line that does not parse (torn by a crash, or still being written) is skipped.

    Raises:
        ConfigError: no metrics file there, or a line before the last is not a JSON object.
    """
    path = Path(path_or_run_dir)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise ConfigError(f"no metrics file at {path}: pass a run folder (runs/<name>) or its {METRICS_FILE}")
    lines = _parse(path, path.read_text(encoding="utf-8", errors="replace"))
    return lines if kind is None else [d for d in lines if d.get("kind") == kind]


def _parse(path: Path, text: str) -> list[dict[str, Any]]:
    raw = text.split("\n")
    while raw and not raw[-1].strip():
        raw.pop()
    out = []
    for i, line in enumerate(raw):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except ValueError as exc:
            if i == len(raw) - 1:
                log.info("skipping the torn last line of %s (%d bytes)", path, len(line))
                break
            raise ConfigError(f"{path}:{i + 1} is not JSON ({exc}): the file was edited or corrupted; "
                              "delete or fix that line") from exc
        if not isinstance(d, dict):
            raise ConfigError(f"{path}:{i + 1} is {type(d).__name__}, expected a JSON object")
        out.append(d)
    return out


def eval_point(env_step: int, eval_every: int) -> int:
    """The multiple of `eval_every` whose crossing triggered an evaluation logged at `env_step`
    (`robot-rl train` evaluates when that episode ends, a few steps past it); steps before the
    first multiple (an evaluation at 0) stay as they are."""
    return env_step - env_step % eval_every if env_step >= eval_every else env_step


def finished_run(run_dir: str | Path, budget: int) -> tuple[list[dict[str, Any]], float | None] | None:
    """(metrics lines, wall minutes of the learner's clock) of a run with an evaluation at `budget`
    env steps or later, or None (missing or interrupted) — what benchmarks reuse instead of retraining.
    A resumed run's wall time counts its stretches, not the pause between them."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    lines = read_metrics(path)
    if not any(m.get("kind") == "eval" and int(m["env_step"]) >= budget for m in lines):
        return None
    walls = [float(m["wall_s"]) for m in lines if "wall_s" in m]
    return lines, round(max(walls) / 60, 1) if walls else None
