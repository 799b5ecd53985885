"""The twin as a robot-server backend: a picklable recipe building the arm and scene hooks."""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from robot_rl.control.snapshot import SnapshotLayout
from robot_rl.drivers.arm import ArmSpec
from robot_rl.errors import ConfigError
from robot_rl.task_spec import TaskSpec
from robot_rl.twin import arm_models
from robot_rl.twin import scene as sc
from robot_rl.twin.arm import TwinArm
from robot_rl.twin.tasks import TwinTask, make_task


def scene_source(task: TaskSpec, arm: str | None = None) -> sc.SceneSource:
    """Files of `task`'s twin scene, with `arm` (default: the task's `twin.arm`) as its arm.

    Raises:
        ConfigError: the task has no twin, or `arm` is not a registered arm model.
    """
    if task.twin is None:
        raise ConfigError(f"task {task.name!r} has no `twin:` section, so it cannot run on the twin backend")
    arm = task.twin.arm if arm is None else arm
    arm_models.arm_model(arm)  # an unknown name fails here, naming the choices
    return sc.SceneSource(task.twin.scene, task.twin.tool, arm=arm)


@dataclass(frozen=True)
class TwinBackend:
    """`BackendFactory` of the MuJoCo twin for one task. Built inside the control process."""

    task: TaskSpec
    initial_seed: int = 0
    """Seed of the scene layout at start-up (before the first reset)."""
    arm: str | None = None
    """Arm model ("panda", "ur5e"); None: the task's `twin.arm`."""

    def __post_init__(self) -> None:
        scene_source(self.task, self.arm)  # fail at construction, in the caller's process

    def build(self, *, realtime: bool, resume_sim_state: np.ndarray | None = None) -> tuple[TwinArm, TwinTask]:
        source = self.scene_source()
        model = sc.build_model(source)
        data = mujoco.MjData(model)
        arm = TwinArm(model, data, clock="wall" if realtime else "sim", arm=source.arm)
        hooks = make_task(self.task.twin, model, data, arm)
        hooks.reset_scene(self.initial_seed)
        if resume_sim_state is not None:
            if resume_sim_state.shape != (hooks.sim_state_size,):
                raise ConfigError(f"cannot resume the twin from a state of shape {resume_sim_state.shape}; "
                                  f"this scene's state has {hooks.sim_state_size} entries")
            arm.resume(resume_sim_state)
        return arm, hooks

    def scene_source(self) -> sc.SceneSource:
        """Files of the simulated scene, arm included (for the renderers)."""
        return scene_source(self.task, self.arm)

    def arm_spec(self) -> ArmSpec:
        return arm_models.arm_model(self.scene_source().arm).arm_spec()

    def layout(self) -> SnapshotLayout:
        source = self.scene_source()
        model = sc.build_model(source)
        data = mujoco.MjData(model)
        arm = TwinArm(model, data, arm=source.arm)
        hooks = make_task(self.task.twin, model, data, arm)
        return SnapshotLayout(arm.spec.n_joints, hooks.privileged_sizes, hooks.sim_state_size)
