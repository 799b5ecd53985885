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
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import zmq

from robot_rl.bridge import protocol as P
from robot_rl.bridge.security import ServerKeys, is_local_address, make_curve_server, start_authenticator
from robot_rl.config import from_dict, to_dict
from robot_rl.control import rotations
from robot_rl.control.core import ClearErrorCommand, ParamsCommand, ResetCommand, TargetCommand
from robot_rl.control.impedance import ImpedanceGains
from robot_rl.control.safety import CommandLimits, WorkspaceBox, check_absolute_target, target_from_delta
from robot_rl.control.snapshot import Mode, Snapshot
from robot_rl.drivers.arm import ArmSpec
from robot_rl.drivers.camera import Frame, FrameSource
from robot_rl.errors import ConfigError, ProtocolError, SafetyViolation
from robot_rl.task_spec import TaskSpec

log = logging.getLogger(__name__)

_MODE_NAMES = {int(m): m.name.lower() for m in Mode}


@dataclass(frozen=True)
class ServerConfig:
    """Sockets and policies of the robot server."""

    bind: str = "tcp://127.0.0.1:5555"
    """Request socket. Anything but loopback/ipc requires `keys_dir`."""
    pub_bind: str | None = None
    """PUB stream of observations; None derives it (TCP port + 1), "" disables it."""
    keys_dir: str | None = None
    """CurveZMQ keys from `robot-rl keys`; required to bind beyond loopback."""
    name: str = field(default_factory=socket.gethostname)
    pub_rate_hz: float = 30.0
    """Real-time servers publish at this rate; stepped servers publish every reply."""
    reset_timeout_s: float = 20.0
    reset_motion: Literal["auto", "motion", "teleport"] = "auto"
    """How the twin resets: "motion" moves the arm through the controller like a real robot;
    "teleport" places it (deterministic, fast); "auto" teleports stepped twins only."""

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
    deadline_ns: int
    reset_id: int | None = None


class RobotServer:
    """Serve one arm (behind a control runtime) and its cameras. See the module docstring."""

    def __init__(self, config: ServerConfig, *, runtime: Any, frames: FrameSource, task: TaskSpec,
                 arm: ArmSpec, backend: str, context: zmq.Context | None = None) -> None:
        self.config = config
        self.runtime = runtime
        self.frame_source = frames
        self.task = task
        self.arm = arm
        self.backend = backend
        self.gains: ImpedanceGains = task.gains
        self.box: WorkspaceBox = task.workspace
        self.limits: CommandLimits = task.limits
        self.camera_sizes = frames.camera_sizes()
        self._ctx = context or zmq.Context.instance()
        self._auth = None
        keys = ServerKeys.from_dir(config.keys_dir) if config.keys_dir else None
        if keys is not None:
            self._auth = start_authenticator(self._ctx, keys)
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
        self._resets: dict[int, _Pending] = {}
        self._next_reset_id = 1
        self._rng = np.random.default_rng()
        self._next_pub_ns = 0
        self._stop = threading.Event()
        self._wire_layout: tuple | None = None
        self.n_requests = 0
        self.n_errors = 0
        log.info("robot server %s: %s backend, task %s, requests on %s, PUB on %s, %s",
                 config.name, backend, task.name, self.address, self.pub_address or "off",
                 "real time" if runtime.realtime else "stepped (as fast as possible)")

    # ---- loop ----------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until `stop()`; then close sockets (the caller closes runtime and cameras)."""
        try:
            while not self._stop.is_set():
                self.poll_once()
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def poll_once(self) -> None:
        timeout_ms = self._poll_timeout_ms()
        if self.sock.poll(timeout_ms, zmq.POLLIN):
            # Drain what is queued so replies are not delayed behind the next poll.
            for _ in range(64):
                try:
                    frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._handle(frames)
        if self.runtime.realtime:
            self._service_realtime()

    def _poll_timeout_ms(self) -> int:
        if not self.runtime.realtime:
            return 100
        now = time.monotonic_ns()
        wake = self._next_pub_ns if self.pub is not None else now + 10_000_000
        for p in self._pending:
            wake = min(wake, p.deadline_ns)
        if self._resets:
            wake = min(wake, now + 2_000_000)
        return int(max(0, min(10_000_000, wake - now)) // 1_000_000)

    def _service_realtime(self) -> None:
        now = time.monotonic_ns()
        due = [p for p in self._pending if p.deadline_ns <= now]
        if due:
            self._pending = [p for p in self._pending if p.deadline_ns > now]
            snap = self.runtime.snapshot()
            for p in due:
                self._reply(p.identity, self._observation(p.seq, p.cameras, snap))
        if self._resets:
            for event in self.runtime.events():
                self._finish_reset(event)
            for rid, p in list(self._resets.items()):
                if now > p.deadline_ns:
                    del self._resets[rid]
                    self._reply(p.identity, P.Error(p.seq, "reset_timeout",
                                                    f"reset did not finish within {self.config.reset_timeout_s} s"))
        if self.pub is not None and now >= self._next_pub_ns:
            self._next_pub_ns = now + int(1e9 / self.config.pub_rate_hz)
            self._publish(self._observation(-1, tuple(self.camera_sizes), self.runtime.snapshot()))

    # ---- requests ------------------------------------------------------------------------------

    def _handle(self, frames: list) -> None:
        self.n_requests += 1
        identity = [frames[0].bytes]
        payload = frames[1:]
        if payload and len(payload[0]) == 0:  # REQ clients put an empty delimiter frame first
            identity.append(b"")
            payload = payload[1:]
        seq = -1
        try:
            msg = P.decode(payload, max_bytes=P.MAX_REQUEST_BYTES)
            seq = getattr(msg, "seq", -1)
            reply = self._dispatch(identity, msg)
        except ProtocolError as exc:
            reply = P.Error(seq, exc.code, str(exc))
        except SafetyViolation as exc:
            reply = P.Error(seq, exc.code, str(exc))
        except ConfigError as exc:
            reply = P.Error(seq, "bad_params", str(exc))
        except Exception as exc:  # noqa: BLE001 - a request must never take the server down
            log.exception("request failed")
            reply = P.Error(seq, "internal_error", f"{type(exc).__name__}: {exc}")
        if reply is not None:
            self._reply(identity, reply)

    def _dispatch(self, identity: list[bytes], msg: object) -> object | None:
        key = identity[0]
        if isinstance(msg, P.Hello):
            return self._hello(key, msg)
        client = self._clients.get(key)
        if client is None:
            return P.Error(getattr(msg, "seq", -1), "hello_required",
                           "send a hello message first (BridgeClient does this on connect)")
        if isinstance(msg, P.GetObservation):
            self._check_cameras(msg.cameras)
            return self._observation(msg.seq, msg.cameras, self.runtime.snapshot())
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
            return self._command(identity, msg)
        if isinstance(msg, P.Reset):
            return self._reset(identity, msg)
        if isinstance(msg, P.ClearError):
            return self._clear_error(msg)
        return self._set_params(msg)

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
        snap = self.runtime.snapshot()
        return P.Welcome(
            protocol_version=P.PROTOCOL_VERSION, server_name=self.config.name, backend=self.backend,
            task=self.task.name, clock="monotonic" if self.runtime.realtime else "sim",
            realtime=self.runtime.realtime, watchdog_s=self.limits.watchdog_s, n_joints=self.arm.n_joints,
            gripper_max_width_m=self.arm.gripper_max_width_m,
            cameras=tuple(P.CameraInfo(n, h, w) for n, (h, w) in self.camera_sizes.items()),
            privileged=tuple(name for name, _ in snap.layout.privileged_sizes),
            workspace_min_m=np.array(self.box.min_m), workspace_max_m=np.array(self.box.max_m),
            server_time_ns=time.monotonic_ns(), pub_address=self.pub_address)

    def _check_cameras(self, names: tuple[str, ...]) -> None:
        for n in names:
            if n not in self.camera_sizes:
                raise ProtocolError(f"unknown camera {n!r}; this server has {list(self.camera_sizes)}",
                                    code="unknown_camera")

    def _check_moveable(self, snap: Snapshot) -> None:
        if snap.mode == Mode.REFLEX:
            raise SafetyViolation(f"arm is holding after a safety reflex ({snap.fault_message()}); "
                                  "send clear_error (env.reset does) to continue", code="reflex_active")
        if snap.mode == Mode.MOVING or self._resets:
            raise SafetyViolation("a reset motion is in progress; wait for its reply", code="resetting")

    def _command(self, identity: list[bytes], msg: P.Command) -> object | None:
        self._check_cameras(msg.cameras)
        if msg.hold_s > self.limits.max_hold_s:
            raise SafetyViolation(f"hold_s {msg.hold_s} exceeds max_hold_s {self.limits.max_hold_s}", code="bad_hold")
        snap = self.runtime.snapshot()
        self._check_moveable(snap)
        pose = snap.get("pose")
        if msg.mode == "delta":
            target, clipped = target_from_delta(pose, msg.target, self.box, self.limits)
        else:
            target, clipped = check_absolute_target(pose, msg.target, self.box, self.limits), False
        gripper = None
        if msg.gripper_width_m is not None:
            gripper = min(msg.gripper_width_m, self.arm.gripper_max_width_m)
        self.runtime.submit(TargetCommand(msg.seq, target, gripper, clipped))
        return self._after(identity, msg.seq, msg.cameras, msg.hold_s)

    def _after(self, identity: list[bytes], seq: int, cameras: tuple[str, ...], hold_s: float) -> object | None:
        """Reply now (stepped: after simulating hold_s) or schedule the reply (real time)."""
        if not self.runtime.realtime:
            self.runtime.advance(hold_s)
            return self._observation(seq, cameras, self.runtime.snapshot())
        if hold_s <= 0:
            return self._observation(seq, cameras, self.runtime.snapshot())
        self._pending.append(_Pending(identity, seq, cameras, time.monotonic_ns() + int(hold_s * 1e9)))
        return None

    def _reset(self, identity: list[bytes], msg: P.Reset) -> object | None:
        self._check_cameras(msg.cameras)
        snap = self.runtime.snapshot()
        if snap.mode == Mode.REFLEX:
            raise SafetyViolation(f"arm is holding after a safety reflex ({snap.fault_message()}); "
                                  "send clear_error before reset", code="reflex_active")
        if self._resets:
            raise SafetyViolation("a reset motion is in progress; wait for its reply", code="resetting")
        seed = msg.seed if msg.seed is not None else int(self._rng.integers(2**31))
        goal = self._reset_goal(msg, seed)
        rid = self._next_reset_id
        self._next_reset_id += 1
        self.frame_source.on_reset(seed)
        gripper = None if msg.gripper_width_m is None else min(msg.gripper_width_m, self.arm.gripper_max_width_m)
        self.runtime.submit(ResetCommand(rid, goal, joint_reset=msg.joint_reset, scene_seed=seed,
                                         gripper_width_m=gripper, teleport=self._teleport_resets()))
        if not self.runtime.realtime:
            events = self.runtime.wait_event(self.config.reset_timeout_s)
            return self._reset_reply(msg.seq, msg.cameras, rid, events)
        self._resets[rid] = _Pending(identity, msg.seq, msg.cameras,
                                     time.monotonic_ns() + int(self.config.reset_timeout_s * 1e9), rid)
        return None

    def _teleport_resets(self) -> bool:
        mode = self.config.reset_motion
        return self.backend == "twin" and (mode == "teleport" or (mode == "auto" and not self.runtime.realtime))

    def _reset_goal(self, msg: P.Reset, seed: int) -> np.ndarray:
        spec = self.task.reset
        goal = np.array(msg.pose if msg.pose is not None else spec.pose, dtype=np.float64)
        if msg.pose is not None:
            why = self.box.violation(goal)
            if why is not None:
                raise SafetyViolation(f"reset pose refused: {why}", code="outside_workspace")
            goal[3:] = rotations.quat_normalize(goal[3:])
        if msg.randomize:
            rng = np.random.default_rng(seed)
            goal[:3] += rng.uniform(-1, 1, 3) * np.asarray(spec.randomize_xyz_m)
            yaw = rng.uniform(-spec.randomize_yaw_rad, spec.randomize_yaw_rad) if spec.randomize_yaw_rad else 0.0
            goal[3:] = rotations.quat_normalize(rotations.quat_mul(rotations.rotvec_to_quat(np.array([0, 0, yaw])),
                                                                   goal[3:]))
        goal, _ = self.box.clip(goal)
        return goal

    def _reset_reply(self, seq: int, cameras: tuple[str, ...], rid: int, events: list) -> object:
        for e in events:
            if e.request_id == rid and e.kind == "reset_done":
                return self._observation(seq, cameras, self.runtime.snapshot())
            if e.request_id == rid:
                return P.Error(seq, "reset_failed", f"reset failed: {e.message}")
        return P.Error(seq, "reset_timeout", f"reset did not finish within {self.config.reset_timeout_s} s")

    def _finish_reset(self, event: Any) -> None:
        pending = self._resets.pop(event.request_id, None)
        if pending is not None:
            self._reply(pending.identity, self._reset_reply(pending.seq, pending.cameras, event.request_id, [event]))

    def _clear_error(self, msg: P.ClearError) -> object:
        self.runtime.submit(ClearErrorCommand())
        if not self.runtime.realtime:
            self.runtime.advance(0.001)
        else:
            deadline = time.monotonic() + 0.5
            while self.runtime.snapshot().mode == Mode.REFLEX and time.monotonic() < deadline:
                time.sleep(0.001)
        return self._observation(msg.seq, (), self.runtime.snapshot())

    def _set_params(self, msg: P.SetParams) -> object:
        gains = from_dict(ImpedanceGains, {**to_dict(self.gains), **(msg.gains or {})}, where="gains")
        box = from_dict(WorkspaceBox, {**to_dict(self.box), **(msg.workspace or {})}, where="workspace")
        limits = from_dict(CommandLimits, {**to_dict(self.limits), **(msg.limits or {})}, where="limits")
        self.gains, self.box, self.limits = gains, box, limits
        self.runtime.submit(ParamsCommand(gains=gains, box=box, limits=limits))
        if not self.runtime.realtime:
            self.runtime.advance(0.001)
        return P.Ok(msg.seq, "parameters applied", {"gains": to_dict(gains), "workspace": to_dict(box),
                                                     "limits": to_dict(limits)})

    # ---- replies -------------------------------------------------------------------------------

    def _state_layout(self, snap: Snapshot) -> tuple[tuple[str, ...], tuple[int, ...], int]:
        """Names, sizes and length of the float state sent on the wire (all but the sim state)."""
        if self._wire_layout is None or self._wire_layout[0] is not snap.layout:
            items = [(n, s.stop - s.start) for n, s in snap.layout.float_slices().items() if n != "sim_state"]
            self._wire_layout = (snap.layout, tuple(n for n, _ in items), tuple(k for _, k in items),
                                 sum(k for _, k in items))
        return self._wire_layout[1:]

    def _observation(self, seq: int, cameras: tuple[str, ...], snap: Snapshot) -> P.Observation:
        names, sizes, length = self._state_layout(snap)
        state = P.RobotState(
            tick=snap.tick, t_capture_ns=snap.t_capture_ns, mode=_MODE_NAMES[snap.int("mode")],
            fault=snap.fault_message() if snap.int("fault") else "", command_seq=snap.int("command_seq"),
            target_clipped=bool(snap.int("target_clipped")), watchdog_trips=snap.int("watchdog_trips"),
            names=names, sizes=sizes, values=snap.floats[:length])
        frames: tuple[P.CameraFrame, ...] = ()
        if cameras:
            sim_state = snap.get("sim_state") if snap.layout.sim_state_size else None
            frames = tuple(_wire_frame(f) for f in self.frame_source.frames(cameras, sim_state, snap.t_capture_ns))
        return P.Observation(seq, state, frames, time.monotonic_ns())

    def _reply(self, identity: list[bytes], msg: object) -> None:
        if isinstance(msg, P.Error):
            self.n_errors += 1
        frames = P.encode(msg)
        _send(self.sock, identity + frames)
        # Stepped servers publish what they answer (the request's seq stays on it); real-time
        # servers publish on their own clock in _service_realtime.
        if self.pub is not None and not self.runtime.realtime and isinstance(msg, P.Observation):
            _send(self.pub, frames)

    def _publish(self, obs: P.Observation) -> None:
        _send(self.pub, P.encode(obs))

    def close(self) -> None:
        """Close sockets and the frame source (from the serving thread: it owns the renderers)."""
        self.frame_source.close()
        self.sock.close(0)
        if self.pub is not None:
            self.pub.close(0)
        if self._auth is not None:
            self._auth.stop()


_SNDMORE_NOBLOCK = int(zmq.SNDMORE) | int(zmq.NOBLOCK)
_NOBLOCK = int(zmq.NOBLOCK)


def _send(sock: zmq.Socket, frames: list) -> None:
    """Send a multipart message without blocking (plain int flags: pyzmq's enum arithmetic is slow);
    drop it if the peer's queue is full."""
    try:
        last = len(frames) - 1
        for i, f in enumerate(frames):
            sock.send(f, _NOBLOCK if i == last else _SNDMORE_NOBLOCK, copy=False)
    except zmq.Again:
        log.debug("dropped a message: peer queue full")


def _wire_frame(f: Frame) -> P.CameraFrame:
    return P.CameraFrame(f.camera, f.seq, f.t_capture_ns, f.t_receive_ns, f.image)
