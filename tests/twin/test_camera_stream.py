"""The twin's camera render process under a snapshot it cannot read."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from multiprocessing import shared_memory

from robot_rl.control.snapshot import SharedSnapshot
from robot_rl.task_spec import load_task
from robot_rl.twin.backend import TwinBackend, scene_source
from robot_rl.twin.camera_stream import _render_main, _SlotLayout


def test_renderer_survives_a_snapshot_it_cannot_read_and_still_stops_on_request():
    # A starved reader and a writer stuck mid-write look the same to the renderer: the lock stays
    # odd past the read timeout (50 ms). It must skip frames, not exit (that took the server down).
    task = load_task("pick_cube")
    snapshot = SharedSnapshot(TwinBackend(task).layout())
    snapshot.buffer.begin()  # odd: "write in progress", never committed
    cams = task.cameras
    slot_layout = _SlotLayout(tuple(c.name for c in cams), tuple((c.height, c.width, 3) for c in cams))
    slots = shared_memory.SharedMemory(create=True, size=slot_layout.offsets()[-1])
    parent, child = mp.Pipe()
    errors: list[BaseException] = []

    def render() -> None:
        try:
            _render_main(scene_source(task), cams, False, snapshot.name, snapshot.layout, slots.name, slot_layout,
                         30.0, child)
        except BaseException as e:  # noqa: BLE001 - the test reports it
            errors.append(e)

    thread = threading.Thread(target=render, daemon=True)
    try:
        thread.start()
        time.sleep(0.5)  # ≈ 8 reads at 50 ms each
        assert thread.is_alive() and not errors, errors
        parent.send("stop")
        thread.join(timeout=10.0)
        assert not thread.is_alive() and not errors, errors
    finally:
        slots.close()
        slots.unlink()
        snapshot.close()
