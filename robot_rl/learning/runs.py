"""Run folders: the resolved config, append-only metrics mirrored to TensorBoard, and checkpoints.

A run folder `runs/<name>/` holds:

    config.json               resolved config of the run's first start
    config_resume_001.json    resolved config of a resume whose config differed (warned at resume)
    metrics.jsonl             one JSON object per line, appended and flushed line by line
    events.out.tfevents.*     TensorBoard mirror of the numeric metrics fields
    checkpoints/ckpt_000010000.pt ...   torch.save files, each written atomically
    checkpoints/latest        text: file name of the newest checkpoint, replaced atomically after it
    .lock                     flock held while a RunDir is open: one process owns a run at a time

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

import dataclasses
import enum
import fcntl
import json
import logging
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robot_rl.config import to_dict
from robot_rl.errors import ConfigError, DependencyMissing, RobotRLError

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "latest"
_RESERVED = ("kind", "env_step", "update", "wall_s", "time_unix_s")
_NOT_MIRRORED = ("kind", "env_step", "time_unix_s")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")
_CKPT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NUMBERED = re.compile(r"^ckpt_(\d+)\.pt$")
_ABSENT = "<absent>"


class RunDir:
    """The folder `<root>/<name>` of one training run; locked while open.

    Ownership: one process owns a run folder from construction to `close()` through an exclusive
    flock on `.lock`; a second RunDir on the same folder (this process or another) raises
    ConfigError. Not thread-safe: use it, its MetricsWriter and save_checkpoint from the learner's
    main thread. Use it as a context manager or call `close()`; the OS drops the lock if the
    process dies.
    """

    def __init__(self, name: str, *, root: str | Path = "runs", resume: bool = False, config: Any = None,
                 resume_may_differ: tuple[str, ...] = ("resume",)) -> None:
        """Create `<root>/<name>`, or reopen it when `resume`.

        Args:
            name: run folder name: letters, digits and `_ . + = -`, not starting with a dot.
            root: folder holding the runs.
            resume: reuse an existing run folder. With resume=False an existing non-empty folder is
                refused. With resume=True and no folder yet, a fresh run starts (warned).
            config: the resolved config, a dataclass (saved with robot_rl.config.to_dict) or a
                mapping of JSON values; None saves nothing.
            resume_may_differ: config fields not compared on resume: dotted paths (`agent.lr`),
                or plain names matching a field of that name at any depth.

        Raises:
            ConfigError: bad name, folder exists without resume, folder in use, config not JSON.
        """
        if not _RUN_NAME.match(name):
            raise ConfigError(f"run name {name!r} is not a plain folder name: use letters, digits and _ . + = -, "
                              "not starting with a dot (e.g. sac_pick_cube_seed0)")
        self.name = name
        self.path = Path(root) / name
        config_text = None if config is None else _config_json(config)  # before touching the disk
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"run path {self.path} exists and is not a folder: pick another name")
        existed = self.path.is_dir() and any(self.path.iterdir())
        if existed and not resume:
            raise ConfigError(f"run folder {self.path} already exists: pass --resume to continue that run, "
                              "or pick another name")
        self.checkpoint_dir = self.path / CHECKPOINT_DIR
        self.metrics_path = self.path / METRICS_FILE
        self.config_changes: dict[str, tuple[Any, Any]] = {}
        """On resume: field -> (saved value, new value) for every compared field that differs."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = _lock(self.path / ".lock")
        try:
            self._open(config_text, existed=existed, resume=resume, may_differ=resume_may_differ)
        except BaseException:
            self.close()
            raise
        self.t_start_ns = time.monotonic_ns()

    def _open(self, config_text: str | None, *, existed: bool, resume: bool, may_differ: tuple[str, ...]) -> None:
        self.resumed = existed
        if resume and not existed:
            log.warning("nothing to resume in %s: starting a fresh run", self.path)
        self.checkpoint_dir.mkdir(exist_ok=True)
        for stale in self.checkpoint_dir.glob("*.tmp"):
            stale.unlink()  # a crash mid-save left it; the checkpoint it held was never pointed at
        if config_text is not None:
            self._save_config(config_text, may_differ)

    def _save_config(self, text: str, may_differ: tuple[str, ...]) -> None:
        path = self.path / CONFIG_FILE
        if not path.exists():
            _write_atomic(path, text.encode())
            return
        self.config_changes = config_diff(json.loads(path.read_text()), json.loads(text), ignore=may_differ)
        if self.config_changes:
            k = 1
            while (out := self.path / f"config_resume_{k:03d}.json").exists():
                k += 1
            _write_atomic(out, text.encode())
            shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in self.config_changes.items())
            log.warning("resuming %s with a config that differs from %s on %d field(s): %s. The new config is "
                        "saved as %s; pick another run name if this was not intended",
                        self.path, CONFIG_FILE, len(self.config_changes), shown, out.name)

    def close(self) -> None:
        """Release the lock. Idempotent."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(f"run folder {path.parent} is in use by another RunDir (pid {holder}): stop that "
                          "learner first, or pick another run name") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def config_diff(saved: Mapping[str, Any], new: Mapping[str, Any], *,
                ignore: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ, as dotted path -> (saved, new); "<absent>" marks a missing field.

    `ignore` holds dotted paths, or plain names that match a field of that name at any depth.
    """
    a, b = flatten_dict(saved), flatten_dict(new)
    out = {}
    for key in sorted(set(a) | set(b)):
        if key in ignore or key.rsplit(".", 1)[-1] in ignore:
            continue
        if a.get(key, _ABSENT) != b.get(key, _ABSENT):
            out[key] = (a.get(key, _ABSENT), b.get(key, _ABSENT))
    return out


def flatten_dict(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and empty mappings are leaves."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten_dict(v, key + "."))
        else:
            out[key] = v
    return out


def _config_json(config: Any) -> str:
    data = to_dict(config) if dataclasses.is_dataclass(config) else config
    if not isinstance(data, Mapping):
        raise ConfigError(f"config must be a dataclass or a mapping, got {type(data).__name__}")
    return json.dumps(data, indent=1, default=_json_default)


def _json_default(v: Any) -> Any:
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if hasattr(v, "item"):
        return v.item()
    raise ConfigError(f"config value {v!r} of type {type(v).__name__} is not JSON: use numbers, strings, "
                      "booleans, lists or nested dataclasses")


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
        env_step = _count("env_step", env_step)
        line: dict[str, Any] = {"kind": kind, "env_step": env_step}
        if update is not None:
            line["update"] = _count("update", update)
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


def _count(name: str, value: Any) -> int:
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


def checkpoint_name(step: int) -> str:
    """Name of the numbered checkpoint at a step count (env steps or updates), e.g. ckpt_000010000.

    keep_last pruning applies to these names only, ordered by the number.
    """
    return f"ckpt_{_count('step', step):09d}"


def save_checkpoint(run_dir: RunDir | str | Path, name: str, state: Mapping[str, Any], *,
                    keep_last: int | None = 3) -> Path:
    """Write `checkpoints/<name>.pt` atomically, point `checkpoints/latest` at it, then prune.

    Atomic: torch.save to a temp file, fsync, rename; then `latest` is replaced the same way. A crash
    at any point leaves `latest` naming a complete file. Pruning keeps the `keep_last`
    highest-numbered `ckpt_<N>.pt` files (see checkpoint_name) and whatever `latest` names; other
    names (e.g. "best", "bc_init") are never pruned. keep_last=None keeps everything.

    Args:
        state: tensors, numbers, strings, bytes, None, torch dtypes/devices/sizes, and lists,
            tuples and dicts of these (so that it loads with torch.load(weights_only=True)).

    Returns:
        Path of the checkpoint file.

    Raises:
        ValueError: bad name or keep_last.
        TypeError: state holds another type (its key path is named), e.g. a numpy array.
    """
    import torch  # lazy: reading metrics and plotting must not pay for importing torch

    if not _CKPT_NAME.match(name) or name.endswith(".tmp"):
        raise ValueError(f"checkpoint name {name!r}: use letters, digits and _ . - (e.g. {checkpoint_name(10000)})")
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be ≥ 1 or None (keep all), got {keep_last}")
    state = dict(state)
    _check_loadable(state, "state")
    folder = _ckpt_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pt"
    tmp = folder / f"{name}.pt.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _write_atomic(folder / LATEST_FILE, f"{path.name}\n".encode())
    _fsync_dir(folder)
    if keep_last is not None:
        numbered = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _NUMBERED.match(p.name)))
        for _, old in numbered[:-keep_last]:
            if old != path:
                old.unlink()
    return path


def latest_checkpoint_path(run_dir: RunDir | str | Path) -> Path | None:
    """The file `checkpoints/latest` names; failing that the highest-numbered ckpt_<N>.pt; else None."""
    folder = _ckpt_dir(run_dir)
    pointer = folder / LATEST_FILE
    if pointer.is_file():
        target = folder / pointer.read_text().strip()
        if target.is_file():
            return target
        log.warning("%s names %s, which is missing: falling back to the highest-numbered checkpoint",
                    pointer, target.name)
    numbered = sorted((int(m.group(1)), p) for p in folder.glob("ckpt_*.pt") if (m := _NUMBERED.match(p.name)))
    return numbered[-1][1] if numbered else None


def load_latest_checkpoint(run_dir: RunDir | str | Path, *, map_location: str = "cpu") -> dict[str, Any] | None:
    """The newest checkpoint's state (torch.load with weights_only=True), or None if there is none.

    Raises:
        RobotRLError: the file exists but cannot be loaded.
    """
    path = latest_checkpoint_path(run_dir)
    if path is None:
        return None
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        raise RobotRLError(f"checkpoint {path} cannot be loaded ({type(exc).__name__}: {exc}); move it away "
                           f"and edit {path.parent / LATEST_FILE} to resume from an older one") from exc


def _ckpt_dir(run_dir: RunDir | str | Path) -> Path:
    return run_dir.checkpoint_dir if isinstance(run_dir, RunDir) else Path(run_dir) / CHECKPOINT_DIR


def _check_loadable(value: Any, where: str) -> None:
    import torch

    # Exact types: np.float64 subclasses float, yet weights_only loading refuses it.
    if value is None or type(value) in (bool, int, float, complex, str, bytes, torch.Size, torch.dtype,
                                        torch.device) or isinstance(value, torch.Tensor):
        return
    if type(value) in (list, tuple, set):
        for i, v in enumerate(value):
            _check_loadable(v, f"{where}[{i}]")
        return
    if type(value) in (dict, OrderedDict):
        for k, v in value.items():
            _check_loadable(k, f"{where} key")
            _check_loadable(v, f"{where}[{k!r}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__}, which torch.load(weights_only=True) refuses: "
                    "store tensors (torch.from_numpy), Python numbers (.item()), strings, lists or dicts")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    # The renames above are durable only once the directory entry is on disk (ext4 after a power cut).
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
