"""The twin driver's ground truth and scene resets over ROS 2: the wire format, and the core's
`SceneHooks` that proxy it on the robot-PC side.

Topics under the twin driver's namespace `<ns>` (default `/robot_rl_twin`):

    <ns>/privileged    std_msgs/Float64MultiArray: the task's privileged vectors flattened in
                       `privileged_sizes` order, then one value: the id of the last scene reset
                       applied (layout.dim labels name each part), ≥ 50 Hz
    <ns>/sim_state     std_msgs/Float64MultiArray: the task's `write_sim_state` vector (qpos, mocap
                       poses) that renderers load, ≥ 30 Hz
    <ns>/reset_scene   std_msgs/Int64MultiArray `[request id, seed]`: re-randomize the objects

Teleporting the arm is not offered: resets move through the controller, as on a real arm.
"""

from __future__ import annotations

import logging
import time

import mujoco
import numpy as np

from robot_rl.task_spec import TaskSpec

log = logging.getLogger(__name__)

PRIVILEGED = "privileged"
SIM_STATE = "sim_state"
RESET_SCENE = "reset_scene"
RESET_ID_LABEL = "scene_reset_id"


def topic(namespace: str, name: str) -> str:
    return f"{namespace.rstrip('/')}/{name}"


def twin_sizes(task: TaskSpec, arm: str) -> tuple[tuple[tuple[str, int], ...], int]:
    """(privileged_sizes, sim_state_size) of `task`'s twin scene with `arm`, built locally."""
    from robot_rl.twin import scene as sc
    from robot_rl.twin.arm import TwinArm
    from robot_rl.twin.backend import scene_source
    from robot_rl.twin.tasks import make_task

    model = sc.build_model(scene_source(task, arm))
    data = mujoco.MjData(model)
    hooks = make_task(task.twin, model, data, TwinArm(model, data, arm=arm))
    return hooks.privileged_sizes, hooks.sim_state_size


def privileged_msg(sizes: tuple[tuple[str, int], ...], values: np.ndarray, reset_id: int):
    """Float64MultiArray of the flattened privileged vectors and the last applied reset id."""
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=name, size=size, stride=size) for name, size in sizes]
    msg.layout.dim.append(MultiArrayDimension(label=RESET_ID_LABEL, size=1, stride=1))
    msg.data = np.append(values, float(reset_id)).tolist()
    return msg


class Ros2TwinScene:
    """`SceneHooks` that proxy the twin driver's topics (see the module docstring).

    Threads: subscription callbacks (executor thread) swap in the newest arrays; the control
    thread makes the hook calls, which copy them and publish reset requests (never wait).
    """

    def __init__(self, node, namespace: str, privileged_sizes: tuple[tuple[str, int], ...],
                 sim_state_size: int) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from std_msgs.msg import Float64MultiArray, Int64MultiArray

        self.privileged_sizes = tuple(privileged_sizes)
        self.sim_state_size = int(sim_state_size)
        self._n_priv = sum(size for _, size in self.privileged_sizes)
        offsets, i = {}, 0
        for name, size in self.privileged_sizes:
            offsets[name] = slice(i, i + size)
            i += size
        self._slices = offsets
        self._priv = np.zeros(self._n_priv)
        """Control thread's copy: the newest privileged values not older than the last reset request."""
        self._incoming: tuple[int, np.ndarray] | None = None
        self._sim_state: np.ndarray | None = None
        # Ids grow across restarts of the serving side (ms of wall time at start, used as a counter
        # base only), so a driver's echo of an older server's request never passes as an answer.
        self._request_id = time.time_ns() // 1_000_000
        self.dropped = 0
        self._int64 = Int64MultiArray
        node.create_subscription(Float64MultiArray, topic(namespace, PRIVILEGED), self._on_privileged,
                                 qos_profile_sensor_data)
        node.create_subscription(Float64MultiArray, topic(namespace, SIM_STATE), self._on_sim_state,
                                 qos_profile_sensor_data)
        self._reset_pub = node.create_publisher(Int64MultiArray, topic(namespace, RESET_SCENE),
                                                QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))

    # ---- executor thread ------------------------------------------------------------------------

    def _on_privileged(self, msg) -> None:
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (self._n_priv + 1,) or not np.all(np.isfinite(data)):
            self.dropped += 1
            return
        self._incoming = (int(data[-1]), data[:-1])

    def _on_sim_state(self, msg) -> None:
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (self.sim_state_size,) or not np.all(np.isfinite(data)):
            self.dropped += 1
            return
        self._sim_state = data

    # ---- SceneHooks (control thread) -------------------------------------------------------------

    def reset_scene(self, seed: int) -> None:
        """Ask the driver to re-randomize the objects; ground truth from before the request is
        ignored from now on (and `success` reads 0 until the driver's answer arrives)."""
        self._request_id += 1
        self._reset_pub.publish(self._int64(data=[self._request_id, int(seed)]))
        if "success" in self._slices:
            self._priv[self._slices["success"]] = 0.0

    def after_tick(self) -> None:
        """Nothing: the driver tracks peaks and excursions itself."""

    def write_privileged(self, out: dict[str, np.ndarray]) -> None:
        incoming = self._incoming
        if incoming is not None and incoming[0] >= self._request_id:
            self._priv = incoming[1]
        for name, sl in self._slices.items():
            out[name][:] = self._priv[sl]

    def write_sim_state(self, out: np.ndarray) -> None:
        s = self._sim_state
        if s is not None:
            out[:] = s

    def teleport_arm(self, pose_base_tcp: np.ndarray, gripper_width_m: float) -> None:
        raise NotImplementedError("the ROS 2 twin driver moves the arm through its controller: no teleport")
