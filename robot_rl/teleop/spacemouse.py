"""SpaceMouse teleop via pyspacemouse: 6-DoF deflection moves the arm, buttons toggle the gripper or end episodes.

Mapping: the device axes `[x y z roll pitch yaw]` (pyspacemouse's right-handed Z-up convention,
`AxisConvention.HID_Z_UP`: +x right, +y away from the operator, +z up, rotations about those axes)
go to the action `[Δx Δy Δz, Δrx Δry Δrz]` one to one, each through a deadband, a sign and a scale
(`SpaceMouseConfig`), then clipped to [-1, 1]. Flip signs to match how the operator faces the
robot base. The left button (index 0) toggles the gripper (action[6] = +1 closed, −1 open; starts
open); the right button (index 1) ends the episode. The device has no discard, quit or label keys.

Needs `pip install 'pyspacemouse>=2'` and the hidapi library (`apt install libhidapi-hidraw0`);
on Linux the user also needs read access to the device's /dev/hidraw* node (a udev rule).
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from robot_rl.errors import ConfigError, DependencyMissing, DeviceNotFound
from robot_rl.teleop.base import ACTION_DIM, EventCounts, TeleopState, teleop_state

log = logging.getLogger(__name__)

AXES = ("x", "y", "z", "roll", "pitch", "yaw")
"""pyspacemouse state fields, in action order [Δx Δy Δz, Δrx Δry Δrz]."""

_MAX_REPORTS_PER_WAKE = 32
"""Reports drained per reader wake-up; the device sends ~60-125 per second, so this never binds."""


@dataclass(frozen=True)
class SpaceMouseConfig:
    """SpaceMouse teleop settings. Tuples are in device axis order [x y z roll pitch yaw]."""

    deadband: float = 0.1
    """Fraction of full deflection ignored on every axis; above it the axis rescales so its output
    rises continuously from 0 to 1 at full deflection. Raise it if the arm drifts at rest."""
    axis_signs: tuple[float, float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    """+1 or −1 per axis: flip an axis whose motion goes the wrong way for the operator's viewpoint."""
    axis_scales: tuple[float, float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    """Gain per axis after the deadband, before clipping to [-1, 1]; 0 disables an axis."""
    gripper_button: int = 0
    """Button index that toggles the gripper (0 = left on two-button models)."""
    end_episode_button: int = 1
    """Button index that ends the episode (1 = right on two-button models)."""
    device: str | None = None
    """pyspacemouse device name (e.g. "SpaceMouse Wireless"); None opens the first one connected."""
    read_period_s: float = 0.002
    """Reader-thread sleep when the device has no new report (pyspacemouse reads do not block)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.deadband < 1.0:
            raise ConfigError(f"deadband must be in [0, 1), got {self.deadband}")
        if len(self.axis_signs) != 6 or any(s not in (-1.0, 1.0) for s in self.axis_signs):
            raise ConfigError(f"axis_signs must be 6 values of +1 or -1, got {self.axis_signs}")
        if len(self.axis_scales) != 6 or any(not 0.0 <= s <= 10.0 for s in self.axis_scales):
            raise ConfigError(f"axis_scales must be 6 values in [0, 10], got {self.axis_scales}")
        if min(self.gripper_button, self.end_episode_button) < 0 or self.gripper_button == self.end_episode_button:
            raise ConfigError(f"gripper_button ({self.gripper_button}) and end_episode_button "
                              f"({self.end_episode_button}) must be different non-negative button indices")
        if not 0.0005 <= self.read_period_s <= 0.05:
            raise ConfigError(f"read_period_s must be in [0.0005, 0.05], got {self.read_period_s}")


def spacemouse_to_action(axes: np.ndarray, *, gripper_closed: bool,
                         config: SpaceMouseConfig) -> tuple[np.ndarray, bool]:
    """Action of one SpaceMouse reading.

    Args:
        axes: (6,) deflections `[x y z roll pitch yaw]`, nominally in [-1, 1] (pyspacemouse may
            report slightly beyond 1 at full push).
        gripper_closed: the toggled gripper state.
        config: deadband, signs and scales.

    Returns:
        ((7,) float32 action in [-1, 1], intervening: some enabled axis is past the deadband).

    Raises:
        ValueError: axes is not 6 finite numbers.
    """
    a = np.asarray(axes, dtype=np.float64).reshape(-1)
    if a.shape != (6,) or not np.all(np.isfinite(a)):
        raise ValueError(f"axes must be 6 finite numbers [x y z roll pitch yaw], got {axes!r}")
    db = config.deadband
    past = np.maximum(np.abs(a) - db, 0.0) / (1.0 - db)
    motion = np.sign(a) * past * np.asarray(config.axis_signs) * np.asarray(config.axis_scales)
    action = np.zeros(ACTION_DIM, dtype=np.float32)
    action[:6] = np.clip(motion, -1.0, 1.0)
    action[6] = 1.0 if gripper_closed else -1.0
    return action, bool(np.any(action[:6] != 0.0))


@dataclass(frozen=True)
class SpaceMouseSnapshot:
    """Everything the reader thread knows, published as one immutable object."""

    axes: tuple[float, ...] = (0.0,) * 6
    """Newest deflections [x y z roll pitch yaw]."""
    buttons: tuple[int, ...] = ()
    """Newest button states (1 pressed), as pyspacemouse lists them."""
    gripper_closed: bool = False
    events: EventCounts = field(default_factory=EventCounts)


def apply_reading(snap: SpaceMouseSnapshot, axes: tuple[float, ...], buttons: tuple[int, ...], *,
                  config: SpaceMouseConfig) -> SpaceMouseSnapshot:
    """Snapshot after one device reading (pure): buttons act on their press (0 -> 1) only."""

    def pressed(index: int) -> bool:
        now = index < len(buttons) and bool(buttons[index])
        before = index < len(snap.buttons) and bool(snap.buttons[index])
        return now and not before

    gripper_closed = snap.gripper_closed != pressed(config.gripper_button)
    events = snap.events
    if pressed(config.end_episode_button):
        events = replace(events, end_episode=events.end_episode + 1)
    return SpaceMouseSnapshot(axes=tuple(float(v) for v in axes), buttons=tuple(int(b) for b in buttons),
                              gripper_closed=gripper_closed, events=events)


def snapshot_state(snap: SpaceMouseSnapshot, seen: EventCounts, *,
                   config: SpaceMouseConfig) -> tuple[TeleopState, EventCounts]:
    """TeleopState of a snapshot and the event totals to remember (see `base.teleop_state`)."""
    action, intervening = spacemouse_to_action(np.array(snap.axes), gripper_closed=snap.gripper_closed, config=config)
    return teleop_state(action, intervening=intervening, events=snap.events, seen=seen)


def open_spacemouse(device: str | None) -> Any:
    """Open a SpaceMouse with pyspacemouse (non-blocking reads, right-handed Z-up axes).

    Raises:
        DependencyMissing: pyspacemouse (>= 2) or the hidapi C library is missing.
        DeviceNotFound: no supported SpaceMouse is connected, or it cannot be opened.
    """
    try:
        # Imported here: pyspacemouse loads the hidapi C library at import time.
        import pyspacemouse
    except (ImportError, OSError) as exc:
        raise DependencyMissing(f"SpaceMouse teleop needs pyspacemouse and hidapi ({exc}): pip install "
                                f"'pyspacemouse>=2' and apt install libhidapi-hidraw0") from exc
    if not hasattr(pyspacemouse, "get_connected_devices") or not hasattr(pyspacemouse, "AxisConvention"):
        raise DependencyMissing("SpaceMouse teleop needs pyspacemouse >= 2 (get_connected_devices, "
                                "AxisConvention): pip install -U 'pyspacemouse>=2'")
    try:
        connected = pyspacemouse.get_connected_devices()
    except (RuntimeError, AttributeError, OSError) as exc:
        raise DependencyMissing(f"pyspacemouse cannot enumerate HID devices ({exc}): apt install "
                                f"libhidapi-hidraw0") from exc
    if not connected or (device is not None and device not in connected):
        wanted = "supported SpaceMouse" if device is None else f"SpaceMouse {device!r}"
        raise DeviceNotFound(
            f"no {wanted} found among HID devices (connected SpaceMice: {connected}): plug it in (wireless: "
            f"the receiver, device switched on), and on Linux give your user read access to /dev/hidraw* "
            f"with a udev rule; `python -c 'import pyspacemouse; print(pyspacemouse.get_all_hid_devices())'` "
            f"lists what hidapi sees")
    name = device if device is not None else connected[0]
    # pyspacemouse print()s "<name> found" on open: keep our stdout clean and log it instead.
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            dev = pyspacemouse.open(device=name, nonblocking=True,
                                    axis_convention=pyspacemouse.AxisConvention.HID_Z_UP)
    except (RuntimeError, ValueError, OSError) as exc:
        raise DeviceNotFound(f"cannot open SpaceMouse {name!r} ({exc}): check read/write access to its "
                             f"/dev/hidraw* node (udev rule) and that no other program holds it") from exc
    log.info("opened SpaceMouse %s %s", name, captured.getvalue().strip())
    return dev


class SpaceMouseTeleop:
    """Teleop from a 3Dconnexion SpaceMouse (see the module docstring for the mapping).

    Threading: after `start()` opens the device, the reader thread ("spacemouse-reader") owns it:
    it alone reads and closes it, and it is the only writer of `_snapshot`, replaced by a new frozen
    `SpaceMouseSnapshot` with one reference assignment (newest-state semantics, no lock). The env
    thread alone calls `start()`, `poll()` and `stop()` and owns `_seen` (event totals reported).
    `stop()` sets an Event; the reader wakes within `read_period_s`, closes the device and exits,
    and `stop()` joins it. A read error ends the reader; the next `poll()` raises DeviceNotFound.
    """

    def __init__(self, config: SpaceMouseConfig = SpaceMouseConfig()) -> None:
        self.config = config
        self._snapshot = SpaceMouseSnapshot()
        self._seen = EventCounts()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        """Open the device and start the reader thread.

        Raises:
            DeviceNotFound: no SpaceMouse connected, or it cannot be opened.
            DependencyMissing: pyspacemouse or hidapi is missing.
            RuntimeError: already started.
        """
        if self._thread is not None:
            raise RuntimeError("SpaceMouseTeleop.start() called twice: call stop() first")
        device = open_spacemouse(self.config.device)
        self._snapshot = SpaceMouseSnapshot()
        self._seen = EventCounts()
        self._error = None
        # A fresh Event per run: a reader that outlived a previous stop() must not be revived.
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(device, self._stop), name="spacemouse-reader",
                                        daemon=True)
        self._thread.start()

    def _run(self, device: Any, stop: threading.Event) -> None:
        last_t = None
        try:
            while not stop.is_set():
                snap = self._snapshot
                for _ in range(_MAX_REPORTS_PER_WAKE):
                    # read() processes at most one report into pyspacemouse's single mutable state and
                    # returns it; its stamp `t` changes only when a report was processed. Every report
                    # is applied (not just the newest) so a button tapped within one wake still counts.
                    state = device.read()
                    if state.t == last_t:
                        break
                    last_t = state.t
                    axes = tuple(float(getattr(state, a)) for a in AXES)
                    snap = apply_reading(snap, axes, tuple(state.buttons), config=self.config)
                self._snapshot = snap
                stop.wait(self.config.read_period_s)
        except Exception as exc:  # surfaced to the env thread by poll()
            if not stop.is_set():
                log.exception("SpaceMouse reader stopped")
                self._error = exc
        finally:
            try:
                device.close()
            except Exception:
                log.debug("SpaceMouse close failed", exc_info=True)

    def poll(self) -> TeleopState:
        """Newest SpaceMouse state; non-blocking. Call once per env step from the env thread.

        Raises:
            DeviceNotFound: reading the device failed (unplugged?).
            RuntimeError: not started.
        """
        thread = self._thread
        if thread is None:
            raise RuntimeError("SpaceMouseTeleop.poll() while not running: call start() first")
        if self._error is not None or not thread.is_alive():
            raise DeviceNotFound(f"SpaceMouse stopped responding ({self._error!r}): check the cable or receiver, "
                                 f"then stop() and start() the teleop again") from self._error
        state, self._seen = snapshot_state(self._snapshot, self._seen, config=self.config)
        return state

    def stop(self) -> None:
        """Stop the reader, close the device and join (up to 1 s). Safe to call twice or before start()."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=1.0)
        if thread.is_alive():
            log.warning("SpaceMouse reader did not stop within 1 s; it is a daemon thread and ends with the process")

    def __enter__(self) -> SpaceMouseTeleop:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
