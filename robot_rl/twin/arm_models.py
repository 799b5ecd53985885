"""The twin's arm models: which MJCF file in sim/ and which `ArmSpec` facts each arm name means.

Scenes include their arm as `arm.xml` (`ARM_INCLUDE`); `scene.build_model` hands MuJoCo the chosen
model's file under that name, so one scene serves every arm. Add an arm here and in
`task_spec.TwinArmName`; its MJCF must keep panda_twin.xml's element names (see scene.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from robot_rl.drivers.arm import ArmSpec
from robot_rl.errors import ConfigError

ARM_INCLUDE = "arm.xml"
"""File name under which scenes include their arm (sim/arm.xml itself is the default for viewers)."""


@dataclass(frozen=True)
class ArmModel:
    """A twin arm: its MJCF and the static facts the controller and safety code need."""

    name: str
    """Registry key ("panda", "ur5e"); the twin's `ArmSpec.name` is "twin-<name>"."""
    mjcf: str
    """Arm file in sim/ (joints joint1..jointN, motors tau1..tauN, hand, tcp, fingers, gripper)."""
    spec: ArmSpec
    """Limits and home posture (`torque_limit_nm` equals the MJCF motors' ctrlrange: tests check it;
    `q_home_rad` is also the IK seed of teleport resets)."""

    def arm_spec(self) -> ArmSpec:
        return self.spec


PANDA = ArmModel("panda", "panda_twin.xml", ArmSpec(
    name="twin-panda",
    n_joints=7,
    q_min_rad=(-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973),
    q_max_rad=(2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973),
    dq_max_rad_per_s=(2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61),
    torque_limit_nm=(87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0),
    q_home_rad=(0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398),
    gripper_max_width_m=0.08,
))
"""Franka's published joint, speed and torque limits and home posture (sim/panda_twin.xml)."""

_TWO_PI = 6.2831853
UR5E = ArmModel("ur5e", "ur5e_twin.xml", ArmSpec(
    name="twin-ur5e",
    n_joints=6,
    # ±2π as published; the elbow ±π where the forearm would fold into the upper arm (the twin
    # has no self-collision to stop it; see sim/ur5e_twin.xml).
    q_min_rad=(-_TWO_PI, -_TWO_PI, -3.1415927, -_TWO_PI, -_TWO_PI, -_TWO_PI),
    q_max_rad=(_TWO_PI, _TWO_PI, 3.1415927, _TWO_PI, _TWO_PI, _TWO_PI),
    dq_max_rad_per_s=(3.1415927,) * 6,  # UR5e spec: 180°/s on every joint
    torque_limit_nm=(150.0, 150.0, 150.0, 28.0, 28.0, 28.0),
    # Tool pointing down (quat wxyz [0 1 0 0]) with the TCP at (0.5, 0, 0.25) m, 7 cm above the
    # tasks' reset poses; elbow up; shoulder lift vertical (−π/2); wrist 2 at −π/2, far from the
    # wrist singularity (wrist 2 at 0 or π). Joint 1 near π because the DH base frame's x axis
    # points away from the workspace (the arm reaches along −x at joint 1 = 0).
    q_home_rad=(2.8717, -1.5708, 1.7969, -1.7969, -1.5708, -1.8407),
    gripper_max_width_m=0.085,  # Robotiq 2F-85 stroke
))
"""Universal Robots' published UR5e joint, speed and torque limits (sim/ur5e_twin.xml)."""

ARM_MODELS: dict[str, ArmModel] = {"panda": PANDA, "ur5e": UR5E}
DEFAULT_ARM = "panda"


def arm_model(name: str) -> ArmModel:
    """The registered arm called `name`.

    Raises:
        ConfigError: no arm of that name (the message lists the choices).
    """
    model = ARM_MODELS.get(name)
    if model is None:
        raise ConfigError(f"unknown twin arm {name!r}; choose one of {', '.join(ARM_MODELS)} "
                          "(--arm, or `twin.arm` in the task file)")
    return model
