"""The UR backend (`URArm` over ur_rtde's API) through the ur_rtde double, behind a real server socket:
hold, track in both modes, protective / emergency stops and communication loss mid-episode, the
RTDE watchdog, and clear errors for an unreachable or misconfigured controller."""

from __future__ import annotations

import time

import numpy as np
import pytest

from robot_rl.arms.registry import BackendChoice
from robot_rl.arms.ur import URBackend, ur_arm_spec
from robot_rl.arms.ur_arm import URArm, URArmConfig, URVendor, real_vendor
from robot_rl.bridge.serve import ServeConfig, start_server
from robot_rl.control.commands import core_config
from robot_rl.drivers.arm import ArmCommand, ArmFault
from robot_rl.envs.robot_env import RobotEnv
from robot_rl.errors import BridgeRemoteError, DeviceNotFound
from robot_rl.task_spec import load_task
from robot_rl.twin.doubles import ur_rtde
from robot_rl.twin.doubles.ur_twin import URDouble

TASK = load_task("pick_cube")
HOLD_DRIFT_M = 0.001
REACH_TOL_M = 0.003
STILL_M = 0.0005
"""A stopped arm moves less than this over a few env steps."""


def serve(mode: str = "torque"):
    """A stepped (pace fast) UR-double server on a free loopback port."""
    return start_server(ServeConfig(backend="ur-double", ur_mode=mode, task="pick_cube", bind="tcp://127.0.0.1:0",
                                    pub_bind=""))


def controller_of(stack):
    """The simulated UR controller behind a stepped server (the test's hand on the robot)."""
    return stack.service.runtime.core.backend.owned[0].controller


@pytest.fixture(params=["torque", "servo"])
def server(request):
    stack = serve(request.param)
    yield stack
    stack.close()


@pytest.fixture
def torque_server():
    stack = serve("torque")
    yield stack
    stack.close()


def test_holds_still(server):
    from robot_rl.bridge.client import BridgeClient

    client = BridgeClient(server.address, name="test-hold")
    start = client.reset(seed=0).state.pose_base_tcp
    for _ in range(14):  # 2 s, each hold inside the 0.2 s command watchdog
        pose = client.step(start, mode="absolute", hold_s=0.15).state.pose_base_tcp
    assert np.linalg.norm(pose[:3] - start[:3]) < HOLD_DRIFT_M
    assert client.observe().state.mode == "track"
    client.close()


def test_tracks_a_target(server):
    """Both modes (directTorque running the law, admittance over servoL) reach a target 2 cm away."""
    from robot_rl.bridge.client import BridgeClient

    client = BridgeClient(server.address, name="test-track")
    start = client.reset(seed=0).state.pose_base_tcp
    goal = start.copy()
    goal[0] += 0.02
    goal[1] -= 0.015
    goal[2] += 0.01
    for _ in range(14):
        state = client.step(goal, mode="absolute", hold_s=0.15).state
    assert np.linalg.norm(state.pose_base_tcp[:3] - goal[:3]) < REACH_TOL_M, state.pose_base_tcp
    assert state.mode == "track"
    assert np.linalg.norm(state.twist_base_tcp[:3]) < 0.01
    client.close()


def test_joint_reset_reaches_the_reset_pose(server):
    """Joint-space reset phases: directTorque sends the joint law's torques, servo mode servoJ."""
    from robot_rl.bridge.client import BridgeClient

    client = BridgeClient(server.address, name="test-joint-reset")
    client.reset(seed=0)
    goal = np.array(TASK.reset.pose)
    state = client.reset(pose=goal, randomize=False, joint_reset=True).state
    assert state.mode == "hold"
    assert np.linalg.norm(state.pose_base_tcp[:3] - goal[:3]) < REACH_TOL_M
    servo = server.service.runtime.core.backend.config.mode == "servo"
    assert (controller_of(server).servo_joint_commands > 0) == servo
    client.close()


def _env(stack) -> RobotEnv:
    return RobotEnv(stack.task, server=stack.address, image_obs=False, client_name="test-ur")


def _pose(env: RobotEnv) -> np.ndarray:
    return env.link.observe().state.pose_base_tcp


def _stays_stopped(env: RobotEnv, stack, controller, n: int = 3) -> None:
    """Steps pushing +x on a stopped arm are truncated with the fault; over another 0.5 s of control
    ticks nothing moves and nothing is sent to the controller."""
    before, sent = _pose(env), controller.commands_received
    for _ in range(n):
        _, _, terminated, truncated, info = env.step(np.array([1.0, 0, 0, 0, 0, 0, 0]))
        assert truncated and not terminated and "reflex" in info
    stack.service.runtime.advance(0.5)  # the server is idle between requests: tick the stepped loop here
    assert stack.service.snapshot().mode.name == "REFLEX"
    assert np.linalg.norm(_pose(env)[:3] - before[:3]) < STILL_M
    assert controller.commands_received == sent


def test_protective_stop_mid_episode_truncates_holds_and_clears(server):
    env, ctl = _env(server), controller_of(server)
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.array([0.5, 0, 0, 0, 0, 0, 0]))
    ctl.inject_protective_stop()
    _, _, terminated, truncated, info = env.step(np.array([0.5, 0, 0, 0, 0, 0, 0]))
    assert truncated and not terminated
    assert "protective stop" in info["reflex"]
    assert not ctl.program_running
    _stays_stopped(env, server, ctl)
    # reset → clear_error → dashboard unlock + script re-upload; the episode then runs again.
    env.reset(seed=1)
    assert not ctl.protective_stop and ctl.program_running
    start = _pose(env)
    _, _, _, truncated, info = env.step(np.array([1.0, 0, 0, 0, 0, 0, 0]))
    assert not truncated and "reflex" not in info
    assert _pose(env)[0] > start[0] + 0.002
    env.close()


def test_protective_stop_refused_unlock_keeps_the_fault(torque_server):
    """The controller refuses to unlock for a while after the stop (5 s on UR): clear_error keeps the
    arm stopped and reports the fault again; once the controller allows it, clear_error recovers."""
    from robot_rl.bridge.client import BridgeClient

    ctl = controller_of(torque_server)
    client = BridgeClient(torque_server.address, name="test-unlock")
    client.reset(seed=0)
    ctl.unlock_delay_s = 1.0
    ctl.inject_protective_stop()
    assert client.step(np.zeros(6), hold_s=0.1).state.mode == "reflex"
    assert client.clear_error().state.mode == "reflex"  # unlock refused: the next tick faults again
    assert ctl.protective_stop and not ctl.program_running
    ctl.unlock_delay_s = 0.0
    assert client.clear_error().state.mode == "hold"
    assert client.step(np.zeros(6), hold_s=0.1).state.mode == "track" and ctl.program_running
    client.close()


def test_emergency_stop_needs_release_then_recovers(torque_server):
    env, ctl = _env(torque_server), controller_of(torque_server)
    env.reset(seed=0)
    env.step(np.zeros(7))
    ctl.inject_emergency_stop(True)
    _, _, _, truncated, info = env.step(np.zeros(7))
    assert truncated and "emergency stop" in info["reflex"]
    _stays_stopped(env, torque_server, ctl)
    env.link.clear_error()  # still pressed: the arm stays stopped
    _stays_stopped(env, torque_server, ctl, n=1)
    ctl.inject_emergency_stop(False)
    env.reset(seed=1)  # clear_error powers on, releases the brakes, re-uploads the script
    assert ctl.powered and ctl.program_running
    _, _, _, truncated, info = env.step(np.array([0.5, 0, 0, 0, 0, 0, 0]))
    assert not truncated and "reflex" not in info
    env.close()


def test_communication_loss_stops_the_arm_until_reconnected(server):
    env, ctl = _env(server), controller_of(server)
    env.reset(seed=0)
    env.step(np.array([0.5, 0, 0, 0, 0, 0, 0]))
    ctl.inject_communication_loss(True)
    _, _, _, truncated, info = env.step(np.array([0.5, 0, 0, 0, 0, 0, 0]))
    assert truncated and "communication" in info["reflex"]
    assert ctl.watchdog_trips == 1 and not ctl.program_running  # RTDE's own watchdog stopped the program
    before = _pose(env)
    env.step(np.array([1.0, 0, 0, 0, 0, 0, 0]))
    assert np.linalg.norm(_pose(env)[:3] - before[:3]) < STILL_M
    with pytest.raises(BridgeRemoteError):
        env.reset(seed=1)  # clear_error cannot reconnect yet: the reset is refused, the arm stays put
    ctl.inject_communication_loss(False)
    env.reset(seed=1)
    assert ctl.program_running
    start = _pose(env)
    _, _, _, truncated, _ = env.step(np.array([1.0, 0, 0, 0, 0, 0, 0]))
    assert not truncated and _pose(env)[0] > start[0] + 0.002
    env.close()


def test_rtde_watchdog_stops_a_silent_client():
    """A loop that stops sending (here: reads without writes) is stopped by the controller within
    1/watchdog_min_hz, and the backend reports it."""
    arm, _ = URBackend(TASK).build(realtime=False)
    ctl = arm.owned[0].controller
    try:
        reading = arm.read()
        hold = ArmCommand(np.zeros(6), reading.pose_base_tcp, np.zeros((3, 6)))
        for _ in range(10):
            arm.read()
            arm.write(hold)
        assert ctl.program_running
        ticks = int(1.0 / arm.config.watchdog_min_hz / arm.spec.period_s) + 2
        faults = [arm.read().fault for _ in range(ticks)]
        assert ctl.watchdog_trips == 1 and not ctl.program_running
        assert faults[-1] == ArmFault.SAFETY and faults[0] == ArmFault.NONE
    finally:
        arm.close()


def test_real_time_double_paces_reads_at_the_500_hz_period():
    """waitPeriod paces the loop (timing itself is benchmarked by `robot-rl bench controller`)."""
    arm, _ = URBackend(TASK).build(realtime=True)
    try:
        hold = ArmCommand(np.zeros(6), arm.read().pose_base_tcp, np.zeros((3, 6)))
        t0 = time.monotonic()
        for _ in range(100):
            arm.read()
            arm.write(hold)
        elapsed = time.monotonic() - t0
        assert 0.19 < elapsed < 2.0, elapsed
        assert arm.read().fault == ArmFault.NONE
    finally:
        arm.close()


def test_unknown_address_fails_fast_and_says_what_to_check():
    """TEST-NET-1 (never routed) and a refusing port: a clear error within 3 s, nothing built."""
    for ip in ("192.0.2.1", "127.0.0.1"):
        t0 = time.monotonic()
        with pytest.raises(DeviceNotFound) as err:
            URBackend.for_choice(BackendChoice("ur", robot_ip=ip), TASK)
        assert time.monotonic() - t0 < 3.0
        assert ip in str(err.value) and "--robot-ip" in str(err.value) and "Remote Control" in str(err.value)


def test_real_ur_rtde_against_nothing_fails_fast():
    """The real ur_rtde modules (connect stage): the dashboard refuses, the message names the address."""
    t0 = time.monotonic()
    with pytest.raises(DeviceNotFound, match="no UR controller answers at 127.0.0.1"):
        URArm.connect(real_vendor(), "127.0.0.1", spec=ur_arm_spec("ur"), config=URArmConfig(),
                      limits=URBackend(TASK).admittance_limits())
    assert time.monotonic() - t0 < 3.0


def test_local_control_is_refused_with_the_pendant_setting_to_change():
    double = URDouble.build(TASK, realtime=False)
    double.controller.remote_control = False
    try:
        with pytest.raises(DeviceNotFound, match="Remote Control"):
            URArm.connect(URVendor(ur_rtde, ur_rtde, ur_rtde), double.hostname, spec=ur_arm_spec("ur-double"),
                          config=URArmConfig(gripper=False), limits=URBackend(TASK).admittance_limits())
    finally:
        double.close()


def test_serve_refuses_an_unreachable_arm(serve_process):
    """`robot-rl serve --backend ur` with a wrong address exits with the sentence, moving nothing."""
    proc = serve_process("--backend", "ur", "--robot-ip", "192.0.2.1", "--task", "pick_cube")
    assert proc.proc.wait(timeout=30) != 0
    out = proc.output()
    assert "no UR controller answers at 192.0.2.1" in out and "Traceback" not in out


def test_core_config_runs_the_law_at_500_hz():
    """The core rescales the law to the arm's 2 ms tick (one filter time constant whatever the rate)."""
    from robot_rl.control.runtime import SteppedRuntime

    rt = SteppedRuntime(URBackend(TASK), core_config(TASK))
    try:
        assert rt.tick_s == 0.002 and rt.core.config.law.tick_s == 0.002
    finally:
        rt.close()


@pytest.mark.slow
def test_bringup_in_servo_mode_through_the_double(serve_process, tmp_path):
    """The lab bring-up (hold, 2 cm moves, watchdog hold) in real time with admittance over servoL
    (tests/arms/test_bringup.py runs it in torque mode)."""
    from bringup import run_bringup, task_without_cameras

    server = serve_process("--backend", "ur-double", "--ur-mode", "servo", "--task", task_without_cameras(tmp_path),
                           "--pace", "realtime", "--reset-motion", "motion")
    run_bringup(server, TASK.limits.watchdog_s)
