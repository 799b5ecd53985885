"""A ROS 2 camera driver double: the task's twin cameras rendered and published as image topics.

    python -m robot_rl.twin.doubles.ros2_camera_node --task pick_cube [--fps 30] \\
        [--sim-state-topic /robot_rl_twin/sim_state]

For each camera of the task it publishes `sensor_msgs/Image` (rgb8) on `/<namespace>/<camera>/image_raw`
and `sensor_msgs/CameraInfo` on `/<namespace>/<camera>/camera_info`, stamped with the wall clock as
ROS camera drivers stamp (ROS time), so `driver: ros2` cameras (robot_rl/ros2/camera.py,
hardware/cameras/ros2_twin.yaml) can be tested without a camera. It renders the newest
`std_msgs/Float64MultiArray` on `--sim-state-topic` (the twin's `write_sim_state` vector: qpos,
mocap positions and quaternions, as the ROS 2 twin arm driver publishes it); until one arrives,
or when none does, it renders the scene's initial state (the layout of `--seed`).

Threads: the main thread owns the renderer (an OpenGL context belongs to one thread), renders and
publishes at `fps`; the executor thread only stores the newest sim state (one assignment).
SIGINT / SIGTERM stop the loop; the executor thread is joined before exit.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from robot_rl.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraNodeConfig:
    """Render a task's twin cameras and publish them as ROS 2 image topics."""

    task: str = "pick_cube"
    """Task name in tasks/ (or a YAML path): its twin scene and cameras."""
    fps: float = 30.0
    """Frames per second per camera."""
    namespace: str = "robot_rl_twin"
    """Topics are /<namespace>/<camera>/image_raw and .../camera_info."""
    sim_state_topic: str = "/robot_rl_twin/sim_state"
    """std_msgs/Float64MultiArray with the twin's sim state to render; "" renders the initial state only."""
    seed: int = 0
    """Scene layout of the initial state."""
    stamp: Literal["wall", "monotonic"] = "wall"
    """Clock of header.stamp: wall (ROS time, as ROS camera drivers) or this PC's CLOCK_MONOTONIC."""

    def __post_init__(self) -> None:
        if not 0 < self.fps <= 240:
            raise ConfigError(f"fps must be in (0, 240], got {self.fps}")
        if not self.namespace or "/" in self.namespace.strip("/"):
            raise ConfigError(f"namespace must be one name like robot_rl_twin, got {self.namespace!r}")
        if self.sim_state_topic and not self.sim_state_topic.startswith("/"):
            raise ConfigError(f"sim_state_topic must be absolute (/robot_rl_twin/sim_state) or \"\", "
                              f"got {self.sim_state_topic!r}")


def initial_sim_state(task_name: str, seed: int) -> np.ndarray:
    """The twin scene's sim state after a reset with `seed` (qpos, mocap poses), shape (sim_state_size,)."""
    from robot_rl.task_spec import load_task
    from robot_rl.twin.backend import TwinBackend

    _, hooks = TwinBackend(load_task(task_name), initial_seed=seed).build(realtime=False)
    state = np.zeros(hooks.sim_state_size)
    hooks.write_sim_state(state)
    return state


def run(cfg: CameraNodeConfig, *, stop: threading.Event | None = None) -> None:
    """Publish until `stop` is set (or SIGINT / SIGTERM when run as a program)."""
    from std_msgs.msg import Float64MultiArray

    from robot_rl.ros2 import messages
    from robot_rl.ros2.node_thread import NodeThread
    from robot_rl.ros2.qos import sensor_qos
    from robot_rl.task_spec import load_task
    from robot_rl.twin.backend import scene_source
    from robot_rl.twin.camera import TwinCameras
    from sensor_msgs.msg import CameraInfo, Image

    stop = stop or threading.Event()
    task = load_task(cfg.task)
    renderer = TwinCameras(scene_source(task), task.cameras, randomize_visuals=False)
    state0 = initial_sim_state(cfg.task, cfg.seed)
    newest: list[np.ndarray] = [state0]  # written by the executor thread (one assignment), read here
    link = NodeThread("robot_rl_twin_cameras", namespace=cfg.namespace)
    try:
        ns = cfg.namespace.strip("/")
        pubs = {c.name: (link.node.create_publisher(Image, f"/{ns}/{c.name}/image_raw", sensor_qos()),
                         link.node.create_publisher(CameraInfo, f"/{ns}/{c.name}/camera_info", sensor_qos()))
                for c in task.cameras}
        fovy = {c.name: float(renderer.model.cam_fovy[renderer.model.camera(c.name).id]) for c in task.cameras}
        last_warn = [0.0]

        def on_state(msg: Float64MultiArray) -> None:
            state = np.asarray(msg.data, dtype=np.float64)
            if state.shape != state0.shape or not np.all(np.isfinite(state)):
                if time.monotonic() - last_warn[0] > 1.0:
                    last_warn[0] = time.monotonic()
                    log.warning("sim state on %s has %d values (finite: %s); this scene's has %d: dropped",
                                cfg.sim_state_topic, state.size, bool(np.all(np.isfinite(state))), state0.size)
                return
            newest[0] = state

        if cfg.sim_state_topic:
            link.node.create_subscription(Float64MultiArray, cfg.sim_state_topic, on_state, sensor_qos(depth=1))
        link.start()
        names = tuple(c.name for c in task.cameras)
        period_s = 1.0 / cfg.fps
        next_t = time.monotonic()
        log.info("publishing %s at %g fps under /%s", list(names), cfg.fps, ns)
        while not stop.is_set():
            frames = renderer.frames(names, newest[0], time.monotonic_ns())
            t_ns = time.time_ns() if cfg.stamp == "wall" else time.monotonic_ns()
            for frame in frames:
                image_pub, info_pub = pubs[frame.camera]
                frame_id = f"{frame.camera}_camera"
                image_pub.publish(messages.image_msg(t_ns, frame_id, frame.image))
                h, w = frame.image.shape[:2]
                info_pub.publish(messages.camera_info(t_ns, frame_id, w, h, fovy[frame.camera]))
            next_t += period_s
            delay = next_t - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            else:
                next_t = time.monotonic()  # fell behind: do not burst to catch up
    finally:
        link.close()
        renderer.close()


def main(argv: list[str] | None = None) -> int:
    import tyro

    logging.basicConfig(level=logging.INFO, format="%(asctime)s ros2_camera_node %(levelname)s %(message)s")
    cfg = tyro.cli(CameraNodeConfig, args=argv, description=__doc__.splitlines()[0])
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run(cfg, stop=stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
