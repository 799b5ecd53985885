"""Run folders: one learner owns `runs/<name>/` at a time, which keeps its resolved config.

A run folder `runs/<name>/` holds:

    config.json               resolved config of the run's first start
    config_resume_001.json    resolved config of a resume whose config differed (warned at resume)
    metrics.jsonl             metrics lines (robot_rl.learning.metrics)
    events.out.tfevents.*     TensorBoard mirror of the numeric metrics fields
    checkpoints/              torch.save files and the `latest` pointer (robot_rl.learning.checkpoints)
    .lock                     flock held while a RunDir is open: one process owns a run at a time
"""

from __future__ import annotations

import dataclasses
import enum
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robot_rl.atomic import write_bytes_atomic
from robot_rl.config import to_dict
from robot_rl.errors import ConfigError

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")
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
            write_bytes_atomic(path, text.encode(), fsync=True)
            return
        self.config_changes = config_diff(json.loads(path.read_text()), json.loads(text), ignore=may_differ)
        if self.config_changes:
            k = 1
            while (out := self.path / f"config_resume_{k:03d}.json").exists():
                k += 1
            write_bytes_atomic(out, text.encode(), fsync=True)
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
