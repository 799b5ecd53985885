"""The UR5e twin: kinematics from Universal Robots' published DH table, masses and limits, the
impedance law holding and resetting it, and the choice of arm by task spec and by flag."""

from __future__ import annotations

from typing import get_args

import mujoco
import numpy as np
import pytest
import yaml

from robot_rl import paths
from robot_rl.arms.registry import BackendChoice, make_factory
from robot_rl.control import rotations
from robot_rl.control.commands import ResetCommand, core_config
from robot_rl.control.runtime import SteppedRuntime
from robot_rl.control.snapshot import Mode
from robot_rl.errors import ConfigError
from robot_rl.task_spec import TwinArmName, load_task, with_twin_arm
from robot_rl.twin import arm_models
from robot_rl.twin import scene as sc
from robot_rl.twin.backend import TwinBackend, scene_source
from robot_rl.twin.camera import TwinCameras

FK_ATOL_M = 1e-9
FK_ATOL_ROT = 1e-9
HOLD_ATOL_M = 1e-3
RESET_ATOL_M = 0.003
"""The core's settle tolerance (ResetMotion.settle_tol_m)."""
RESET_ATOL_RAD = 0.01

# Universal Robots' published UR5e table: standard DH (d, a, alpha) per joint, link masses.
UR5E_D_M = (0.1625, 0.0, 0.0, 0.1333, 0.0997, 0.0996)
UR5E_A_M = (0.0, -0.425, -0.3922, 0.0, 0.0, 0.0)
UR5E_ALPHA_RAD = (np.pi / 2, 0.0, 0.0, np.pi / 2, -np.pi / 2, 0.0)
UR5E_MASS_KG = (3.761, 8.058, 2.846, 1.37, 1.3, 0.365)
FLANGE_TO_TCP_M = 0.15
"""The twin's fixed flange→TCP offset along the flange z axis (sim/ur5e_twin.xml)."""


def dh_forward_kinematics(q_rad: np.ndarray) -> np.ndarray:
    """4×4 base→TCP transform: T_i = RotZ(θ_i)·Trans(0, 0, d_i)·Trans(a_i, 0, 0)·RotX(α_i), then the
    flange→TCP offset."""
    t = np.eye(4)
    for theta, d, a, alpha in zip(q_rad, UR5E_D_M, UR5E_A_M, UR5E_ALPHA_RAD):
        ct, st, ca, sa = np.cos(theta), np.sin(theta), np.cos(alpha), np.sin(alpha)
        t = t @ np.array([[ct, -st * ca, st * sa, a * ct],
                          [st, ct * ca, -ct * sa, a * st],
                          [0.0, sa, ca, d],
                          [0.0, 0.0, 0.0, 1.0]])
    tool = np.eye(4)
    tool[2, 3] = FLANGE_TO_TCP_M
    return t @ tool


@pytest.fixture(scope="module")
def pick():
    return load_task("pick_cube")


@pytest.fixture(scope="module")
def ur_pick(pick):
    return with_twin_arm(pick, "ur5e")


def test_tcp_pose_equals_the_published_dh_table(ur_pick):
    arm, _ = TwinBackend(ur_pick).build(realtime=False)
    rng = np.random.default_rng(0)
    lo, hi = np.asarray(arm.spec.q_min_rad), np.asarray(arm.spec.q_max_rad)
    for _ in range(50):
        q = rng.uniform(lo, hi)
        arm.data.qpos[arm._qadr] = q
        mujoco.mj_forward(arm.model, arm.data)
        pose = arm.read().pose_base_tcp
        expected = dh_forward_kinematics(q)
        np.testing.assert_allclose(pose[:3], expected[:3, 3], atol=FK_ATOL_M)
        np.testing.assert_allclose(rotations.quat_to_mat(pose[3:]), expected[:3, :3], atol=FK_ATOL_ROT)


def test_link_masses_and_limits_are_urs():
    model = sc.build_model(sc.SceneSource("pick_cube.xml", arm="ur5e"))
    masses = [model.body(f"link{i}").mass[0] for i in range(1, 7)]
    np.testing.assert_allclose(masses, UR5E_MASS_KG)
    spec = arm_models.UR5E.arm_spec()
    ranges = np.array([model.joint(n).range for n in sc.arm_joint_names(6)])
    np.testing.assert_allclose(ranges[:, 0], spec.q_min_rad)
    np.testing.assert_allclose(ranges[:, 1], spec.q_max_rad)
    ctrl = np.array([model.actuator(n).ctrlrange for n in sc.arm_actuator_names(6)])
    np.testing.assert_allclose(ctrl[:, 1], [150, 150, 150, 28, 28, 28])
    np.testing.assert_allclose(ctrl[:, 0], -ctrl[:, 1])
    np.testing.assert_allclose(spec.torque_limit_nm, ctrl[:, 1])
    np.testing.assert_allclose(spec.dq_max_rad_per_s, [np.pi] * 6, rtol=1e-7)
    assert model.joint("finger_left").range[1] * 2 == pytest.approx(spec.gripper_max_width_m) == 0.085
    arm_bodies = [model.body(f"link{i}").id for i in range(1, 7)] + [model.body("hand").id]
    np.testing.assert_array_equal(model.body_gravcomp[arm_bodies], 1.0)


def test_home_posture_points_the_tool_down_near_the_reset_pose(ur_pick):
    arm, _ = TwinBackend(ur_pick).build(realtime=False)
    pose = arm.read().pose_base_tcp
    np.testing.assert_allclose(pose[:3], [0.5, 0.0, 0.25], atol=1e-3)
    assert rotations.quat_angle(pose[3:], np.array([0.0, 1, 0, 0])) < 1e-3
    q = np.asarray(arm.spec.q_home_rad)
    assert abs(abs(q[4]) - np.pi / 2) < 0.1  # wrist 2 far from its singularity at 0 and π
    assert arm.data.xpos[arm.model.body("link3").id][2] > 0.5  # elbow up


def test_tool_down_corners_of_the_workspace_are_reachable(ur_pick):
    arm, _ = TwinBackend(ur_pick).build(realtime=False)
    box = ur_pick.workspace
    for x in (box.min_m[0], box.max_m[0]):
        for y in (box.min_m[1], box.max_m[1]):
            for z in (box.min_m[2], box.max_m[2]):
                arm.teleport(np.array([x, y, z, 0.0, 1.0, 0.0, 0.0]), 0.085)  # raises when out of reach


@pytest.fixture
def runtime(ur_pick):
    rt = SteppedRuntime(TwinBackend(ur_pick), core_config(ur_pick))
    yield rt
    rt.close()


def _reset(rt, goal: np.ndarray, *, teleport: bool, joint_reset: bool = False, request_id: int = 1):
    rt.submit(ResetCommand(request_id, goal, scene_seed=0, teleport=teleport, joint_reset=joint_reset))
    events = rt.wait_event(20.0)
    assert [e.kind for e in events] == ["reset_done"], events
    return rt.shared.buffer.read()


def _assert_at(snap, goal: np.ndarray) -> None:
    pose = snap.get("pose")
    np.testing.assert_allclose(pose[:3], goal[:3], atol=RESET_ATOL_M)
    assert rotations.quat_angle(pose[3:], goal[3:]) < RESET_ATOL_RAD


def test_arm_holds_still_at_the_reset_pose(runtime, ur_pick):
    goal = np.array(ur_pick.reset.pose)
    start = _reset(runtime, goal, teleport=True).get("pose").copy()
    runtime.advance(2.0)
    snap = runtime.shared.buffer.read()
    np.testing.assert_allclose(snap.get("pose")[:3], start[:3], atol=HOLD_ATOL_M)
    assert np.linalg.norm(snap.get("twist")) < 1e-3
    assert snap.mode == Mode.HOLD


def test_motion_and_teleport_resets_reach_the_pose(runtime, ur_pick):
    goal = np.array(ur_pick.reset.pose)
    _assert_at(_reset(runtime, goal, teleport=False), goal)  # driven by the controller from home
    other = goal + np.array([0.1, -0.12, -0.1, 0, 0, 0, 0])
    _assert_at(_reset(runtime, other, teleport=False, joint_reset=True, request_id=2), other)  # via q_home
    _assert_at(_reset(runtime, goal, teleport=True, request_id=3), goal)
    assert runtime.shared.buffer.read().mode == Mode.HOLD  # no reflex on the way


def test_arm_is_chosen_by_the_task_spec(tmp_path, pick):
    data = yaml.safe_load(open(pick.source))
    data["twin"]["arm"] = "ur5e"
    path = tmp_path / "pick_ur.yaml"
    path.write_text(yaml.safe_dump(data))
    task = load_task(path)
    assert task.twin.arm == "ur5e"
    backend = TwinBackend(task)
    assert backend.arm_spec().name == "twin-ur5e" and backend.scene_source().arm == "ur5e"
    arm, _ = backend.build(realtime=False)
    assert arm.spec.n_joints == 6 and arm.model.nu == 7
    assert TwinBackend(pick).arm_spec().name == "twin-panda"


def test_arm_flag_overrides_the_task_spec(pick, ur_pick):
    factory = make_factory(BackendChoice("twin", arm="ur5e"), pick)
    assert factory.arm_spec().name == "twin-ur5e"
    assert factory.layout().n_joints == 6
    assert make_factory(BackendChoice("twin", arm="panda"), ur_pick).arm_spec().name == "twin-panda"
    assert make_factory(BackendChoice("twin"), ur_pick).arm_spec().name == "twin-ur5e"
    assert scene_source(pick, "ur5e") == sc.SceneSource("pick_cube.xml", None, arm="ur5e")


def test_env_arm_option_builds_the_embedded_twin_with_it():
    from robot_rl.envs.robot_env import RobotEnv

    env = RobotEnv("peg_insertion", in_process=True, image_obs=False, privileged_obs=True, arm="ur5e")
    try:
        assert env.task.twin.arm == "ur5e"
        assert env.link.welcome.n_joints == 6 and env.link.welcome.gripper_max_width_m == 0.085
        obs, _ = env.reset(seed=0)
        np.testing.assert_allclose(obs["tcp_pose"][:3], env.task.reset.pose[:3], atol=0.03)
    finally:
        env.close()
    with pytest.raises(ConfigError, match="embedded twin"):
        RobotEnv("pick_cube", server="tcp://127.0.0.1:1", arm="ur5e")


def test_unknown_arm_is_a_config_error_naming_the_choices(tmp_path, pick):
    with pytest.raises(ConfigError, match="unknown twin arm 'kuka'; choose one of panda, ur5e"):
        arm_models.arm_model("kuka")
    with pytest.raises(ConfigError, match="panda, ur5e"):
        TwinBackend(pick, arm="kuka")
    with pytest.raises(ConfigError, match="panda, ur5e"):
        with_twin_arm(pick, "kuka")
    with pytest.raises(ConfigError, match="panda, ur5e"):
        make_factory(BackendChoice("twin", arm="kuka"), pick)
    data = yaml.safe_load(open(pick.source))
    data["twin"]["arm"] = "kuka"
    path = tmp_path / "bad_arm.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"twin.arm: must be one of \['panda', 'ur5e'\], got 'kuka'"):
        load_task(path)


def test_registry_and_task_spec_name_the_same_arms():
    assert tuple(arm_models.ARM_MODELS) == get_args(TwinArmName)
    for name, model in arm_models.ARM_MODELS.items():
        compiled = mujoco.MjModel.from_xml_path(str(paths.sim_file(model.mjcf)))
        ctrl = [compiled.actuator(n).ctrlrange[1] for n in sc.arm_actuator_names(model.spec.n_joints)]
        np.testing.assert_allclose(ctrl, model.spec.torque_limit_nm, err_msg=name)


def test_substituted_arm_compiles_to_the_scene_read_from_disk(pick):
    """sim/arm.xml (for viewers) includes the Panda: the scene as MuJoCo reads it from disk and the
    scene with the Panda substituted by build_model are the same model, byte for byte."""
    def mjb(model: mujoco.MjModel) -> np.ndarray:
        out = np.zeros(mujoco.mj_sizeModel(model), np.uint8)
        mujoco.mj_saveModel(model, None, out)
        return out

    on_disk = mujoco.MjModel.from_xml_path(str(paths.sim_file("pick_cube.xml")))
    np.testing.assert_array_equal(mjb(sc.build_model(scene_source(pick))), mjb(on_disk))


def test_scene_including_an_arm_directly_is_refused_for_another_arm(tmp_path):
    scene = tmp_path / "direct.xml"
    panda = paths.sim_file("panda_twin.xml")
    scene.write_text(f'<mujoco><include file="{panda}"/><worldbody/></mujoco>')
    sc.build_model(sc.SceneSource(str(scene)))  # the Panda it includes is the Panda asked for
    with pytest.raises(ConfigError, match="arm.xml"):
        sc.build_model(sc.SceneSource(str(scene), arm="ur5e"))


def test_cameras_render_the_ur_scene(ur_pick):
    source = scene_source(ur_pick)
    cams = TwinCameras(source, ur_pick.cameras)
    arm, _ = TwinBackend(ur_pick).build(realtime=False)
    arm.teleport(np.array(ur_pick.reset.pose), 0.085)
    state = np.zeros(sc.sim_state_size(arm.model))
    sc.write_sim_state(arm.model, arm.data, state)
    try:
        for f in cams.frames(("wrist", "front"), state, 0):
            assert f.image.shape == (128, 128, 3) and f.image.std() > 10, f"{f.camera} looks blank"
    finally:
        cams.close()


def test_peg_scene_mounts_the_tool_on_the_ur_hand():
    peg = with_twin_arm(load_task("peg_insertion"), "ur5e")
    arm, hooks = TwinBackend(peg).build(realtime=False)
    hooks.reset_scene(0)
    arm.teleport(np.array(peg.reset.pose), 0.02)
    tip = arm.data.site_xpos[arm.model.site("tool_peg_tip").id]
    np.testing.assert_allclose(tip, np.array(peg.reset.pose[:3]) - [0, 0, 0.045], atol=1e-4)
