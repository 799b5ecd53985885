"""Human-in-the-loop interventions: a human (keyboard, SpaceMouse) or a scripted stand-in takes over
from the policy. Intervention steps are flagged; the learner puts them in both buffers.

`Intervener.decide(obs, info, policy_action)` returns the action to execute and whether it was an
intervention. The scripted intervener watches the task's progress (from the twin's ground truth)
and, when the policy stalls, lets the scripted expert drive for a few steps, as a human would.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from robot_rl.errors import ConfigError
from robot_rl.task_spec import TaskSpec
from robot_rl.teleop.base import Teleop
from robot_rl.teleop.scripted import make_expert


class Intervener(Protocol):
    def reset(self) -> None:
        ...

    def decide(self, obs: dict, info: dict, policy_action: np.ndarray) -> tuple[np.ndarray, bool]:
        ...

    def close(self) -> None:
        ...


def task_progress(task: TaskSpec, obs: dict, info: dict[str, Any]) -> float:
    """Higher is closer to success, in metres (twin ground truth)."""
    priv = info["privileged"]
    if task.twin is not None and task.twin.kind == "pick_cube":
        cube = priv["cube_pose"][:3]
        tcp = np.asarray(obs["tcp_pose"][:3], dtype=np.float64)
        lifted = cube[2] - 0.02
        return float(-np.linalg.norm(tcp - cube) + 2.0 * max(0.0, lifted))
    hole, tip = priv["hole_pos"], priv["peg_tip_pos"]
    goal = hole - np.array([0.0, 0.0, task.twin.peg_insertion.insert_depth_m if task.twin else 0.015])
    return float(-np.linalg.norm(tip - goal))


class ScriptedIntervener:
    """Stands in for a human: when progress has not improved by `min_gain_m` for `patience`
    steps, the expert drives for `takeover_steps`, at most `max_per_episode` times an episode."""

    def __init__(self, task: TaskSpec, *, patience: int = 8, takeover_steps: int = 10, min_gain_m: float = 0.003,
                 max_per_episode: int = 3, seed: int = 0) -> None:
        self.task = task
        self.expert = make_expert(task, seed=seed)
        self.patience, self.takeover_steps = patience, takeover_steps
        self.min_gain_m, self.max_per_episode = min_gain_m, max_per_episode
        self.reset()

    def reset(self) -> None:
        self.best = -np.inf
        self.stalled = 0
        self.takeover_left = 0
        self.count = 0
        self.expert.reset()

    def decide(self, obs: dict, info: dict, policy_action: np.ndarray) -> tuple[np.ndarray, bool]:
        progress = task_progress(self.task, obs, info)
        if progress > self.best + self.min_gain_m:
            self.best, self.stalled = progress, 0
        else:
            self.stalled += 1
        if self.takeover_left == 0 and self.stalled >= self.patience and self.count < self.max_per_episode:
            self.takeover_left = self.takeover_steps
            self.count += 1
            self.expert.reset()
        if self.takeover_left > 0:
            self.takeover_left -= 1
            if self.takeover_left == 0:
                self.stalled = 0
            return self.expert.act(obs, info), True
        return policy_action, False

    def close(self) -> None:
        pass


class HumanIntervener:
    """A keyboard or SpaceMouse: whenever the human commands motion, their action replaces the
    policy's (a gripper toggle alone counts too)."""

    def __init__(self, teleop: Teleop, *, name: str = "human") -> None:
        import sys

        self.teleop = teleop
        self.teleop.start()
        self._gripper = None
        # Tell the operator (and scripts waiting on it) that takeovers are live.
        print(f"{name} intervention ready: move to take over, let go to hand back to the policy",
              file=sys.stderr, flush=True)

    def reset(self) -> None:
        self._gripper = None

    def decide(self, obs: dict, info: dict, policy_action: np.ndarray) -> tuple[np.ndarray, bool]:
        state = self.teleop.poll()
        grip = float(state.action[-1])
        toggled = self._gripper is not None and grip != self._gripper
        self._gripper = grip
        if state.intervening or toggled:
            return np.asarray(state.action, dtype=np.float64), True
        return policy_action, False

    def close(self) -> None:
        self.teleop.stop()


class NoIntervener:
    def reset(self) -> None:
        pass

    def decide(self, obs: dict, info: dict, policy_action: np.ndarray) -> tuple[np.ndarray, bool]:
        return policy_action, False

    def close(self) -> None:
        pass


def check_intervention(kind: str, task: TaskSpec | None, *, where: str = "this run") -> None:
    """ConfigError when `kind` cannot intervene in `task` (None: a non-robot_rl gymnasium env)."""
    if kind not in ("none", "scripted", "keyboard", "spacemouse"):
        raise ConfigError(f"unknown intervention {kind!r}: none, scripted, keyboard or spacemouse")
    if kind == "scripted" and (task is None or task.twin is None):
        raise ConfigError(f"--intervention scripted needs a twin task (the scripted expert reads the twin's ground "
                          f"truth), and {where} has none: use --task pick_cube or peg_insertion, or intervene "
                          "with --intervention keyboard / spacemouse")
    if kind in ("keyboard", "spacemouse") and task is None:
        raise ConfigError(f"--intervention {kind} drives a robot_rl arm's actions, and {where} is not a robot_rl "
                          "task: use --task NAME")


def make_intervener(kind: str, task: TaskSpec | None, *, seed: int = 0) -> Intervener:
    check_intervention(kind, task)
    if kind == "none":
        return NoIntervener()
    if kind == "scripted":
        return ScriptedIntervener(task, seed=seed)
    if kind == "keyboard":
        from robot_rl.teleop.keyboard import KeyboardTeleop

        return HumanIntervener(KeyboardTeleop(), name="keyboard")
    from robot_rl.teleop.spacemouse import SpaceMouseTeleop

    return HumanIntervener(SpaceMouseTeleop(), name="spacemouse")
