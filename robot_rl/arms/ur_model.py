"""Kinematics and dynamics of a UR arm, computed on the robot PC from its MuJoCo model.

The impedance law needs the TCP pose, its jacobian, the mass matrix and the coriolis torques every
2 ms tick. Asking the controller (`getJacobian`, `getMassMatrix`, ...) costs one blocking RTDE
round trip each; the arm's model (sim/ur5e_twin.xml: UR's published DH table and link masses)
gives them from the measured joint state in ≈ 10 µs with no traffic, leaving the command as the
tick's only round trip.

Frames: the model's world frame is UR's DH base frame, the frame the controller reports TCP poses
in (RTDE `actual_TCP_pose`, ur_description's `base`); the TCP is the model's `tcp` site (flange +
0.15 m along the flange z axis), which `URArm` also sets as the controller's TCP. `URArm` checks at
connect that the controller's TCP pose agrees with this model's.

Not thread-safe: one owner (the control thread).
"""

from __future__ import annotations

import mujoco
import numpy as np

from robot_rl import paths
from robot_rl.twin import arm_models
from robot_rl.twin import scene as sc


class URModel:
    """One arm's kinematics and dynamics at a given joint state.

    Args:
        arm: arm model name in `twin/arm_models.py` ("ur5e").
        gravity: also compute the gravity torques (`compute` returns them; zeros otherwise). UR's
            direct-torque mode is assumed to compensate gravity itself, like Franka's firmware,
            so the backend leaves this off by default (not verified on hardware).
    """

    def __init__(self, arm: str = "ur5e", *, gravity: bool = False) -> None:
        arm_model = arm_models.arm_model(arm)
        self.n_joints = arm_model.spec.n_joints
        self.model = mujoco.MjModel.from_xml_path(str(paths.sim_file(arm_model.mjcf)))
        self.gravity = gravity
        # Coriolis and centrifugal torques are the bias forces without gravity: this private model
        # has gravity off, and gravity torques come from a second pass with it on and q̇ = 0.
        self._g = self.model.opt.gravity.copy()
        self.model.opt.gravity[:] = 0.0
        self.data = mujoco.MjData(self.model)
        jid = [self.model.joint(name).id for name in sc.arm_joint_names(self.n_joints)]
        self._qadr = np.array([self.model.jnt_qposadr[j] for j in jid])
        self._dadr = np.array([self.model.jnt_dofadr[j] for j in jid])
        if not np.array_equal(self._dadr, np.arange(self.n_joints)):
            raise ValueError(f"{arm_model.mjcf}: the arm's joints must be the model's first {self.n_joints} dofs")
        self._tcp = self.model.site(sc.TCP_SITE).id
        # Fingers open: their 60 g barely change the arm's inertia, and the gripper reports its own width.
        for name in sc.FINGER_JOINTS:
            self.data.qpos[self.model.jnt_qposadr[self.model.joint(name).id]] = arm_model.spec.gripper_max_width_m / 2
        self._jac = np.zeros((6, self.model.nv))
        self._mass = np.zeros((self.model.nv, self.model.nv))
        self._bias = np.zeros(self.model.nv)
        self._quat = np.zeros(4)

    def tcp_offset_flange(self) -> list[float]:
        """The TCP in the flange frame as UR's `[x y z rx ry rz]` (m, rotation vector): what
        `setTcp` must be given for the controller's TCP to be this model's.

        The model's hand body is the flange (DH frame 6, sim/ur5e_twin.xml), so the offset is the
        tcp site's place in the hand."""
        m = self.model
        hand = m.body(sc.HAND_BODY).id
        if m.site_bodyid[self._tcp] != hand or not np.allclose(m.site_quat[self._tcp], [1, 0, 0, 0]):
            raise ValueError("the model's tcp site must sit on the hand body, unrotated")
        x, y, z = (float(v) for v in m.site_pos[self._tcp])
        return [x, y, z, 0.0, 0.0, 0.0]

    def compute(self, q_rad: np.ndarray, dq_rad_per_s: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Pose, jacobian, mass matrix, coriolis and gravity torques at (q, q̇).

        Args:
            q_rad, dq_rad_per_s: (n,) measured joint positions and velocities.

        Returns:
            pose_base_tcp (7,) `[x y z qw qx qy qz]` (m), jacobian (6, n), mass matrix (n, n)
            [kg·m²], coriolis (n,) [N·m], gravity (n,) [N·m] (zeros unless `gravity`). Fresh arrays.
        """
        m, d, n = self.model, self.data, self.n_joints
        d.qpos[:n] = q_rad
        d.qvel[:n] = dq_rad_per_s
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        mujoco.mj_makeM(m, d)
        mujoco.mj_comVel(m, d)
        mujoco.mj_rne(m, d, 0, self._bias)
        mujoco.mj_fullM(m, d, self._mass)
        mujoco.mj_jacSite(m, d, self._jac[:3], self._jac[3:], self._tcp)
        mujoco.mju_mat2Quat(self._quat, d.site_xmat[self._tcp])
        if self._quat[0] < 0:
            self._quat *= -1.0
        pos = d.site_xpos[self._tcp]
        pose = np.array([pos[0], pos[1], pos[2], *self._quat])
        coriolis = self._bias[:n].copy()
        gravity = np.zeros(n)
        if self.gravity:
            m.opt.gravity[:] = self._g
            d.qvel[:n] = 0.0
            mujoco.mj_comVel(m, d)
            mujoco.mj_rne(m, d, 0, self._bias)
            gravity = self._bias[:n].copy()
            m.opt.gravity[:] = 0.0
        return pose, self._jac[:, :n].copy(), self._mass[:n, :n].copy(), coriolis, gravity
