"""Gymnasium ids of robot_rl's envs. Registering is cheap: nothing is imported until `make`."""

from __future__ import annotations


def register_envs() -> None:
    pass
