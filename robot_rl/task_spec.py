"""Task specs: what to learn, loaded once from `tasks/<name>.yaml` into a validated `TaskSpec`.

A task names its workspace box, reset pose and randomization, action scales, cameras, reward,
episode length and (for the twin) the scene and its ground-truth check. Both the robot PC (box,
limits, gains, cameras, twin scene) and the learner (actions, reward, episode) read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import yaml

from robot_rl import paths
from robot_rl.config import from_dict
from robot_rl.control.impedance import ImpedanceGains, LawLimits
from robot_rl.control.safety import CommandLimits, WorkspaceBox
from robot_rl.errors import ConfigError


@dataclass(frozen=True)
class ActionSpec:
    """How the env maps Box(−1, 1, 7) actions to commands."""

    translation_scale_m: float = 0.02
    """Δxyz per step at action 1.0."""
    rotation_scale_rad: float = 0.1
    """Δrotation per step at action 1.0."""
    rotation_axes: tuple[bool, bool, bool] = (True, True, True)
    """Which base-frame rotation axes the policy may use (others are zeroed)."""
    gripper: Literal["binary", "fixed"] = "binary"
    """binary: action > 0.5 closes, < −0.5 opens (SERL); fixed: the gripper holds `gripper_fixed_width_m`."""
    gripper_fixed_width_m: float = 0.0
    """Opening held when `gripper` is fixed (e.g. the width of a held peg)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.translation_scale_m <= 0.1:
            raise ValueError(f"translation_scale_m must be in (0, 0.1], got {self.translation_scale_m}")
        if not 0.0 <= self.rotation_scale_rad <= 0.5:
            raise ValueError(f"rotation_scale_rad must be in [0, 0.5], got {self.rotation_scale_rad}")


@dataclass(frozen=True)
class ResetSpec:
    """Where each episode starts."""

    pose: tuple[float, float, float, float, float, float, float] = (0.5, 0.0, 0.2, 0.0, 1.0, 0.0, 0.0)
    """Nominal TCP reset pose `[x y z qw qx qy qz]`, base frame."""
    randomize_xyz_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Uniform ± range added to the reset position."""
    randomize_yaw_rad: float = 0.0
    """Uniform ± range of yaw about the base z axis."""
    joint_reset_every: int = 0
    """Joint reset every N episodes (0 never) to undo drift in the nullspace."""


@dataclass(frozen=True)
class CameraSpec:
    """A camera the task observes. On the twin, `name` is the MJCF camera."""

    name: str
    height: int = 128
    width: int = 128

    def __post_init__(self) -> None:
        if not (8 <= self.height <= 1080 and 8 <= self.width <= 1920):
            raise ValueError(f"camera {self.name}: size {self.height}x{self.width} outside 8..1080 x 8..1920")


@dataclass(frozen=True)
class RewardSpec:
    """Where reward comes from."""

    type: Literal["twin_success", "none"] = "twin_success"
    """twin_success: 1 when the twin's ground-truth success check holds (ends the episode)."""


@dataclass(frozen=True)
class PickCubeParams:
    """Ground truth and randomization of the pick_cube twin."""

    object_center_m: tuple[float, float] = (0.5, 0.0)
    object_range_m: tuple[float, float] = (0.08, 0.08)
    """Uniform ± range of the cube position."""
    object_yaw_range_rad: float = 0.8
    lift_height_m: float = 0.05
    """Success when the cube's bottom is this far above the table."""


@dataclass(frozen=True)
class PegInsertionParams:
    """Ground truth and randomization of the peg_insertion twin."""

    hole_center_m: tuple[float, float] = (0.5, 0.0)
    hole_range_m: tuple[float, float] = (0.03, 0.03)
    """Uniform ± range of the hole block position."""
    insert_depth_m: float = 0.015
    """Success when the peg tip is this deep below the hole's top, inside its footprint."""
    hole_half_width_m: float = 0.011


TwinArmName = Literal["panda", "ur5e"]
"""Arm models of the twin (robot_rl/twin/arm_models.py)."""


@dataclass(frozen=True)
class TwinSpec:
    """How the MuJoCo twin builds and judges this task."""

    scene: str
    """MJCF file in sim/; it includes its arm as arm.xml."""
    kind: Literal["pick_cube", "peg_insertion"]
    arm: TwinArmName = "panda"
    """Arm model the scene is built with (sim/panda_twin.xml, sim/ur5e_twin.xml); `--arm`
    (serve, record, train, bench) overrides it."""
    tool: str | None = None
    """MJCF mounted in the hand (sim/tools/...)."""
    pick_cube: PickCubeParams = PickCubeParams()
    peg_insertion: PegInsertionParams = PegInsertionParams()
    randomize_visuals: bool = True
    """Randomize colours and lights at every reset (rendering only)."""

    def __post_init__(self) -> None:
        if self.arm not in get_args(TwinArmName):
            raise ValueError(f"twin.arm must be one of {list(get_args(TwinArmName))}, got {self.arm!r}")


@dataclass(frozen=True)
class TaskSpec:
    """Everything a task says. Load with `load_task(name_or_path)`."""

    name: str
    description: str = ""
    step_hz: float = 10.0
    """Env steps per second; each step commands a target and observes after 1/step_hz."""
    episode_steps: int = 100
    action: ActionSpec = ActionSpec()
    workspace: WorkspaceBox = WorkspaceBox()
    reset: ResetSpec = ResetSpec()
    gains: ImpedanceGains = ImpedanceGains()
    limits: CommandLimits = CommandLimits()
    law: LawLimits = LawLimits()
    """Filter, rate limit, spring-force cap and TCP speed limit (torque limits come from the arm)."""
    cameras: tuple[CameraSpec, ...] = (CameraSpec("wrist"), CameraSpec("front"))
    reward: RewardSpec = RewardSpec()
    twin: TwinSpec | None = None
    source: str = field(default="", compare=False)
    """File the spec was loaded from."""

    def __post_init__(self) -> None:
        if not 1.0 <= self.step_hz <= 100.0:
            raise ValueError(f"step_hz must be in [1, 100], got {self.step_hz}")
        if not 1 <= self.episode_steps <= 100_000:
            raise ValueError(f"episode_steps must be in [1, 100000], got {self.episode_steps}")
        why = self.workspace.violation(np.asarray(self.reset.pose))
        if why is not None:
            raise ValueError(f"reset.pose must lie inside the workspace box: {why}")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")

    @property
    def step_s(self) -> float:
        return 1.0 / self.step_hz


def with_twin_arm(task: TaskSpec, arm: str | None) -> TaskSpec:
    """`task` with its twin built on `arm` (`--arm`: replaces `twin.arm`); None leaves it as is.

    Raises:
        ConfigError: the task has no twin, or `arm` is not one of `TwinArmName`.
    """
    if arm is None:
        return task
    if task.twin is None:
        raise ConfigError(f"task {task.name!r} has no `twin:` section: --arm {arm} chooses a twin's arm")
    if arm not in get_args(TwinArmName):
        raise ConfigError(f"unknown twin arm {arm!r}; choose one of {', '.join(get_args(TwinArmName))}")
    return replace(task, twin=replace(task.twin, arm=arm))


def task_names() -> list[str]:
    """Names of the task specs in tasks/."""
    return sorted(p.stem for p in paths.user_dir("tasks").glob("*.yaml"))


def load_task(name_or_path: str | Path) -> TaskSpec:
    """Load `tasks/<name>.yaml`, or a YAML file by path.

    Raises:
        ConfigError: unknown task, unreadable YAML, or a field that fails validation (named).
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = paths.user_dir("tasks") / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown task {name_or_path!r}; tasks in {path.parent}: {task_names()}")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read task spec {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"task spec {path} must be a mapping at top level")
    data = dict(data, source=str(path))
    return from_dict(TaskSpec, data, where=path.stem)
