"""The UR double assembled: the task's twin scene with the UR5e, a simulated controller reachable
through `doubles/ur_rtde.py`, and the Robotiq URCap socket on 127.0.0.1 driving the twin's gripper.

`URDouble` is also the control core's `SceneHooks` (the twin task's, passed through), and sums the
wall time of the simulated hardware (physics, servo, RTDE sampling) in `physics_ns` so benchmarks
can subtract it from a tick."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import mujoco
import numpy as np

from robot_rl.errors import ConfigError
from robot_rl.task_spec import TaskSpec
from robot_rl.twin import scene as sc
from robot_rl.twin.arm import TwinArm
from robot_rl.twin.backend import scene_source
from robot_rl.twin.doubles import ur_rtde
from robot_rl.twin.doubles.robotiq import RobotiqSocketDouble
from robot_rl.twin.doubles.ur_controller import SimulatedURController
from robot_rl.twin.tasks import TwinTask, make_task

ARM = "ur5e"
_HOSTS = itertools.count(1)


@dataclass
class URDouble:
    """A running UR double, and the core's scene hooks. `close()` takes it off the simulated network
    and stops the gripper server. Control thread only (the gripper server has its own threads)."""

    controller: SimulatedURController
    hooks: TwinTask
    gripper_server: RobotiqSocketDouble

    # ---- SceneHooks: the twin task's ------------------------------------------------------------

    @property
    def privileged_sizes(self) -> tuple[tuple[str, int], ...]:
        return self.hooks.privileged_sizes

    @property
    def sim_state_size(self) -> int:
        return self.hooks.sim_state_size

    def reset_scene(self, seed: int) -> None:
        self.hooks.reset_scene(seed)

    def after_tick(self) -> None:
        self.hooks.after_tick()

    def write_privileged(self, out: dict[str, np.ndarray]) -> None:
        self.hooks.write_privileged(out)

    def write_sim_state(self, out: np.ndarray) -> None:
        self.hooks.write_sim_state(out)

    def teleport_arm(self, pose_base_tcp: np.ndarray, gripper_width_m: float) -> None:
        """Place the arm (simulation only); the controller then holds it there."""
        self.hooks.teleport_arm(pose_base_tcp, gripper_width_m)
        self.controller.resync()

    @property
    def physics_ns(self) -> int:
        """Wall time [ns] the simulated hardware has taken so far (not the backend's work)."""
        return self.controller.physics_ns

    @property
    def hostname(self) -> str:
        """The address to give the UR backend (resolvable only through `doubles/ur_rtde.py`)."""
        return self.controller.hostname

    @property
    def vendor_module(self):
        """The module standing in for rtde_control, rtde_receive and dashboard_client."""
        return ur_rtde

    @classmethod
    def build(cls, task: TaskSpec, *, realtime: bool, seed: int = 0,
              resume_sim_state: np.ndarray | None = None) -> URDouble:
        """The double for `task`'s twin scene, scene laid out from `seed` (or resumed).

        Raises:
            ConfigError: the task has no twin, or `resume_sim_state` does not fit the scene.
        """
        source = scene_source(task, ARM)
        model = sc.build_model(source)
        data = mujoco.MjData(model)
        clock = "wall" if realtime else "sim"
        arm = TwinArm(model, data, clock=clock, arm=ARM)
        hooks = make_task(task.twin, model, data, arm)
        hooks.reset_scene(seed)
        if resume_sim_state is not None:
            if resume_sim_state.shape != (hooks.sim_state_size,):
                raise ConfigError(f"cannot resume the UR double from a state of shape {resume_sim_state.shape}; "
                                  f"this scene's state has {hooks.sim_state_size} entries")
            arm.resume(resume_sim_state)
        controller = SimulatedURController(arm, hostname=f"ur-double-{next(_HOSTS)}", clock=clock)
        ur_rtde.plug_in(controller)
        try:
            server = RobotiqSocketDouble(arm.set_gripper, lambda: controller.gripper_width_m,
                                         stroke_m=arm.spec.gripper_max_width_m).start()
        except BaseException:
            ur_rtde.unplug(controller)
            raise
        return cls(controller, hooks, server)

    def close(self) -> None:
        self.gripper_server.close()
        ur_rtde.unplug(self.controller)
