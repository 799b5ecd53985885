"""pylibfranka 0.21's names and signatures, as the Franka backend sees them, over a simulated robot.

Each class stands for the pylibfranka one of the same name (tests/arms/test_vendor_api_drift.py
checks names and signatures against the installed wheel) and forwards to the `FrankaDouble` it
is bound to (`twin/doubles/franka_robot.py`: twin physics, libfranka's timing contract, injectable
faults). `FrankaDouble.vendor` is the namespace the backend takes in place of the module.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robot_rl.twin.doubles.franka_robot import FrankaDouble

# ---- the vendor's types (names and signatures as in pylibfranka 0.21.3) -------------------------------


class ControlException(RuntimeError):
    pass


class NetworkException(RuntimeError):
    pass


class CommandException(RuntimeError):
    pass


class RealtimeException(RuntimeError):
    """Never raised by the double (it needs no real-time kernel); the backend catches it."""


class RealtimeConfig(enum.Enum):
    kEnforce = 0
    kIgnore = 1


class RobotMode(enum.Enum):
    Other = 0
    Idle = 1
    Move = 2
    Guiding = 3
    Reflex = 4
    UserStopped = 5
    AutomaticErrorRecovery = 6


class Duration:
    def __init__(self, seconds: float = 0.0) -> None:
        self._s = seconds

    def to_sec(self) -> float:
        return self._s


class Torques:
    def __init__(self, arg0) -> None:
        self.tau_J = list(arg0)
        if len(self.tau_J) != 7:
            raise TypeError(f"Torques: expected 7 joint torques, got {len(self.tau_J)}")
        self.motion_finished = False


class RobotState:
    """Fields as pylibfranka's (column-major lists); the model's results ride along privately."""

    __slots__ = ("O_T_EE", "q", "dq", "O_F_ext_hat_K", "robot_mode", "time", "control_command_success_rate",
                 "_jacobian", "_mass", "_coriolis", "_gravity")


class GripperState:
    def __init__(self) -> None:
        self.width = 0.0
        self.max_width = 0.0
        self.is_grasped = False
        self.temperature = 30
        self.time = Duration()


class Model:
    def zero_jacobian(self, arg0: RobotState) -> list[float]:
        return arg0._jacobian

    def mass(self, arg0: RobotState) -> list[float]:
        return arg0._mass

    def coriolis(self, arg0: RobotState) -> list[float]:
        return arg0._coriolis

    def gravity(self, arg0: RobotState) -> list[float]:
        return arg0._gravity


class ActiveControlBase:
    _double: FrankaDouble

    def readOnce(self) -> tuple[RobotState, Duration]:
        return self._double._read_packet(self)

    def writeOnce(self, arg0: Torques) -> None:
        self._double._write_command(self, arg0)


class Robot:
    _double: FrankaDouble

    def __init__(self, robot_ip_address: str, realtime_config: RealtimeConfig = RealtimeConfig.kEnforce) -> None:
        self._double._connect(robot_ip_address, realtime_config is RealtimeConfig.kEnforce)

    def start_torque_control(self) -> ActiveControlBase:
        return self._double._start_control()

    def load_model(self) -> Model:
        self._double._check_link()
        return Model()

    def set_collision_behavior(self, lower_torque_thresholds, upper_torque_thresholds, lower_force_thresholds,
                               upper_force_thresholds) -> None:
        for name, values, n in (("lower_torque_thresholds", lower_torque_thresholds, 7),
                                ("upper_torque_thresholds", upper_torque_thresholds, 7),
                                ("lower_force_thresholds", lower_force_thresholds, 6),
                                ("upper_force_thresholds", upper_force_thresholds, 6)):
            if len(values) != n:
                raise TypeError(f"set_collision_behavior: {name} needs {n} values, got {len(values)}")
        self._double._check_link()
        self._double.upper_force_thresholds = tuple(float(v) for v in upper_force_thresholds)

    def automatic_error_recovery(self) -> None:
        self._double._recover()

    def read_once(self) -> RobotState:
        return self._double._read_idle()

    def stop(self) -> None:
        self._double._stop_motion()


class Gripper:
    _double: FrankaDouble

    def __init__(self, arg0: str) -> None:
        self._double._connect(arg0)

    def move(self, arg0: float, arg1: float) -> bool:
        return self._double._grip(arg0, grasp=False)

    def grasp(self, width: float, speed: float, force: float, epsilon_inner: float = 0.005,
              epsilon_outer: float = 0.005) -> bool:
        return self._double._grip(width, grasp=True, tolerance=(epsilon_inner, epsilon_outer))

    def read_once(self) -> GripperState:
        return self._double._gripper_state()

    def stop(self) -> bool:
        self._double._grip_stop()
        return True


VENDOR_NAMES = ("ActiveControlBase", "CommandException", "ControlException", "Duration", "GripperState", "Gripper",
                "Model", "NetworkException", "RealtimeConfig", "RealtimeException", "Robot", "RobotMode",
                "RobotState", "Torques")
"""pylibfranka names the double provides (each exists in the real module)."""
