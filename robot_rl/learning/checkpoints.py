"""Run checkpoints: `checkpoints/<name>.pt` written atomically, a `latest` pointer, pruning.

In a run folder (robot_rl.learning.run_dir):

    checkpoints/ckpt_000010000.pt ...   torch.save files, each written atomically
    checkpoints/latest        text: file name of the newest checkpoint, replaced atomically after it

Files load with torch.load(weights_only=True); torch is imported lazily, so that reading metrics
and plotting never pay for it.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robot_rl.atomic import atomic_write, fsync_dir, write_bytes_atomic
from robot_rl.errors import RobotRLError
from robot_rl.learning.metrics import as_count
from robot_rl.learning.run_dir import CHECKPOINT_DIR, RunDir

log = logging.getLogger(__name__)

LATEST_FILE = "latest"
_CKPT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NUMBERED = re.compile(r"^ckpt_(\d+)\.pt$")


def checkpoint_name(step: int) -> str:
    """Name of the numbered checkpoint at a step count (env steps or updates), e.g. ckpt_000010000.

    keep_last pruning applies to these names only, ordered by the number.
    """
    return f"ckpt_{as_count('step', step):09d}"


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
    with atomic_write(path, fsync=True) as f:
        torch.save(state, f)
    write_bytes_atomic(folder / LATEST_FILE, f"{path.name}\n".encode(), fsync=True)
    fsync_dir(folder)  # the renames are durable only once the directory entry is on disk
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


def load_latest_checkpoint(run_dir: RunDir | str | Path, *, map_location: Any = "cpu") -> dict[str, Any] | None:
    """The newest checkpoint's state (torch.load with weights_only=True), or None if there is none.
    Its tensors land on `map_location` (a device or its name), whichever device saved them.

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
