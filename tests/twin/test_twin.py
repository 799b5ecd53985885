"""The MuJoCo twin: kinematics from Franka's published parameters, physics, cameras, tasks."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from robot_rl.control.commands import ResetCommand, TargetCommand
from robot_rl.control.core import ControlCore
from robot_rl.task_spec import load_task
from robot_rl.twin import scene as sc
from robot_rl.control.commands import core_config
from robot_rl.twin.backend import TwinBackend, scene_source
from robot_rl.twin.camera import TwinCameras

FK_ATOL_M = 1e-4


@pytest.fixture(scope="module")
def pick():
    return load_task("pick_cube")


@pytest.fixture(scope="module")
def peg():
    return load_task("peg_insertion")


def test_home_pose_matches_panda_forward_kinematics(pick):
    """Franka documents the home posture [0, −π/4, 0, −3π/4, 0, π/2, π/4] with the hand's TCP at
    (0.307, 0, 0.487) m pointing down."""
    arm, _ = TwinBackend(pick).build(realtime=False)
    r = arm.read()
    np.testing.assert_allclose(r.pose_base_tcp[:3], [0.3069, 0.0, 0.4869], atol=FK_ATOL_M)
    np.testing.assert_allclose(np.abs(r.pose_base_tcp[3:]), [0, 1, 0, 0], atol=1e-4)


def test_joint_and_torque_limits_are_frankas(pick):
    model = sc.build_model(scene_source(pick))
    ranges = np.array([model.joint(n).range for n in sc.arm_joint_names(7)])
    np.testing.assert_allclose(ranges[:, 1], [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
    ctrl = np.array([model.actuator(n).ctrlrange[1] for n in sc.arm_actuator_names(7)])
    np.testing.assert_allclose(ctrl, [87, 87, 87, 87, 12, 12, 12])


def test_gravity_compensated_arm_holds_still(pick):
    arm, hooks = TwinBackend(pick).build(realtime=False)
    core = ControlCore(arm, core_config(pick), scene=hooks)
    core.step()
    start = core.buffer.read().get("pose").copy()
    for _ in range(2000):
        core.step()
    snap = core.buffer.read()
    np.testing.assert_allclose(snap.get("pose")[:3], start[:3], atol=1e-3)
    assert np.linalg.norm(snap.get("twist")) < 1e-3


def _settled_above_table(pick):
    """The twin arm teleported 5 cm above the table at (0.62, 0.15), settled for 300 ticks."""
    arm, hooks = TwinBackend(pick).build(realtime=False)
    core = ControlCore(arm, core_config(pick), scene=hooks)
    core.step()
    core.submit(ResetCommand(1, np.array([0.62, 0.15, 0.05, 0, 1, 0, 0]), scene_seed=0, teleport=True))
    for _ in range(300):
        core.step()
    return arm, core


def test_static_contact_force_is_k_times_clip(pick):
    """Pressing into the table with the target far below: the steady contact force is K·clip
    (SERL's reference limiting), far below what the spring would give unclipped."""
    arm, core = _settled_above_table(pick)
    k, clip = pick.gains.stiffness_trans_n_per_m[2], pick.gains.error_clip_trans_m[2]
    target = np.array([0.62, 0.15, 0.012, 0, 1, 0, 0])  # the box floor: 3 mm below where fingers touch
    for i in range(3000):
        if i % 100 == 0:
            core.submit(TargetCommand(i + 2, target, None))
        core.step()
    force_z = core.buffer.read().get("wrench")[2]
    touching_z = core.buffer.read().get("pose")[2]
    expected = k * min(clip, touching_z - target[2])
    assert force_z == pytest.approx(expected, rel=0.15)
    assert force_z <= k * clip + 1.0


def test_contact_wrench_sums_force_and_moment_about_the_tcp(pick):
    """The wrench the twin reports equals Σ f and Σ (p − p_tcp) × f over the hand's contacts with
    the world, recomputed here from MuJoCo's contact list (pressing tilted into the table)."""
    arm, core = _settled_above_table(pick)
    tilted = np.array([0.63, 0.16, 0.012, 0.0, 0.9962, 0.0872, 0.0])  # 10° about x, 1 cm off in xy
    for i in range(1500):
        if i % 100 == 0:
            core.submit(TargetCommand(i + 2, tilted, None))
        core.step()
    m, d = arm.model, arm.data
    expected = np.zeros(6)
    cf = np.zeros(6)
    tcp = d.site_xpos[arm._tcp]
    for i in range(d.ncon):
        g1, g2 = d.contact.geom[i]
        if arm.robot_geoms[g1] == arm.robot_geoms[g2] or not (arm.hand_geoms[g1] or arm.hand_geoms[g2]):
            continue
        mujoco.mj_contactForce(m, d, i, cf)
        f = d.contact.frame[i].reshape(3, 3).T @ cf[:3]
        f = -f if arm.hand_geoms[g1] else f
        expected[:3] += f
        expected[3:] += np.cross(d.contact.pos[i] - tcp, f)
    assert np.linalg.norm(expected[:3]) > 5.0  # really pressing
    assert np.linalg.norm(expected[3:]) > 1e-3  # with a moment about the TCP
    np.testing.assert_allclose(arm._wrench, expected, rtol=1e-9, atol=1e-12)


def test_cameras_render_headless_without_shadows(pick):
    cams = TwinCameras(scene_source(pick), pick.cameras)
    arm, _ = TwinBackend(pick).build(realtime=False)
    state = np.zeros(sc.sim_state_size(arm.model))
    sc.write_sim_state(arm.model, arm.data, state)
    frames = {f.camera: f.image for f in cams.frames(("wrist", "front"), state, 0)}
    for name, img in frames.items():
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8
        assert img.std() > 10, f"{name} looks blank"
    assert not np.array_equal(frames["wrist"], frames["front"])
    r = next(iter(cams._renderers.values()))
    assert not r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW]
    assert cams.model.vis.quality.offsamples == 0
    cams.close()


def test_visual_randomization_is_seeded(pick):
    cams = TwinCameras(scene_source(pick), pick.cameras)
    arm, _ = TwinBackend(pick).build(realtime=False)
    state = np.zeros(sc.sim_state_size(arm.model))
    sc.write_sim_state(arm.model, arm.data, state)

    def shot(seed):
        cams.on_reset(seed)
        return cams.frames(("front",), state, 0)[0].image

    a, b, a2 = shot(1), shot(2), shot(1)
    np.testing.assert_array_equal(a, a2)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 2.0
    cams.close()


def test_object_randomization_is_seeded_and_in_range(pick):
    arm, hooks = TwinBackend(pick).build(realtime=False)
    poses = []
    for seed in (0, 1, 0):
        hooks.reset_scene(seed)
        poses.append(arm.data.qpos[hooks._qadr:hooks._qadr + 7].copy())
    np.testing.assert_array_equal(poses[0], poses[2])
    assert np.linalg.norm(poses[0][:2] - poses[1][:2]) > 1e-3
    p = pick.twin.pick_cube
    for pose in poses:
        assert np.all(np.abs(pose[:2] - p.object_center_m) <= np.asarray(p.object_range_m) + 1e-9)


def test_pick_cube_success_when_lifted(pick):
    arm, hooks = TwinBackend(pick).build(realtime=False)
    hooks.reset_scene(0)
    assert not hooks.success()
    arm.data.qpos[hooks._qadr + 2] = 0.02 + pick.twin.pick_cube.lift_height_m + 0.01
    mujoco.mj_forward(arm.model, arm.data)
    assert hooks.success()


def test_peg_and_hole_clearance_is_two_mm(peg):
    model = sc.build_model(scene_source(peg))
    peg_half = model.geom("tool_peg").size[:2]
    inner = model.geom("wall_px").pos[0] - model.geom("wall_px").size[0]
    inner_y = model.geom("wall_py").pos[1] - model.geom("wall_py").size[1]
    clearance = 2 * inner - 2 * peg_half[0]
    assert clearance == pytest.approx(0.002, abs=1e-9)
    assert 2 * inner_y - 2 * peg_half[1] == pytest.approx(0.002, abs=1e-9)


def test_peg_success_needs_depth_inside_the_hole(peg):
    arm, hooks = TwinBackend(peg).build(realtime=False)
    hooks.reset_scene(3)
    hole = arm.data.mocap_pos[hooks._mocap].copy()
    tip_offset = 0.045
    arm.teleport(np.array([hole[0], hole[1], hole[2] + tip_offset + 0.01, 0, 1, 0, 0]), 0.02)
    assert not hooks.success()
    arm.teleport(np.array([hole[0], hole[1], hole[2] + tip_offset - 0.02, 0, 1, 0, 0]), 0.02)
    assert hooks.success()
    arm.teleport(np.array([hole[0] + 0.03, hole[1], hole[2] + tip_offset - 0.02, 0, 1, 0, 0]), 0.02)
    assert not hooks.success()  # beside the hole is not in it


def test_bad_scene_file_is_a_clear_error(tmp_path):
    from robot_rl.errors import ConfigError

    bad = tmp_path / "arm.xml"
    bad.write_text("<mujoco><worldbody><body name='x'><geom size='0.1'/></body></worldbody></mujoco>")
    with pytest.raises(ConfigError, match="lacks joint 'joint1'"):
        sc.build_model(sc.SceneSource(str(bad)))
    with pytest.raises(ConfigError, match="does not exist"):
        sc.build_model(sc.SceneSource("nope.xml"))
