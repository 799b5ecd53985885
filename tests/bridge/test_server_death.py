"""If the server process dies, its control and camera processes stop (the arm is not left
commanded by an orphan loop)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def group_members(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def test_control_and_camera_processes_follow_the_server(serve_process):
    server = serve_process("--task", "pick_cube", "--pace", "realtime")
    server.client().close()
    pgid = server.proc.pid  # start_new_session: the server leads its own process group
    members = group_members(pgid)
    assert len(members) >= 3, f"expected server + control + cameras processes, found {members}"
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    deadline = time.monotonic() + 10
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = group_members(pgid)
    assert not left, f"processes outlived the server: {left}"
