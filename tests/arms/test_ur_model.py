"""The UR backend's pieces that need no controller: the model on the robot PC, the fault mapping,
and imports without the `ur` extra."""

from __future__ import annotations

import subprocess
import sys

import mujoco
import numpy as np
import pytest

from robot_rl import paths
from robot_rl.arms.ur_arm import fault_of, pose_to_ur, ur_to_quat
from robot_rl.arms.ur_model import URModel
from robot_rl.control import rotations
from robot_rl.drivers.arm import ArmFault
from robot_rl.twin import arm_models

ATOL = 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_model_matches_the_twins_physics(seed):
    """Pose, jacobian, mass matrix, coriolis and gravity equal what MuJoCo's full forward pass gives
    the UR5e twin at the same state (the double then differs from the model only by contacts)."""
    rng = np.random.default_rng(seed)
    q = np.asarray(arm_models.UR5E.spec.q_home_rad) + rng.uniform(-0.5, 0.5, 6)
    dq = rng.uniform(-1.0, 1.0, 6)
    pose, jac, mass, coriolis, gravity = URModel(gravity=True).compute(q, dq)

    m = mujoco.MjModel.from_xml_path(str(paths.sim_file(arm_models.UR5E.mjcf)))
    d = mujoco.MjData(m)
    d.qpos[:6], d.qvel[:6] = q, dq
    d.qpos[6:8] = arm_models.UR5E.spec.gripper_max_width_m / 2
    mujoco.mj_forward(m, d)
    site = m.site("tcp").id
    np.testing.assert_allclose(pose[:3], d.site_xpos[site], atol=ATOL)
    assert rotations.quat_angle(pose[3:], rotations.mat_to_quat(d.site_xmat[site].reshape(3, 3))) < 1e-7
    jp, jr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
    mujoco.mj_jacSite(m, d, jp, jr, site)
    np.testing.assert_allclose(jac, np.vstack((jp, jr))[:, :6], atol=ATOL)
    full = np.zeros((m.nv, m.nv))
    mujoco.mj_fullM(m, d, full)
    np.testing.assert_allclose(mass, full[:6, :6], atol=ATOL)
    np.testing.assert_allclose(coriolis, (d.qfrc_bias - d.qfrc_gravcomp)[:6], atol=1e-8)
    np.testing.assert_allclose(gravity, d.qfrc_gravcomp[:6], atol=1e-8)


def test_gravity_is_zero_unless_asked():
    q = np.asarray(arm_models.UR5E.spec.q_home_rad)
    assert not URModel().compute(q, np.zeros(6))[4].any()


def test_tcp_offset_is_the_models_tcp_in_the_flange():
    assert URModel().tcp_offset_flange() == [0.0, 0.0, 0.15, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("connected, bits, status, fault", [
    (True, 1, 3, ArmFault.NONE),
    (False, 1, 3, ArmFault.COMMUNICATION),
    (True, (1 << 6) | (1 << 7), 1, ArmFault.EMERGENCY_STOP),
    (True, 1 << 5, 1, ArmFault.EMERGENCY_STOP),
    (True, (1 << 2) | (1 << 10), 1, ArmFault.PROTECTIVE_STOP),
    (True, 1 << 4, 3, ArmFault.PROTECTIVE_STOP),
    (True, 1 << 8, 3, ArmFault.SAFETY),
    (True, 1 << 9, 3, ArmFault.SAFETY),
    (True, 1, 1, ArmFault.SAFETY),  # powered, program not running
])
def test_controller_status_maps_to_a_fault(connected, bits, status, fault):
    got, why = fault_of(connected, bits, status)
    assert got == fault
    assert bool(why) == (fault != ArmFault.NONE)


def test_pose_conversion_round_trips():
    quat = rotations.quat_normalize(np.array([0.1, 0.9, -0.3, 0.2]))
    pose = np.concatenate(([0.5, -0.1, 0.2], quat))
    ur = pose_to_ur(pose)
    assert ur[:3] == pytest.approx([0.5, -0.1, 0.2])
    assert rotations.quat_angle(ur_to_quat(ur), quat) < 1e-9


def test_every_ur_module_imports_without_ur_rtde():
    """The vendor modules are imported lazily: with them unimportable, everything still imports."""
    code = ("import sys\n"
            "for m in ('rtde_control', 'rtde_receive', 'dashboard_client'): sys.modules[m] = None\n"
            "import robot_rl.arms.ur, robot_rl.arms.ur_arm, robot_rl.arms.robotiq, robot_rl.arms.ur_admittance\n"
            "import robot_rl.twin.doubles.ur_rtde, robot_rl.twin.doubles.ur_twin, robot_rl.twin.doubles.robotiq\n"
            "from robot_rl.arms.ur_arm import real_vendor\n"
            "from robot_rl.errors import DependencyMissing\n"
            "try:\n    real_vendor()\nexcept DependencyMissing as e:\n    print('OK', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout and "robot_rl[ur]" in out.stdout
