"""The robot server: one ROUTER socket for requests, one PUB socket for monitors.

One round trip per env step: a `Command` goes in, the `Observation` taken `hold_s` later comes
back with the frames the command asked for. Every request is decoded and validated here, on the
robot PC; anything wrong (garbage, unknown kind, bad dtype or shape, NaN, oversize, unsafe target,
wrong role) gets an `Error` reply naming the problem, and the arm does not move.

The serve loop is total: no request, and no failure while answering one, ends it. A request that
raises unexpectedly is answered `internal_error` (no traceback leaves the robot PC) and logged in
one line. The control loop is supervised: when it dies, motion is refused with `fault` and state
replies say why, until an operator sends `restart_control`.

Fairness: the control client's requests are handled before anyone else's, and the others may
only spend a bounded share of this thread (`bridge/admission.py`); replies queued for one client
are bounded in bytes (a client that never reads cannot grow the server's memory).

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
from robot_rl.bridge.admission import Admission, FairQueue
from robot_rl.bridge.clients import ClientTable
from robot_rl.bridge.log_limit import LogLimiter
from robot_rl.bridge.security import ServerKeys, make_curve_server, start_authenticator
from robot_rl.bridge.server_config import ServerConfig
from robot_rl.bridge.service import Later, RobotService
from robot_rl.control.runtime import ControlLoopDied
from robot_rl.errors import ConfigError, ProtocolError, SafetyViolation

log = logging.getLogger(__name__)

SLOW_REQUEST_S = 0.1
"""Requests slower than this are logged: the control client's step budget is a few ms."""
OTHERS_SLICE_NS = 2_000_000
"""Longest stretch the loop spends on other clients' requests before it looks at the
controller's socket queue, pending replies and the PUB stream again."""
MAX_REPLY_HWM = 1000
"""ZeroMQ's default send high-water mark: small replies (no cameras) keep it."""


@dataclass
class _Pending:
    """A reply waiting for time to pass (hold_s) or a reset to finish (real-time runtimes)."""

    identity: list[bytes]
    seq: int
    cameras: tuple[str, ...]
    later: Later
    overtaken: bool = False
    """Another client took control while this was in flight: answer `control_taken`."""


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
        # A request frame this large drops its connection (larger than any valid request, which
        # is refused with `too_large` above MAX_REQUEST_BYTES): no peer can make us buffer more.
        self.sock.setsockopt(zmq.MAXMSGSIZE, 4 * P.MAX_REQUEST_BYTES)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted client may reuse its identity
        self.reply_hwm = reply_hwm(config.reply_queue_bytes, service.camera_sizes)
        self.sock.setsockopt(zmq.SNDHWM, self.reply_hwm)
        self.sock.setsockopt(zmq.HEARTBEAT_IVL, int(config.heartbeat_ivl_s * 1e3))
        self.sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(config.heartbeat_timeout_s * 1e3))
        self.sock.setsockopt(zmq.HEARTBEAT_TTL, int(config.heartbeat_timeout_s * 1e3))
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
        self.clients = ClientTable(ttl_s=config.client_ttl_s, release_s=config.control_release_s)
        self.admission = Admission(config.admission)
        self._others = FairQueue(self.admission)
        self._pending: list[_Pending] = []
        self._trips_seen = 0
        self._next_pub_ns = 0
        self._stop = threading.Event()
        self._limiter = LogLimiter()
        self._dropped_logged = 0
        self._seen_failures: set[str] = set()
        self.n_requests = 0
        self.n_errors = 0
        self.n_internal_errors = 0
        log.info("robot server %s: %s backend, task %s, requests on %s, PUB on %s, %s",
                 service.server_name, service.backend, service.task.name, self.address, self.pub_address or "off",
                 "real time" if service.realtime else "stepped (as fast as possible)")

    # ---- loop ----------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until `stop()`, then close the sockets and the service's cameras. Nothing a
        client sends, and no failure inside one pass of the loop, ends it."""
        try:
            while not self._stop.is_set():
                try:
                    self.poll_once()
                except Exception as exc:  # a bug outside any one request: log, keep serving
                    self._log_failure("serve loop", exc)
                    time.sleep(0.001)
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def poll_once(self) -> None:
        if self.sock.poll(self._poll_timeout_ms(), zmq.POLLIN):
            self._read_queue()
        deadline = time.monotonic_ns() + OTHERS_SLICE_NS
        while self._others and (now := time.monotonic_ns()) < deadline:
            nxt = self._others.pop(now)
            if nxt is None:
                break  # everyone waiting is over budget: the buckets refill while we poll
            key, frames = nxt
            self._handle(frames)
            self.admission.charge(key, time.monotonic_ns() - now)
            self._read_queue()  # a controller request that arrived meanwhile goes first
        if self.admission.dropped > self._dropped_logged and self._limiter.allow("admission") is not None:
            log.warning("dropped %d requests of clients over their share of the server so far (flooding?)",
                        self.admission.dropped)
            self._dropped_logged = self.admission.dropped
        if self.service.realtime:
            self._service_realtime()

    def _read_queue(self) -> None:
        """Read what is queued: the controller's requests are handled at once, the rest queued."""
        controller = self.clients.controller
        for _ in range(256):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            key = frames[0]
            if controller is not None and key == controller:
                self._handle(frames)
                controller = self.clients.controller
            else:
                self._others.push(key, frames, sum(map(len, frames)))

    def _poll_timeout_ms(self) -> int:
        if self._others:
            return 1  # requests wait for their budget to refill
        if not self.service.realtime:
            return 100
        now = time.monotonic_ns()
        wake = self._next_pub_ns if self.pub is not None else now + 10_000_000
        for p in self._pending:
            wake = min(wake, now + 2_000_000 if p.later.reset_id is not None else p.later.deadline_ns)
        return int(max(0, min(10_000_000, wake - now)) // 1_000_000)

    def _service_realtime(self) -> None:
        now = time.monotonic_ns()
        alive = self.service.control_alive()
        events = self.service.runtime.events() if alive and self.service.resets_in_flight else []
        still: list[_Pending] = []
        for p in self._pending:
            rid = p.later.reset_id
            if not alive:
                self._answer(p, lambda p=p: self._fault_error(p.seq), reset_done=True)
            elif rid is None:
                if p.later.deadline_ns <= now:
                    self._answer(p, lambda p=p: self.service.observation(p.seq, p.cameras))
                else:
                    still.append(p)
            elif any(e.request_id == rid for e in events) or now > p.later.deadline_ns:
                self._answer(p, lambda p=p: self.service.finish_reset(p.seq, p.cameras, rid, events), reset_done=True)
            else:
                still.append(p)
        self._pending = still
        if self.pub is not None and now >= self._next_pub_ns:
            self._next_pub_ns = now + int(1e9 / self.config.pub_rate_hz)
            try:
                _send(self.pub, P.encode(self.service.observation(-1, tuple(self.service.camera_sizes))))
            except Exception as exc:
                self._log_failure("publishing", exc)

    def _fault_error(self, seq: int) -> P.Error:
        try:
            self.service.check_control()
        except SafetyViolation as exc:
            return P.Error(seq, exc.code, str(exc))
        return P.Error(seq, "fault", "the control loop stopped while this request was in flight")

    def _answer(self, p: _Pending, make_reply, *, reset_done: bool = False) -> None:
        """Reply to a pending request; a failure to build the reply answers internal_error."""
        if p.later.reset_id is not None and reset_done:
            self.service.resets_in_flight.discard(p.later.reset_id)
        try:
            reply = make_reply()
            if p.overtaken:
                reply = _taken_error(p.seq)
        except Exception as exc:
            reply = self._internal_error(p.seq, "reply", exc)
        self._reply(p.identity, reply)

    # ---- requests ------------------------------------------------------------------------------

    def _handle(self, frames: list) -> None:
        t0 = time.monotonic()
        self._handle_request(frames)
        took = time.monotonic() - t0
        if took > SLOW_REQUEST_S and self.service.realtime:  # stepped servers simulate inside requests
            if self._limiter.allow("slow") is not None:
                log.warning("a request took %.0f ms to handle (%d requests so far)", took * 1e3, self.n_requests)

    def _handle_request(self, frames: list) -> None:
        self.n_requests += 1
        identity = [frames[0]]
        payload = frames[1:]
        if len(payload) > 1 and len(payload[0]) == 0:  # REQ clients put an empty delimiter frame first
            identity.append(b"")
            payload = payload[1:]
        seq = -1
        msg = None
        try:
            msg = P.decode(payload, max_bytes=P.MAX_REQUEST_BYTES)
            seq = getattr(msg, "seq", -1)
            reply = self._dispatch(identity, msg)
        except (ProtocolError, SafetyViolation) as exc:
            reply = P.Error(seq, exc.code, str(exc))
        except ConfigError as exc:
            reply = P.Error(seq, "bad_params", str(exc))
        except ControlLoopDied:
            reply = self._fault_error(seq)
        except Exception as exc:
            reply = self._internal_error(seq, type(msg).KIND if msg is not None else "undecoded", exc)
        if isinstance(reply, Later):
            self._pending.append(_Pending(identity, seq, getattr(msg, "cameras", ()), reply))
        elif reply is not None:
            self._reply(identity, reply)

    def _internal_error(self, seq: int, what: str, exc: Exception) -> P.Error:
        """One log line (a traceback the first time a kind of failure is seen), a reply without it."""
        self.n_internal_errors += 1
        self._log_failure(f"a {what} request", exc)
        return P.Error(seq, "internal_error",
                       f"the robot server failed on this {what} request (internal error #{self.n_internal_errors}, "
                       f"{type(exc).__name__}); details are in the robot PC's log. The arm did not move on it")

    def _log_failure(self, where: str, exc: Exception) -> None:
        kind = f"{where}:{type(exc).__name__}"
        first = kind not in self._seen_failures
        self._seen_failures.add(kind)
        suppressed = 0 if first else self._limiter.allow(kind)
        if suppressed is None:
            return
        more = f" ({suppressed} more like it not logged)" if suppressed else ""
        log.error("internal error in %s: %s: %s%s", where, type(exc).__name__, exc, more, exc_info=first)

    def _dispatch(self, identity: list[bytes], msg: object) -> object:
        key = identity[0]
        now = time.monotonic_ns()
        if isinstance(msg, P.Hello):
            return self._hello(identity, msg, now)
        client = self.clients.seen(key, now)
        if client is None:
            return P.Error(getattr(msg, "seq", -1), "hello_required",
                           "send a hello message first (BridgeClient does this on connect, and again when told this)")
        if isinstance(msg, P.Bye):
            self.clients.forget(key)
            return P.Ok(msg.seq, "goodbye")
        if isinstance(msg, P.GetObservation):
            self.service.check_cameras(msg.cameras)
            return self.service.observation(msg.seq, msg.cameras)
        if not isinstance(msg, (P.Command, P.Reset, P.ClearError, P.SetParams, P.RestartControl)):
            return P.Error(getattr(msg, "seq", -1), "unexpected_kind",
                           f"{type(msg).KIND} is a reply kind; clients may send hello, command, get_observation, "
                           "reset, clear_error, set_params, restart_control, bye")
        if client.role != "control":
            return P.Error(msg.seq, "not_controller", "monitor clients cannot move the arm; connect with role=control")
        if key != self.clients.controller:
            return P.Error(msg.seq, "control_taken",
                           "another control client took control of the arm after this one; reconnect with "
                           "take_control=True to take it back")
        if isinstance(msg, P.Command):
            return self.service.command(msg, unseen_watchdog_trips=self._trips_seen)
        if isinstance(msg, P.Reset):
            return self.service.reset(msg)
        if isinstance(msg, P.ClearError):
            return self.service.clear_error(msg)
        if isinstance(msg, P.RestartControl):
            return self.service.restart_control(msg)
        return self.service.set_params(msg)

    def _hello(self, identity: list[bytes], msg: P.Hello, now_ns: int) -> object:
        key = identity[0]
        if msg.protocol_version != P.PROTOCOL_VERSION:
            return P.Error(-1, "protocol_version_mismatch",
                           f"client speaks protocol {msg.protocol_version}, server {P.PROTOCOL_VERSION}: "
                           "install the same robot_rl version on both machines")
        before = self.clients.controller
        outcome = self.clients.hello(key, msg, now_ns)
        if outcome.refusal is not None:
            return outcome.refusal
        if self.clients.controller == key and before != key:
            # A new controller starts with the holds it could not have caused already seen.
            self._trips_seen = self.service.snapshot().int("watchdog_trips")
        if outcome.previous_controller is not None:
            log.warning("control taken over by %s%s", msg.client_name,
                        " (take_control)" if msg.take_control else " (the previous controller had gone silent)")
            self._overtake(outcome.previous_controller)
        return self.service.welcome(self.pub_address)

    def _overtake(self, old: bytes) -> None:
        """The old controller's in-flight commands are answered `control_taken` now; its reset
        keeps running (the arm is mid-motion) and is answered so when it ends."""
        still = []
        for p in self._pending:
            if p.identity[0] != old:
                still.append(p)
            elif p.later.reset_id is None:
                self._reply(p.identity, _taken_error(p.seq))
            else:
                p.overtaken = True
                still.append(p)
        self._pending = still

    # ---- replies -------------------------------------------------------------------------------

    def _reply(self, identity: list[bytes], msg: object) -> None:
        try:
            if isinstance(msg, P.Error):
                self.n_errors += 1
            elif isinstance(msg, P.Observation) and identity[0] == self.clients.controller:
                self._trips_seen = max(self._trips_seen, msg.state.watchdog_trips)
            frames = P.encode(msg)
            _send(self.sock, identity + frames)
            # Silence counts from the last answer too: a client whose long request (a real-time
            # reset) was just answered has not gone quiet, whenever that request arrived.
            self.clients.seen(identity[0], time.monotonic_ns())
            # Stepped servers publish what they answer (keeping the request's seq); real-time servers
            # publish on their own clock in _service_realtime.
            if self.pub is not None and not self.service.realtime and isinstance(msg, P.Observation):
                _send(self.pub, frames)
        except Exception as exc:
            self._log_failure("sending a reply", exc)

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


def _taken_error(seq: int) -> P.Error:
    return P.Error(seq, "control_taken", "another control client took control of the arm while this request was "
                   "in flight: the arm may have moved since; end the episode")


def reply_hwm(queue_bytes: int, camera_sizes: dict[str, tuple[int, int]]) -> int:
    """Send high-water mark (replies per client) so that queued replies stay within `queue_bytes`:
    the largest reply carries every camera once (duplicates are refused) plus the state."""
    largest = 16_384 + sum(h * w * 3 for h, w in camera_sizes.values())
    return max(2, min(MAX_REPLY_HWM, queue_bytes // largest))


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
