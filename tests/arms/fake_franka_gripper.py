"""A stand-in `pylibfranka` with only a `Gripper`, for the Franka Hand process test: a 3 cm object
sits between the fingers, and only 172.16.0.2 answers."""

from __future__ import annotations


class NetworkException(RuntimeError):
    pass


class CommandException(RuntimeError):
    pass


class GripperState:
    def __init__(self, width: float) -> None:
        self.width, self.max_width, self.is_grasped = width, 0.08, False


class Gripper:
    def __init__(self, arg0: str) -> None:
        if arg0 != "172.16.0.2":
            raise NetworkException("libfranka gripper: Connection timeout")
        self.width = 0.08

    def read_once(self) -> GripperState:
        return GripperState(self.width)

    def grasp(self, width, speed, force, epsilon_inner=0.005, epsilon_outer=0.005) -> bool:
        self.width = max(width, 0.03)
        return True

    def move(self, arg0, arg1) -> bool:
        if abs(arg0 - 0.05) < 1e-9:  # a width the test uses to see an error come back
            raise CommandException("fingers blocked")
        self.width = arg0
        return True
