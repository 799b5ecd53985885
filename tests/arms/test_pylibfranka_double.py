"""The pylibfranka double: the real wheel's names and signatures, libfranka's timing contract, its faults."""

from __future__ import annotations

import time

import numpy as np
import pytest

from robot_rl.task_spec import load_task
from robot_rl.twin.doubles.franka_robot import MAX_LOST_PACKETS, ROBOT_IP, FrankaDouble
from robot_rl.twin.doubles.pylibfranka import VENDOR_NAMES
from vendor_api import signature_mismatch

real = pytest.importorskip("pylibfranka", reason="the franka extra (pylibfranka) is not installed")

STILL_RAD_PER_S = 0.01
STALL_S = 0.03
"""Longer than MAX_LOST_PACKETS (20) cycles of 1 ms."""


@pytest.fixture(scope="module")
def task():
    return load_task("pick_cube")


def _public(obj) -> list[str]:
    return [n for n in dir(obj) if not n.startswith("_")]


def test_every_name_and_signature_exists_in_the_real_wheel(task):
    vendor = FrankaDouble(task, realtime=False).vendor
    assert sorted(vars(vendor)) == sorted(VENDOR_NAMES)
    for name in VENDOR_NAMES:
        assert hasattr(real, name), f"pylibfranka has no {name}"
        mine, theirs = getattr(vendor, name), getattr(real, name)
        if issubclass(mine, BaseException):
            assert issubclass(theirs, BaseException)
            continue
        instance_attrs = list(vars(mine()).keys()) if name in ("GripperState", "Duration") else []
        for attr in _public(mine) + [a for a in instance_attrs if not a.startswith("_")]:
            assert hasattr(theirs, attr), f"pylibfranka.{name} has no {attr}"
            member = getattr(mine, attr, None)
            if callable(member) and not isinstance(member, type) and not hasattr(member, "value"):
                why = signature_mismatch(getattr(theirs, attr), member)
                assert why is None, f"{name}.{attr}: {why}"
        if "__init__" in vars(mine):
            why = signature_mismatch(theirs.__init__, mine.__init__)
            assert why is None, f"{name}(): {why}"


def _control(double):
    v = double.vendor
    robot = v.Robot(ROBOT_IP, v.RealtimeConfig.kEnforce)
    return v, robot, robot.start_torque_control()


def test_a_command_that_misses_its_packets_stops_the_robot(task):
    double = FrankaDouble(task, realtime=True)
    v, robot, ctl = _control(double)
    for _ in range(50):
        ctl.readOnce()
        ctl.writeOnce(v.Torques([0.0] * 7))
    ctl.readOnce()
    time.sleep(0.003)  # a few late cycles are tolerated
    ctl.writeOnce(v.Torques([0.0] * 7))
    state, _ = ctl.readOnce()
    assert state.control_command_success_rate < 1.0
    ctl.writeOnce(v.Torques([0.0] * 7))
    ctl.readOnce()
    time.sleep(STALL_S)  # over MAX_LOST_PACKETS cycles without a command
    ctl.writeOnce(v.Torques([0.0] * 7))
    with pytest.raises(v.ControlException, match="communication_constraints_violation"):
        ctl.readOnce()
    assert double.lost_commands >= MAX_LOST_PACKETS
    assert robot.read_once().robot_mode == v.RobotMode.Reflex
    with pytest.raises(v.ControlException, match="Reflex"):
        robot.start_torque_control()
    robot.automatic_error_recovery()
    ctl = robot.start_torque_control()
    state, _ = ctl.readOnce()
    assert state.robot_mode == v.RobotMode.Move


def test_simulated_time_never_loses_a_packet(task):
    double = FrankaDouble(task, realtime=False)
    v, robot, ctl = _control(double)
    t0 = ctl.readOnce()[0].time.to_sec()
    ctl.writeOnce(v.Torques([0.0] * 7))
    time.sleep(STALL_S)  # wall time is irrelevant here
    ctl.writeOnce(v.Torques([0.0] * 7))
    state, _ = ctl.readOnce()
    assert state.time.to_sec() == pytest.approx(t0 + 0.002)
    assert double.lost_commands == 0 and state.robot_mode == v.RobotMode.Move


def test_an_injected_reflex_stops_the_arm_until_recovery(task):
    double = FrankaDouble(task, realtime=False)
    v, robot, ctl = _control(double)
    push = [8.0, 0, 0, 0, 0, 0, 0]  # swing joint 1
    for _ in range(200):
        ctl.readOnce()
        ctl.writeOnce(v.Torques(push))
    assert abs(ctl.readOnce()[0].dq[0]) > 0.05
    double.inject_reflex()
    with pytest.raises(v.ControlException, match="cartesian_reflex"):
        ctl.readOnce()
    with pytest.raises(v.ControlException):
        ctl.writeOnce(v.Torques(push))  # the aborted control takes no more commands
    for _ in range(500):
        state = robot.read_once()
    assert state.robot_mode == v.RobotMode.Reflex
    assert np.max(np.abs(state.dq)) < STILL_RAD_PER_S
    robot.automatic_error_recovery()
    assert robot.read_once().robot_mode == v.RobotMode.Idle


def test_communication_loss_and_unknown_addresses_raise_network_exceptions(task):
    double = FrankaDouble(task, realtime=False, connect_timeout_s=0.2)
    v, robot, ctl = _control(double)
    ctl.readOnce()
    double.inject_communication_loss()
    with pytest.raises(v.NetworkException):
        ctl.readOnce()
    with pytest.raises(v.NetworkException):
        robot.read_once()
    double.restore_communication()
    assert robot.read_once().robot_mode == v.RobotMode.Reflex  # it stopped without commands
    t = time.monotonic()
    with pytest.raises(v.NetworkException):
        v.Robot("10.1.2.3")
    assert 0.2 <= time.monotonic() - t < 1.0
