"""`Ros2ArmBackend`: an arm behind its ROS 2 driver, as a robot_rl `ArmBackend`.

    robot-rl serve --backend ros2 --ros2-config hardware/ros2/franka_cartesian.yaml

The driver (franka_ros2, ur_robot_driver, robot_rl's twin driver) publishes `sensor_msgs/JointState`
and optionally a `geometry_msgs/WrenchStamped`; the backend publishes a `PoseStamped` target or a
`TwistStamped` (`arm_command.py`), at the config's rate, after the control core's box, step,
speed and force limits and its watchdog. TCP pose, jacobian and mass matrix come from the arm's
model (`arms/ur_model.URModel`, any arm in `twin/arm_models.py`) and the measured joints.

Threads: the ROS 2 executor thread (`NodeThread`) runs the subscription callbacks; each stores its
newest decoded value with one assignment (joint_states also sets an Event). The control thread
makes every `ArmBackend` call: `read()` waits up to one period for that Event (the driver's stream
paces the loop, like a hardware packet), then reads the values without a lock, and `write()`
publishes. `close()` joins the executor thread.

Faults: no joint_states for `stale_after_ms` → `ArmFault.COMMUNICATION`; nothing is published
while faulted; `recover()` (the core's clear_error) clears it once joint_states flow again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace

import numpy as np

from robot_rl.arms.ur_model import URModel
from robot_rl.control.commands import ResetMotion
from robot_rl.control.snapshot import SnapshotLayout
from robot_rl.drivers.arm import ArmCommand, ArmFault, ArmReading, ArmSpec
from robot_rl.errors import ConfigError, DeviceNotFound
from robot_rl.ros2.arm_command import follow_pose, twist_toward, wrench_in_base
from robot_rl.ros2.arm_config import Ros2ArmConfig, load_arm_config
from robot_rl.task_spec import TaskSpec
from robot_rl.twin import arm_models

log = logging.getLogger(__name__)

_POLL_S = 0.01
ROS2_PERIOD_S = 0.002
"""The control loop's period for ROS 2 arms (500 Hz): the driver's own controller runs the fast
loop; here each tick only reads the newest joint state and publishes at the command rate.
`read()` waits (up to one period) for the next joint_states message, so the driver's stream paces
the loop (`ArmSpec.paced_by_hardware`) as RTDE's cycle paces the UR backend: the loop then
sleeps instead of spin-waiting, which on a busy 2-core PC left the executor thread without the
GIL and the CPU it needs (≈ 0.4 ms per message there)."""


@dataclass(frozen=True)
class Ros2ArmBackend:
    """`BackendFactory` of an arm behind a ROS 2 driver; `build` runs in the control process."""

    task: TaskSpec
    config: Ros2ArmConfig
    config_path: str = ""
    """Where `config` came from (for messages)."""

    @classmethod
    def for_choice(cls, choice, task: TaskSpec) -> Ros2ArmBackend:
        """The recipe for `robot-rl serve --backend ros2 --ros2-config PATH` (a `registry.BackendChoice`).

        Raises:
            ConfigError: no --ros2-config, or the file is invalid; a twin driver config on a task
                without a `twin:` section.
        """
        if not choice.ros2_config:
            raise ConfigError("--backend ros2 needs --ros2-config PATH (e.g. hardware/ros2/franka_cartesian.yaml): "
                              "the driver's topics, joint names and command mode")
        backend = cls(task, load_arm_config(choice.ros2_config), str(choice.ros2_config))
        if backend.config.twin is not None and task.twin is None:
            raise ConfigError(f"{choice.ros2_config} drives robot_rl's twin driver, but task {task.name!r} has no "
                              "`twin:` section to simulate")
        return backend

    @property
    def twin(self) -> bool:
        """The driver is robot_rl's twin driver: scene hooks (ground truth, resets) over ROS."""
        return self.config.twin is not None

    def arm_spec(self) -> ArmSpec:
        base = arm_models.arm_model(self.config.arm).arm_spec()
        width = self.config.gripper.max_width_m if self.config.gripper is not None else 0.0
        return replace(base, name=f"ros2-{self.config.arm}", gripper_max_width_m=width, period_s=ROS2_PERIOD_S,
                       paced_by_hardware=True)

    def layout(self) -> SnapshotLayout:
        n = self.arm_spec().n_joints
        if not self.twin:
            return SnapshotLayout(n, (), 0)
        from robot_rl.ros2.twin_scene import twin_sizes

        privileged, sim_state = twin_sizes(self.task, self.config.arm)
        return SnapshotLayout(n, privileged, sim_state)

    def scene_source(self):
        """Files of the twin driver's scene (for the renderers)."""
        if not self.twin:
            raise ConfigError("an arm behind a ROS 2 driver has no simulated scene to render: pass --cameras")
        from robot_rl.twin.backend import scene_source

        return scene_source(self.task, self.config.arm)

    def build(self, *, realtime: bool, resume_sim_state: np.ndarray | None = None):
        """Start the node, wait for the driver's first joint_states, and return (arm, scene hooks or None).

        Raises:
            DeviceNotFound: no joint_states within `connect_timeout_s`.
            ConfigError: joint_states arrive but lack the configured joints.
        """
        from robot_rl.ros2.node_thread import NodeThread

        link = NodeThread("robot_rl_arm")
        try:
            arm = Ros2Arm(self.arm_spec(), self.config, link, self.task)
            scene = None
            if self.twin:
                from robot_rl.ros2.twin_scene import Ros2TwinScene

                layout = self.layout()
                scene = Ros2TwinScene(link.node, self.config.twin.namespace, layout.privileged_sizes,
                                      layout.sim_state_size)
            link.start()
            arm.wait_for_driver()
        except BaseException:
            link.close()
            raise
        return arm, scene


class Ros2Arm:
    """The `ArmBackend`; see the module docstring. Build through `Ros2ArmBackend.build`."""

    def __init__(self, spec: ArmSpec, config: Ros2ArmConfig, link, task: TaskSpec) -> None:
        from geometry_msgs.msg import PoseStamped, TwistStamped, WrenchStamped
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64

        from robot_rl.ros2 import messages

        self.spec, self.config, self._link = spec, config, link
        self._m = messages
        self._model = URModel(config.arm)
        self._names = list(config.joint_names)
        # The published pose's speed limit: the task's TCP speed, or the core's reset speed ceiling
        # (1.2 × the reset motion's speed) if higher: the backend cannot tell a reset motion from
        # tracking, and a reset must reach its goal within the core's settle time.
        self._v_max = max(task.law.max_tcp_speed_m_per_s, 1.2 * ResetMotion().speed_m_per_s)
        self._stale_ns = int(config.stale_after_ms * 1e6)
        self._period_ns = int(1e9 / config.command.rate_hz)
        n = spec.n_joints
        self._zeros = np.zeros(n)
        # Newest values, each swapped in whole by a callback on the executor thread.
        self._joints: tuple[int, np.ndarray, np.ndarray] | None = None
        self._wrench: np.ndarray = np.zeros(6)
        self._width_m: float = 0.0
        self.bad_messages = 0
        """Messages dropped because they did not decode (wrong joints, non-finite values)."""
        self.last_bad = ""
        # Control thread state.
        self._used = None
        self._arrived = threading.Event()
        self._wait_s = spec.period_s
        self._kin = None
        self._fault = ArmFault.NONE
        self._fault_why = ""
        self._last_pub_ns = 0
        self._published: np.ndarray | None = None
        self._gripper_sent: float | None = None
        self._last: ArmReading | None = None

        node = link.node
        node.create_subscription(JointState, config.joint_states_topic, self._on_joints, qos_profile_sensor_data)
        if config.wrench_topic is not None:
            node.create_subscription(WrenchStamped, config.wrench_topic, self._on_wrench, qos_profile_sensor_data)
        g = config.gripper
        self._gripper_pub = None
        if g is not None:
            self._fingers = list(g.finger_joints)
            if g.state_topic is not None and g.state_topic != config.joint_states_topic:
                node.create_subscription(JointState, g.state_topic, self._on_fingers, qos_profile_sensor_data)
            self._gripper_pub = node.create_publisher(Float64, g.command_topic, 10)
            self._float64 = Float64
        reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        kind = PoseStamped if config.command.mode == "pose" else TwistStamped
        self._cmd_pub = node.create_publisher(kind, config.command.topic, reliable)

    # ---- executor thread ------------------------------------------------------------------------

    def _on_joints(self, msg) -> None:
        t = time.monotonic_ns()
        try:
            q, dq, _ = self._m.joints_of(msg, self._names)
        except ValueError as exc:
            self.bad_messages += 1
            self.last_bad = str(exc)
            return
        self._joints = (t, q, dq)
        self._arrived.set()
        g = self.config.gripper
        if g is not None and (g.state_topic is None or g.state_topic == self.config.joint_states_topic):
            self._on_fingers(msg)

    def _on_fingers(self, msg) -> None:
        try:
            q, _, _ = self._m.joints_of(msg, self._fingers)
        except ValueError:
            return
        self._width_m = float(q.sum()) if len(q) == 2 else float(q[0])

    def _on_wrench(self, msg) -> None:
        try:
            w = self._m.wrench_of(msg)
        except ValueError:
            self.bad_messages += 1
            return
        self._wrench = w * self.config.wrench_sign

    # ---- control thread ---------------------------------------------------------------------------

    def wait_for_driver(self) -> None:
        """Block until the first valid joint_states (build time only).

        Raises:
            DeviceNotFound: none within `connect_timeout_s`.
            ConfigError: joint_states arrived, but without the configured joints.
        """
        cfg = self.config
        deadline = time.monotonic() + cfg.connect_timeout_s
        while self._joints is None:
            if time.monotonic() > deadline:
                if self.bad_messages:
                    raise ConfigError(f"sensor_msgs/JointState on {cfg.joint_states_topic} does not fit the ROS 2 "
                                      f"arm config: {self.last_bad}; fix joint_names")
                raise DeviceNotFound(
                    f"no sensor_msgs/JointState on {cfg.joint_states_topic} within {cfg.connect_timeout_s:g} s — is "
                    f"the arm's ROS 2 driver running? `ros2 topic echo {cfg.joint_states_topic}` (same "
                    "ROS_DOMAIN_ID and RMW on both sides)")
            time.sleep(_POLL_S)
        self._last = self._sample(time.monotonic_ns())
        self._published = self._last.pose_base_tcp.copy()
        log.info("ROS 2 arm: joint_states flowing on %s; commanding %s (%s) at %.0f Hz", cfg.joint_states_topic,
                 cfg.command.topic, cfg.command.mode, cfg.command.rate_hz)

    def _sample(self, now_ns: int) -> ArmReading:
        joints = self._joints
        if joints is not self._used:
            self._used = joints
            _, q, dq = joints
            pose, jac, mass, coriolis, gravity = self._model.compute(q, dq)
            self._kin = (q, dq, pose, jac @ dq, jac, mass, coriolis, gravity)
        q, dq, pose, twist, jac, mass, coriolis, gravity = self._kin
        wrench = self._wrench
        if self.config.wrench_frame == "tcp":
            wrench = wrench_in_base(wrench, pose)
        return ArmReading(now_ns, q, dq, pose, twist, jac, mass, coriolis, gravity, wrench, self._width_m)

    def read(self) -> ArmReading:
        """The next joint state (waiting up to one period for it) and its kinematics; a stale one is
        a COMMUNICATION fault (never raises)."""
        self._arrived.wait(self._wait_s)
        self._arrived.clear()
        now = time.monotonic_ns()
        reading = self._sample(now)
        age_ns = now - self._joints[0]
        if age_ns > self._stale_ns:
            reading = reading._replace(dq_rad_per_s=self._zeros, twist_base_tcp=np.zeros(6))
            if self._fault == ArmFault.NONE:
                self._fault = ArmFault.COMMUNICATION
                self._fault_why = (f"no joint_states on {self.config.joint_states_topic} for {age_ns / 1e6:.0f} ms "
                                   f"(limit {self.config.stale_after_ms:g} ms): is the arm's ROS 2 driver running?")
                log.error("ROS 2 arm: %s; holding until clear_error", self._fault_why)
        self._last = reading
        return reading._replace(fault=int(self._fault))

    def write(self, command: ArmCommand) -> None:
        """Publish the tick's target every command period; nothing while faulted. Never raises on
        ROS errors (they become a COMMUNICATION fault)."""
        if self._fault != ArmFault.NONE:
            return
        now = time.monotonic_ns()
        if now - self._last_pub_ns < self._period_ns:
            return
        dt_s = min(max((now - self._last_pub_ns) / 1e9, 0.0), 0.1)
        self._last_pub_ns = now
        measured = self._last.pose_base_tcp
        if command.q_target_rad is not None:  # joint-space reset phase: its Cartesian pose
            ref = self._model.compute(command.q_target_rad, self._zeros)[0]
        else:
            ref = command.pose_ref_base_tcp
        c = self.config.command
        try:
            if c.mode == "pose":
                self._published = follow_pose(self._published, ref, measured, dt_s, max_speed_m_per_s=self._v_max,
                                              max_speed_rad_per_s=c.max_rot_speed_rad_per_s,
                                              max_lead_m=c.max_lead_m)
                msg = self._m.pose_stamped(now, self.config.base_frame, self._published)
            else:
                twist = twist_toward(ref, measured, gain_per_s=c.twist_gain_per_s, max_speed_m_per_s=self._v_max,
                                     max_speed_rad_per_s=c.max_rot_speed_rad_per_s)
                msg = self._m.twist_stamped(now, self.config.base_frame, twist)
            self._cmd_pub.publish(msg)
        except Exception as exc:  # the context went down under us: stop commanding
            self._fault, self._fault_why = ArmFault.COMMUNICATION, f"publishing the command failed: {exc}"
            log.error("ROS 2 arm: %s", self._fault_why)

    def set_gripper(self, width_m: float) -> None:
        """Publish the new opening [m] (only when it changes)."""
        if self._gripper_pub is None or width_m == self._gripper_sent:
            return
        self._gripper_sent = float(width_m)
        try:
            self._gripper_pub.publish(self._float64(data=float(width_m)))
        except Exception as exc:
            log.error("ROS 2 arm: publishing the gripper command failed: %s", exc)

    def recover(self) -> None:
        """Clear a COMMUNICATION fault once joint_states flow again; otherwise it stays."""
        if self._fault == ArmFault.NONE:
            return
        age_ns = time.monotonic_ns() - self._joints[0]
        if age_ns > self._stale_ns:
            log.error("ROS 2 arm: still no joint_states on %s (%.0f ms old): still faulted",
                      self.config.joint_states_topic, age_ns / 1e6)
            return
        self._fault, self._fault_why = ArmFault.NONE, ""
        self._last = self._sample(time.monotonic_ns())
        self._published = self._last.pose_base_tcp.copy()
        self._gripper_sent = None
        log.info("ROS 2 arm: joint_states flow again; recovered")

    def close(self) -> None:
        """Stop publishing and shut the node down (joins the executor thread)."""
        self._fault = ArmFault.COMMUNICATION
        self._link.close()

    @property
    def fault(self) -> ArmFault:
        return self._fault
