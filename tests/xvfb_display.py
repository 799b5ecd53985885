"""Start a private Xvfb display for tests that need a real X server (keyboard teleop)."""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path

import pytest


def start_xvfb(log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start Xvfb on a display number it picks itself (-displayfd: free and ready when reported)."""
    read_fd, write_fd = os.pipe()
    with open(log_path, "wb") as log_file:
        # -noreset: otherwise Xvfb resets when its last client disconnects and refuses connections meanwhile.
        proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp", "-noreset",
                                 "-screen", "0", "640x480x24"],
                                pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
    os.close(write_fd)
    # Xvfb writes the number and the newline separately and dies ("Cannot write display number")
    # if the pipe is closed in between, so read up to the newline.
    received = b""
    deadline = time.monotonic() + 10.0
    try:
        while not received.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([read_fd], [], [], max(deadline - time.monotonic(), 0.0))
            chunk = os.read(read_fd, 64) if ready else b""
            if not chunk:
                break
            received += chunk
    finally:
        os.close(read_fd)
    number = received.decode().strip()
    if not number.isdigit():
        proc.kill()
        proc.wait(timeout=5)
        pytest.fail(f"Xvfb did not report a display number within 10 s (got {received!r}); "
                    f"log: {log_path.read_text()!r}")
    return proc, f":{number}"
