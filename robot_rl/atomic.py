"""Atomic file writes: write a temporary file beside the target, then `os.replace` it into place.

Readers see the old file or the complete new one, never a partial write. The temporary file is
`<name>.<pid>.tmp` in the target's folder (same filesystem, so the rename is atomic; the pid keeps
two processes writing one target apart). If the write raises, the temporary file stays behind and
the target is untouched: owners of a folder delete `*.tmp` leftovers when they open it.

`fsync=True` also makes the new contents survive a power cut (about 1–10 ms); the rename itself is
durable only once the folder is synced too (`fsync_dir`). Base module: no torch, no learner code.

    with atomic_write(path, fsync=True) as f:
        torch.save(state, f)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"


def temp_path(path: str | os.PathLike) -> Path:
    """Where `atomic_write` writes before the rename: `<name>.<pid>.tmp` beside `path`."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = False,
                 encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing; on a clean exit, replace `path` with it.

    Args:
        mode: "wb" (bytes) or "w" (text, `encoding` applies).
        fsync: flush and fsync the file before the rename.

    Raises:
        ValueError: `mode` is not a write mode.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    tmp = temp_path(path)
    with open(tmp, mode, encoding=encoding) as f:
        yield f
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> None:
    """`Path.write_bytes`, atomically (see `atomic_write`)."""
    with atomic_write(path, "wb", fsync=fsync) as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = False, encoding: str = "utf-8") -> None:
    """`Path.write_text`, atomically (see `atomic_write`)."""
    with atomic_write(path, "w", fsync=fsync, encoding=encoding) as f:
        f.write(text)


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder, so that renames into it survive a power cut (ext4 needs this)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
