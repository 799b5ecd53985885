"""The twin as a robot-server backend: a picklable recipe building the arm and scene hooks."""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from robot_rl.control.snapshot import SnapshotLayout
from robot_rl.drivers.arm import ArmSpec
from robot_rl.errors import ConfigError
from robot_rl.task_spec import TaskSpec
from robot_rl.twin import scene as sc
from robot_rl.twin.arm import PANDA_SPEC, TwinArm
from robot_rl.twin.tasks import TwinTask, make_task


def scene_source(task: TaskSpec) -> sc.SceneSource:
    if task.twin is None:
        raise ConfigError(f"task {task.name!r} has no `twin:` section, so it cannot run on the twin backend")
    return sc.SceneSource(task.twin.scene, task.twin.tool)


@dataclass(frozen=True)
class TwinBackend:
    """`BackendFactory` of the MuJoCo twin for one task. Built inside the control process."""

    task: TaskSpec
    initial_seed: int = 0
    """Seed of the scene layout at start-up (before the first reset)."""

    def build(self, *, realtime: bool, resume_sim_state: np.ndarray | None = None) -> tuple[TwinArm, TwinTask]:
        model = sc.build_model(scene_source(self.task))
        data = mujoco.MjData(model)
        arm = TwinArm(model, data, clock="wall" if realtime else "sim")
        hooks = make_task(self.task.twin, model, data, arm)
        hooks.reset_scene(self.initial_seed)
        if resume_sim_state is not None:
            if resume_sim_state.shape != (hooks.sim_state_size,):
                raise ConfigError(f"cannot resume the twin from a state of shape {resume_sim_state.shape}; "
                                  f"this scene's state has {hooks.sim_state_size} entries")
            arm.resume(resume_sim_state)
        return arm, hooks

    def scene_source(self) -> sc.SceneSource:
        """Files of the simulated scene (for the renderers)."""
        return scene_source(self.task)

    def arm_spec(self) -> ArmSpec:
        return ArmSpec(name="twin", **PANDA_SPEC)

    def layout(self) -> SnapshotLayout:
        model = sc.build_model(scene_source(self.task))
        data = mujoco.MjData(model)
        hooks = make_task(self.task.twin, model, data, TwinArm(model, data))
        return SnapshotLayout(7, hooks.privileged_sizes, hooks.sim_state_size)
