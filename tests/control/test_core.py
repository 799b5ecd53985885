"""The control core on the twin, stepped in simulated time: watchdog, reflexes, resets, box."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from robot_rl.control.commands import (
    ClearErrorCommand,
    ParamsCommand,
    ResetCommand,
    TargetCommand,
)
from robot_rl.control.core import ControlCore
from robot_rl.control.safety import CommandLimits
from robot_rl.control.snapshot import Fault, Mode
from robot_rl.task_spec import load_task
from robot_rl.control.commands import core_config
from robot_rl.twin.backend import TwinBackend

POS_TOL_M = 0.003
SPEED_STILL_M_PER_S = 0.01


@pytest.fixture
def core():
    task = load_task("pick_cube")
    arm, hooks = TwinBackend(task).build(realtime=False)
    c = ControlCore(arm, core_config(task), scene=hooks)
    c.step()
    c.submit(ResetCommand(1, np.array(task.reset.pose), scene_seed=0, teleport=True))
    run_until_event(c)
    c.task = task
    return c


def run_until_event(c: ControlCore, max_ticks: int = 20000):
    for _ in range(max_ticks):
        c.step()
        events = c.events()
        if events:
            return events
    raise AssertionError("no core event")


def ticks(c: ControlCore, n: int):
    for _ in range(n):
        c.step()
    return c.buffer.read()


def speed(snap) -> float:
    return float(np.linalg.norm(snap.get("twist")[:3]))


def test_watchdog_holds_then_command_resumes(core):
    target = np.array(core.task.reset.pose)
    target[1] += 0.05
    core.submit(TargetCommand(7, target, None))
    snap = ticks(core, 150)
    assert snap.mode == Mode.TRACK and snap.int("command_seq") == 7
    assert speed(snap) > 0.03  # moving toward the target
    snap = ticks(core, 60)  # 210 ms after the command: watchdog_s is 0.2 s
    assert snap.mode == Mode.WATCHDOG_HOLD and snap.int("watchdog_trips") == 1
    np.testing.assert_allclose(snap.get("target")[:3], snap.get("pose")[:3], atol=0.01)
    snap = ticks(core, 200)
    assert speed(snap) < SPEED_STILL_M_PER_S
    core.submit(TargetCommand(8, target, None))
    assert ticks(core, 1).mode == Mode.TRACK


def test_contact_reflex_holds_until_cleared(core):
    core.submit(ParamsCommand(limits=dataclasses.replace(core.task.limits, max_contact_force_n=5.0)))
    down = np.array(core.task.reset.pose)
    down[:2] = [0.62, 0.15]  # clear of the cube
    snap = None
    for k in range(40):
        down[2] = max(down[2] - 0.01, 0.0)
        core.submit(TargetCommand(10 + k, down.copy(), None))
        snap = ticks(core, 100)
        if snap.mode == Mode.REFLEX:
            break
    assert snap.mode == Mode.REFLEX and snap.fault == Fault.CONTACT_FORCE
    assert "contact force" in snap.fault_message() and float(snap.get("fault_value")[0]) > 5.0
    held = snap.get("pose").copy()
    core.submit(TargetCommand(99, np.array(core.task.reset.pose), None))  # refused while in reflex
    snap = ticks(core, 300)
    assert snap.int("command_seq") != 99
    np.testing.assert_allclose(snap.get("target")[:3], held[:3], atol=0.005)  # braked where it was
    assert speed(snap) < SPEED_STILL_M_PER_S
    core.submit(ParamsCommand(limits=core.task.limits))
    core.submit(ClearErrorCommand())
    snap = ticks(core, 2)
    assert snap.mode == Mode.HOLD and snap.fault == Fault.NONE


def test_core_clips_targets_to_box_even_without_server(core):
    far = np.array([2.0, -3.0, -1.0, 0.0, 1.0, 0.0, 0.0])
    core.submit(TargetCommand(3, far, None))
    snap = ticks(core, 1)
    box = core.task.workspace
    assert box.violation(snap.get("target"), tol_m=1e-9) is None
    assert snap.int("target_clipped") == 1


def test_teleport_reset_is_deterministic(core):
    core.submit(ResetCommand(2, np.array([0.45, 0.05, 0.15, 0, 1, 0, 0]), scene_seed=42, teleport=True))
    run_until_event(core)
    a = core.buffer.read()
    core.submit(TargetCommand(5, np.array([0.5, -0.1, 0.1, 0, 1, 0, 0]), 0.0))
    ticks(core, 150)
    core.submit(ResetCommand(3, np.array([0.45, 0.05, 0.15, 0, 1, 0, 0]), scene_seed=42, teleport=True))
    run_until_event(core)
    b = core.buffer.read()
    for name in ("q", "pose", "priv.cube_pose", "gripper_width"):
        np.testing.assert_array_equal(a.get(name), b.get(name))


def test_motion_reset_reaches_goal_through_the_controller(core):
    goal = np.array([0.42, -0.1, 0.12, 0, 1, 0, 0])
    core.submit(TargetCommand(4, np.array([0.55, 0.1, 0.2, 0, 1, 0, 0]), 0.0))
    ticks(core, 100)
    core.submit(ResetCommand(5, goal, joint_reset=True, scene_seed=3))
    events = run_until_event(core)
    assert [e.kind for e in events] == ["reset_done"] and events[0].request_id == 5
    snap = core.buffer.read()
    assert snap.mode == Mode.HOLD
    np.testing.assert_allclose(snap.get("pose")[:3], goal[:3], atol=POS_TOL_M)
    assert speed(snap) < SPEED_STILL_M_PER_S
    assert float(snap.get("gripper_width")[0]) > 0.07  # reset opens the gripper


def test_reset_refused_in_reflex(core):
    core.submit(ParamsCommand(limits=CommandLimits(max_contact_force_n=1.0)))
    core._enter_reflex(Fault.CONTACT_FORCE, 2.0, core._reading)  # as if a contact had tripped it
    core.submit(ResetCommand(6, np.array(core.task.reset.pose)))
    events = run_until_event(core, 10)
    assert events[0].kind == "reset_failed" and "clear_error" in events[0].message
