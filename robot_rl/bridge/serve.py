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
from robot_rl.control.commands import core_config
from robot_rl.control.process_runtime import ProcessRuntime
from robot_rl.control.runtime import SteppedRuntime, ThreadRuntime
from robot_rl.errors import ConfigError
from robot_rl.task_spec import TaskSpec, load_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    """`robot-rl serve`: which arm, which task, where to listen."""

    backend: Literal["twin", "franka", "ur", "franka-double", "ur-double", "ros2"] = "twin"
    """Arm backend: the MuJoCo twin, a physical Franka (pylibfranka) or UR (ur_rtde) arm, the
    same Franka / UR backend code driving twin physics through a vendor-API double, or an arm
    behind its ROS 2 driver (ros2, with --ros2-config)."""
    robot_ip: str | None = None
    """Address of the physical arm (franka, ur), e.g. 172.16.0.2."""
    ros2_config: str | None = None
    """ros2 only: the driver's topics, joint names and command mode (hardware/ros2/*.yaml)."""
    arm: Literal["panda", "ur5e"] | None = None
    """Twin arm model; default: the task's `twin.arm`. The doubles fix their own (panda, ur5e)."""
    ur_mode: Literal["torque", "servo"] = "torque"
    """UR only: `directTorque` at 500 Hz running robot_rl's impedance law (e-Series with direct
    torque support), or a Cartesian admittance filter over `servoL` for older controllers."""
    franka_realtime: Literal["enforce", "ignore"] = "enforce"
    """Franka only: libfranka's real-time check. enforce: refuse to start without a PREEMPT_RT
    kernel (what Franka specifies); ignore: run anyway (a desktop kernel; expect
    communication_constraints_violation reflexes when the PC is busy)."""
    task: str = "pick_cube"
    """Task name in tasks/ (or a YAML path): workspace box, limits, gains, cameras, twin scene."""
    bind: str = "tcp://127.0.0.1:5555"
    """Request socket. Binding beyond loopback requires --keys-dir."""
    pub_bind: str | None = None
    """PUB stream; default: request port + 1; "" disables."""
    keys_dir: str | None = None
    """CurveZMQ keys made by `robot-rl keys`."""
    pace: Literal["fast", "realtime"] = "fast"
    """Simulated backends only (twin and doubles). fast: each command advances simulated time as
    fast as possible (training); realtime: a paced loop like a real robot (watchdog in wall time).
    Physical arms always run in real time."""
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
    from robot_rl.arms.registry import SIMULATED, BackendChoice, make_factory

    factory = make_factory(BackendChoice(cfg.backend, arm=cfg.arm, robot_ip=cfg.robot_ip, ur_mode=cfg.ur_mode,
                                         franka_realtime=cfg.franka_realtime, seed=cfg.seed,
                                         ros2_config=cfg.ros2_config), task)
    simulated = cfg.backend in SIMULATED
    if simulated and cfg.pace == "fast":
        runtime = SteppedRuntime(factory, core_config(task))
    elif cfg.loop == "thread":
        runtime = ThreadRuntime(factory, core_config(task), rt_priority=cfg.rt_priority)
    else:
        runtime = ProcessRuntime(factory, core_config(task), rt_priority=cfg.rt_priority)
    try:
        frames = _frames(cfg, task, factory, runtime, simulated)
        return RobotService(runtime=runtime, frames=frames, task=task, arm=factory.arm_spec(), backend=cfg.backend,
                            server_name=cfg.name, reset_motion=cfg.reset_motion)
    except BaseException:
        runtime.close()
        raise


def _frames(cfg: ServeConfig, task: TaskSpec, factory, runtime, simulated: bool):
    """The cameras: a camera config's real cameras, else the simulated scene's renderer."""
    if cfg.cameras is not None:
        return _live_cameras(cfg.cameras, task)
    if not simulated and not getattr(factory, "twin", False):  # ros2 on the twin driver renders its scene
        return _no_cameras(task)
    from robot_rl.twin.camera import TwinCameras
    from robot_rl.twin.camera_stream import StreamingTwinCameras

    randomize = task.twin.randomize_visuals if task.twin is not None else False
    if cfg.stream_cameras or (cfg.stream_cameras is None and runtime.realtime):
        return StreamingTwinCameras(factory.scene_source(), task.cameras, snapshot_name=runtime.snapshot_name,
                                    layout=runtime.layout, fps=cfg.camera_fps, randomize_visuals=randomize)
    return TwinCameras(factory.scene_source(), task.cameras, randomize_visuals=randomize)


def _no_cameras(task: TaskSpec):
    if task.cameras:
        raise ConfigError(f"task {task.name} observes cameras {[c.name for c in task.cameras]}: on a physical arm "
                          "pass a camera config with --cameras (hardware/cameras/example.yaml)")
    from robot_rl.drivers.camera import LiveCameras

    return LiveCameras([])


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
