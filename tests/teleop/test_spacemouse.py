"""SpaceMouse teleop: the pure mapping, the reader thread over a scripted device, and the real no-device error."""

from __future__ import annotations

import importlib.util
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from robot_rl.errors import ConfigError, DependencyMissing, DeviceNotFound
from robot_rl.teleop import spacemouse
from robot_rl.teleop.base import EventCounts
from robot_rl.teleop.spacemouse import (
    SpaceMouseConfig,
    SpaceMouseSnapshot,
    SpaceMouseTeleop,
    apply_reading,
    snapshot_state,
    spacemouse_to_action,
)

NO_DEVICE_TIMEOUT_S = 5.0
"""The missing-device error must come quickly (measured ~0.3 s including the import)."""

CFG = SpaceMouseConfig()

# ---- pure mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize("axis", range(6))
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_full_deflection_gives_full_scale_on_the_same_action_axis(axis, sign):
    axes = np.zeros(6)
    axes[axis] = sign
    action, intervening = spacemouse_to_action(axes, gripper_closed=False, config=CFG)
    expected = np.zeros(7, dtype=np.float32)
    expected[axis] = sign
    expected[6] = -1.0
    assert action.dtype == np.float32 and action.shape == (7,)
    np.testing.assert_allclose(action, expected)
    assert intervening


def test_deflection_inside_the_deadband_is_no_motion_and_no_intervention():
    axes = np.full(6, 0.099)
    action, intervening = spacemouse_to_action(axes * np.array([1, -1, 1, -1, 1, -1]), gripper_closed=True,
                                               config=CFG)
    np.testing.assert_array_equal(action, [0, 0, 0, 0, 0, 0, 1])
    assert not intervening


def test_output_rises_continuously_from_the_deadband_edge():
    just_past, _ = spacemouse_to_action(np.array([0.1001, 0, 0, 0, 0, 0]), gripper_closed=False, config=CFG)
    half, _ = spacemouse_to_action(np.array([0.55, 0, 0, 0, 0, 0]), gripper_closed=False, config=CFG)
    assert 0.0 < just_past[0] < 1e-3
    assert half[0] == pytest.approx(0.5, abs=1e-6)


def test_signs_and_scales_apply_per_axis_and_the_result_is_clipped():
    cfg = SpaceMouseConfig(deadband=0.0, axis_signs=(1, -1, 1, 1, 1, -1), axis_scales=(2, 1, 0.5, 0, 1, 1))
    action, intervening = spacemouse_to_action(np.array([0.8, 0.5, 0.5, 1.0, 1.3, 0.25]), gripper_closed=False,
                                               config=cfg)
    np.testing.assert_allclose(action, [1.0, -0.5, 0.25, 0.0, 1.0, -0.25, -1.0], atol=1e-6)
    assert intervening
    _, intervening = spacemouse_to_action(np.array([0, 0, 0, 1.0, 0, 0]), gripper_closed=False, config=cfg)
    assert not intervening  # a disabled axis (scale 0) does not count as an intervention


def test_bad_axes_raise_value_error():
    with pytest.raises(ValueError, match="6 finite"):
        spacemouse_to_action(np.zeros(5), gripper_closed=False, config=CFG)
    with pytest.raises(ValueError, match="6 finite"):
        spacemouse_to_action(np.array([0, 0, np.nan, 0, 0, 0]), gripper_closed=False, config=CFG)


@pytest.mark.parametrize("kwargs", [
    {"deadband": 1.0}, {"deadband": -0.1}, {"axis_signs": (1, 1, 1, 1, 1, 0.5)}, {"axis_signs": (1, 1)},
    {"axis_scales": (1, 1, 1, 1, 1, -1)}, {"gripper_button": 1}, {"end_episode_button": -1},
    {"read_period_s": 1.0},
])
def test_config_rejects_bad_values_naming_the_field(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        SpaceMouseConfig(**kwargs)


def test_left_button_toggles_the_gripper_once_per_press_and_right_button_ends_once():
    snap = SpaceMouseSnapshot()
    for buttons in [(1, 0), (1, 0), (1, 0)]:  # held: one toggle
        snap = apply_reading(snap, (0,) * 6, buttons, config=CFG)
    assert snap.gripper_closed
    state, seen = snapshot_state(snap, EventCounts(), config=CFG)
    assert state.action[6] == 1.0 and not state.intervening and not state.end_episode
    snap = apply_reading(apply_reading(snap, (0,) * 6, (0, 0), config=CFG), (0,) * 6, (1, 1), config=CFG)
    assert not snap.gripper_closed
    state, seen = snapshot_state(snap, seen, config=CFG)
    assert state.end_episode and state.action[6] == -1.0
    snap = apply_reading(snap, (0,) * 6, (1, 1), config=CFG)  # still held: no new event
    state, _ = snapshot_state(snap, seen, config=CFG)
    assert not state.end_episode and not state.quit and not state.discard_episode and state.label_success is None


# ---- reader thread over a scripted device -----------------------------------------------------


class ScriptedDevice:
    """Stands in for pyspacemouse's device: read() processes one queued report, else returns the same state."""

    def __init__(self, reports, *, fail_after_reports: bool = False) -> None:
        self.reports = list(reports)
        self.fail_after_reports = fail_after_reports
        self.state = SimpleNamespace(t=-1.0, x=0.0, y=0.0, z=0.0, roll=0.0, pitch=0.0, yaw=0.0, buttons=[0, 0])
        self.closed = False

    def read(self):
        if self.reports:
            fields = self.reports.pop(0)
            for k, v in fields.items():
                setattr(self.state, k, v)
            self.state.t = time.monotonic()
        elif self.fail_after_reports:
            raise OSError("device unplugged")
        return self.state

    def close(self) -> None:
        self.closed = True


def poll_until(teleop, predicate, timeout_s=2.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = teleop.poll()
        if predicate(state):
            return state
        time.sleep(0.005)
    raise AssertionError("condition not reached")


def test_reader_publishes_the_newest_reading_and_button_edges(monkeypatch):
    device = ScriptedDevice([{"x": 0.5}, {"x": 1.0, "yaw": -1.0}, {"buttons": [1, 0]}, {"buttons": [0, 1]}])
    monkeypatch.setattr(spacemouse, "open_spacemouse", lambda name: device)
    teleop = SpaceMouseTeleop()
    with teleop:
        state = poll_until(teleop, lambda s: s.action[6] == 1.0)  # all four reports drained
        np.testing.assert_allclose(state.action, [1, 0, 0, 0, 0, -1, 1])
        assert state.intervening and state.end_episode
        assert not teleop.poll().end_episode
    assert device.closed


def test_a_read_error_surfaces_as_device_not_found(monkeypatch):
    device = ScriptedDevice([{"z": 1.0}], fail_after_reports=True)
    monkeypatch.setattr(spacemouse, "open_spacemouse", lambda name: device)
    teleop = SpaceMouseTeleop()
    teleop.start()
    try:
        deadline = time.monotonic() + 2.0
        with pytest.raises(DeviceNotFound, match="unplugged"):
            while time.monotonic() < deadline:
                teleop.poll()
                time.sleep(0.005)
    finally:
        teleop.stop()
    assert device.closed


# ---- the real library, with no device attached ------------------------------------------------


def test_missing_device_raises_device_not_found_quickly():
    if importlib.util.find_spec("pyspacemouse") is None:
        pytest.skip("pyspacemouse not installed (pip install 'robot_rl[teleop]')")
    import pyspacemouse

    if pyspacemouse.get_connected_devices():
        pytest.skip("a SpaceMouse is connected: the no-device path cannot be exercised")
    teleop = SpaceMouseTeleop()
    t0 = time.monotonic()
    with pytest.raises(DeviceNotFound, match="no supported SpaceMouse found.*udev rule"):
        teleop.start()
    assert time.monotonic() - t0 < NO_DEVICE_TIMEOUT_S
    with pytest.raises(RuntimeError, match="start"):
        teleop.poll()
    teleop.stop()


def test_missing_named_device_raises_device_not_found():
    if importlib.util.find_spec("pyspacemouse") is None:
        pytest.skip("pyspacemouse not installed (pip install 'robot_rl[teleop]')")
    import pyspacemouse

    if "SpaceMouse Wireless" in pyspacemouse.get_connected_devices():
        pytest.skip("a SpaceMouse Wireless is connected: the no-device path cannot be exercised")
    with pytest.raises(DeviceNotFound, match="SpaceMouse Wireless"):
        SpaceMouseTeleop(SpaceMouseConfig(device="SpaceMouse Wireless")).start()


def test_missing_pyspacemouse_raises_dependency_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspacemouse", None)
    with pytest.raises(DependencyMissing, match="pip install"):
        SpaceMouseTeleop().start()
