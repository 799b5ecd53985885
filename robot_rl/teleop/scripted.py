"""Scripted experts for the twin tasks: they read ground truth from `info["privileged"]` and act
through the same env (and bridge) as a human or a policy would.

Each expert is a small state machine with a proportional step toward its current goal, clipped to
the action box. They make demos for `robot-rl record --teleop scripted` and stand in for a human
in tests and benchmarks.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from robot_rl.control import rotations
from robot_rl.task_spec import TaskSpec

_DOWN = np.array([0.0, 1.0, 0.0, 0.0])
"""Tool pointing down (180° about x), the nominal orientation of both tasks."""


class Expert(Protocol):
    def reset(self) -> None:
        ...

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        """Action (7,) in [-1, 1] for the current observation."""
        ...


def _yaw_of(quat_wxyz: np.ndarray) -> float:
    """Rotation about base z of the tool relative to pointing straight down."""
    rel = rotations.quat_mul(quat_wxyz, rotations.quat_conj(_DOWN))
    return float(rotations.quat_to_rotvec(rel)[2])


def _wrap(angle_rad: float, period_rad: float) -> float:
    """Angle folded into [−period/2, period/2)."""
    return (angle_rad + period_rad / 2) % period_rad - period_rad / 2


class PickCubeExpert:
    """Align over the cube (position and yaw modulo 90°), descend, close, lift."""

    def __init__(self, task: TaskSpec, *, rng: np.random.Generator | None = None, noise: float = 0.0,
                 grasp_above_center_m: float = 0.0) -> None:
        self.task = task
        self.scale_m = task.action.translation_scale_m
        self.scale_rad = max(task.action.rotation_scale_rad, 1e-9)
        self.lift_m = task.twin.pick_cube.lift_height_m if task.twin else 0.05
        self.noise = noise
        self.grasp_above_center_m = grasp_above_center_m
        """Close the fingers this far above the cube's centre (0: the centre, 2 mm low). Learned
        policies often grasp near the top edge, so the arm rides higher than the cube (classifier data)."""
        self.rng = rng or np.random.default_rng()
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self.wait = 0

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        cube = info["privileged"]["cube_pose"]
        tcp = np.asarray(obs["tcp_pose"], dtype=np.float64)
        cube_yaw = _yaw_of_cube(cube[3:])
        yaw_err = _wrap(cube_yaw - _yaw_of(tcp[3:]), math.pi / 2)
        above = np.array([cube[0], cube[1], cube[2] + 0.07])
        grasp = np.array([cube[0], cube[1], max(cube[2] - 0.002 + self.grasp_above_center_m,
                                                 self.task.workspace.min_m[2])])
        gripper = -1.0
        if self.phase == "approach":
            goal = above
            if np.linalg.norm(tcp[:2] - above[:2]) < 0.006 and abs(yaw_err) < 0.05:
                self.phase = "descend"
        if self.phase == "descend":
            goal = grasp
            if abs(tcp[2] - grasp[2]) < 0.004 and np.linalg.norm(tcp[:2] - grasp[:2]) < 0.006:
                self.phase, self.wait = "close", 0
            elif np.linalg.norm(tcp[:2] - grasp[:2]) > 0.015:
                self.phase = "approach"  # the cube moved: line up again
        if self.phase == "close":
            goal, gripper = grasp, 1.0
            self.wait += 1
            if self.wait >= 4:
                self.phase = "lift"
        if self.phase == "lift":
            goal, gripper = np.array([cube[0], cube[1], cube[2] + self.lift_m + 0.06]), 1.0
            if float(obs["gripper_width"][0]) < 0.01:
                self.phase = "approach"  # closed on nothing: the grasp missed
        action = np.zeros(7)
        action[:3] = (goal - tcp[:3]) / self.scale_m
        action[5] = yaw_err / self.scale_rad if self.phase in ("approach", "descend") else 0.0
        action[6] = gripper
        if self.noise:
            action[:6] += self.rng.normal(0.0, self.noise, 6)
        return np.clip(action, -1.0, 1.0)


def _yaw_of_cube(quat_wxyz: np.ndarray) -> float:
    """Yaw of the cube's x axis about base z."""
    m = rotations.quat_to_mat(quat_wxyz)
    return math.atan2(m[1, 0], m[0, 0])


class PegInsertionExpert:
    """Line the peg tip up over the hole above its top, then descend, correcting x and y."""

    def __init__(self, task: TaskSpec, *, rng: np.random.Generator | None = None, noise: float = 0.0) -> None:
        self.task = task
        self.scale_m = task.action.translation_scale_m
        self.noise = noise
        self.rng = rng or np.random.default_rng()
        self.reset()

    def reset(self) -> None:
        self.phase = "align"

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        hole = info["privileged"]["hole_pos"]
        tip = info["privileged"]["peg_tip_pos"]
        err_xy = hole[:2] - tip[:2]
        action = np.zeros(7)
        if self.phase == "align":
            dz = (hole[2] + 0.01) - tip[2]
            action[:2] = err_xy / self.scale_m
            action[2] = dz / self.scale_m
            if np.linalg.norm(err_xy) < 0.0015 and abs(dz) < 0.006:
                self.phase = "insert"
        else:
            action[:2] = err_xy / self.scale_m
            action[2] = -1.0 if np.linalg.norm(err_xy) < 0.004 else 0.3
        if self.noise:
            action[:3] += self.rng.normal(0.0, self.noise, 3)
        return np.clip(action, -1.0, 1.0)


EXPERTS = {"pick_cube": PickCubeExpert, "peg_insertion": PegInsertionExpert}


def make_expert(task: TaskSpec, *, seed: int = 0, noise: float = 0.0) -> Expert:
    """The scripted expert of a twin task."""
    kind = task.twin.kind if task.twin is not None else None
    if kind not in EXPERTS:
        raise ValueError(f"no scripted expert for task {task.name!r} (twin kind {kind!r}); experts exist for "
                         f"{sorted(EXPERTS)}")
    return EXPERTS[kind](task, rng=np.random.default_rng(seed), noise=noise)
