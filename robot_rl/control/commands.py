"""What goes into and out of the control core: commands, events, configuration, scene hooks.

Commands are queued by the server (any thread, or through the control process's pipe) and
applied by the core at the start of its next tick; events come back when a reset ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from robot_rl.control.impedance import (
    PRECISION_GAINS,
    ImpedanceGains,
    JointGains,
    LawLimits,
)
from robot_rl.control.safety import CommandLimits, WorkspaceBox
from robot_rl.task_spec import TaskSpec


class SceneHooks(Protocol):
    """Extra duties of a simulated backend: scene resets and ground truth. Real arms have none."""

    privileged_sizes: tuple[tuple[str, int], ...]
    sim_state_size: int

    def reset_scene(self, seed: int) -> None:
        """Re-randomize object poses (physics only), deterministically from `seed`."""
        ...

    def after_tick(self) -> None:
        """Update per-tick ground-truth trackers (peak contact force, TCP excursion)."""
        ...

    def write_privileged(self, out: dict[str, np.ndarray]) -> None:
        """Fill the named privileged vectors in place."""
        ...

    def write_sim_state(self, out: np.ndarray) -> None:
        """Fill the simulator state renderers need (qpos, mocap poses)."""
        ...

    def teleport_arm(self, pose_base_tcp: np.ndarray, gripper_width_m: float) -> None:
        """Place the arm at rest at a pose (simulation-only fast, deterministic resets)."""
        ...


@dataclass(frozen=True)
class TargetCommand:
    """Track `target_pose` (already validated and box-clipped by the server)."""

    seq: int
    target_pose: np.ndarray
    gripper_width_m: float | None
    target_clipped: bool = False


@dataclass(frozen=True)
class ResetCommand:
    """Move to `goal_pose` (optionally through a joint reset) and re-randomize the scene."""

    request_id: int
    goal_pose: np.ndarray
    joint_reset: bool = False
    scene_seed: int | None = None
    open_gripper: bool = True
    gripper_width_m: float | None = None
    """Gripper opening once at the reset pose (None: stay open)."""
    teleport: bool = False
    """Simulation only: place the arm at the goal instead of moving there (deterministic, fast)."""


@dataclass(frozen=True)
class ClearErrorCommand:
    """Leave REFLEX: recover the backend and hold the current pose."""


@dataclass(frozen=True)
class ParamsCommand:
    """Replace gains, box or limits. Fields left None keep their value."""

    gains: ImpedanceGains | None = None
    box: WorkspaceBox | None = None
    limits: CommandLimits | None = None


@dataclass(frozen=True)
class CoreEvent:
    """Something the server must hear about: a reset finished or failed."""

    kind: str
    """"reset_done" or "reset_failed"."""
    request_id: int
    message: str = ""


@dataclass(frozen=True)
class ResetMotion:
    """How resets move: speeds, lift and settle criteria."""

    speed_m_per_s: float = 0.2
    """Peak TCP speed of reset motions (planned free-space moves; the task's TCP speed limit is
    raised to 1.2× this while resetting)."""
    speed_rad_per_s: float = 1.0
    joint_speed_rad_per_s: float = 0.8
    gripper_open_s: float = 0.3
    """Time allowed for the gripper to open before moving."""
    settle_tol_m: float = 0.003
    settle_speed_m_per_s: float = 0.01
    settle_timeout_s: float = 2.0
    scene_settle_s: float = 0.15
    """Time objects get to come to rest after being placed."""


@dataclass(frozen=True)
class CoreConfig:
    """Everything the control core needs besides the backend."""

    gains: ImpedanceGains = ImpedanceGains()
    reset_gains: ImpedanceGains = PRECISION_GAINS
    law: LawLimits = LawLimits()
    box: WorkspaceBox = WorkspaceBox()
    limits: CommandLimits = CommandLimits()
    joint_gains: JointGains = JointGains()
    reset: ResetMotion = ResetMotion()
    joint_limit_margin_rad: float = 0.005
    """Reflex when a joint comes this close to its position limit."""
    joint_velocity_margin: float = 1.0
    """Reflex when a joint exceeds this fraction of its velocity limit."""
    brake_damping_factor: float = 3.0
    """Damping multiplier applied at once when the watchdog or a reflex stops the arm."""


def core_config(task: TaskSpec) -> CoreConfig:
    """Controller settings a task asks for (gains, box, limits, law), on any arm."""
    return CoreConfig(gains=task.gains, box=task.workspace, limits=task.limits, law=task.law)
