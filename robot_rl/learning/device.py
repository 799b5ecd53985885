"""Where a learner's tensors live: `--device cpu|cuda|cuda:N|auto` resolved once, and host batches
moved there.

Replay buffers stay in host memory (numpy, uint8 frames); each sampled batch crosses to the device
once per update. On CUDA the batch is copied into pinned (page-locked) memory first so the copy
to the GPU can run asynchronously (`non_blocking=True`): the next kernels queue behind it on the
same stream instead of the Python thread waiting. Actors always act on the CPU.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from robot_rl.errors import ConfigError

DEVICE_CHOICES = "cpu, cuda, cuda:N or auto"
_DEVICE_NAME = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def check_device_name(name: str, *, flag: str = "--device") -> None:
    """Raise ConfigError unless `name` is spelled as one of `DEVICE_CHOICES` (whether that device
    exists is `resolve_device`'s question: an actor never asks it)."""
    if not isinstance(name, str) or not _DEVICE_NAME.match(name):
        raise ConfigError(f"{flag} must be one of {DEVICE_CHOICES}, got {name!r}")


def resolve_device(name: str, *, flag: str = "--device") -> torch.device:
    """The torch device `name` means on this machine: "auto" is CUDA when torch sees a CUDA
    device, else the CPU; "cuda" is the current CUDA device (`cuda:0` unless changed).

    Raises:
        ConfigError: a misspelt name, or a CUDA device torch does not see (the message says
            whether this torch is a CPU build and what to pass instead).
    """
    check_device_name(name, flag=flag)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        build = "a CPU build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ConfigError(f"{flag} {name} asked for, but torch sees no CUDA device (torch {torch.__version__} "
                          f"is {build}): use {flag} cpu or auto")
    count = torch.cuda.device_count()
    if device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if device.index >= count:
        raise ConfigError(f"{flag} {name} asked for, but torch sees {count} CUDA device(s) "
                          f"(cuda:0 to cuda:{count - 1}): pick one of those, or --device auto")
    return device


def to_device(tree: Any, device: torch.device) -> Any:
    """A batch (nested dicts, tuples, lists) of numpy arrays or CPU tensors as tensors on `device`.

    CPU: zero-copy `torch.from_numpy` views (made contiguous first). CUDA: each array is copied
    into pinned host memory and sent with `non_blocking=True`; the copy is ordered on the current
    stream before the kernels that read it, and the caching host allocator keeps the pinned block
    alive until the copy has finished.
    """
    if isinstance(tree, dict):
        return {k: to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(to_device(v, device) for v in tree)
    t = tree if isinstance(tree, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(tree))
    if device.type == "cpu":
        return t.to(device)
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for a module with neither)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")
