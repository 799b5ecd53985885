"""Twin cameras streaming from their own process, like real camera hardware.

MuJoCo's renderer holds the GIL for the whole draw (≈ 2.5 ms per 128×128 image on a CPU), which
stalled the server thread for that long when rendering on a thread of the server process (see
docs/robot_pc.md, "Where the work runs"). So streaming twin cameras render in a child process: it reads the
newest control snapshot from shared memory, renders every camera at `fps`, and writes each image
into a shared-memory slot guarded by a sequence lock. The server copies the newest image out of a
slot (newest-frame semantics, exactly like a real camera driver).

Threading: `frames()`, `on_reset()` and `close()` are called by the server thread only.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from robot_rl.control.snapshot import SnapshotLayout, attach_snapshot
from robot_rl.drivers.camera import Frame
from robot_rl.task_spec import CameraSpec
from robot_rl.twin import scene as sc

log = logging.getLogger(__name__)

_HEADER = 4
"""int64 words before each image: lock, seq, t_capture_ns, t_receive_ns."""


@dataclass(frozen=True)
class _SlotLayout:
    names: tuple[str, ...]
    shapes: tuple[tuple[int, int, int], ...]

    def offsets(self) -> list[int]:
        out, off = [], 0
        for h, w, c in self.shapes:
            out.append(off)
            off += 8 * _HEADER + ((h * w * c + 7) // 8) * 8
        out.append(off)
        return out


class _Slots:
    def __init__(self, layout: _SlotLayout, buf: memoryview) -> None:
        offs = layout.offsets()
        self.header = {}
        self.image = {}
        for i, (name, shape) in enumerate(zip(layout.names, layout.shapes)):
            self.header[name] = np.frombuffer(buf, np.int64, _HEADER, offs[i])
            self.image[name] = np.frombuffer(buf, np.uint8, int(np.prod(shape)), offs[i] + 8 * _HEADER).reshape(shape)

    def write(self, frame: Frame) -> None:
        h = self.header[frame.camera]
        h[0] += 1  # odd: writing
        self.image[frame.camera][:] = frame.image
        h[1:] = (frame.seq, frame.t_capture_ns, frame.t_receive_ns)
        h[0] += 1

    def read(self, name: str) -> Frame | None:
        h = self.header[name]
        for _ in range(1000):
            lock = int(h[0])
            if lock % 2 == 0:
                image = self.image[name].copy()
                seq, t_cap, t_rec = (int(v) for v in h[1:])
                if int(h[0]) == lock:
                    return None if seq == 0 else Frame(name, seq, t_cap, t_rec, image)
            time.sleep(0.0001)
        raise TimeoutError(f"camera slot {name} stayed locked: is the render process stuck mid-write?")


def _render_main(source: sc.SceneSource, cameras: tuple[CameraSpec, ...], randomize: bool, snapshot_name: str,
                 layout: SnapshotLayout, slots_name: str, slot_layout: _SlotLayout, fps: float, conn) -> None:
    from robot_rl.twin.camera import TwinCameras

    logging.basicConfig(level=logging.INFO, format="%(asctime)s cameras[%(process)d] %(levelname)s %(message)s")
    # Rendering is background work: let the server and the control loop have the CPU first, and
    # keep Mesa's software rasterizer (llvmpipe) to one thread instead of one per core.
    os.environ.setdefault("LP_NUM_THREADS", "1")
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(10)
    renderer = TwinCameras(source, cameras, randomize_visuals=randomize)
    snap_buf, snap_shm = attach_snapshot(snapshot_name, layout)
    slots_shm = shared_memory.SharedMemory(name=slots_name)
    slots = _Slots(slot_layout, slots_shm.buf)
    names = tuple(c.name for c in cameras)
    period = 1.0 / fps
    next_t = time.monotonic()
    skipped = 0
    try:
        while True:
            try:
                while conn.poll():
                    msg = conn.recv()
                    if msg == "stop":
                        return
                    renderer.on_reset(int(msg))
            except (EOFError, ConnectionResetError):
                return  # the server process is gone
            try:
                snap = snap_buf.read()
            except TimeoutError as err:
                # At idle priority this process can be descheduled through every gap between the
                # 1 kHz loop's writes (CI saw it under load); skip the frame, the server keeps
                # serving the previous one, rather than take the cameras and the server down.
                skipped += 1
                if skipped & (skipped - 1) == 0:  # 1, 2, 4, 8 …: say so without flooding the log
                    log.warning("twin cameras: %s (%d frames skipped)", err, skipped)
                snap = None
            if snap is not None:
                for frame in renderer.frames(names, np.array(snap.get("sim_state")), snap.t_capture_ns):
                    slots.write(frame)
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                try:
                    conn.poll(delay)  # sleep, but wake for a reset seed or stop
                except (EOFError, ConnectionResetError):
                    return
            else:
                next_t = time.monotonic()
    finally:
        renderer.close()
        del slots, snap_buf
        for shm in (slots_shm, snap_shm):
            try:
                shm.close()
            except BufferError:
                pass


class StreamingTwinCameras:
    """`FrameSource` whose twin cameras render in a child process at `fps` (see module docstring)."""

    def __init__(self, source: sc.SceneSource, cameras: tuple[CameraSpec, ...], *, snapshot_name: str,
                 layout: SnapshotLayout, fps: float = 30.0, randomize_visuals: bool = True,
                 start_timeout_s: float = 60.0) -> None:
        self.specs = {c.name: c for c in cameras}
        self._slot_layout = _SlotLayout(tuple(self.specs), tuple((c.height, c.width, 3) for c in cameras))
        size = self._slot_layout.offsets()[-1]
        self._shm = shared_memory.SharedMemory(create=True, size=max(size, 8))
        self._shm.buf[:size] = bytes(size)
        self._slots = _Slots(self._slot_layout, self._shm.buf)
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_render_main, name="robot_rl-twin-cameras", daemon=True,
                                 args=(source, cameras, randomize_visuals, snapshot_name, layout, self._shm.name,
                                       self._slot_layout, fps, child))
        self._proc.start()
        deadline = time.monotonic() + start_timeout_s
        while any(self._slots.read(n) is None for n in self.specs):
            if not self._proc.is_alive():
                raise RuntimeError(f"twin camera process exited with code {self._proc.exitcode}; see its log")
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError(f"twin cameras rendered nothing within {start_timeout_s} s")
            time.sleep(0.01)

    def camera_sizes(self) -> dict[str, tuple[int, int]]:
        return {n: (c.height, c.width) for n, c in self.specs.items()}

    def frames(self, names: tuple[str, ...], sim_state: np.ndarray | None, t_ns: int) -> list[Frame]:
        if not self._proc.is_alive():
            raise RuntimeError(f"twin camera process exited with code {self._proc.exitcode}")
        out = []
        for n in names:
            frame = self._slots.read(n)
            if frame is not None:
                out.append(frame)
        return out

    def on_reset(self, seed: int) -> None:
        self._conn.send(int(seed))

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send("stop")
            except (BrokenPipeError, OSError):
                pass
            self._proc.join(timeout=5.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=2.0)
        self._slots = None
        try:
            self._shm.close()
        except BufferError:
            pass
        try:
            self._shm.unlink()
        except FileNotFoundError:
            pass
