"""CPU settings for processes that train torch networks (learner, in-process fine-tuning, benches).

`keep_freed_memory`: PyTorch on CPU has no caching allocator; every tensor comes from malloc.
glibc serves blocks above its mmap threshold with fresh mmap()s and returns the top of the heap
to the OS beyond its trim threshold, so each update's (10, 256, 256) activations are new pages
that the kernel must fault in and zero: ≈ 3,600 page faults per SAC update of the 10-critic
set, about a fifth of its CPU time (`robot-rl bench learner` reports the fault count). Raising
both thresholds keeps freed blocks in the heap for the next update.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX_BYTES = 32 * 1024 * 1024  # glibc's upper bound on 64-bit systems
_TRIM_THRESHOLD_BYTES = 1 << 30


_GLIBC_DEFAULT_BYTES = 128 * 1024  # glibc's initial mmap and trim thresholds


def keep_freed_memory(keep: bool = True) -> bool:
    """Make glibc reuse freed blocks up to 32 MB instead of unmapping them (process-wide; the
    process keeps up to 1 GiB of freed heap). `keep=False` sets glibc's initial 128 KiB thresholds
    back (for side-by-side benchmarks). Returns False where it does not apply (not glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    mmap_bytes, trim_bytes = (_MMAP_THRESHOLD_MAX_BYTES, _TRIM_THRESHOLD_BYTES) if keep else (_GLIBC_DEFAULT_BYTES,) * 2
    ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap_bytes) == 1
    return libc.mallopt(_M_TRIM_THRESHOLD, trim_bytes) == 1 and ok


def setup_torch(threads: int | None, *, matmul_precision: str | None = None, tune_malloc: bool = True) -> None:
    """Intra-op threads (None: torch's default), float32 matmul precision, allocator reuse."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if matmul_precision is not None:
        torch.set_float32_matmul_precision(matmul_precision)
    if tune_malloc:
        keep_freed_memory()


def minor_page_faults() -> int:
    """Minor page faults of this process so far (Linux/macOS)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
