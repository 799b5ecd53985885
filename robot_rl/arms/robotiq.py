"""Robotiq 2F gripper through the Robotiq URCap's socket server on the UR controller (TCP 63352).

The URCap speaks ASCII lines: `SET ACT 1` (activate), `SET GTO 1` (go to the requested position),
`SET POS n` / `SET SPE n` / `SET FOR n` (0–255; several variables may share one SET line), each
answered `ack` (three bytes, no line end); `GET POS` answered `POS n`, likewise `GET STA`
(3: activated), `GET OBJ` (object detection) and `GET FLT` (fault code).

Position 0 is fully open, 255 fully closed. Widths map linearly onto the 2F-85's 85 mm stroke
(`stroke_m`); a real gripper's calibrated range (its auto-calibration) is not read, so widths are
good to a few millimetres.

Threading: one owner. `URArm` hands `move` and `read_width` to a `GripperWorker`, whose thread is
then the only caller, so the 500 Hz loop never waits on the gripper's socket.
"""

from __future__ import annotations

import logging
import socket
import time

from robot_rl.errors import DeviceNotFound

log = logging.getLogger(__name__)

URCAP_PORT = 63352
"""TCP port of the Robotiq URCap's gripper socket on the UR controller."""
STROKE_2F85_M = 0.085
SPEED_RANGE_M_PER_S = (0.02, 0.15)
"""2F-85 finger speed at SPE 0 and 255."""
FORCE_RANGE_N = (20.0, 235.0)
"""2F-85 grip force at FOR 0 and 255."""


class RobotiqError(DeviceNotFound):
    """The gripper's socket refused, closed, timed out or answered something unexpected."""


def width_to_position(width_m: float, stroke_m: float = STROKE_2F85_M) -> int:
    """Register position (0 open … 255 closed) for an opening [m], clipped to the stroke."""
    frac = min(max(width_m / stroke_m, 0.0), 1.0)
    return int(round(255 * (1.0 - frac)))


def position_to_width(position: int, stroke_m: float = STROKE_2F85_M) -> float:
    """Opening [m] at a register position (0 open … 255 closed)."""
    return stroke_m * (1.0 - min(max(position, 0), 255) / 255.0)


def _byte_for(value: float, lo: float, hi: float) -> int:
    return int(round(255 * (min(max(value, lo), hi) - lo) / (hi - lo)))


class RobotiqGripper:
    """A Robotiq 2F gripper behind the URCap socket.

    Args:
        host: the UR controller's address (the URCap serves the gripper there).
        port: the URCap's port (63352).
        stroke_m: full opening (2F-85: 0.085; 2F-140: 0.140).
        speed_m_per_s: finger speed for moves (0.02–0.15 on the 2F-85).
        force_n: grip force (20–235 N on the 2F-85); 20 N matches the twins' grasp force.
        timeout_s: per reply.
    """

    def __init__(self, host: str, *, port: int = URCAP_PORT, stroke_m: float = STROKE_2F85_M,
                 speed_m_per_s: float = 0.1, force_n: float = 20.0, timeout_s: float = 2.0) -> None:
        self.host, self.port, self.stroke_m, self.timeout_s = host, port, stroke_m, timeout_s
        self._speed = _byte_for(speed_m_per_s, *SPEED_RANGE_M_PER_S)
        self._force = _byte_for(force_n, *FORCE_RANGE_N)
        self._sock: socket.socket | None = None
        self._buf = b""

    # ---- connection --------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the socket.

        Raises:
            RobotiqError: nothing answers at host:port within `timeout_s`.
        """
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as exc:
            raise RobotiqError(
                f"no Robotiq gripper at {self.host}:{self.port} ({exc}): is the Robotiq URCap installed on the UR "
                "controller, the gripper plugged into the tool connector, and the IP right?") from exc
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""

    def activate(self, *, timeout_s: float = 5.0) -> None:
        """Activate the gripper (if it is not) and enable moves (`GTO 1`).

        Raises:
            RobotiqError: no activation within `timeout_s`, or a protocol failure.
        """
        if self.get("STA") != 3:
            self.set(ACT=1)
            deadline = time.monotonic() + timeout_s
            while self.get("STA") != 3:
                if time.monotonic() > deadline:
                    raise RobotiqError(f"the Robotiq gripper at {self.host} did not activate within {timeout_s} s "
                                       f"(fault {self.get('FLT')}): check it on the pendant's Gripper toolbar")
                time.sleep(0.05)
        self.set(GTO=1)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    # ---- commands ----------------------------------------------------------------------------

    def move(self, width_m: float) -> None:
        """Start moving to an opening [m] at the configured speed and force (returns at once)."""
        self.set(POS=width_to_position(width_m, self.stroke_m), SPE=self._speed, FOR=self._force)

    def read_width(self) -> float:
        """Current opening [m]."""
        return position_to_width(self.get("POS"), self.stroke_m)

    def set(self, **variables: int) -> None:
        """`SET NAME value ...` in one line; expects `ack`.

        Raises:
            RobotiqError: no `ack` (the message quotes the reply).
        """
        line = "SET " + " ".join(f"{name} {int(value)}" for name, value in variables.items())
        reply = self._request(line)
        if reply != "ack":
            raise RobotiqError(f"Robotiq gripper answered {reply!r} to {line!r} (expected 'ack')")

    def get(self, name: str) -> int:
        """`GET NAME`; expects `NAME value`.

        Raises:
            RobotiqError: another reply (quoted in the message).
        """
        reply = self._request(f"GET {name}")
        parts = reply.split()
        if len(parts) != 2 or parts[0] != name or not parts[1].lstrip("-").isdigit():
            raise RobotiqError(f"Robotiq gripper answered {reply!r} to 'GET {name}' (expected '{name} <int>')")
        return int(parts[1])

    def _request(self, line: str) -> str:
        """Send one line and return the reply. The URCap answers `ack` without a line end and
        `NAME value` with or without one: a reply is a line, or else what one read returned."""
        if self._sock is None:
            raise RobotiqError("the Robotiq gripper socket is not open: call connect() first")
        try:
            self._sock.sendall(line.encode("ascii") + b"\n")
            if b"\n" not in self._buf:
                chunk = self._sock.recv(1024)
                if not chunk:
                    raise RobotiqError(f"the Robotiq URCap at {self.host}:{self.port} closed the connection")
                self._buf += chunk
        except OSError as exc:  # socket.timeout included
            raise RobotiqError(f"no reply from the Robotiq gripper at {self.host}:{self.port} to {line!r} "
                               f"within {self.timeout_s} s ({exc})") from exc
        if b"\n" in self._buf:
            reply, self._buf = self._buf.split(b"\n", 1)
        else:
            reply, self._buf = self._buf, b""
        return reply.decode("ascii", errors="replace").strip()
