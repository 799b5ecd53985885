"""Assemble a robot server from a backend, a task and cameras: `robot-rl serve` and embedded twins.

    stack = start_server(ServeConfig(backend="twin", task="pick_cube"))   # serves on a thread
    ...
    stack.close()
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from dataclasses import dataclass, field, replace
from typing import Literal

from robot_rl.bridge.server import RobotServer
from robot_rl.bridge.server_config import ServerConfig
from robot_rl.bridge.service import RobotService
from robot_rl.control.process_runtime import ProcessRuntime
from robot_rl.control.runtime import SteppedRuntime, ThreadRuntime
from robot_rl.errors import ConfigError
from robot_rl.task_spec import TaskSpec, load_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    """`robot-rl serve`: which arm, which task, where to listen."""

    backend: Literal["twin", "franka", "ur"] = "twin"
    """Arm backend. Only the MuJoCo twin is implemented so far."""
    task: str = "pick_cube"
    """Task name in tasks/ (or a YAML path): workspace box, limits, gains, cameras, twin scene."""
    bind: str = "tcp://127.0.0.1:5555"
    """Request socket. Binding beyond loopback requires --keys-dir."""
    pub_bind: str | None = None
    """PUB stream; default: request port + 1; "" disables."""
    keys_dir: str | None = None
    """CurveZMQ keys made by `robot-rl keys`."""
    pace: Literal["fast", "realtime"] = "fast"
    """Twin only. fast: each command advances simulated time as fast as possible (training);
    realtime: a paced 1 kHz loop like a real robot (watchdog in wall time)."""
    loop: Literal["process", "thread"] = "process"
    """Where the real-time 1 kHz loop runs (`robot-rl bench controller` compares them)."""
    rt_priority: int | None = 80
    """SCHED_FIFO priority of the real-time control loop (None: normal priority). Needs
    CAP_SYS_NICE or an rtprio limit; without it the loop warns and runs at normal priority."""
    camera_fps: float = 30.0
    """Streaming twin cameras render at this rate (newest-frame semantics)."""
    stream_cameras: bool | None = None
    """Render twin cameras on their own thread like real cameras (newest frame per request);
    None: stream when pace is realtime, render on request (fresh, synchronous) when fast."""
    seed: int = 0
    """Initial scene layout of the twin."""
    reset_motion: Literal["auto", "motion", "teleport"] = "auto"
    """Twin resets: "motion" drives the arm through the controller like a real robot; "teleport"
    places it (deterministic and fast); "auto" teleports when pace is fast."""
    name: str = field(default_factory=socket.gethostname)
    """Server name shown to clients."""
    cameras: str | None = None
    """Camera config YAML (hardware/cameras/example.yaml): serve these real cameras instead of
    the twin's renderer. Their names must cover the task's cameras."""


@dataclass
class ServerStack:
    """A running server with its runtime and cameras; `close()` stops all of it."""

    server: RobotServer
    service: RobotService
    thread: threading.Thread | None = None

    @property
    def task(self) -> TaskSpec:
        return self.service.task

    @property
    def address(self) -> str:
        return self.server.address

    def close(self) -> None:
        self.server.stop()
        if self.thread is not None:
            self.thread.join(timeout=5.0)
        else:
            self.server.close()
        self.server.stop_authenticator()
        self.service.runtime.close()


def build_service(cfg: ServeConfig, *, task: TaskSpec | None = None) -> RobotService:
    """Runtime + cameras + request logic for the configured backend (no sockets)."""
    task = task or load_task(cfg.task)
    if cfg.backend != "twin":
        raise ConfigError(
            f"the {cfg.backend} backend is not implemented yet: robot_rl drives the MuJoCo twin today; "
            "the Franka (pylibfranka/franky) and UR (ur_rtde) backends will implement drivers/arm.py's "
            "ArmBackend behind this same server")
    from robot_rl.twin.backend import TwinBackend, core_config, scene_source
    from robot_rl.twin.camera import TwinCameras
    from robot_rl.twin.camera_stream import StreamingTwinCameras

    factory = TwinBackend(task, initial_seed=cfg.seed)
    if cfg.pace == "fast":
        runtime = SteppedRuntime(factory, core_config(task))
    elif cfg.loop == "thread":
        runtime = ThreadRuntime(factory, core_config(task), rt_priority=cfg.rt_priority)
    else:
        runtime = ProcessRuntime(factory, core_config(task), rt_priority=cfg.rt_priority)
    try:
        if cfg.cameras is not None:
            frames = _live_cameras(cfg.cameras, task)
        elif cfg.stream_cameras or (cfg.stream_cameras is None and runtime.realtime):
            frames = StreamingTwinCameras(scene_source(task), task.cameras, snapshot_name=runtime.snapshot_name,
                                          layout=runtime.layout, fps=cfg.camera_fps,
                                          randomize_visuals=task.twin.randomize_visuals)
        else:
            frames = TwinCameras(scene_source(task), task.cameras, randomize_visuals=task.twin.randomize_visuals)
        return RobotService(runtime=runtime, frames=frames, task=task, arm=factory.arm_spec(), backend=cfg.backend,
                            server_name=cfg.name, reset_motion=cfg.reset_motion)
    except BaseException:
        runtime.close()
        raise


def _live_cameras(path: str, task: TaskSpec):
    from robot_rl.drivers.camera import LiveCameras
    from robot_rl.drivers.camera_config import build_cameras, load_camera_configs

    configs = load_camera_configs(path)
    missing = sorted({c.name for c in task.cameras} - {c.name for c in configs})
    if missing:
        raise ConfigError(f"task {task.name} observes cameras {missing} that {path} does not configure")
    return LiveCameras(build_cameras(configs))


def build_server(cfg: ServeConfig, *, task: TaskSpec | None = None, server: ServerConfig | None = None) -> ServerStack:
    """Create runtime, cameras, service and sockets (not yet serving). `server` overrides the
    socket policies (its bind, pub_bind and keys_dir are replaced by `cfg`'s)."""
    service = build_service(cfg, task=task)
    try:
        server_cfg = replace(server or ServerConfig(), bind=cfg.bind, pub_bind=cfg.pub_bind, keys_dir=cfg.keys_dir)
        server = RobotServer(server_cfg, service)
    except BaseException:
        service.close()
        service.runtime.close()
        raise
    return ServerStack(server, service)


def start_server(cfg: ServeConfig, *, task: TaskSpec | None = None, server: ServerConfig | None = None) -> ServerStack:
    """Build and serve on a background thread (embedded twins, tests, benchmarks)."""
    stack = build_server(cfg, task=task, server=server)
    stack.thread = threading.Thread(target=stack.server.serve_forever, name="robot-server", daemon=True)
    stack.thread.start()
    return stack


def run(cfg: ServeConfig) -> None:
    """`robot-rl serve`: serve in the foreground until SIGINT/SIGTERM."""
    stack = build_server(cfg)
    stop = lambda *_: stack.server.stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"robot-rl serve: {cfg.backend} backend, task {stack.task.name}, requests {stack.server.address}, "
          f"PUB {stack.server.pub_address or 'off'}, pace {cfg.pace}. Ctrl-C stops.", flush=True)
    try:
        stack.server.serve_forever()
    finally:
        stack.service.runtime.close()
