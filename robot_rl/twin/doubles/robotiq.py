"""The Robotiq URCap's gripper socket as a real TCP server on 127.0.0.1, driving a twin's gripper.

Speaks what the URCap speaks (see `robot_rl/arms/robotiq.py`): `SET NAME value [NAME value ...]`
answered `ack` (no line end), `GET NAME` answered `NAME value` and a line end. Variables: ACT
(activation request), GTO (go to), POS (requested position, 0 open … 255 closed; the reply to
`GET POS` is the *measured* position), SPE, FOR, STA (3 once activated), OBJ (0 moving, 1/2 stopped
on an object while opening/closing, 3 at the requested position), FLT (0). Unknown commands get
`?`. A position request moves the fingers only once the gripper is activated and GTO is 1.

Threading: `start()` runs an accept thread and one thread per client; they only call
`set_width(width_m)` and `read_width()`, which must be safe from another thread (the UR double's
are single-float assignments). `close()` stops them all.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

from robot_rl.arms.robotiq import STROKE_2F85_M, position_to_width, width_to_position

log = logging.getLogger(__name__)

_AT_TARGET_POSITIONS = 3
"""Measured within this many register counts of the request: at the position (OBJ 3)."""


class RobotiqSocketDouble:
    """A URCap gripper server on 127.0.0.1 (an ephemeral port unless given); `port` after start()."""

    def __init__(self, set_width: Callable[[float], None], read_width: Callable[[], float], *,
                 stroke_m: float = STROKE_2F85_M, port: int = 0) -> None:
        self._set_width, self._read_width, self._stroke = set_width, read_width, stroke_m
        self._vars = {"ACT": 0, "GTO": 0, "POS": 0, "SPE": 255, "FOR": 0, "STA": 0, "OBJ": 0, "FLT": 0, "PRE": 0}
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", port))
        self._server.settimeout(0.2)  # accept() wakes up to see close()
        self.port: int = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: list[socket.socket] = []
        self.requests = 0
        """Lines answered (tests read it)."""

    def start(self) -> RobotiqSocketDouble:
        t = threading.Thread(target=self._accept, name="robotiq-double-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def close(self) -> None:
        self._stop.set()
        try:
            self._server.close()
        except OSError:
            pass
        for c in list(self._clients):
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=1.0)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._clients.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), name="robotiq-double-client", daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(1024)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        conn.sendall(self.answer(line.decode("ascii", errors="replace").strip()))
                    except OSError:
                        return

    def answer(self, line: str) -> bytes:
        """The reply to one request line (also usable without a socket)."""
        self.requests += 1
        parts = line.split()
        with self._lock:
            if len(parts) >= 3 and parts[0] == "SET" and len(parts) % 2 == 1:
                pairs = list(zip(parts[1::2], parts[2::2]))
                if not all(name in self._vars and value.lstrip("-").isdigit() for name, value in pairs):
                    return b"?"
                for name, value in pairs:
                    self._vars[name] = min(max(int(value), 0), 255)
                self._apply()
                return b"ack"
            if len(parts) == 2 and parts[0] == "GET" and parts[1] in self._vars:
                return f"{parts[1]} {self._value(parts[1])}\n".encode("ascii")
        return b"?"

    def _apply(self) -> None:
        v = self._vars
        if v["ACT"] == 1:
            v["STA"] = 3  # activation is instant here (about 1 s on a real gripper)
        else:
            v["STA"] = 0
            v["GTO"] = 0
        if v["STA"] == 3 and v["GTO"] == 1:
            v["PRE"] = v["POS"]
            self._set_width(position_to_width(v["POS"], self._stroke))

    def _value(self, name: str) -> int:
        if name == "POS":
            return width_to_position(self._read_width(), self._stroke)
        if name == "OBJ":
            if self._vars["STA"] != 3 or self._vars["GTO"] != 1:
                return 0
            here = width_to_position(self._read_width(), self._stroke)
            requested = self._vars["PRE"]
            if abs(here - requested) <= _AT_TARGET_POSITIONS:
                return 3
            return 2 if here < requested else 0  # short of a closing request: an object stopped it
        return self._vars[name]
