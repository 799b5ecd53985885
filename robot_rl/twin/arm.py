"""The twin arm: MuJoCo physics behind the same `ArmBackend` interface the real arms implement.

Each tick the control loop calls `read()` (which runs `mj_step1`: kinematics, inertia and bias
forces of the current state) and then `write_torque()` (which sets the motors and runs
`mj_step2`: one 1 ms integration step). The arm's own weight is compensated by MuJoCo
(`gravcomp`), like Franka's firmware does (and, we assume, UR's direct-torque mode), so
`gravity_nm` is zero and the law adds coriolis only. The arm model (Panda, UR5e) comes from
`arm_models.py`; its joints are joint1..jointN.

External wrench: the sum of contact forces that non-robot geoms exert on the hand subtree (hand,
fingers, mounted tool), expressed at the TCP in the base frame: what a wrist F/T sensor minus its
static load reads.
"""

from __future__ import annotations

import time

import mujoco
import numpy as np

from robot_rl.control import rotations
from robot_rl.drivers.arm import ArmCommand, ArmReading
from robot_rl.twin import arm_models
from robot_rl.twin import scene as sc


def _as_slice(index: np.ndarray) -> slice | np.ndarray:
    if len(index) and np.array_equal(index, np.arange(index[0], index[0] + len(index))):
        return slice(int(index[0]), int(index[0]) + len(index))
    return index


GRIPPER_SPEED_M_PER_S = 0.1
"""Closing/opening speed of the opening between the fingers (the Franka hand moves up to 0.1 m/s,
the Robotiq 2F-85 0.02-0.15 m/s)."""


class TwinArm:
    """`ArmBackend` over a MuJoCo model. Owned by the control thread; not thread-safe.

    Args:
        model, data: the physics model and its data (shared with the scene hooks), built with
            this arm (`scene.SceneSource.arm`).
        clock: "sim" stamps readings with simulated time (stepped runs: the watchdog then counts
            simulated time), "wall" with `time.monotonic_ns()` (real-time runs, like a robot).
        arm: the arm model's name in `arm_models.ARM_MODELS` (its limits, home posture, joints).
    """

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, *, clock: str = "sim",
                 arm: str = arm_models.DEFAULT_ARM) -> None:
        if clock not in ("sim", "wall"):
            raise ValueError(f"clock must be 'sim' or 'wall', got {clock!r}")
        self.model, self.data, self.clock = model, data, clock
        self.spec = arm_models.arm_model(arm).arm_spec()
        n = self.spec.n_joints
        jid = [model.joint(name).id for name in sc.arm_joint_names(n)]
        self._qadr = np.array([model.jnt_qposadr[j] for j in jid])
        self._dadr = np.array([model.jnt_dofadr[j] for j in jid])
        self._act = np.array([model.actuator(name).id for name in sc.arm_actuator_names(n)])
        self._grip_act = model.actuator(sc.GRIPPER_ACTUATOR).id
        self._finger_qadr = np.array([model.jnt_qposadr[model.joint(n).id] for n in sc.FINGER_JOINTS])
        self._tcp = model.site(sc.TCP_SITE).id
        robot = sc.subtree_bodies(model, model.body(sc.ROBOT_ROOT_BODY).id)
        hand = sc.subtree_bodies(model, model.body(sc.HAND_BODY).id)
        self.robot_geoms = sc.geom_mask(model, robot)
        self.hand_geoms = sc.geom_mask(model, hand)
        self._jac6 = np.zeros((6, model.nv))
        self._quat = np.zeros(4)
        self._wrench = np.zeros(6)
        self._zeros = np.zeros(n)
        self._zeros.flags.writeable = False
        # Index with slices when the arm's dofs are contiguous (they are in the sim/ arms): much cheaper.
        self._dofs = _as_slice(self._dadr)
        self._qpos = _as_slice(self._qadr)
        self._mass_idx = ((self._dofs, self._dofs) if isinstance(self._dofs, slice)
                          else np.ix_(self._dadr, self._dadr))
        self._mass = np.zeros((model.nv, model.nv))
        self._cf = np.zeros(6)
        self._stepped1 = False
        self.peak_robot_contact_force_n = 0.0
        """Largest normal force of any robot-vs-environment contact since `reset_peaks()`."""
        self.last_robot_contact_force_n = 0.0
        self.set_home()

    # ---- helpers for resets and tests (not part of ArmBackend) ----------------------------------

    def set_home(self) -> None:
        """Teleport the arm to the home posture with the gripper open (start-up only)."""
        self.data.qpos[self._qadr] = self.spec.q_home_rad
        self.data.qpos[self._finger_qadr] = self.spec.gripper_max_width_m / 2
        self.data.qvel[:] = 0.0
        self.data.ctrl[:] = 0.0
        self.data.ctrl[self._grip_act] = self._grip_target = self.spec.gripper_max_width_m / 2
        mujoco.mj_forward(self.model, self.data)
        self._stepped1 = False
        self._wrench = np.zeros(6)

    def teleport(self, pose_base_tcp: np.ndarray, gripper_width_m: float) -> None:
        """Place the arm at rest at `pose_base_tcp` (IK from the home posture: deterministic) with the
        fingers at `gripper_width_m`. Simulation-only shortcut for fast, reproducible resets.

        Raises:
            ValueError: the pose is out of reach (IK residual above 1 mm / 0.01 rad).
        """
        q = solve_ik(self.model, self._qadr, self._dadr, self._tcp, pose_base_tcp,
                     np.asarray(self.spec.q_home_rad), np.asarray(self.spec.q_min_rad), np.asarray(self.spec.q_max_rad))
        d = self.data
        d.qpos[self._qadr] = q
        half = float(np.clip(gripper_width_m / 2, 0.0, self.spec.gripper_max_width_m / 2))
        d.qpos[self._finger_qadr] = half
        d.ctrl[self._grip_act] = self._grip_target = half
        d.qvel[self._dadr] = 0.0
        d.qvel[[self.model.jnt_dofadr[self.model.joint(n).id] for n in sc.FINGER_JOINTS]] = 0.0
        d.ctrl[self._act] = 0.0
        d.qacc_warmstart[:] = 0.0  # the solver's warm start would carry history into the next step
        mujoco.mj_forward(self.model, d)
        self._stepped1 = False
        self._wrench = np.zeros(6)

    def resume(self, sim_state: np.ndarray) -> None:
        """Put the scene back as a dead control loop's last snapshot had it (qpos, mocap), at rest,
        the fingers holding their opening: a restarted twin holds the arm where it was."""
        d = self.data
        sc.load_sim_state(self.model, d, sim_state)
        d.qvel[:] = 0.0
        d.ctrl[:] = 0.0
        half = float(np.clip(d.qpos[self._finger_qadr].mean(), 0.0, self.spec.gripper_max_width_m / 2))
        d.ctrl[self._grip_act] = self._grip_target = half
        d.qacc_warmstart[:] = 0.0
        mujoco.mj_forward(self.model, d)
        self._stepped1 = False
        self._wrench = np.zeros(6)

    def reset_peaks(self) -> None:
        self.peak_robot_contact_force_n = 0.0

    def now_ns(self) -> int:
        if self.clock == "sim":
            return int(round(self.data.time * 1e9))
        return time.monotonic_ns()

    # ---- ArmBackend ------------------------------------------------------------------------------

    def read(self) -> ArmReading:
        m, d = self.model, self.data
        mujoco.mj_step1(m, d)
        self._stepped1 = True
        quat = self._quat
        mujoco.mju_mat2Quat(quat, d.site_xmat[self._tcp])
        if quat[0] < 0:
            quat *= -1.0
        pos = d.site_xpos[self._tcp]
        mujoco.mj_jacSite(m, d, self._jac6[:3], self._jac6[3:], self._tcp)
        mujoco.mj_fullM(m, d, self._mass)
        dofs = self._dofs
        jac = self._jac6[:, dofs].copy()
        dq = d.qvel[dofs].copy()
        # gravcomp removes gravity; what is left of the bias is coriolis/centrifugal.
        coriolis = d.qfrc_bias[dofs] - d.qfrc_gravcomp[dofs]
        return ArmReading(
            t_capture_ns=self.now_ns(),
            q_rad=d.qpos[self._qpos].copy(),
            dq_rad_per_s=dq,
            pose_base_tcp=np.array([pos[0], pos[1], pos[2], quat[0], quat[1], quat[2], quat[3]]),
            twist_base_tcp=jac @ dq,
            jacobian_base_tcp=jac,
            mass_matrix=self._mass[self._mass_idx].copy(),
            coriolis_nm=coriolis,
            gravity_nm=self._zeros,
            wrench_ext_base=self._wrench,
            gripper_width_m=float(d.qpos[self._finger_qadr[0]] + d.qpos[self._finger_qadr[1]]),
        )

    def write_torque(self, tau_nm: np.ndarray) -> None:
        self.data.ctrl[self._act] = tau_nm
        # The fingers travel at most GRIPPER_SPEED like the Franka hand's: move the servo setpoint.
        c = self.data.ctrl[self._grip_act]
        if c != self._grip_target:
            step = GRIPPER_SPEED_M_PER_S / 2 * self.model.opt.timestep
            self.data.ctrl[self._grip_act] = min(max(self._grip_target, c - step), c + step)
        if not self._stepped1:
            mujoco.mj_step1(self.model, self.data)
        mujoco.mj_step2(self.model, self.data)
        self._stepped1 = False
        # Contact forces are only consistent with d.contact right after mj_step2 (mj_step1 redoes
        # collision detection but leaves efc_force from the previous step): read them here.
        self._wrench = self._external_wrench(self.data.site_xpos[self._tcp])

    def write(self, command: ArmCommand) -> None:
        """Apply the law's torques and run one physics step (the twins are torque-controlled)."""
        self.write_torque(command.tau_nm)

    def set_gripper(self, width_m: float) -> None:
        """New opening target [m]; the fingers close or open toward it at GRIPPER_SPEED_M_PER_S."""
        self._grip_target = float(np.clip(width_m / 2, 0.0, self.spec.gripper_max_width_m / 2))

    def recover(self) -> None:
        """Nothing to recover in simulation."""

    def close(self) -> None:
        """Nothing to release in simulation."""

    # ---- contacts --------------------------------------------------------------------------------

    def _external_wrench(self, tcp_pos: np.ndarray) -> np.ndarray:
        """Force [N] and torque [N·m] at the TCP from environment contacts on the hand subtree.

        Also tracks the robot's contact force: the larger of the net force on the hand (what the
        reflex watches) and the largest contact on any other link."""
        m, d = self.model, self.data
        wrench = np.zeros(6)
        ncon = d.ncon
        if ncon == 0:
            self.last_robot_contact_force_n = 0.0
            return wrench
        pairs = d.contact.geom[:ncon]
        robot = self.robot_geoms[pairs]
        mixed = robot[:, 0] != robot[:, 1]
        if not mixed.any():
            self.last_robot_contact_force_n = 0.0
            return wrench
        g1, g2 = pairs[:, 0], pairs[:, 1]
        mixed = np.flatnonzero(mixed)
        peak = 0.0
        for i in mixed:
            mujoco.mj_contactForce(m, d, int(i), self._cf)
            hand_is_1 = self.hand_geoms[g1[i]]
            if not (hand_is_1 or self.hand_geoms[g2[i]]):
                peak = max(peak, self._cf[0])  # an arm link touches something
                continue
            frame = d.contact.frame[i].reshape(3, 3)
            f_world = frame.T @ self._cf[:3]  # force geom1 exerts on geom2
            if hand_is_1:
                f_world = -f_world
            fx, fy, fz = f_world
            p = d.contact.pos[i]
            rx, ry, rz = p[0] - tcp_pos[0], p[1] - tcp_pos[1], p[2] - tcp_pos[2]
            # r × f in scalars: ≈ 10× faster than np.cross at size 3 (hot path: every tick in contact).
            wrench[0] += fx
            wrench[1] += fy
            wrench[2] += fz
            wrench[3] += ry * fz - rz * fy
            wrench[4] += rz * fx - rx * fz
            wrench[5] += rx * fy - ry * fx
        peak = max(peak, float(np.linalg.norm(wrench[:3])))
        self.last_robot_contact_force_n = peak
        self.peak_robot_contact_force_n = max(self.peak_robot_contact_force_n, peak)
        return wrench


def solve_ik(model: mujoco.MjModel, qadr: np.ndarray, dadr: np.ndarray, site: int,
             goal: np.ndarray, q_start: np.ndarray, q_min: np.ndarray, q_max: np.ndarray, *,
             iterations: int = 300, damping: float = 1e-5) -> np.ndarray:
    """Joint positions putting `site` at `goal` (damped least squares from `q_start`, posture kept
    near `q_start` in the nullspace). Works on fresh scratch data (the model's default pose for
    everything but the arm): objects elsewhere shift the jacobian's rounding, and the answer
    must depend on the goal alone."""
    scratch = mujoco.MjData(model)
    q = np.array(q_start, dtype=np.float64)
    jacp = np.zeros((3, model.nv))
    jacr = np.zeros((3, model.nv))
    quat = np.zeros(4)
    err = np.zeros(6)
    for _ in range(iterations):
        scratch.qpos[qadr] = q
        mujoco.mj_kinematics(model, scratch)
        mujoco.mj_comPos(model, scratch)
        err[:3] = goal[:3] - scratch.site_xpos[site]
        mujoco.mju_mat2Quat(quat, scratch.site_xmat[site])
        err[3:] = rotations.orientation_error(goal[3:], quat)
        if np.linalg.norm(err[:3]) < 1e-5 and np.linalg.norm(err[3:]) < 1e-4:
            break
        mujoco.mj_jacSite(model, scratch, jacp, jacr, site)
        jac = np.vstack([jacp[:, dadr], jacr[:, dadr]])
        jjt = jac @ jac.T + damping * np.eye(6)
        dq = jac.T @ np.linalg.solve(jjt, err)
        null = np.eye(len(q)) - jac.T @ np.linalg.solve(jjt, jac)
        dq += null @ (0.05 * (q_start - q))
        q = np.clip(q + dq, q_min + 0.01, q_max - 0.01)
    if np.linalg.norm(err[:3]) > 1e-3 or np.linalg.norm(err[3:]) > 1e-2:
        raise ValueError(f"pose {np.round(goal, 4).tolist()} is out of the twin arm's reach "
                         f"(IK residual {np.linalg.norm(err[:3]) * 1e3:.1f} mm, {np.linalg.norm(err[3:]):.3f} rad)")
    return q
