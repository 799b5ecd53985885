"""`robot-rl ros2-bridge`: a robot server's state, cameras and services as a ROS 2 node.

    robot-rl ros2-bridge --embedded-twin --task pick_cube          # twin in this process
    robot-rl ros2-bridge --server tcp://10.0.0.2:5555 --control     # an arm served elsewhere

Published (`~` = /<namespace>/bridge), stamped with the bridge's capture times (`t_capture_ns`,
the robot PC's CLOCK_MONOTONIC on a real-time server, simulated time on a stepped one):
`~/joint_states`, `~/tcp_pose`, `~/wrench` (external, at the TCP, base frame),
`~/<camera>/image_raw` + `~/<camera>/camera_info` (each frame's own capture time), and
`/diagnostics` (mode, fault, watchdog trips; 1 Hz and on change). Sensor QoS: best effort.

Subscribed: `~/cmd_twist` (geometry_msgs/TwistStamped, m/s and rad/s in the base frame). While
the node controls the arm, the newest fresh twist becomes one delta command (twist × command
period) per command period, through the ordinary bridge command path: the server validates it
and clips it to the task's box like any client's. A twist stream that stops (or turns NaN)
stops the commands, so the server's watchdog holds the arm.

Services (std_srvs/Trigger): `~/reset`, `~/clear_error`, `~/take_control`. They run on the
worker, so state pauses while a reset moves the arm (seconds on a real-time server). A refusal
(another client holds the arm, a monitor may not reset) is the response's message, never a crash.

Bad input: a non-finite twist, or one in another frame, is dropped (no command: the watchdog
holds); a too-fast one is scaled to the teleop speed limits; the server clips the target to the
box. A publisher of another type on `~/cmd_twist` never connects (DDS matches by type). Warnings
are rate-limited to one per second per kind, with the count of the suppressed ones.

Threads: one worker thread owns the BridgeClient (not thread-safe) and does all bridge I/O and
publishing. ROS callbacks (executor threads) only store the newest twist or queue a service
request and wait for the worker's answer. `RunningBridge.close()` stops the worker, the executor
(joining its thread: an unjoined spin thread aborts the process at exit) and the embedded server.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from robot_rl.bridge.client import BridgeClient
from robot_rl.bridge.log_limit import LogLimiter
from robot_rl.errors import BridgeRemoteError, BridgeTimeout, ConfigError
from robot_rl.ros2 import require_rclpy
from robot_rl.ros2.bridge_config import DEFAULT_FOVY_DEG, TWIN_FOVY_DEG, Ros2BridgeConfig, twist_to_delta

log = logging.getLogger(__name__)

__all__ = ["BridgeNode", "Ros2BridgeConfig", "RunningBridge", "run"]

CAMERA_MARGIN_NS = 500_000
"""Poll the cameras this long before the next frame is due, then after CAMERA_RETRY_NS (backing off)
until it is there: an image waits at most about a retry in the server (polling once per state tick would
add up to a whole state period, 10 ms, to every image's latency)."""
CAMERA_RETRY_NS = 1_000_000


@dataclass
class _Request:
    """A service call handed to the worker; `done` is set with `ok` and `message` filled in."""

    kind: str
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    message: str = ""


class BridgeNode:
    """The ROS side (publishers, subscription, services) and the worker thread that owns the client.

    Made, started and stopped by `RunningBridge`; callbacks run on the executor's threads and only
    touch `_twist` (one assignment), a counter and the request queue.
    """

    def __init__(self, cfg: Ros2BridgeConfig, address: str, context) -> None:
        rclpy = require_rclpy()
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped, TwistStamped, WrenchStamped
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
        from sensor_msgs.msg import CameraInfo, Image, JointState
        from std_srvs.srv import Trigger

        from robot_rl.ros2 import messages as m
        from robot_rl.ros2.qos import command_qos, diagnostics_qos, sensor_qos

        self.cfg, self.address, self._m = cfg, address, m
        self.client = BridgeClient(address, name=cfg.name, role="monitor")
        welcome = self.client.welcome
        self.controlling = False
        try:
            self.cameras = cfg.camera_names(tuple(c.name for c in welcome.cameras))
            self.joint_names = list(cfg.joint_names) or [f"joint{i + 1}" for i in range(welcome.n_joints)]
            if len(self.joint_names) != welcome.n_joints:
                raise ConfigError(f"--joint-names has {len(self.joint_names)} names, the arm at {address} has "
                                  f"{welcome.n_joints} joints: name them all, or leave --joint-names out")
        except ConfigError:
            self.client.close()
            raise
        self.node = rclpy.create_node("bridge", namespace=cfg.namespace, context=context)
        sq = sensor_qos()
        self.pub_joints = self.node.create_publisher(JointState, "~/joint_states", sq)
        self.pub_pose = self.node.create_publisher(PoseStamped, "~/tcp_pose", sq)
        self.pub_wrench = self.node.create_publisher(WrenchStamped, "~/wrench", sq)
        self.pub_images = {c: self.node.create_publisher(Image, f"~/{c}/image_raw", sq) for c in self.cameras}
        self.pub_infos = {c: self.node.create_publisher(CameraInfo, f"~/{c}/camera_info", sq) for c in self.cameras}
        self.pub_diag = self.node.create_publisher(DiagnosticArray, "/diagnostics", diagnostics_qos())
        self._twist: tuple[object, int] | None = None  # (TwistStamped, receive monotonic ns), swapped whole
        self.twists_received = 0
        self.node.create_subscription(TwistStamped, "~/cmd_twist", self._on_twist, command_qos(),
                                      callback_group=MutuallyExclusiveCallbackGroup())
        services = ReentrantCallbackGroup()  # a reset may take seconds: twists keep flowing meanwhile
        for kind in ("reset", "clear_error", "take_control"):
            self.node.create_service(Trigger, f"~/{kind}", self._service(kind), callback_group=services)
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._limiter = LogLimiter(1.0)
        self._stop = threading.Event()
        self.counts = {"states": 0, "images": 0, "commands": 0, "refused": 0, "bad_twists": 0, "errors": 0}
        self._last_frame: dict[str, tuple[int, int]] = {}  # camera → (seq, t_capture_ns) last published
        self._last_state_ns = -1  # t_capture_ns of the last published state
        self._camera_misses = 0  # camera reads since the last new frame
        self._diag_key: tuple | None = None
        self._next_diag_ns = 0
        self._worker = threading.Thread(target=self._work, name="ros2-bridge-worker", daemon=True)
        if cfg.control:
            ok, message = self._take_control()
            (log.info if ok else log.warning)("%s", message)

    # ---- executor threads: store and hand over, nothing else ------------------------------------

    def _on_twist(self, msg) -> None:
        self._twist = (msg, time.monotonic_ns())
        self.twists_received += 1

    def _service(self, kind: str):
        def call(request, response):
            req = _Request(kind)
            self._requests.put(req)
            timeout_s = self.client.reset_timeout_s + 5.0 if kind == "reset" else 10.0
            if not req.done.wait(timeout_s):
                response.success, response.message = False, f"{kind}: the bridge worker did not answer in {timeout_s} s"
            else:
                response.success, response.message = req.ok, req.message
            return response
        return call

    # ---- worker thread: the only user of self.client -------------------------------------------

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._stop.set()
        if self._worker.is_alive():
            self._worker.join(timeout=self.client.reset_timeout_s + 5.0)  # it may be inside a reset
        if self._worker.is_alive():
            log.error("the bridge worker did not stop; leaving its client open (the server forgets it by timeout)")
            return
        self.client.close()

    def _warn(self, topic: str, text: str, *args) -> None:
        """At most one line per second per topic, with the count of the lines suppressed."""
        self.counts["errors"] += 1
        suppressed = self._limiter.allow(topic)
        if suppressed is not None:
            log.warning(text + (f" ({suppressed} more suppressed in the last second)" if suppressed else ""), *args)

    def _work(self) -> None:
        """State at rate_hz (a teleop command instead of a plain read every command period), and
        camera reads timed to each new frame; both on one schedule, so one thread owns the client."""
        period_ns = int(1e9 / self.cfg.rate_hz)
        command_period_ns = int(1e9 / self.cfg.command_rate_hz)
        next_ns = next_command_ns = next_camera_ns = time.monotonic_ns()
        while not self._stop.is_set():
            try:
                while not self._requests.empty():
                    self._answer(self._requests.get())
                now = time.monotonic_ns()
                if now >= next_ns:
                    next_ns += period_ns
                    if next_ns < now:  # fell behind (a reset, a slow reply): restart the schedule
                        next_ns = now + period_ns
                    delta = None
                    if self.controlling and now >= next_command_ns:
                        next_command_ns = max(next_command_ns + command_period_ns, now - command_period_ns)
                        delta = self._teleop_delta(now)
                    self._publish_state(self._exchange(delta))
                if self.cameras and time.monotonic_ns() >= next_camera_ns:
                    next_camera_ns = time.monotonic_ns() + int(1e9 / self.cfg.camera_rate_hz)  # if the read raises
                    next_camera_ns = self._read_cameras()
            except Exception as exc:  # e.g. a reply that does not decode: the node must keep running
                self._warn(f"worker:{type(exc).__name__}", "bridge worker: %s: %s (continuing)", type(exc).__name__, exc)
            wake_ns = min(next_ns, next_camera_ns) if self.cameras else next_ns
            self._stop.wait(max(0.0, (wake_ns - time.monotonic_ns()) / 1e9))

    def _read_cameras(self) -> int:
        """Publish the frames that are new; when to read next (monotonic ns)."""
        try:
            obs = self.client.observe(cameras=self.cameras)
        except (BridgeRemoteError, BridgeTimeout) as exc:
            self._warn("cameras", "no frames from %s: %s", self.address, exc)
            return time.monotonic_ns() + int(1e9 / self.cfg.camera_rate_hz)
        now = time.monotonic_ns()
        new_receive_ns = self._publish_frames(obs)
        if new_receive_ns is not None:
            # Frame times are the server's monotonic clock: on this machine, ours (offset ≈ 0).
            due_ns = new_receive_ns - self.client.server_clock_offset_ns + int(1e9 / self.cfg.camera_rate_hz)
            self._camera_misses = 0
            return max(now, due_ns - CAMERA_MARGIN_NS)
        # Late frame (a busy renderer or camera): back off, 1, 2, 4… ms up to a quarter period, so
        # a stalled camera costs the server a few reads per frame, not one per millisecond.
        retry_ns = min(CAMERA_RETRY_NS << min(self._camera_misses, 10), int(0.25e9 / self.cfg.camera_rate_hz))
        self._camera_misses += 1
        return now + retry_ns

    def _teleop_delta(self, now_ns: int) -> np.ndarray | None:
        held = self._twist
        if held is None or now_ns - held[1] > self.cfg.twist_timeout_s * 1e9:
            return None
        msg, _ = held
        if msg.header.frame_id not in ("", self.cfg.base_frame):
            self._warn("twist_frame", "cmd_twist in frame %r ignored: send twists in %r (or with an empty frame_id)",
                       msg.header.frame_id, self.cfg.base_frame)
            return None
        try:
            return twist_to_delta(self._m.twist_of(msg), self.cfg.command_rate_hz ** -1,
                                  max_m_per_s=self.cfg.teleop_speed_m_per_s,
                                  max_rad_per_s=self.cfg.teleop_speed_rad_per_s)
        except ValueError as exc:
            self.counts["bad_twists"] += 1
            self._warn("bad_twist", "cmd_twist dropped, no command sent: %s", exc)
            return None

    def _exchange(self, delta: np.ndarray | None):
        """Send the teleop delta (or only observe); the observation, or None on a failure."""
        if delta is not None:
            try:
                obs = self.client.step(delta, hold_s=0.0)
                self.counts["commands"] += 1
                return obs
            except BridgeRemoteError as exc:
                self.counts["refused"] += 1
                self._warn(f"refused:{exc.code}", "teleop command refused by %s: %s", self.address, exc)
                if exc.code in ("control_taken", "not_controller"):
                    self.controlling = False
            except BridgeTimeout as exc:
                self._warn("timeout", "%s", exc)
                return None
        try:
            return self.client.observe()
        except (BridgeRemoteError, BridgeTimeout) as exc:
            self._warn("observe", "no state from %s: %s", self.address, exc)
            return None

    def _answer(self, req: _Request) -> None:
        try:
            if req.kind == "take_control":
                req.ok, req.message = self._take_control()
            elif req.kind == "reset":
                obs = self.client.reset(seed=self.cfg.reset_seed)
                req.ok, req.message = True, f"reset done: TCP at {np.round(obs.state.pose_base_tcp[:3], 4).tolist()} m"
                self._publish_state(obs)
            else:
                obs = self.client.clear_error()
                req.ok, req.message = True, f"cleared: mode {obs.state.mode}"
                self._publish_state(obs)
        except (BridgeRemoteError, BridgeTimeout) as exc:
            req.ok, req.message = False, f"{req.kind} failed: {exc}"
            log.warning("%s", req.message)
        except Exception as exc:  # a service must answer, whatever went wrong
            req.ok, req.message = False, f"{req.kind} failed: {type(exc).__name__}: {exc}"
            log.exception("%s", req.message)
        finally:
            req.done.set()

    def _take_control(self) -> tuple[bool, str]:
        """Replace the monitor client by a control client; on refusal keep the monitor."""
        if self.controlling:
            return True, "already the controlling client"
        try:
            control = BridgeClient(self.address, name=self.cfg.name, role="control")
        except (BridgeRemoteError, BridgeTimeout) as exc:
            return False, f"control refused by {self.address}: {exc} (stop the other controller, then call take_control)"
        self.client.close()
        self.client, self.controlling = control, True
        return True, f"controlling the arm at {self.address}"

    # ---- publishing (worker thread) ---------------------------------------------------------------

    def _publish_state(self, obs) -> None:
        if obs is None:
            return
        m, s, frame = self._m, obs.state, self.cfg.base_frame
        t = s.t_capture_ns
        if t <= self._last_state_ns:  # the control loop has not ticked since (a stall, or a stepped server)
            return
        self._last_state_ns = t
        self.pub_joints.publish(m.joint_state(t, self.joint_names, s.q_rad, s.dq_rad_per_s))
        self.pub_pose.publish(m.pose_stamped(t, frame, s.pose_base_tcp))
        self.pub_wrench.publish(m.wrench_stamped(t, frame, s.wrench_ext_base))
        self.counts["states"] += 1
        self._diagnose(s)

    def _publish_frames(self, obs) -> int | None:
        """Publish each camera's frame if it is new; the newest new frame's t_receive_ns, or None."""
        m, newest = self._m, None
        min_gap_ns = int(0.75e9 / self.cfg.camera_rate_hz)  # 0.75: camera clocks jitter
        for f in obs.frames:
            seq, t_prev = self._last_frame.get(f.camera, (-1, -(1 << 62)))
            if f.seq == seq or f.t_capture_ns - t_prev < min_gap_ns:
                continue
            self._last_frame[f.camera] = (f.seq, f.t_capture_ns)
            cam_frame = f"{f.camera}_camera"
            h, w = f.image.shape[:2]
            fovy = self.cfg.camera_fovy_deg or TWIN_FOVY_DEG.get(f.camera, DEFAULT_FOVY_DEG)
            self.pub_images[f.camera].publish(m.image_msg(f.t_capture_ns, cam_frame, f.image))
            self.pub_infos[f.camera].publish(m.camera_info(f.t_capture_ns, cam_frame, w, h, fovy))
            self.counts["images"] += 1
            newest = f.t_receive_ns if newest is None else max(newest, f.t_receive_ns)
        return newest

    def _diagnose(self, s) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        key = (s.mode, s.fault, s.watchdog_trips, self.controlling)
        now = time.monotonic_ns()
        if key == self._diag_key and now < self._next_diag_ns:
            return
        self._diag_key, self._next_diag_ns = key, now + 1_000_000_000
        level = {"hold": 0, "track": 0, "moving": 0, "watchdog_hold": 1}.get(s.mode, 2)
        values = {"mode": s.mode, "fault": s.fault, "watchdog_trips": s.watchdog_trips, "controlling": self.controlling,
                  "server": self.address, "t_capture_ns": s.t_capture_ns, "twists_received": self.twists_received,
                  **self.counts}
        status = DiagnosticStatus(level=bytes([level]), name=f"{self.cfg.namespace}/bridge", hardware_id=self.address,
                                  message=s.mode + (f": {s.fault}" if s.fault else ""),
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self.pub_diag.publish(DiagnosticArray(header=self._m.header(now, ""), status=[status]))


class RunningBridge:
    """A started bridge node: its embedded server (if any), the node, the executor thread.

    `close()` (any thread, once) stops the worker, then the executor and its thread, then ROS and
    the embedded server, in that order.
    """

    def __init__(self, cfg: Ros2BridgeConfig) -> None:
        rclpy = require_rclpy()
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.stack = None
        if cfg.embedded_twin:
            from robot_rl.bridge.admission import AdmissionConfig
            from robot_rl.bridge.serve import ServeConfig, start_server
            from robot_rl.bridge.server_config import ServerConfig

            # This server exists for this node, a monitor until it takes control: the monitor
            # share (5 % of the server thread by default) would throttle state at 100 Hz plus
            # camera reads timed to each frame, so the embedded server grants monitors more.
            admission = AdmissionConfig(per_client_s_per_s=0.3, all_others_s_per_s=0.4, burst_s=0.1)
            self.stack = start_server(ServeConfig(task=cfg.task, bind="tcp://127.0.0.1:0", pub_bind="",
                                                  pace="realtime", camera_fps=cfg.camera_rate_hz, name=cfg.name),
                                      server=ServerConfig(admission=admission))
        address = cfg.server if cfg.server is not None else self.stack.address
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.bridge = None
        try:
            self.bridge = BridgeNode(cfg, address, self.context)
            self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
            self.executor.add_node(self.bridge.node)
            self._spin = threading.Thread(target=self.executor.spin, name="ros2-bridge-executor", daemon=True)
            self._spin.start()
            self.bridge.start()
        except BaseException:
            self._shutdown_ros()
            raise

    def _shutdown_ros(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
        if hasattr(self, "executor"):
            self.executor.shutdown(timeout_sec=5.0)
            if self._spin.is_alive():
                self._spin.join(timeout=5.0)
        if self.bridge is not None:
            self.bridge.node.destroy_node()
        if self.context.ok():
            self.context.try_shutdown()
        if self.stack is not None:
            self.stack.close()

    def close(self) -> None:
        self._shutdown_ros()


def run(cfg: Ros2BridgeConfig) -> None:
    """`robot-rl ros2-bridge`: run until SIGINT/SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    running = RunningBridge(cfg)
    b = running.bridge
    print(f"robot-rl ros2-bridge: {b.address} as /{cfg.namespace}/bridge ({'control' if b.controlling else 'monitor'}), "
          f"state {cfg.rate_hz:g} Hz, cameras {list(b.cameras)}. Ctrl-C stops.", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        running.close()
