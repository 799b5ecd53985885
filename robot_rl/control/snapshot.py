"""Fixed-layout state snapshots written by the control loop every tick and read by the server.

The loop writes into a flat buffer guarded by a sequence lock, so the 1 kHz writer never waits
for a reader and a reader never sees a half-written tick. The buffer is either process-local
(stepped and thread runtimes) or `multiprocessing.shared_memory` (process runtime).
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from robot_rl.drivers.arm import ARM_FAULT_TEXT, ArmFault


class Mode(IntEnum):
    """What the controller is doing."""

    HOLD = 0
    """Holding a pose (after start, after a reset, or after clear-error)."""
    TRACK = 1
    """Following client commands."""
    WATCHDOG_HOLD = 2
    """The controlling client went silent for longer than watchdog_s: holding the pose."""
    MOVING = 3
    """Executing a reset motion."""
    REFLEX = 4
    """A safety reflex fired; holding the pose until a clear-error request."""


class Fault(IntEnum):
    """Why the controller is in REFLEX (0 when it is not)."""

    NONE = 0
    CONTACT_FORCE = 1
    JOINT_VELOCITY = 2
    JOINT_LIMIT = 3
    BACKEND = 4
    INTERNAL = 5
    """The control step raised; the loop switched to a damping-only brake (see the robot PC's log)."""


FAULT_TEXT = {
    Fault.NONE: "",
    Fault.CONTACT_FORCE: "contact force {value:.1f} N exceeded max_contact_force_n",
    Fault.JOINT_VELOCITY: "joint speed {value:.2f} rad/s exceeded the joint velocity limit",
    Fault.JOINT_LIMIT: "joint position came within {value:.3f} rad of its limit",
    Fault.BACKEND: "{arm}; fix the cause on the robot, then send clear_error",
    Fault.INTERNAL: "the control step failed {value:.0f} time(s) in a row and braked with damping only; "
                    "see the robot PC's log, then send clear_error",
}

def fault_text(fault: Fault, value: float) -> str:
    """What a fault means, for replies and logs; `value` is the fault's measured quantity (for
    `Fault.BACKEND`, the `ArmFault` code the arm reported)."""
    if fault == Fault.BACKEND:
        code = int(value)
        arm = (ARM_FAULT_TEXT[ArmFault(code)] if code in set(ArmFault) and code
               else f"the arm reported fault code {code}")
        return FAULT_TEXT[fault].format(arm=arm)
    return FAULT_TEXT[fault].format(value=value)


_INT_FIELDS = ("lock", "tick", "t_capture_ns", "mode", "fault", "command_seq", "reset_id_done",
               "target_clipped", "watchdog_trips")


@dataclass(frozen=True)
class SnapshotLayout:
    """Where each field lives in the int64 and float64 blocks."""

    n_joints: int
    privileged_sizes: tuple[tuple[str, int], ...] = ()
    """Extra named float vectors (twin ground truth: object poses, success, peaks)."""
    sim_state_size: int = 0
    """Length of the simulator state vector renderers need (twin only)."""

    def float_slices(self) -> dict[str, slice]:
        cached = _SLICES.get(self)
        if cached is not None:
            return cached
        n = self.n_joints
        sizes = [("q", n), ("dq", n), ("pose", 7), ("twist", 6), ("wrench", 6), ("gripper_width", 1),
                 ("target", 7), ("reference", 7), ("tau", n), ("fault_value", 1)]
        sizes += [("priv." + name, size) for name, size in self.privileged_sizes]
        sizes += [("sim_state", self.sim_state_size)]
        out, i = {}, 0
        for name, size in sizes:
            out[name] = slice(i, i + size)
            i += size
        _SLICES[self] = out
        return out

    @property
    def n_floats(self) -> int:
        return max(s.stop for s in self.float_slices().values())

    @property
    def n_ints(self) -> int:
        return len(_INT_FIELDS)

    @property
    def nbytes(self) -> int:
        return 8 * (self.n_ints + self.n_floats)


_SLICES: dict[SnapshotLayout, dict[str, slice]] = {}
INT_INDEX = {name: i for i, name in enumerate(_INT_FIELDS)}


class Snapshot:
    """An immutable copy of one tick's state. Arrays returned are read-only views."""

    def __init__(self, layout: SnapshotLayout, ints: np.ndarray, floats: np.ndarray) -> None:
        self.layout = layout
        self._ints = ints
        self._floats = floats
        self._floats.flags.writeable = False
        self._slices = layout.float_slices()

    def int(self, name: str) -> int:
        return int(self._ints[INT_INDEX[name]])

    def get(self, name: str) -> np.ndarray:
        return self._floats[self._slices[name]]

    @property
    def floats(self) -> np.ndarray:
        """The whole float block (read-only), laid out as `layout.float_slices()`."""
        return self._floats

    @property
    def tick(self) -> int:
        return self.int("tick")

    @property
    def t_capture_ns(self) -> int:
        return self.int("t_capture_ns")

    @property
    def mode(self) -> Mode:
        return Mode(self.int("mode"))

    @property
    def fault(self) -> Fault:
        return Fault(self.int("fault"))

    def fault_message(self) -> str:
        return fault_text(self.fault, float(self.get("fault_value")[0]))

    def privileged(self) -> dict[str, np.ndarray]:
        return {name: self.get("priv." + name) for name, _ in self.layout.privileged_sizes}


class SnapshotBuffer:
    """Sequence-locked single-writer buffer over any writable memory of `layout.nbytes` bytes.

    Writer (the control loop only): `begin()`, fill `ints`/`floats`, `commit()`.
    Readers (any thread or process): `read()` returns a consistent copy or None before the first tick.
    """

    def __init__(self, layout: SnapshotLayout, memory: memoryview | bytearray | None = None) -> None:
        self.layout = layout
        mem = memory if memory is not None else bytearray(layout.nbytes)
        self.ints = np.frombuffer(mem, dtype=np.int64, count=layout.n_ints)
        self.floats = np.frombuffer(mem, dtype=np.float64, count=layout.n_floats, offset=8 * layout.n_ints)

    def begin(self) -> None:
        self.ints[0] += 1  # odd: write in progress

    def commit(self) -> None:
        self.ints[0] += 1  # even: consistent

    def clear(self) -> None:
        """Forget everything (lock even, tick 0: "no snapshot yet"), for a restarted writer. The
        old writer must be gone: it may have died mid-write and left the lock odd."""
        self.ints[:] = 0
        self.floats[:] = 0.0

    def read(self, *, timeout_s: float = 0.05) -> Snapshot | None:
        deadline = time.monotonic() + timeout_s
        while True:
            lock1 = int(self.ints[0])
            if lock1 % 2 == 0:
                ints = self.ints.copy()
                floats = self.floats.copy()
                if int(self.ints[0]) == lock1:
                    if ints[INT_INDEX["tick"]] == 0:
                        return None
                    return Snapshot(self.layout, ints, floats)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no consistent control snapshot within {timeout_s * 1000:.0f} ms: the loop is "
                                   "stuck mid-write, or this reader was descheduled through every gap between writes")


class SharedSnapshot:
    """A `SnapshotBuffer` in named shared memory, so other processes (the control process, a
    camera renderer) can attach to it by `name`. The creator unlinks it in `close()`."""

    def __init__(self, layout: SnapshotLayout) -> None:
        from multiprocessing import shared_memory

        self.layout = layout
        self._shm = shared_memory.SharedMemory(create=True, size=layout.nbytes)
        self._shm.buf[:layout.nbytes] = bytes(layout.nbytes)
        self.name = self._shm.name
        self.buffer = SnapshotBuffer(layout, self._shm.buf)

    def close(self) -> None:
        self.buffer = None  # drop the views before unmapping
        try:
            self._shm.close()
        except BufferError:
            # Views still alive: often only in a reference cycle (a control core kept by the
            # traceback of the exception that ended its loop), which a collection frees.
            gc.collect()
            try:
                self._shm.close()
            except BufferError:  # truly still in use; the unlink below still frees the segment
                pass
        self._shm.unlink()


def attach_snapshot(name: str, layout: SnapshotLayout):
    """(SnapshotBuffer, SharedMemory) over an existing segment; close the SharedMemory when done."""
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=name)
    return SnapshotBuffer(layout, shm.buf), shm
