"""Which `BackendFactory` builds the arm for `robot-rl serve --backend NAME`.

    twin            MuJoCo twin (arm model from --arm or the task's `twin.arm`)
    franka          a Franka arm over pylibfranka (FCI), needs --robot-ip
    ur              a UR e-Series arm over ur_rtde, needs --robot-ip
    franka-double   the Franka backend against the pylibfranka double (Panda twin physics)
    ur-double       the UR backend against the ur_rtde double (UR5e twin physics)
    ros2            an arm behind its ROS 2 driver, needs --ros2-config (hardware/ros2/*.yaml)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from robot_rl.errors import ConfigError
from robot_rl.task_spec import TaskSpec

BackendName = Literal["twin", "franka", "ur", "franka-double", "ur-double", "ros2"]
BACKENDS: tuple[str, ...] = ("twin", "franka", "ur", "franka-double", "ur-double", "ros2")
SIMULATED = ("twin", "franka-double", "ur-double")
"""Backends whose physics is simulated (scene hooks, teleport resets, stepped time)."""


@dataclass(frozen=True)
class BackendChoice:
    """What `robot-rl serve` says about the arm, beyond the task."""

    backend: str = "twin"
    arm: str | None = None
    """Twin arm model ("panda", "ur5e"); None: the task's `twin.arm`. Doubles fix their own."""
    robot_ip: str | None = None
    """Address of a physical arm (franka, ur)."""
    ur_mode: Literal["torque", "servo"] = "torque"
    """UR command mode: `directTorque` at 500 Hz, or Cartesian admittance over `servoL`."""
    franka_realtime: Literal["enforce", "ignore"] = "enforce"
    """libfranka's RealtimeConfig: refuse to run without a PREEMPT_RT kernel, or run anyway."""
    seed: int = 0
    """Initial scene layout of simulated backends."""
    ros2_config: str | None = None
    """ROS 2 arm config (hardware/ros2/*.yaml): the driver's topics, joint names, command mode."""


def make_factory(choice: BackendChoice, task: TaskSpec):
    """The picklable recipe that builds `choice`'s arm inside the control process.

    Raises:
        ConfigError: unknown backend, a physical arm without --robot-ip, or an arm model the
            backend cannot drive.
    """
    name = choice.backend
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name in ("franka", "ur") and not choice.robot_ip:
        raise ConfigError(f"--backend {name} drives a physical arm: pass its address with --robot-ip "
                          f"(or use --backend {name}-double to run the same code against twin physics)")
    if name == "twin":
        from robot_rl.twin.backend import TwinBackend

        return TwinBackend(task, initial_seed=choice.seed, arm=choice.arm)
    if name == "ros2":
        from robot_rl.ros2.arm_backend import Ros2ArmBackend

        return Ros2ArmBackend.for_choice(choice, task)
    if name in ("franka", "franka-double"):
        from robot_rl.arms.franka import FrankaBackend

        return FrankaBackend.for_choice(choice, task)
    from robot_rl.arms.ur import URBackend

    return URBackend.for_choice(choice, task)
