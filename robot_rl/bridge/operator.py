"""`robot-rl robot ACTION`: what an operator at the robot PC (or the learner) does to a running server.

    robot-rl robot status                       # mode, fault, pose, watchdog trips (as a monitor)
    robot-rl robot restart-control              # after a `fault`: start a fresh control loop
    robot-rl robot clear-error                  # leave a safety reflex

`restart-control` and `clear-error` need control of the arm, so they take it (`take_control`): the
actor that held it gets `control_taken` on its next step and must be restarted, which is what an
operator wants after the control loop died under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import tyro

from robot_rl.bridge import protocol as P
from robot_rl.bridge.client import BridgeClient


@dataclass(frozen=True)
class RobotCommand:
    """Status of a running robot server, or an operator action on it."""

    action: tyro.conf.Positional[Literal["status", "restart-control", "clear-error"]] = "status"
    server: str = "tcp://127.0.0.1:5555"
    """The robot server's request socket."""
    keys_dir: str | None = None
    """CurveZMQ keys when the server requires them."""
    timeout_s: float = 60.0
    """How long to wait for the server's answer (a restarted control loop may take seconds to start)."""


def describe(state: P.RobotState) -> str:
    """One operator-readable line per fact of a state."""
    pose = np.round(state.pose_base_tcp, 4).tolist()
    lines = [f"mode            {state.mode}", f"fault           {state.fault or '-'}",
             f"tcp pose        {pose}  (x y z m, qw qx qy qz)", f"gripper width   {state.gripper_width_m:.4f} m",
             f"watchdog trips  {state.watchdog_trips}", f"last command    seq {state.command_seq}",
             f"tick            {state.tick}"]
    return "\n".join(lines)


def run(cfg: RobotCommand) -> None:
    role: P.Role = "monitor" if cfg.action == "status" else "control"
    with BridgeClient(cfg.server, name=f"robot-rl robot {cfg.action}", role=role, take_control=role == "control",
                      keys_dir=cfg.keys_dir, timeout_s=cfg.timeout_s) as client:
        if cfg.action == "status":
            obs = client.observe()
        elif cfg.action == "restart-control":
            obs = client.restart_control(timeout_s=cfg.timeout_s)
        else:
            obs = client.clear_error()
        w = client.welcome
        print(f"{w.server_name}: {w.backend} backend, task {w.task}, {'real time' if w.realtime else 'stepped'}")
        print(describe(obs.state))
