"""Client side of the robot bridge: `BridgeClient` (requests) and `BridgeMonitor` (PUB stream).

Threading: a client object belongs to one thread. Every request carries a sequence number;
replies to requests that already timed out are recognised by their number and dropped.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from robot_rl.bridge import protocol as P
from robot_rl.bridge.security import ClientKeys, make_curve_client
from robot_rl.errors import BridgeRemoteError, BridgeTimeout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepTiming:
    """Latency of one request, measured on the client's monotonic clock."""

    t_send_ns: int
    t_reply_ns: int

    @property
    def rtt_ms(self) -> float:
        return (self.t_reply_ns - self.t_send_ns) / 1e6


class BridgeClient:
    """Connects to a robot server, says hello, then sends requests and waits for their replies.

    Args:
        address: the server's request socket, e.g. "tcp://10.0.0.2:5555".
        role: "control" may move the arm (one control client at a time); "monitor" only reads.
        take_control: take the arm from another control client that holds it (otherwise the
            server refuses with `control_held` while that client is active).
        timeout_s: reply deadline on top of a command's `hold_s` (resets use `reset_timeout_s`,
            the hello handshake `connect_timeout_s`).
        keys_dir: CurveZMQ keys (`robot-rl keys`) when the server requires them.
    """

    def __init__(self, address: str, *, name: str = "robot_rl", role: P.Role = "control", take_control: bool = False,
                 timeout_s: float = 2.0, reset_timeout_s: float = 30.0, connect_timeout_s: float = 5.0,
                 keys_dir: str | Path | None = None, context: zmq.Context | None = None) -> None:
        self.address = address
        self.name, self.role = name, role
        self.timeout_s = timeout_s
        self.reset_timeout_s = reset_timeout_s
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, P.MAX_MESSAGE_BYTES)
        # A fixed routing id: after a dropped connection (heartbeat timeout, network blip) the
        # socket reconnects as the same client, and the server still knows it (and its role).
        self._sock.setsockopt(zmq.ROUTING_ID, b"rrl" + os.urandom(13))
        # A DEALER with no ready peer blocks in send — for good when the server refuses our CurveZMQ
        # handshake: bound it, as a reply is bounded.
        self._sock.setsockopt(zmq.SNDTIMEO, int(max(timeout_s, connect_timeout_s) * 1e3))
        self._keys = keys_dir is not None
        if keys_dir is not None:
            make_curve_client(self._sock, ClientKeys.from_dir(Path(keys_dir)))
        self._sock.connect(address)
        self._seq = 0
        self.last_timing: StepTiming | None = None
        self._connect_timeout_s = connect_timeout_s
        try:
            self._hello(take_control)
        except BaseException:
            self._sock.close(0)  # drop a queued hello: it must not claim the arm after we gave up
            raise

    def _hello(self, take_control: bool) -> None:
        t0 = time.monotonic_ns()
        msg = P.Hello(P.PROTOCOL_VERSION, self.name, self.role, take_control)
        welcome = self._request(msg, timeout_s=self._connect_timeout_s, seq=None, rehello=False)
        t1 = time.monotonic_ns()
        if not isinstance(welcome, P.Welcome):
            raise BridgeRemoteError(f"server answered hello with {type(welcome).__name__}", code="bad_reply")
        self.welcome: P.Welcome = welcome
        # Offset of the server's monotonic clock (valid when welcome.clock == "monotonic").
        self.server_clock_offset_ns = welcome.server_time_ns - (t0 + t1) // 2

    # ---- requests ------------------------------------------------------------------------------

    def _hint(self) -> str:
        keys = " or does it require CurveZMQ keys (--keys-dir)?" if not self._keys else \
            " and are its keys the ones in your --keys-dir?"
        return f"is `robot-rl serve` running there{keys}"

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _request(self, msg: object, *, timeout_s: float, seq: int | None, rehello: bool = True) -> object:
        try:
            return self._exchange(msg, timeout_s=timeout_s, seq=seq)
        except BridgeRemoteError as exc:
            if exc.code != "hello_required" or not rehello:
                raise
        # The server forgot us (it restarted, or we were silent past its client TTL): say hello
        # again, without taking control from anyone, and repeat the request once.
        log.warning("%s: the server at %s asked for a new hello (restarted, or this client was silent too long); "
                    "saying hello again as %s", self.name, self.address, self.role)
        self._hello(take_control=False)
        return self._exchange(msg, timeout_s=timeout_s, seq=seq)

    def _exchange(self, msg: object, *, timeout_s: float, seq: int | None) -> object:
        t_send = time.monotonic_ns()
        try:
            self._sock.send_multipart(P.encode(msg), copy=False)
        except zmq.Again:
            raise BridgeTimeout(f"could not send to {self.address}: no connection — {self._hint()}") from None
        deadline = t_send + int(timeout_s * 1e9)
        while True:
            remaining_ms = (deadline - time.monotonic_ns()) / 1e6
            if remaining_ms <= 0 or not self._sock.poll(max(1, int(remaining_ms)), zmq.POLLIN):
                raise BridgeTimeout(f"no reply from {self.address} in {timeout_s * 1e3:.0f} ms: {self._hint()}")
            reply = P.decode(self._sock.recv_multipart(copy=False))
            reply_seq = getattr(reply, "seq", -1)
            if seq is not None and reply_seq != seq and reply_seq != -1:
                continue  # a late reply to a request that already timed out
            self.last_timing = StepTiming(t_send, time.monotonic_ns())
            if isinstance(reply, P.Error):
                raise BridgeRemoteError(f"{reply.code}: {reply.message}", code=reply.code)
            return reply

    def step(self, target: np.ndarray, *, mode: str = "delta", gripper_width_m: float | None = None,
             hold_s: float = 0.0, cameras: tuple[str, ...] = ()) -> P.Observation:
        """Send a command; return the observation taken `hold_s` after it took effect.

        Args:
            target: (6,) delta `[dx dy dz rx ry rz]` (m, rad) or (7,) absolute pose.
            mode: "delta" or "absolute".
            gripper_width_m: new gripper opening, or None to leave it.
            hold_s: how long the arm tracks the command before the observation is taken.
            cameras: cameras whose newest frames the reply must carry.

        Raises:
            BridgeRemoteError: the server refused the command (the arm did not move).
            BridgeTimeout: no reply in `hold_s + timeout_s`.
        """
        seq = self._next_seq()
        msg = P.Command(seq, mode, np.asarray(target, dtype=np.float64), gripper_width_m, hold_s, tuple(cameras),
                        time.monotonic_ns())
        return self._request(msg, timeout_s=hold_s + self.timeout_s, seq=seq)

    def observe(self, cameras: tuple[str, ...] = ()) -> P.Observation:
        """Newest state (and frames) without moving; does not feed the watchdog."""
        seq = self._next_seq()
        return self._request(P.GetObservation(seq, tuple(cameras)), timeout_s=self.timeout_s, seq=seq)

    def reset(self, *, pose: np.ndarray | None = None, randomize: bool = True, joint_reset: bool = False,
              seed: int | None = None, gripper_width_m: float | None = None,
              cameras: tuple[str, ...] = ()) -> P.Observation:
        """Run the reset motion (and scene randomization on the twin); return the settled observation."""
        seq = self._next_seq()
        msg = P.Reset(seq, None if pose is None else np.asarray(pose, dtype=np.float64), randomize, joint_reset,
                      seed, gripper_width_m, tuple(cameras))
        return self._request(msg, timeout_s=self.reset_timeout_s, seq=seq)

    def clear_error(self) -> P.Observation:
        seq = self._next_seq()
        return self._request(P.ClearError(seq), timeout_s=self.timeout_s, seq=seq)

    def restart_control(self, *, timeout_s: float = 60.0) -> P.Observation:
        """Operator action: start a new control loop after the old one died (state mode "fault").
        The arm then holds where it is; reset before stepping."""
        seq = self._next_seq()
        return self._request(P.RestartControl(seq), timeout_s=timeout_s, seq=seq)

    def set_params(self, *, gains: dict | None = None, workspace: dict | None = None,
                   limits: dict | None = None) -> dict:
        """Change controller parameters on the robot PC; returns those now in force."""
        seq = self._next_seq()
        ok = self._request(P.SetParams(seq, gains, workspace, limits), timeout_s=self.timeout_s, seq=seq)
        return ok.params or {}

    def send_raw(self, frames: list[bytes]) -> object:
        """Send arbitrary frames and return the decoded reply (Error replies are returned, not
        raised). For tests and fuzzing only."""
        self._sock.send_multipart(frames)
        if not self._sock.poll(int(self.timeout_s * 1e3), zmq.POLLIN):
            raise BridgeTimeout(f"no reply from {self.address} to a raw message in {self.timeout_s} s")
        return P.decode(self._sock.recv_multipart(copy=False))

    def close(self, *, bye_timeout_s: float = 0.2) -> None:
        """Tell the server we leave (releasing control), then close the socket."""
        if self._sock.closed:
            return
        try:
            self._sock.send_multipart(P.encode(P.Bye(self._next_seq())), zmq.NOBLOCK, copy=False)
            deadline = time.monotonic() + bye_timeout_s
            while (left := deadline - time.monotonic()) > 0 and self._sock.poll(max(1, int(left * 1e3)), zmq.POLLIN):
                if getattr(P.decode(self._sock.recv_multipart(copy=False)), "seq", -1) == self._seq:
                    break
        except Exception:  # a server that is gone or busy forgets us by its own timeouts
            pass
        self._sock.close(0)

    def __enter__(self) -> BridgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BridgeMonitor:
    """Subscriber to the server's PUB stream; `latest()` drains to the newest observation.

    CONFLATE cannot be used with multipart messages (the header frame would be lost), so the
    socket keeps a small queue and `latest()` reads until it is empty.
    """

    def __init__(self, pub_address: str, *, keys_dir: str | Path | None = None,
                 context: zmq.Context | None = None) -> None:
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, 4)
        self._sock.setsockopt(zmq.LINGER, 0)
        if keys_dir is not None:
            make_curve_client(self._sock, ClientKeys.from_dir(Path(keys_dir)))
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.connect(pub_address)
        self.address = pub_address

    def latest(self, timeout_s: float = 1.0) -> P.Observation:
        if not self._sock.poll(int(timeout_s * 1e3), zmq.POLLIN):
            raise BridgeTimeout(f"nothing published on {self.address} in {timeout_s} s: is the server running?")
        frames = self._sock.recv_multipart(copy=False)
        while self._sock.poll(0, zmq.POLLIN):
            frames = self._sock.recv_multipart(copy=False)
        return P.decode(frames)

    def close(self) -> None:
        self._sock.close(0)
