"""The learner's persisted step stream: every Step message as received, in chunk files.

    <run>/replay/chunk_<first seq>_<last seq>.bin   (9-digit numbers)

A chunk is a sequence of records `[n_frames: u32][len_i: u64 × n][frame bytes…]` holding the
encoded messages exactly as they came over the wire. Chunks are written whole (temporary file,
fsync, rename), so after a crash every chunk on disk is complete; replaying them through the
learner's ingestion rebuilds the buffers exactly.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from pathlib import Path

from robot_rl.atomic import atomic_write

_NAME = re.compile(r"^chunk_(\d{9})_(\d{9})\.bin$")


class StepLog:
    """Buffers incoming step messages and writes them as chunks. One thread (the learner's)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for tmp in self.folder.glob("*.tmp"):
            tmp.unlink()
        self._pending: list[tuple[int, list[bytes]]] = []
        self.persisted_seq = max((int(m.group(2)) for p in self.folder.iterdir() if (m := _NAME.match(p.name))),
                                 default=-1)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def append(self, seq: int, frames: list[bytes]) -> None:
        self._pending.append((seq, [bytes(f) for f in frames]))

    def flush(self) -> int:
        """Write pending messages as one chunk; returns the highest persisted sequence number."""
        if not self._pending:
            return self.persisted_seq
        first, last = self._pending[0][0], self._pending[-1][0]
        path = self.folder / f"chunk_{first:09d}_{last:09d}.bin"
        with atomic_write(path, fsync=True) as f:
            for _, frames in self._pending:
                f.write(struct.pack("<I", len(frames)))
                f.write(struct.pack(f"<{len(frames)}Q", *(len(fr) for fr in frames)))
                f.writelines(frames)
        self.persisted_seq = max(self.persisted_seq, last)
        self._pending.clear()
        return self.persisted_seq

    def replay(self) -> Iterator[list[bytes]]:
        """Every persisted message's frames, in sequence order."""
        chunks = sorted((int(m.group(1)), p) for p in self.folder.iterdir() if (m := _NAME.match(p.name)))
        for _, path in chunks:
            data = path.read_bytes()
            i = 0
            while i < len(data):
                (n,) = struct.unpack_from("<I", data, i)
                i += 4
                lengths = struct.unpack_from(f"<{n}Q", data, i)
                i += 8 * n
                frames = []
                for length in lengths:
                    frames.append(data[i:i + length])
                    i += length
                yield frames
