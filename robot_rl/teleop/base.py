"""Teleoperation interface: what a human input device reports to the env loop once per step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

ACTION_DIM = 7
"""[Δx Δy Δz, Δrx Δry Δrz, gripper], the RobotEnv action layout."""


@dataclass(frozen=True)
class TeleopState:
    """One poll of a teleop device.

    Edge events (`end_episode`, `discard_episode`, `quit`, `label_success`) are True (or not None)
    in exactly one poll per key press / button press, then cleared.
    """

    action: np.ndarray
    """(7,) float32 in [-1, 1]: the RobotEnv action `[Δx Δy Δz, Δrx Δry Δrz, gripper]`; gripper is
    +1 while the operator holds it closed and −1 while open (the env closes above 0.5, opens below −0.5).
    Stored as a read-only copy."""
    intervening: bool = False
    """The human is commanding motion right now (a motion key held, the spacemouse deflected past
    its deadband). Gripper toggles and episode events alone do not count."""
    end_episode: bool = False
    """The operator marks the episode done (success)."""
    discard_episode: bool = False
    """The operator asks to throw the current episode away."""
    quit: bool = False
    """The operator asks to stop the session."""
    label_success: bool | None = None
    """Success-frame label hotkey: True (success), False (failure), None (no label this poll)."""

    def __post_init__(self) -> None:
        action = np.array(self.action, dtype=np.float32).reshape(-1)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"TeleopState.action must have shape ({ACTION_DIM},), got {np.shape(self.action)}")
        if not np.all(np.isfinite(action)) or np.any(np.abs(action) > 1.0):
            raise ValueError(f"TeleopState.action must be finite and in [-1, 1], got {action.tolist()}")
        action.flags.writeable = False
        object.__setattr__(self, "action", action)

    @classmethod
    def idle(cls, *, gripper_closed: bool = False) -> TeleopState:
        """No motion, no events; the gripper entry holds the given state."""
        action = np.zeros(ACTION_DIM, dtype=np.float32)
        action[6] = 1.0 if gripper_closed else -1.0
        return cls(action=action)


@dataclass(frozen=True)
class EventCounts:
    """Running totals of edge events, advanced only by a device's listener/reader thread.

    `poll()` compares them with the totals it last reported, so each event reaches the env exactly
    once and none is lost between two polls (two presses between polls are reported as one).
    """

    end_episode: int = 0
    discard_episode: int = 0
    quit: int = 0
    label: int = 0
    last_label: bool | None = None
    """Value of the newest label hotkey (True: success, False: failure)."""


def teleop_state(action: np.ndarray, *, intervening: bool, events: EventCounts,
                 seen: EventCounts) -> tuple[TeleopState, EventCounts]:
    """The TeleopState of one poll and the totals to remember as reported.

    Args:
        action: (7,) action in [-1, 1].
        intervening: the human is commanding motion now.
        events: the device's current event totals.
        seen: the totals the previous poll returned (EventCounts() before the first poll).

    Returns:
        (state with each event that advanced since `seen` set once, `events` to pass as the next `seen`).
    """
    state = TeleopState(
        action=action,
        intervening=intervening,
        end_episode=events.end_episode > seen.end_episode,
        discard_episode=events.discard_episode > seen.discard_episode,
        quit=events.quit > seen.quit,
        label_success=events.last_label if events.label > seen.label else None,
    )
    return state, events


class Teleop(Protocol):
    """A human input device driving the RobotEnv action.

    Threading: `start()`, `poll()` and `stop()` are called from one thread, the env loop's. The
    device may run its own listener/reader thread; `poll()` never blocks on it.
    """

    def start(self) -> None:
        """Open the device and start listening.

        Raises:
            DeviceNotFound: the device (or the display it needs) is not available.
            DependencyMissing: the optional Python package for this device is not installed.
        """
        ...

    def poll(self) -> TeleopState:
        """Newest state; non-blocking. Call once per env step. Edge events are reported once.

        Raises:
            DeviceNotFound: the device was lost after `start()`.
        """
        ...

    def stop(self) -> None:
        """Stop listening and release the device. Safe to call twice or before `start()`."""
        ...
