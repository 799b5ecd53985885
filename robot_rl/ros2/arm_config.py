"""What `robot-rl serve --backend ros2 --ros2-config FILE` drives: an arm behind its ROS 2 driver.

File layout (hardware/ros2/*.yaml; every key is a field below)::

    arm: panda                     # kinematics model (robot_rl/twin/arm_models.py): panda | ur5e
    joint_names: [fr3_joint1, ..., fr3_joint7]
    base_frame: fr3_link0
    joint_states_topic: /joint_states
    wrench_topic: /franka_robot_state_broadcaster/external_wrench_in_base_frame   # or null
    wrench_frame: base             # base | tcp
    command: {mode: pose, topic: /cartesian_impedance/equilibrium_pose, rate_hz: 250}
    stale_after_ms: 100
    gripper: {command_topic: /gripper/width, finger_joints: [fr3_finger_joint1, fr3_finger_joint2]}
    twin: null                     # {namespace: /robot_rl_twin}: the driver is robot_rl's twin driver

Errors name the file and the field, e.g. `ROS 2 arm config hardware/ros2/x.yaml: command.mode: must be
one of ['pose', 'twist'], got 'velocity'`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


from robot_rl import paths
from robot_rl.config import from_dict, read_yaml
from robot_rl.errors import ConfigError


def _topic(value: str, where: str) -> None:
    if not value or any(c.isspace() for c in value) or value.endswith("/"):
        raise ValueError(f"{where} must be a ROS topic name like /joint_states, got {value!r}")


def _in(value: float, lo: float, hi: float, where: str) -> None:
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{where} must be in [{lo}, {hi}], got {value}")


@dataclass(frozen=True)
class CommandConfig:
    """How the backend commands the arm's driver."""

    mode: Literal["pose", "twist"] = "pose"
    """pose: geometry_msgs/PoseStamped target (a Cartesian impedance controller's equilibrium pose);
    twist: geometry_msgs/TwistStamped TCP velocity (a Cartesian velocity / servo controller)."""
    topic: str = "/target_pose"
    """Where the driver listens for the command."""
    rate_hz: float = 250.0
    """Publication rate of the command (the control loop runs at 1 kHz and publishes every 1/rate)."""
    max_lead_m: float = 0.03
    """Pose mode: the published pose stays within this distance of the measured TCP, so a blocked
    arm never gets a target (and a driver's spring force) running away from it."""
    max_rot_speed_rad_per_s: float = 1.0
    """Rotational speed limit of the published pose or twist (the translational one is the task's
    `law.max_tcp_speed_m_per_s`)."""
    twist_gain_per_s: float = 5.0
    """Twist mode: commanded twist = gain · (reference − measured TCP), then speed-limited."""

    def __post_init__(self) -> None:
        if self.mode not in ("pose", "twist"):
            raise ValueError(f"mode: expected one of ['pose', 'twist'], got {self.mode!r}")
        _topic(self.topic, "topic")
        _in(self.rate_hz, 10.0, 1000.0, "rate_hz")
        _in(self.max_lead_m, 0.001, 0.2, "max_lead_m")
        _in(self.max_rot_speed_rad_per_s, 0.01, 6.0, "max_rot_speed_rad_per_s")
        _in(self.twist_gain_per_s, 0.1, 50.0, "twist_gain_per_s")


@dataclass(frozen=True)
class GripperConfig:
    """A gripper commanded by opening width (std_msgs/Float64, m) and read from joint states."""

    command_topic: str
    """std_msgs/Float64 opening [m]; 0 closes (grasps)."""
    finger_joints: tuple[str, ...]
    """Joints in `state_topic` whose positions sum to the opening [m] (the Franka hand's two
    fingers each report half the opening)."""
    state_topic: str | None = None
    """sensor_msgs/JointState carrying `finger_joints`; None: the arm's `joint_states_topic`."""
    max_width_m: float = 0.08
    """Full opening."""

    def __post_init__(self) -> None:
        _topic(self.command_topic, "command_topic")
        if self.state_topic is not None:
            _topic(self.state_topic, "state_topic")
        if not 1 <= len(self.finger_joints) <= 2:
            raise ValueError(f"finger_joints must name 1 or 2 joints, got {list(self.finger_joints)}")
        _in(self.max_width_m, 0.001, 0.5, "max_width_m")


@dataclass(frozen=True)
class TwinDriverConfig:
    """The driver is robot_rl's ROS 2 twin driver (`python -m robot_rl.twin.doubles.ros2_driver`):
    it also publishes the task's ground truth and takes scene resets under `namespace`."""

    namespace: str = "/robot_rl_twin"
    """`<ns>/privileged`, `<ns>/sim_state` (std_msgs/Float64MultiArray) and `<ns>/reset_scene`
    (std_msgs/Int64MultiArray `[request id, seed]`)."""

    def __post_init__(self) -> None:
        _topic(self.namespace, "namespace")


@dataclass(frozen=True)
class Ros2ArmConfig:
    """An arm behind a ROS 2 driver: topics, message frames, command mode, kinematics model."""

    arm: Literal["panda", "ur5e"]
    """Kinematics and dynamics model of the arm (robot_rl/twin/arm_models.py): TCP pose, jacobian
    and mass matrix come from it and the measured joints."""
    joint_names: tuple[str, ...]
    """The arm's joints in `joint_states_topic`, base to flange (the message may order them freely)."""
    command: CommandConfig = CommandConfig()
    base_frame: str = "base"
    """frame_id of published commands: the frame the driver's controller takes targets in, and
    the base of the arm model."""
    joint_states_topic: str = "/joint_states"
    wrench_topic: str | None = None
    """geometry_msgs/WrenchStamped of the external wrench on the end effector; None: no sensor
    (the contact-force reflex then never fires: the driver's own must)."""
    wrench_frame: Literal["base", "tcp"] = "base"
    """Frame the wrench is expressed in (at the TCP either way); tcp is rotated into the base frame."""
    wrench_sign: float = 1.0
    """+1 when the topic reports the force the environment exerts on the robot; −1 when it reports
    the force the robot exerts (franka's O_F_ext_hat_K convention is the former)."""
    stale_after_ms: float = 100.0
    """COMMUNICATION fault when no joint_states arrived for this long."""
    connect_timeout_s: float = 5.0
    """At start-up, the first joint_states must arrive within this time."""
    gripper: GripperConfig | None = None
    twin: TwinDriverConfig | None = None

    def __post_init__(self) -> None:
        from robot_rl.twin import arm_models

        if self.arm not in arm_models.ARM_MODELS:
            raise ValueError(f"arm: expected one of {sorted(arm_models.ARM_MODELS)}, got {self.arm!r}")
        n = arm_models.arm_model(self.arm).spec.n_joints
        if len(self.joint_names) != n or len(set(self.joint_names)) != n:
            raise ValueError(f"joint_names: the {self.arm} has {n} joints: list {n} distinct names, "
                              f"got {list(self.joint_names)}")
        _topic(self.joint_states_topic, "joint_states_topic")
        if self.wrench_topic is not None:
            _topic(self.wrench_topic, "wrench_topic")
        if self.wrench_sign not in (1.0, -1.0):
            raise ValueError(f"wrench_sign must be 1 or -1, got {self.wrench_sign}")
        _in(self.stale_after_ms, 5.0, 2000.0, "stale_after_ms")
        _in(self.connect_timeout_s, 0.1, 60.0, "connect_timeout_s")
        if not self.base_frame:
            raise ValueError("base_frame must not be empty")


def load_arm_config(path: str | Path) -> Ros2ArmConfig:
    """The typed config in a YAML file.

    Raises:
        ConfigError: the file is missing or not YAML, or a field is missing or invalid (the message
            names the file and the field).
    """
    path = Path(path)
    if not path.is_absolute() and not path.exists() and (paths.home() / path).exists():
        path = paths.home() / path  # hardware/ros2/... from any working directory
    data = read_yaml(path, "ROS 2 arm config", "hardware/ros2/franka_cartesian.yaml")
    if not isinstance(data, dict):
        raise ConfigError(f"ROS 2 arm config {path}: expected a mapping of fields, got {type(data).__name__}")
    missing = [k for k in ("arm", "joint_names") if k not in data]
    if missing:
        raise ConfigError(f"ROS 2 arm config {path}: missing required field(s) {missing}")
    try:
        return from_dict(Ros2ArmConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"ROS 2 arm config {path}: {str(exc).removeprefix('Ros2ArmConfig: ')}") from exc
