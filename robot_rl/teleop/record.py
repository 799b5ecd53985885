"""`robot-rl record`: drive the arm with a keyboard, a SpaceMouse or a scripted expert and save
episodes (format: robot_rl/data/episodes.py)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from robot_rl.data.episodes import EpisodeBuffer, EpisodeWriter
from robot_rl.envs.robot_env import RobotEnv
from robot_rl.errors import ConfigError
from robot_rl.task_spec import TwinArmName, load_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordConfig:
    """Record demonstration episodes."""

    out: str
    """Folder to write episodes into (created; existing episodes are kept and numbering continues)."""
    task: str = "pick_cube"
    teleop: Literal["keyboard", "spacemouse", "scripted"] = "scripted"
    episodes: int = 10
    server: str | None = None
    """Robot server address; default: an embedded twin."""
    arm: TwinArmName | None = None
    """Arm of the embedded twin (not with --server); default: the task's `twin.arm`. Saved with
    the task spec in the folder's meta.json."""
    keys_dir: str | None = None
    images: bool = True
    """Record camera images (False: state only, much smaller files)."""
    seed: int = 0
    """Seed of the first episode's reset; episode i uses seed + i."""
    expert_noise: float = 0.0
    """Scripted only: std of Gaussian noise added to the expert's actions (weaker demos)."""
    max_steps: int | None = None
    """Cap on steps per episode (default: the task's episode length)."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"episodes must be ≥ 1, got {self.episodes}")
        if self.expert_noise < 0:
            raise ConfigError(f"expert_noise must be ≥ 0, got {self.expert_noise}")


def _human_source(kind: str):
    if kind == "keyboard":
        from robot_rl.teleop.keyboard import KeyboardTeleop

        return KeyboardTeleop()
    from robot_rl.teleop.spacemouse import SpaceMouseTeleop

    return SpaceMouseTeleop()


def _controls_help(kind: str) -> str:
    if kind == "keyboard":
        from robot_rl.teleop.keyboard import KEY_MAP

        return ", ".join(f"{k}: {v}" for k, v in KEY_MAP.items())
    return "move the SpaceMouse to drive, left button toggles the gripper, right button ends the episode"


def run(cfg: RecordConfig, *, console: Console | None = None) -> dict:
    """Record `cfg.episodes` kept episodes; returns a summary dict."""
    console = console or Console(stderr=True)
    task = load_task(cfg.task)
    env = RobotEnv(task, server=cfg.server, keys_dir=cfg.keys_dir, image_obs=cfg.images, arm=cfg.arm,
                   privileged_obs=cfg.server is None and task.twin is not None, client_name="robot-rl record")
    task = env.task  # with the chosen twin arm, as meta.json records it
    try:
        writer = EpisodeWriter(cfg.out, task)
    except BaseException:
        env.close()  # the embedded twin's server and shared memory
        raise
    human = cfg.teleop != "scripted"
    expert = None
    teleop = None
    if human:
        teleop = _human_source(cfg.teleop)
        teleop.start()
        console.print(f"{cfg.teleop} teleop ready: {_controls_help(cfg.teleop)}")
    else:
        from robot_rl.teleop.scripted import make_expert

        expert = make_expert(task, seed=cfg.seed, noise=cfg.expert_noise)
    max_steps = cfg.max_steps or task.episode_steps
    kept = successes = steps = 0
    attempt = 0
    t_start = time.monotonic()
    quit_requested = False
    columns = (TextColumn("[bold]recording[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("success {task.fields[rate]}"), TextColumn("{task.fields[sps]} steps/s"),
               TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            bar = progress.add_task(f"{task.name} ({cfg.teleop})", total=cfg.episodes, rate="-", sps="-")
            while kept < cfg.episodes and not quit_requested:
                obs, info = env.reset(seed=cfg.seed + attempt)
                attempt += 1
                if expert is not None:
                    expert.reset()
                buf = EpisodeBuffer()
                buf.start(obs, info)
                discard = False
                label: bool | None = None
                next_t = time.monotonic()
                for _ in range(max_steps):
                    if teleop is not None:
                        # Humans need real time: pace the loop at the task's step rate.
                        next_t += task.step_s
                        time.sleep(max(0.0, next_t - time.monotonic()))
                        state = teleop.poll()
                        action, intervening = state.action, state.intervening
                        if state.label_success is not None:
                            # Sticky: "1" marks this and the following frames success until "0".
                            label = state.label_success
                        if state.quit:
                            quit_requested = discard = True
                            break
                        if state.discard_episode:
                            discard = True
                            break
                    else:
                        action, intervening = expert.act(obs, info), True
                    obs, reward, terminated, truncated, info = env.step(action)
                    buf.add(action, obs, reward, terminated, truncated, info, intervention=intervening,
                            label=-1 if label is None else int(label))
                    steps += 1
                    if terminated or truncated or (teleop is not None and state.end_episode):
                        break
                if discard or len(buf) == 0:
                    continue
                success = bool(buf.success[-1]) if label is None else label
                path = writer.save(buf, {"source": cfg.teleop, "seed": cfg.seed + attempt - 1,
                                         "operator_label": label})
                kept += 1
                successes += success
                log.info("saved %s (%d steps, success=%s)", path.name, len(buf), success)
                elapsed = max(1e-9, time.monotonic() - t_start)
                progress.update(bar, advance=1, rate=f"{successes / kept:.2f}", sps=f"{steps / elapsed:.1f}")
    finally:
        if teleop is not None:
            teleop.stop()
        env.close()
    summary = {"out": str(writer.dir), "episodes": kept, "success_rate": successes / max(1, kept), "steps": steps,
               "wall_s": round(time.monotonic() - t_start, 2)}
    console.print(f"recorded {kept} episodes into {writer.dir} (success rate {summary['success_rate']:.2f})")
    return summary

