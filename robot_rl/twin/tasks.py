"""Ground truth and physics randomization of the twin tasks (the `SceneHooks` of the control core).

Each task places its objects at reset from a seed, and reports privileged vectors every tick:
`success` (1.0 or 0.0), object poses (absolute, and relative to the TCP where a policy needs
the difference: robosuite's `gripper_to_cube_pos` habit), and safety trackers since the last scene reset
(`peak_contact_force_n`, `tcp_min_m`, `tcp_max_m`) that tests and benchmarks read. Visual
randomization (colours, lights) happens on the render side (`twin/camera.py`), since it does not
touch physics.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from robot_rl.control import rotations
from robot_rl.task_spec import PegInsertionParams, PickCubeParams, TwinSpec
from robot_rl.twin import scene as sc
from robot_rl.twin.arm import TwinArm

_COMMON = (("success", 1), ("peak_contact_force_n", 1), ("tcp_min_m", 3), ("tcp_max_m", 3))


class TwinTask:
    """Shared bookkeeping; subclasses place objects and judge success."""

    extra_sizes: tuple[tuple[str, int], ...] = ()

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, arm: TwinArm) -> None:
        self.model, self.data, self.arm = model, data, arm
        self.privileged_sizes = _COMMON + self.extra_sizes
        self.sim_state_size = sc.sim_state_size(model)
        self._tcp = model.site(sc.TCP_SITE).id
        self._tcp_min = np.full(3, np.inf)
        self._tcp_max = np.full(3, -np.inf)

    def reset_scene(self, seed: int) -> None:
        self.place_objects(np.random.default_rng(seed))
        mujoco.mj_forward(self.model, self.data)
        self.reset_trackers()

    def reset_trackers(self) -> None:
        self.arm.reset_peaks()
        self._tcp_min[:] = np.inf
        self._tcp_max[:] = -np.inf

    def after_tick(self) -> None:
        pos = self.data.site_xpos[self._tcp]
        np.minimum(self._tcp_min, pos, out=self._tcp_min)
        np.maximum(self._tcp_max, pos, out=self._tcp_max)

    def write_privileged(self, out: dict[str, np.ndarray]) -> None:
        out["success"][0] = float(self.success())
        out["peak_contact_force_n"][0] = self.arm.peak_robot_contact_force_n
        out["tcp_min_m"][:] = self._tcp_min
        out["tcp_max_m"][:] = self._tcp_max
        self.write_objects(out)

    def write_sim_state(self, out: np.ndarray) -> None:
        sc.write_sim_state(self.model, self.data, out)

    def teleport_arm(self, pose_base_tcp: np.ndarray, gripper_width_m: float) -> None:
        self.arm.teleport(pose_base_tcp, gripper_width_m)

    # ---- per task ----------------------------------------------------------------------------

    def place_objects(self, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def success(self) -> bool:
        raise NotImplementedError

    def write_objects(self, out: dict[str, np.ndarray]) -> None:
        raise NotImplementedError


class PickCubeTask(TwinTask):
    """Lift the cube `lift_height_m` above the table.

    Privileged: `cube_pose` (xyz m, quat wxyz), `cube_from_tcp_m` (cube centre − TCP, base frame)
    and `cube_yaw_from_tcp_rad` (cube yaw − tool yaw about base z, folded into [−π/4, π/4): the
    cube looks the same every 90°). The relative pair spares a state policy from learning the
    subtraction of two standardized absolute positions, where its centimetre errors came from.
    """

    extra_sizes = (("cube_pose", 7), ("cube_from_tcp_m", 3), ("cube_yaw_from_tcp_rad", 1))

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, arm: TwinArm, params: PickCubeParams) -> None:
        super().__init__(model, data, arm)
        self.params = params
        joint = model.joint("cube")
        self._qadr = model.jnt_qposadr[joint.id]
        self._dadr = model.jnt_dofadr[joint.id]
        geom = model.geom("cube")
        self._half = float(geom.size[2])
        self._cube_body = model.body("cube").id

    def place_objects(self, rng: np.random.Generator) -> None:
        p = self.params
        xy = np.asarray(p.object_center_m) + rng.uniform(-1, 1, 2) * np.asarray(p.object_range_m)
        yaw = rng.uniform(-p.object_yaw_range_rad, p.object_yaw_range_rad)
        self.data.qpos[self._qadr:self._qadr + 3] = [xy[0], xy[1], self._half + 5e-4]
        self.data.qpos[self._qadr + 3:self._qadr + 7] = rotations.rotvec_to_quat(np.array([0.0, 0.0, yaw]))
        self.data.qvel[self._dadr:self._dadr + 6] = 0.0

    def success(self) -> bool:
        bottom = self.data.qpos[self._qadr + 2] - self._half
        return bool(bottom > self.params.lift_height_m)

    def write_objects(self, out: dict[str, np.ndarray]) -> None:
        out["cube_pose"][:] = self.data.qpos[self._qadr:self._qadr + 7]
        np.subtract(out["cube_pose"][:3], self.data.site_xpos[self._tcp], out=out["cube_from_tcp_m"])
        # Yaw of each frame's x axis about base z, read off the rotation matrices (row-major 3×3).
        cube_m, tool_m = self.data.xmat[self._cube_body], self.data.site_xmat[self._tcp]
        rel = math.atan2(cube_m[3], cube_m[0]) - math.atan2(tool_m[3], tool_m[0])
        out["cube_yaw_from_tcp_rad"][0] = (rel + math.pi / 4) % (math.pi / 2) - math.pi / 4


class PegInsertionTask(TwinTask):
    """Push the held peg's tip `insert_depth_m` below the hole's top, inside its footprint."""

    extra_sizes = (("hole_pos", 3), ("peg_tip_pos", 3))

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, arm: TwinArm,
                 params: PegInsertionParams) -> None:
        super().__init__(model, data, arm)
        self.params = params
        self._mocap = model.body("hole").mocapid[0]
        self._tip = model.site("tool_peg_tip").id
        self._top_z = float(model.body("hole").pos[2])

    def place_objects(self, rng: np.random.Generator) -> None:
        p = self.params
        xy = np.asarray(p.hole_center_m) + rng.uniform(-1, 1, 2) * np.asarray(p.hole_range_m)
        self.data.mocap_pos[self._mocap] = [xy[0], xy[1], self._top_z]

    def success(self) -> bool:
        tip = self.data.site_xpos[self._tip]
        hole = self.data.mocap_pos[self._mocap]
        inside = np.all(np.abs(tip[:2] - hole[:2]) < self.params.hole_half_width_m)
        return bool(inside and tip[2] < hole[2] - self.params.insert_depth_m)

    def write_objects(self, out: dict[str, np.ndarray]) -> None:
        out["hole_pos"][:] = self.data.mocap_pos[self._mocap]
        out["peg_tip_pos"][:] = self.data.site_xpos[self._tip]


def make_task(spec: TwinSpec, model: mujoco.MjModel, data: mujoco.MjData, arm: TwinArm) -> TwinTask:
    """The scene hooks for `spec.kind`."""
    if spec.kind == "pick_cube":
        return PickCubeTask(model, data, arm, spec.pick_cube)
    if spec.kind == "peg_insertion":
        return PegInsertionTask(model, data, arm, spec.peg_insertion)
    raise ValueError(f"unknown twin task kind {spec.kind!r}")  # unreachable: TwinSpec validates kind
