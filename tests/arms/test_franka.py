"""The Franka backend (robot_rl/arms/franka.py) through the pylibfranka double, behind a real server socket.

Faults are injected on the double (the control core's scene hooks), so these servers run in this
process, stepped (simulated time: the tests advance it); the real-time paths are the timing
tests and the hand test. The physical arm's own check is tests/arms/test_bringup.py (hardware).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robot_rl.arms.franka import FrankaArm, FrankaBackend, collision_thresholds
from robot_rl.arms.franka_hand import HandProcess
from robot_rl.arms.registry import BackendChoice, make_factory
from robot_rl.bridge.client import BridgeClient
from robot_rl.bridge.serve import ServeConfig, start_server
from robot_rl.drivers.arm import ArmCommand, ArmFault
from robot_rl.envs.robot_env import RobotEnv
from robot_rl.errors import BridgeRemoteError, ConfigError, DeviceNotFound
from robot_rl.task_spec import load_task
from robot_rl.twin.doubles.franka_robot import ROBOT_IP, FrankaDouble

HOLD_DRIFT_M = 0.002
REACH_TOL_M = 0.003
STILL_M = 0.001
CLEAR_ERROR_WITHIN_S = 3.0
"""Unknown address or FCI off: the error (with its fix) comes within this, and nothing moved."""
TASK = dataclasses.replace(load_task("pick_cube"), cameras=())
HERE = Path(__file__).resolve().parent


def serve(**kwargs):
    cfg = ServeConfig(backend="franka-double", task=TASK.name, bind="tcp://127.0.0.1:0", pub_bind="", **kwargs)
    return start_server(cfg, task=TASK)


def double_of(stack):
    """The pylibfranka double behind a server whose control core runs in this process."""
    return stack.service.runtime.core.scene


def pos_error_m(obs, goal) -> float:
    return float(np.linalg.norm(obs.state.pose_base_tcp[:3] - np.asarray(goal)[:3]))


@pytest.fixture
def stepped():
    stack = serve()
    yield stack
    stack.close()


def test_holds_still_and_tracks_a_target(stepped):
    with BridgeClient(stepped.address) as client:
        start = client.reset(randomize=False).state.pose_base_tcp
        for _ in range(10):  # 1 s at the start pose
            obs = client.step(start, mode="absolute", hold_s=0.1)
            assert obs.state.mode == "track"
            assert pos_error_m(obs, start) < HOLD_DRIFT_M
        goal = start.copy()
        goal[:3] += (0.03, -0.02, 0.02)
        for _ in range(20):
            obs = client.step(goal, mode="absolute", hold_s=0.1)
        assert obs.state.mode == "track", obs.state.fault
        assert pos_error_m(obs, goal) < REACH_TOL_M


def test_communication_loss_faults_until_the_link_is_back_and_cleared(stepped):
    double = double_of(stepped)
    env = RobotEnv(TASK, server=stepped.address, image_obs=False, client_name="test")
    try:
        env.reset(seed=1)
        double.inject_communication_loss()
        obs, _, terminated, truncated, info = env.step(np.array([1.0, 0, 0, 0, 0, 0, -1.0]))
        assert truncated and not terminated
        assert "communication with the arm was lost" in info["reflex"]
        state = env.link.clear_error().state  # the link is still down: recovery fails, the fault stays
        assert state.mode == "reflex"
        double.restore_communication()
        assert env.link.clear_error().state.mode == "hold"
        env.reset(seed=2)
        start = env.link.observe().state.pose_base_tcp
        for _ in range(5):
            obs, _, _, truncated, info = env.step(np.array([1.0, 0, 0, 0, 0, 0, -1.0]))
        assert not truncated and "reflex" not in info
        assert obs["tcp_pose"][0] - start[0] > 0.02  # it tracks again (speed-limited to 0.1 m/s)
    finally:
        env.close()


def test_a_reflex_truncates_the_episode_and_nothing_moves_until_clear_error(stepped):
    double = double_of(stepped)
    env = RobotEnv(TASK, server=stepped.address, image_obs=False, client_name="test")
    try:
        env.reset(seed=3)
        for _ in range(3):
            env.step(np.array([0.5, 0, 0, 0, 0, 0, -1.0]))
        double.inject_reflex()
        obs, _, terminated, truncated, info = env.step(np.array([1.0, 0, 0, 0, 0, 0, -1.0]))
        assert truncated and not terminated
        assert "reflex" in info["reflex"]
        stepped.service.runtime.advance(0.5)  # half a second passes (simulated): the arm brakes to rest
        held = env.link.observe().state.pose_base_tcp
        for _ in range(5):  # refused: the env observes, the arm stays
            obs, _, _, truncated, info = env.step(np.array([1.0, 0, 0, 0, 0, 0, -1.0]))
            assert truncated and "reflex" in info
            stepped.service.runtime.advance(0.1)
        assert float(np.linalg.norm(obs["tcp_pose"][:3] - held[:3])) < STILL_M
        assert double.mode.name == "Reflex"
        env.reset(seed=4)  # clear_error (automatic_error_recovery, torque control again), then the reset motion
        assert double.mode.name == "Move"
        start = env.link.observe().state.pose_base_tcp
        for _ in range(5):
            obs, _, _, truncated, info = env.step(np.array([1.0, 0, 0, 0, 0, 0, -1.0]))
        assert not truncated
        assert obs["tcp_pose"][0] - start[0] > 0.02
    finally:
        env.close()


def test_the_backend_reads_the_robot_state_in_robot_rl_conventions():
    """Column-major O_T_EE and model matrices become the twin's own pose, jacobian, mass matrix."""
    arm, double = FrankaBackend(TASK, ROBOT_IP, double=True, hand=False).build(realtime=False)
    try:
        for _ in range(50):  # moving, so that dq, twist and coriolis are not zero
            reading = arm.read()
            arm.write(ArmCommand(np.array([3.0, -2, 1, 0, 0, 0, 0]), reading.pose_base_tcp, np.zeros((3, 6))))
        reading, truth = arm.read(), double._reading
        for field in ("q_rad", "dq_rad_per_s", "pose_base_tcp", "twist_base_tcp", "jacobian_base_tcp", "mass_matrix",
                      "coriolis_nm", "wrench_ext_base"):
            np.testing.assert_allclose(getattr(reading, field), getattr(truth, field), atol=1e-9, err_msg=field)
        assert np.abs(reading.dq_rad_per_s).max() > 0.01 and not reading.gravity_nm.any()
        assert reading.t_capture_ns == round(double.arm.data.time * 1e9)
    finally:
        arm.close()


def test_the_backend_turns_missed_packets_into_a_reflex_and_recovers():
    arm, double = FrankaBackend(TASK, ROBOT_IP, double=True, hand=False).build(realtime=True)
    try:
        reading = arm.read()
        hold = ArmCommand(np.zeros(7), reading.pose_base_tcp, np.zeros((3, 6)))
        arm.write(hold)
        arm.read()
        time.sleep(0.03)  # the Python side stalls for 30 packets
        arm.write(hold)
        reading = arm.read()
        assert reading.fault == ArmFault.REFLEX
        assert double.error == "communication_constraints_violation"
        slot = double._slot
        arm.write(hold)  # sends nothing while faulted
        assert double._slot == slot and arm.read().fault == ArmFault.REFLEX
        arm.recover()
        reading = arm.read()
        assert reading.fault == ArmFault.NONE and double.mode.name == "Move"
    finally:
        arm.close()
    assert double.mode.name == "Idle"  # close ended torque control with motion_finished


def test_an_unknown_address_fails_fast_with_the_fix():
    t = time.monotonic()
    with pytest.raises(DeviceNotFound, match="FCI activated in Desk.*ping 10.1.2.3"):
        serve(pace="realtime", loop="thread", robot_ip="10.1.2.3")
    assert time.monotonic() - t < CLEAR_ERROR_WITHIN_S


def test_a_physical_arm_that_refuses_fails_fast_with_the_fix():
    """Nothing listens on this machine's FCI port: libfranka's refusal, quoted, and what to do."""
    t = time.monotonic()
    with pytest.raises(DeviceNotFound, match="refused.*FCI activated in Desk"):
        make_factory(BackendChoice("franka", robot_ip="127.0.0.1"), TASK)
    assert time.monotonic() - t < CLEAR_ERROR_WITHIN_S


@pytest.mark.parametrize("franka_realtime", ["enforce", "ignore"])
def test_a_desktop_kernel_is_refused_unless_serve_says_ignore(franka_realtime):
    """libfranka's RealtimeConfig comes from `--franka-realtime`; kEnforce on a kernel without
    PREEMPT_RT fails before anything connects, naming both fixes."""
    backend = make_factory(BackendChoice("franka-double", franka_realtime=franka_realtime), TASK)
    double = FrankaDouble(TASK, realtime=False, realtime_kernel=False)
    build = lambda: FrankaArm(double.vendor, ROBOT_IP, spec=backend.arm_spec(), hand="none", clock="robot",
                              thresholds=collision_thresholds(80.0, backend.arm_spec().torque_limit_nm),
                              enforce_realtime=backend.enforce_realtime)
    if franka_realtime == "enforce":
        with pytest.raises(ConfigError, match="PREEMPT_RT kernel.*--franka-realtime ignore"):
            build()
        return
    arm = build()
    try:
        assert arm.read().fault == ArmFault.NONE
    finally:
        arm.close()


def test_serve_reports_the_missing_arm_from_the_control_process():
    """The default process runtime forwards the control process's connection error."""
    out = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "serve", "--backend", "franka-double",
                          "--robot-ip", "10.1.2.3", "--task", "pick_cube", "--pace", "realtime",
                          "--bind", "tcp://127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "DeviceNotFound: could not connect to the Franka at 10.1.2.3" in out.stderr


def test_the_hand_grasps_and_opens_while_the_loop_ticks(stepped):
    """The hand's blocking grasp runs on its worker thread: the loop ticks on and the fingers close
    a little with every tick it makes."""
    double = double_of(stepped)
    with BridgeClient(stepped.address) as client:
        start = client.reset(randomize=False).state
        assert start.gripper_width_m == pytest.approx(0.08, abs=0.002)
        client.step(start.pose_base_tcp, mode="absolute", gripper_width_m=0.0, hold_s=0.001)  # one tick
        t_end = time.monotonic() + 5.0
        while double._grip_goal_m != 0.0:  # the worker thread has started the grasp
            assert time.monotonic() < t_end
            time.sleep(0.001)
        ticks, widths = [], []
        for _ in range(10):
            state = client.step(start.pose_base_tcp, mode="absolute", hold_s=0.1).state
            ticks.append(state.tick)
            widths.append(double._finger_width())
        assert np.all(np.diff(ticks) == 100)
        assert widths[0] < 0.08 and widths[-1] < 0.005, widths  # closed (on nothing) 0.1 m/s
        for _ in range(10):
            state = client.step(start.pose_base_tcp, mode="absolute", gripper_width_m=0.08, hold_s=0.1).state
        assert state.gripper_width_m > 0.075 and state.mode == "track"


@pytest.mark.slow
def test_the_hand_moves_while_the_real_time_loop_keeps_its_pace():
    """In real time, in the control process: the loop publishes ~1 tick per ms during the grasp."""
    stack = serve(pace="realtime", loop="process")
    try:
        with BridgeClient(stack.address) as client:
            try:
                start = client.reset(randomize=False).state
            except BridgeRemoteError as exc:
                if exc.code == "reset_failed":  # nothing touches anything here: the VM stalled the loop
                    pytest.skip(f"the loop missed 20 packets in a row during the reset ({exc}): a stalled VM")
                raise
            client.step(start.pose_base_tcp, mode="absolute", gripper_width_m=0.0, hold_s=0.0)
            ticks, widths = [], []
            t_end = time.monotonic() + 1.5
            while time.monotonic() < t_end:
                state = client.step(start.pose_base_tcp, mode="absolute", hold_s=0.05).state
                ticks.append(state.tick)
                widths.append(state.gripper_width_m)
            assert widths[-1] < 0.005, "the fingers closed (on nothing)"
            assert ticks[-1] - ticks[0] > 1000, "the loop kept ticking during the grasp"
    finally:
        stack.close()


def test_collision_thresholds_sit_above_the_software_reflex():
    lower_tau, upper_tau, lower_f, upper_f = collision_thresholds(80.0, (87.0,) * 4 + (12.0,) * 3)
    assert upper_f[:3] == [100.0] * 3 and upper_f[3:] == [10.0] * 3
    assert upper_tau == [87.0, 87.0, 60.0, 60.0, 12.0, 12.0, 10.0]
    assert lower_f == [0.5 * f for f in upper_f] and lower_tau == [0.5 * t for t in upper_tau]


def test_the_hand_process_relays_grasp_move_and_errors(monkeypatch):
    """Physical arms run the Franka Hand in its own process (pylibfranka's Gripper holds the GIL)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    hand = HandProcess("172.16.0.2", vendor="fake_franka_gripper")
    try:
        assert hand.read_width() == pytest.approx(0.08)
        hand.move(0.0)  # closing: a grasp
        assert hand.read_width() == pytest.approx(0.03)  # stopped on the fake's 3 cm object
        with pytest.raises(RuntimeError, match="CommandException: fingers blocked"):
            hand.move(0.05)  # opening: a move, which the fake refuses at 5 cm
        hand.move(0.08)
        assert hand.read_width() == pytest.approx(0.08)
    finally:
        hand.close()
    with pytest.raises(DeviceNotFound, match="Franka Hand at 10.1.2.3 did not answer"):
        HandProcess("10.1.2.3", vendor="fake_franka_gripper")
