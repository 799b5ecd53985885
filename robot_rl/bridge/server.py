"""The robot server: one ROUTER socket for requests, one PUB socket for monitors.

One round trip per env step: a `Command` goes in, the `Observation` taken `hold_s` later comes
back with the frames the command asked for. Every request is decoded and validated here, on the
robot PC; anything wrong (garbage, unknown kind, bad dtype or shape, NaN, oversize, unsafe target,
wrong role) gets an `Error` reply naming the problem, and the arm does not move.

Threading: all methods run on the thread that calls `serve_forever()` (or `poll_once()`). The
control loop runs in the runtime (stepped in this thread, or a 1 kHz thread/process).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import zmq

from robot_rl.bridge import protocol as P
from robot_rl.bridge.security import (
    ServerKeys,
    is_local_address,
    make_curve_server,
    start_authenticator,
)
from robot_rl.bridge.service import Later, RobotService
from robot_rl.errors import ConfigError, ProtocolError, SafetyViolation

log = logging.getLogger(__name__)

SLOW_REQUEST_S = 0.1
"""Requests slower than this are logged: the control client's step budget is a few ms."""


@dataclass(frozen=True)
class ServerConfig:
    """Sockets and policies of the robot server."""

    bind: str = "tcp://127.0.0.1:5555"
    """Request socket. Anything but loopback/ipc requires `keys_dir`."""
    pub_bind: str | None = None
    """PUB stream of observations; None derives it (TCP port + 1), "" disables it."""
    keys_dir: str | None = None
    """CurveZMQ keys from `robot-rl keys`; required to bind beyond loopback."""
    pub_rate_hz: float = 30.0
    """Real-time servers publish at this rate; stepped servers publish every reply."""

    def __post_init__(self) -> None:
        for addr in (self.bind, self.pub_bind or ""):
            if addr and not is_local_address(addr) and self.keys_dir is None:
                raise ConfigError(
                    f"refusing to serve {addr} without authentication: binding beyond loopback requires "
                    "CurveZMQ keys. Create them with `robot-rl keys --out DIR` and pass --keys-dir DIR.")

    def resolved_pub(self) -> str:
        if self.pub_bind is not None:
            return self.pub_bind
        if self.bind.startswith("tcp://") and self.bind.rsplit(":", 1)[-1].isdigit():
            host, port = self.bind.rsplit(":", 1)
            return f"{host}:{int(port) + 1 if int(port) else 0}"
        if self.bind.startswith(("ipc://", "inproc://")):
            return self.bind + "-pub"
        return ""


@dataclass
class _Client:
    role: str
    name: str


@dataclass
class _Pending:
    """A reply waiting for time to pass (hold_s) or a reset to finish (real-time runtimes)."""

    identity: list[bytes]
    seq: int
    cameras: tuple[str, ...]
    later: Later


class RobotServer:
    """Serve one robot (a `RobotService`) on ZeroMQ. See the module docstring."""

    def __init__(self, config: ServerConfig, service: RobotService, *, context: zmq.Context | None = None) -> None:
        self.config = config
        self.service = service
        self._ctx = context or zmq.Context.instance()
        self._auth = None
        keys = ServerKeys.from_dir(config.keys_dir) if config.keys_dir else None
        if keys is not None:
            self._auth = start_authenticator(self._ctx, keys)
            self._auth_thread = threading.get_ident()
        self.sock = self._ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.MAXMSGSIZE, P.MAX_MESSAGE_BYTES)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted client may reuse its identity
        if keys is not None:
            make_curve_server(self.sock, keys)
        self.sock.bind(config.bind)
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.pub = None
        self.pub_address = ""
        pub_addr = config.resolved_pub()
        if pub_addr:
            self.pub = self._ctx.socket(zmq.PUB)
            self.pub.setsockopt(zmq.SNDHWM, 2)  # slow subscribers drop, the server never waits
            self.pub.setsockopt(zmq.LINGER, 0)
            if keys is not None:
                make_curve_server(self.pub, keys)
            self.pub.bind(pub_addr)
            self.pub_address = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._clients: dict[bytes, _Client] = {}
        self._controller: bytes | None = None
        self._pending: list[_Pending] = []
        self._next_pub_ns = 0
        self._stop = threading.Event()
        self.n_requests = 0
        self.n_errors = 0
        log.info("robot server %s: %s backend, task %s, requests on %s, PUB on %s, %s",
                 service.server_name, service.backend, service.task.name, self.address, self.pub_address or "off",
                 "real time" if service.realtime else "stepped (as fast as possible)")

    # ---- loop ----------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until `stop()`, then close the sockets and the service's cameras."""
        try:
            while not self._stop.is_set():
                self.poll_once()
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def poll_once(self) -> None:
        if self.sock.poll(self._poll_timeout_ms(), zmq.POLLIN):
            # Drain what is queued so replies are not delayed behind the next poll.
            for _ in range(64):
                try:
                    frames = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._handle(frames)
        if self.service.realtime:
            self._service_realtime()

    def _poll_timeout_ms(self) -> int:
        if not self.service.realtime:
            return 100
        now = time.monotonic_ns()
        wake = self._next_pub_ns if self.pub is not None else now + 10_000_000
        for p in self._pending:
            wake = min(wake, now + 2_000_000 if p.later.reset_id is not None else p.later.deadline_ns)
        return int(max(0, min(10_000_000, wake - now)) // 1_000_000)

    def _service_realtime(self) -> None:
        now = time.monotonic_ns()
        events = self.service.runtime.events() if self.service.resets_in_flight else []
        still: list[_Pending] = []
        for p in self._pending:
            rid = p.later.reset_id
            if rid is None:
                if p.later.deadline_ns <= now:
                    self._reply(p.identity, self.service.observation(p.seq, p.cameras))
                else:
                    still.append(p)
            elif any(e.request_id == rid for e in events) or now > p.later.deadline_ns:
                self._reply(p.identity, self.service.finish_reset(p.seq, p.cameras, rid, events))
            else:
                still.append(p)
        self._pending = still
        if self.pub is not None and now >= self._next_pub_ns:
            self._next_pub_ns = now + int(1e9 / self.config.pub_rate_hz)
            _send(self.pub, P.encode(self.service.observation(-1, tuple(self.service.camera_sizes))))

    # ---- requests ------------------------------------------------------------------------------

    def _handle(self, frames: list) -> None:
        t0 = time.monotonic()
        self._handle_request(frames)
        took = time.monotonic() - t0
        if took > SLOW_REQUEST_S and self.service.realtime:  # stepped servers simulate inside requests
            log.warning("a request took %.0f ms to handle (%d requests so far)", took * 1e3, self.n_requests)

    def _handle_request(self, frames: list) -> None:
        self.n_requests += 1
        identity = [frames[0]]
        payload = frames[1:]
        if len(payload) > 1 and len(payload[0]) == 0:  # REQ clients put an empty delimiter frame first
            identity.append(b"")
            payload = payload[1:]
        seq = -1
        try:
            msg = P.decode(payload, max_bytes=P.MAX_REQUEST_BYTES)
            seq = getattr(msg, "seq", -1)
            reply = self._dispatch(identity, msg)
        except (ProtocolError, SafetyViolation) as exc:
            reply = P.Error(seq, exc.code, str(exc))
        except ConfigError as exc:
            reply = P.Error(seq, "bad_params", str(exc))
        except Exception as exc:
            log.exception("request failed")
            reply = P.Error(seq, "internal_error", f"{type(exc).__name__}: {exc}")
        if isinstance(reply, Later):
            self._pending.append(_Pending(identity, seq, getattr(msg, "cameras", ()), reply))
        elif reply is not None:
            self._reply(identity, reply)

    def _dispatch(self, identity: list[bytes], msg: object) -> object:
        key = identity[0]
        if isinstance(msg, P.Hello):
            return self._hello(key, msg)
        client = self._clients.get(key)
        if client is None:
            return P.Error(getattr(msg, "seq", -1), "hello_required",
                           "send a hello message first (BridgeClient does this on connect)")
        if isinstance(msg, P.GetObservation):
            self.service.check_cameras(msg.cameras)
            return self.service.observation(msg.seq, msg.cameras)
        if not isinstance(msg, (P.Command, P.Reset, P.ClearError, P.SetParams)):
            return P.Error(getattr(msg, "seq", -1), "unexpected_kind",
                           f"{type(msg).KIND} is a reply kind; clients may send hello, command, "
                           "get_observation, reset, clear_error, set_params")
        if client.role != "control":
            return P.Error(msg.seq, "not_controller", "monitor clients cannot move the arm; connect with role=control")
        if key != self._controller:
            return P.Error(msg.seq, "control_taken",
                           "another control client connected after this one and now owns the arm")
        if isinstance(msg, P.Command):
            return self.service.command(msg)
        if isinstance(msg, P.Reset):
            return self.service.reset(msg)
        if isinstance(msg, P.ClearError):
            return self.service.clear_error(msg)
        return self.service.set_params(msg)

    def _hello(self, key: bytes, msg: P.Hello) -> object:
        if msg.protocol_version != P.PROTOCOL_VERSION:
            return P.Error(-1, "protocol_version_mismatch",
                           f"client speaks protocol {msg.protocol_version}, server {P.PROTOCOL_VERSION}: "
                           "install the same robot_rl version on both machines")
        if len(self._clients) >= 256 and key not in self._clients:
            self._clients.pop(next(iter(self._clients)))  # bounded: forget the oldest
        self._clients[key] = _Client(msg.role, msg.client_name)
        if msg.role == "control":
            if self._controller is not None and self._controller != key:
                log.info("control taken over by %s", msg.client_name)
            self._controller = key
        return self.service.welcome(self.pub_address)

    # ---- replies -------------------------------------------------------------------------------

    def _reply(self, identity: list[bytes], msg: object) -> None:
        if isinstance(msg, P.Error):
            self.n_errors += 1
        frames = P.encode(msg)
        _send(self.sock, identity + frames)
        # Stepped servers publish what they answer (keeping the request's seq); real-time servers
        # publish on their own clock in _service_realtime.
        if self.pub is not None and not self.service.realtime and isinstance(msg, P.Observation):
            _send(self.pub, frames)

    def close(self) -> None:
        """Close sockets and the service's frame source (from the serving thread: it owns the renderers)."""
        self.service.close()
        self.sock.close(0)
        if self.pub is not None:
            self.pub.close(0)
        if threading.get_ident() == getattr(self, "_auth_thread", None):
            self.stop_authenticator()

    def stop_authenticator(self) -> None:
        """Stop the CurveZMQ authenticator, from the thread that started it (its control pipe is
        that thread's socket). `ServerStack.close()` does this after the serving thread ends."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


_SNDMORE_NOBLOCK = int(zmq.SNDMORE) | int(zmq.NOBLOCK)
_NOBLOCK = int(zmq.NOBLOCK)


def _send(sock: zmq.Socket, frames: list) -> None:
    """Send a multipart message without blocking (plain int flags: pyzmq's enum arithmetic is slow);
    ROUTER and PUB drop it when the peer's queue is full."""
    try:
        last = len(frames) - 1
        for i, f in enumerate(frames):
            sock.send(f, _NOBLOCK if i == last else _SNDMORE_NOBLOCK, copy=False)
    except zmq.Again:
        log.debug("dropped a message: peer queue full")
