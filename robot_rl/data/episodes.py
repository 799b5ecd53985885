"""Episode files on disk: the format `robot-rl record` writes and the learners read.

A recording folder holds:

    meta.json               {"format": "robot_rl.episodes", "version": 1, "task": ..., "task_spec": {...}}
    episode_000000.npz      one file per finished episode (numpy .npz, compressed)
    episode_000001.npz
    ...

Each episode file has, for T steps (T+1 observations: the reset one and one per step):

    obs/tcp_pose (T+1, 7) float32 · obs/tcp_vel (T+1, 6) · obs/gripper_width (T+1, 1) · obs/force (T+1, 3)
    obs/torque (T+1, 3) · obs/images/<camera> (T+1, H, W, 3) uint8 · obs/privileged/<name> (T+1, k) (twin)
    action (T, 7) float32 · reward (T,) float32 · terminated (T,) bool · truncated (T,) bool
    success (T,) bool · intervention (T,) bool (the human was commanding) · rtt_ms (T,) float32
    t_capture_ns (T+1,) int64 (robot-PC clock, or simulated time on a stepped twin)
    q_rad, dq_rad_per_s (T+1, n_joints) float64: the arm's joints (when the env's info has them)
    meta () str: JSON {"source": "keyboard" | "spacemouse" | "scripted" | ..., "seed": ..., "success": ...}

Append-safe: an episode is written to a temporary name and renamed into place only when it is
complete, so a crash loses at most the episode in progress, and new episodes continue the
numbering of those already there.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.atomic import atomic_write, write_bytes_atomic
from robot_rl.config import to_dict
from robot_rl.errors import ConfigError
from robot_rl.task_spec import TaskSpec

FORMAT = "robot_rl.episodes"
VERSION = 1
_NAME = re.compile(r"^episode_(\d{6,})\.npz$")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}", v, out)
    else:
        out[prefix] = value


@dataclass
class EpisodeBuffer:
    """Collects one episode in memory; `EpisodeWriter.save` writes it."""

    observations: list[dict[str, Any]] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminated: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    success: list[bool] = field(default_factory=list)
    intervention: list[bool] = field(default_factory=list)
    rtt_ms: list[float] = field(default_factory=list)
    t_capture_ns: list[int] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    """Operator's success label of each step's observation: 1, 0, or −1 (none)."""
    q_rad: list[np.ndarray | None] = field(default_factory=list)
    dq_rad_per_s: list[np.ndarray | None] = field(default_factory=list)
    """Arm joints of each observation, from `info` (not observations: no policy reads them)."""

    def start(self, obs: dict[str, Any], info: dict[str, Any]) -> None:
        self.observations.append(obs)
        self.t_capture_ns.append(int(info.get("t_capture_ns", 0)))
        self._joints(info)

    def _joints(self, info: dict[str, Any]) -> None:
        self.q_rad.append(info.get("q_rad"))
        self.dq_rad_per_s.append(info.get("dq_rad_per_s"))

    def add(self, action: np.ndarray, obs: dict[str, Any], reward: float, terminated: bool, truncated: bool,
            info: dict[str, Any], *, intervention: bool, label: int = -1) -> None:
        self.label.append(int(label))
        self.actions.append(np.asarray(action, dtype=np.float32))
        self.observations.append(obs)
        self.rewards.append(float(reward))
        self.terminated.append(bool(terminated))
        self.truncated.append(bool(truncated))
        self.success.append(bool(info.get("success", False)))
        self.intervention.append(bool(intervention))
        self.rtt_ms.append(float(info.get("rtt_ms", np.nan)))
        self.t_capture_ns.append(int(info.get("t_capture_ns", 0)))
        self._joints(info)

    def __len__(self) -> int:
        return len(self.actions)

    def arrays(self) -> dict[str, np.ndarray]:
        if not self.observations:
            raise ValueError("empty episode: call start() with the reset observation first")
        flat_steps = []
        for obs in self.observations:
            flat: dict[str, Any] = {}
            _flatten("obs", obs, flat)
            flat_steps.append(flat)
        out = {k: np.stack([f[k] for f in flat_steps]) for k in flat_steps[0]}
        n = len(self.actions)
        out["action"] = np.stack(self.actions) if n else np.zeros((0, 7), np.float32)
        out["reward"] = np.asarray(self.rewards, dtype=np.float32)
        out["terminated"] = np.asarray(self.terminated, dtype=bool)
        out["truncated"] = np.asarray(self.truncated, dtype=bool)
        out["success"] = np.asarray(self.success, dtype=bool)
        out["intervention"] = np.asarray(self.intervention, dtype=bool)
        out["rtt_ms"] = np.asarray(self.rtt_ms, dtype=np.float32)
        out["t_capture_ns"] = np.asarray(self.t_capture_ns, dtype=np.int64)
        for name in ("q_rad", "dq_rad_per_s"):  # only when every step has them (env info from a robot server)
            values = getattr(self, name)
            if values and all(v is not None for v in values):
                out[name] = np.stack([np.asarray(v, dtype=np.float64) for v in values])
        if any(v >= 0 for v in self.label):  # written only when the operator labeled something
            out["label"] = np.asarray(self.label, dtype=np.int8)
        return out


class EpisodeWriter:
    """Writes episodes into a recording folder (created if needed). One writer per folder."""

    def __init__(self, out_dir: str | Path, task: TaskSpec, *, compress: bool = True) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.compress = compress
        meta_path = self.dir / "meta.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != FORMAT or meta.get("task") != task.name:
                raise ConfigError(f"{self.dir} holds episodes of task {meta.get('task')!r} "
                                  f"(format {meta.get('format')!r}); record {task.name!r} into another folder")
            # Folders from before the twin had a choice of arms were all recorded on the Panda.
            had = ((meta.get("task_spec") or {}).get("twin") or {}).get("arm", "panda")
            arm = task.twin.arm if task.twin is not None else None
            if arm is not None and had != arm:
                raise ConfigError(f"{self.dir} holds episodes recorded on the {had} twin arm; record the "
                                  f"{arm} arm's into another folder")
        else:
            write_bytes_atomic(meta_path, json.dumps({"format": FORMAT, "version": VERSION, "task": task.name,
                                                 "task_spec": to_dict(task), "created_unix_s": time.time()},
                                                indent=1).encode())
        for stale in self.dir.glob("*.tmp"):
            stale.unlink()  # leftovers of a crash mid-write: the episode they held is lost anyway
        self.next_index = max((int(m.group(1)) for p in self.dir.iterdir() if (m := _NAME.match(p.name))),
                              default=-1) + 1

    def save(self, episode: EpisodeBuffer, meta: dict[str, Any]) -> Path:
        """Write an episode; returns its path. Atomic: it appears complete or not at all."""
        arrays = episode.arrays()
        arrays["meta"] = np.array(json.dumps({**meta, "steps": len(episode),
                                              "success": bool(episode.success and episode.success[-1])}))
        path = self.dir / f"episode_{self.next_index:06d}.npz"
        with atomic_write(path, fsync=True) as f:
            (np.savez_compressed if self.compress else np.savez)(f, **arrays)
        self.next_index += 1
        return path


@dataclass(frozen=True)
class Episode:
    """A loaded episode: `arrays` as described in the module docstring, `meta` decoded."""

    path: Path
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]

    def __len__(self) -> int:
        return int(self.arrays["action"].shape[0])

    def observation(self, key: str) -> np.ndarray:
        """obs/<key> array, e.g. observation("tcp_pose") or observation("images/wrist")."""
        return self.arrays[f"obs/{key}"]

    def obs_at(self, t: int) -> dict[str, Any]:
        """The env's nested observation at step t (0 … len), rebuilt from the flat obs/<a>/<b> arrays."""
        obs: dict[str, Any] = {}
        for key, arr in self.arrays.items():
            if not key.startswith("obs/"):
                continue
            node = obs
            parts = key[4:].split("/")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = arr[t]
        return obs


def episode_paths(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not (folder / "meta.json").is_file():
        raise ConfigError(f"{folder} is not a robot_rl recording (no meta.json); record one with `robot-rl record`")
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def read_meta(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "meta.json").read_text())


def iter_episodes(folder: str | Path) -> Iterator[Episode]:
    """Episodes in recording order."""
    for path in episode_paths(folder):
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        yield Episode(path, arrays, json.loads(str(arrays.pop("meta"))))
