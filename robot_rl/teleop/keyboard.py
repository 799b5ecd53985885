"""Keyboard teleop through pynput: held keys move the arm at full scale, hotkeys end, discard or label episodes.

Key map (`KEY_MAP`):

    w / s        +x / −x
    a / d        +y / −y
    r / f        +z / −z (up / down)
    q / e        yaw + / − (rotation about z)
    space        toggle the gripper (action[6] = +1 closed, −1 open; starts open)
    Enter        end the episode (done / success)
    Backspace    discard the episode
    Esc          quit
    1 / 0        label frames success / failure from now on (for the reward classifier)

A motion key gives ±1 on its axis for as long as it is held; opposite keys held together cancel.
Letters are matched case-insensitively (Shift or Caps Lock do not change the map). pynput sees
keys system-wide on the X display, whichever window has focus. If a release is ever missed (a
modifier such as AltGr changed the key's character between press and release), tapping the key
again clears it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from collections.abc import Set
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from robot_rl.errors import ConfigError, DependencyMissing, DeviceNotFound
from robot_rl.teleop.base import ACTION_DIM, EventCounts, TeleopState, teleop_state

log = logging.getLogger(__name__)

MOTION_KEYS: dict[str, tuple[int, float]] = {
    "w": (0, +1.0), "s": (0, -1.0),
    "a": (1, +1.0), "d": (1, -1.0),
    "r": (2, +1.0), "f": (2, -1.0),
    "q": (5, +1.0), "e": (5, -1.0),
}
"""Key name -> (action index, sign) while held."""

EVENT_KEYS: dict[str, str] = {
    "space": "toggle_gripper",
    "enter": "end_episode",
    "backspace": "discard_episode",
    "esc": "quit",
    "1": "label_success",
    "0": "label_failure",
}
"""Key name -> event fired once per press (holding the key does not repeat it)."""

KEY_MAP: dict[str, str] = {
    "w": "+x", "s": "−x",
    "a": "+y", "d": "−y",
    "r": "+z (up)", "f": "−z (down)",
    "q": "yaw + (about z)", "e": "yaw − (about z)",
    "space": "toggle gripper (closed +1 / open −1)",
    "enter": "end episode (done / success)",
    "backspace": "discard episode",
    "esc": "quit",
    "1": "label success from here",
    "0": "label failure from here",
}
"""Human-readable key map (key name as `normalize_key` returns it -> meaning), for help texts."""


def normalize_key(key: Any) -> str | None:
    """Name of a pynput key as used in KEY_MAP: lower-case character, or the special key's name.

    Args:
        key: a pynput `KeyCode` (has `.char`), a `Key` member (has `.name`, e.g. "space"), or None.

    Returns:
        e.g. "w", "1", "space", "enter", "backspace", "esc"; None if the key has neither.
    """
    char = getattr(key, "char", None)
    if char:
        return "space" if char == " " else char.lower()
    name = getattr(key, "name", None)
    return name if isinstance(name, str) else None


def keys_to_action(held: Set[str], *, gripper_closed: bool) -> np.ndarray:
    """Action of a set of held keys.

    Args:
        held: names of the keys held now (others than MOTION_KEYS are ignored).
        gripper_closed: the toggled gripper state.

    Returns:
        (7,) float32: ±1 on each axis with one of its keys held (0 if both or none), gripper ±1.
    """
    action = np.zeros(ACTION_DIM, dtype=np.float32)
    for name in held:
        axis_sign = MOTION_KEYS.get(name)
        if axis_sign is not None:
            action[axis_sign[0]] += axis_sign[1]
    action[6] = 1.0 if gripper_closed else -1.0
    return action


@dataclass(frozen=True)
class KeyboardSnapshot:
    """Everything the listener thread knows, published as one immutable object."""

    down: frozenset[str] = frozenset()
    """Mapped keys (MOTION_KEYS and EVENT_KEYS) currently held."""
    gripper_closed: bool = False
    events: EventCounts = field(default_factory=EventCounts)


def apply_key(snap: KeyboardSnapshot, name: str | None, *, pressed: bool) -> KeyboardSnapshot:
    """Snapshot after one key press or release (pure; unmapped keys leave it unchanged).

    Events fire on the up->down transition only, so X auto-repeat (repeated presses of a held key)
    toggles the gripper or ends the episode once.
    """
    if name not in MOTION_KEYS and name not in EVENT_KEYS:
        return snap
    if not pressed:
        return replace(snap, down=snap.down - {name}) if name in snap.down else snap
    if name in snap.down:
        return snap
    snap = replace(snap, down=snap.down | {name})
    event = EVENT_KEYS.get(name)
    ev = snap.events
    if event == "toggle_gripper":
        return replace(snap, gripper_closed=not snap.gripper_closed)
    if event == "end_episode":
        return replace(snap, events=replace(ev, end_episode=ev.end_episode + 1))
    if event == "discard_episode":
        return replace(snap, events=replace(ev, discard_episode=ev.discard_episode + 1))
    if event == "quit":
        return replace(snap, events=replace(ev, quit=ev.quit + 1))
    if event in ("label_success", "label_failure"):
        return replace(snap, events=replace(ev, label=ev.label + 1, last_label=event == "label_success"))
    return snap


def snapshot_state(snap: KeyboardSnapshot, seen: EventCounts) -> tuple[TeleopState, EventCounts]:
    """TeleopState of a snapshot and the event totals to remember (see `base.teleop_state`)."""
    held = snap.down & MOTION_KEYS.keys()
    return teleop_state(keys_to_action(held, gripper_closed=snap.gripper_closed), intervening=bool(held),
                        events=snap.events, seen=seen)


@dataclass(frozen=True)
class KeyboardConfig:
    """Keyboard teleop settings."""

    ready_timeout_s: float = 3.0
    """How long start() waits for the pynput listener to connect to the X display."""
    start_gripper_closed: bool = False
    """Gripper state before the first space press (False: the action commands open)."""

    def __post_init__(self) -> None:
        if not 0.1 <= self.ready_timeout_s <= 60.0:
            raise ConfigError(f"ready_timeout_s must be in [0.1, 60], got {self.ready_timeout_s}")


def _wake_xorg_listener(listener: Any) -> None:
    """Make a stopped pynput Xorg listener thread exit now rather than at the next X input event.

    pynput 1.8.2's stop() sends the RECORD disable request on the connection its thread is blocked
    reading, unflushed, so join() waits for the next key or mouse event (pynput issue #75, fix
    proposed in PR #583). Sending it on the listener's second connection and flushing ends the
    thread within a few ms (measured under Xvfb). Private attributes: skipped if a backend lacks them.
    """
    display = getattr(listener, "_display_stop", None)
    context = getattr(listener, "_context", None)
    if display is None or context is None:
        return
    try:
        display.record_disable_context(context)
        display.flush()
    except Exception:  # the thread may have closed the connection already: it is exiting anyway
        log.debug("keyboard teleop: RECORD disable on stop failed", exc_info=True)


class KeyboardTeleop:
    """Teleop from the keyboard of the X display in `DISPLAY` (see the module docstring for keys).

    Threading: the pynput listener thread runs `_on_press`/`_on_release` and is the only writer of
    `_snapshot`, which it replaces by a new frozen `KeyboardSnapshot` with one reference assignment
    (atomic in CPython), so neither side takes a lock and poll() never waits. The env thread alone
    calls `start()`, `poll()` and `stop()`, and alone owns `_seen` (event totals already reported).
    `stop()` stops the listener (pynput disables its X RECORD context) and joins it; a listener that
    never became ready is a daemon thread and is left to die with the process.
    """

    def __init__(self, config: KeyboardConfig = KeyboardConfig()) -> None:
        self.config = config
        self._listener: Any = None
        self._snapshot = KeyboardSnapshot(gripper_closed=config.start_gripper_closed)
        self._seen = EventCounts()

    def start(self) -> None:
        """Connect to the X display and start listening; returns once the listener is ready.

        Raises:
            DeviceNotFound: DISPLAY is unset, or no X server answers there.
            DependencyMissing: pynput is not installed.
            RuntimeError: already started.
        """
        if self._listener is not None:
            raise RuntimeError("KeyboardTeleop.start() called twice: call stop() first")
        display = os.environ.get("DISPLAY", "")
        if not display:
            raise DeviceNotFound(
                "keyboard teleop needs an X display but DISPLAY is not set: run it from a desktop session "
                "(X11, or Wayland with XWayland's DISPLAY), over `ssh -X`, or headless under `xvfb-run`")
        try:
            # Imported here: pynput connects to the X server at import time and fails without one.
            import pynput.keyboard as pynput_keyboard
        except ImportError as exc:
            if importlib.util.find_spec("pynput") is None:
                raise DependencyMissing("keyboard teleop needs pynput: pip install pynput "
                                        "(or pip install 'robot_rl[teleop]')") from exc
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DeviceNotFound(f"pynput cannot use the X display DISPLAY={display!r} ({reason}): check that an "
                                 f"X server runs there (`xdpyinfo`), or start one with `xvfb-run`") from exc

        self._snapshot = KeyboardSnapshot(gripper_closed=self.config.start_gripper_closed)
        self._seen = EventCounts()
        listener = pynput_keyboard.Listener(on_press=self._on_press, on_release=self._on_release)
        listener.start()
        self._wait_ready(listener, display)
        self._listener = listener
        log.info("keyboard teleop listening on DISPLAY=%s", display)

    def _wait_ready(self, listener: Any, display: str) -> None:
        # pynput's wait() has no timeout and blocks forever if the listener thread dies while
        # connecting, so a helper thread waits and we watch both.
        ready = threading.Event()

        def wait_listener() -> None:
            listener.wait()
            ready.set()

        threading.Thread(target=wait_listener, name="keyboard-teleop-ready", daemon=True).start()
        deadline = time.monotonic() + self.config.ready_timeout_s
        while not ready.wait(0.02):
            if not listener.is_alive() or time.monotonic() > deadline:
                backend = os.environ.get("PYNPUT_BACKEND")
                hint = f" (PYNPUT_BACKEND={backend!r} is set: unset it)" if backend else ""
                raise DeviceNotFound(
                    f"the pynput keyboard listener did not start on DISPLAY={display!r} within "
                    f"{self.config.ready_timeout_s} s{hint}: check that the X server supports the RECORD "
                    f"extension (`xdpyinfo -queryExtensions | grep RECORD`)")

    def _on_press(self, key: Any, injected: bool = False) -> None:
        self._on_key(key, pressed=True)

    def _on_release(self, key: Any, injected: bool = False) -> None:
        self._on_key(key, pressed=False)

    def _on_key(self, key: Any, *, pressed: bool) -> None:
        # Runs on the pynput listener thread. An exception here would stop pynput's listener, so it
        # is logged instead; the previous snapshot stays valid.
        try:
            self._snapshot = apply_key(self._snapshot, normalize_key(key), pressed=pressed)
        except Exception:
            log.exception("keyboard teleop: ignoring key event %r", key)

    def poll(self) -> TeleopState:
        """Newest keyboard state; non-blocking. Call once per env step from the env thread.

        Raises:
            DeviceNotFound: the listener stopped (the X display went away).
            RuntimeError: not started.
        """
        listener = self._listener
        if listener is None:
            raise RuntimeError("KeyboardTeleop.poll() while not running: call start() first")
        if not listener.is_alive():
            raise DeviceNotFound("the keyboard listener stopped (X display closed?): stop() and start() the "
                                 "teleop again once the display is back")
        state, self._seen = snapshot_state(self._snapshot, self._seen)
        return state

    def stop(self) -> None:
        """Stop the listener and join it (up to 2 s). Safe to call twice or before start()."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        listener.stop()
        _wake_xorg_listener(listener)
        listener.join(timeout=2.0)
        if listener.is_alive():
            log.warning("keyboard listener thread did not stop within 2 s; it is a daemon thread and "
                        "ends with the process")

    def __enter__(self) -> KeyboardTeleop:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
