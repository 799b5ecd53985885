"""Success-classifier training data from the twin: `robot-rl collect-frames`.

`collect_twin_frames` records twin episodes labeled by ground truth (per-step `success`), of
several kinds (`EPISODE_KINDS`): the scripted expert's successes, near misses just short of
success, random motion, and a trained policy's own episodes, whose frames hold the false
positives a classifier-rewarded policy finds. `run_collect` is the command's runner.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from robot_rl.data.episodes import EpisodeBuffer, EpisodeWriter
from robot_rl.envs.robot_env import RobotEnv
from robot_rl.errors import ConfigError
from robot_rl.learning.evaluate import checkpoint_policy
from robot_rl.task_spec import TaskSpec, load_task
from robot_rl.teleop.scripted import make_expert

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectConfig:
    """`robot-rl collect-frames`: record twin episodes labeled by ground truth for a success
    classifier (successes, near misses, random motion); see `collect_twin_frames`."""

    task: str = "pick_cube"
    out: str = "runs/classifier_data/pick_cube"
    episodes: int = 60
    seed: int = 0
    cameras: tuple[str, ...] | None = None
    """The task's cameras to record (default: all of them)."""
    near_miss_fraction: float = 0.3
    random_fraction: float = 0.3
    policy: str | None = None
    """A `robot-rl train` run folder (or checkpoint) on this task: a share of the episodes are the
    policy's own, labeled by the twin. HIL-SERL's loop: a policy rewarded by a classifier finds the
    frames it wrongly pays for; recording them and retraining closes the hole."""
    policy_fraction: float | None = None
    """Share of policy episodes; default with `policy`: all but the near misses and random
    episodes (the policy's successes stand in for the expert's). Expert successes take the rest."""
    policy_deterministic: bool = False
    """Act with the policy's mean; default samples, as the actor does while training."""

    def __post_init__(self) -> None:
        if self.policy is None and self.policy_fraction is not None:
            raise ConfigError("policy_fraction needs --policy RUN (a robot-rl train run folder or checkpoint)")
        if self.policy is not None and not Path(self.policy).exists():
            raise ConfigError(f"policy {self.policy} does not exist: give a robot-rl train run folder or checkpoint")


def run_collect(cfg: CollectConfig) -> dict[str, Any]:
    """`robot-rl collect-frames`."""
    def policy_of(env: gym.Env) -> Callable[[Any], np.ndarray]:
        return checkpoint_policy(cfg.policy, env, cfg.task, deterministic=cfg.policy_deterministic, seed=cfg.seed)

    make_policy = None if cfg.policy is None else policy_of

    policy_fraction = cfg.policy_fraction
    if cfg.policy is None:
        policy_fraction = 0.0
    elif policy_fraction is None:
        policy_fraction = max(0.0, 1.0 - cfg.near_miss_fraction - cfg.random_fraction)
    return collect_twin_frames(cfg.task, cfg.out, cfg.episodes, seed=cfg.seed, cameras=cfg.cameras,
                               near_miss_fraction=cfg.near_miss_fraction, random_fraction=cfg.random_fraction,
                               policy_fraction=policy_fraction, make_policy=make_policy, policy_name=cfg.policy)


# ---- twin data without human labels -------------------------------------------------------------------

EPISODE_KINDS = ("success", "near_miss", "random", "policy")
GRASP_ABOVE_CENTER_M = 0.025
"""Half of the expert's episodes close the fingers up to this far above the cube's centre. A
trained policy grasped near the top edge (tool 1.8 cm above the centre, median) and a classifier
that had only seen centre grasps paid it ~1.7 cm early: it read the arm's height, not the cube's."""


def collect_twin_frames(task: str | TaskSpec, out_dir: str | Path, episodes: int, *, seed: int = 0,
                        expert_noise: float = 0.1, near_miss_fraction: float = 0.3, random_fraction: float = 0.3,
                        hold_steps: tuple[int, int] = (8, 20), release_probability: float = 0.6,
                        max_steps: int | None = None, cameras: Sequence[str] | None = None,
                        policy_fraction: float = 0.0,
                        make_policy: Callable[[gym.Env], Callable[[Any], np.ndarray]] | None = None,
                        policy_name: str | None = None) -> dict[str, Any]:
    """Record twin episodes labeled by ground truth (per-step `success`) for classifier training.

    Episode kinds, drawn per episode (on pick_cube, half of the expert's grasps are made up to
    `GRASP_ABOVE_CENTER_M` above the cube's centre):
    - success: the noisy scripted expert until the twin reports success, then `hold_steps` of
      wandering with the object held (positives), then with `release_probability` the gripper
      opens and the object falls (negatives that look like the scene just after a success);
    - near_miss (pick_cube): the expert grasps, then hovers the cube 0.5 cm to 2 mm short of the
      success height (5 cm; half of them in its last 1.5 cm) for `hold_steps`, then may release;
      other tasks: the expert stops part way;
    - random: the expert for a random number of steps, then either a smoothed random walk with
      random gripper toggles or (half of them) a fresh uniform action every step, as an untrained
      policy acts, 30–60 steps in all. The second kind matters: gripper commands inside the hold
      band (−0.5, 0.5) stop the fingers part way, and a classifier that never saw half-closed
      fingers near the cube took them for a grasp (it fired at the start of 6 of 12 such episodes);
    - policy (with `make_policy`): a trained policy acts from the start; after a ground-truth
      success it holds and may release like the expert's successes. A policy rewarded by a
      classifier goes where that classifier errs, so these frames hold its false positives.
    Runs an in-process twin; ≈ 17 env steps/s with two 128 px cameras on 2 loaded cores
    (rendering dominates, so fewer or smaller cameras record faster).

    Args:
        task: task name or spec; must have a twin (ground truth) and a scripted expert.
        out_dir: recording folder (created; existing episodes of the same task are kept).
        episodes: episodes to record; max_steps caps each (default: the task's episode_steps).
        cameras: the task's cameras to record (default: all); pass a TaskSpec with smaller
            `cameras` sizes to render smaller frames.
        policy_fraction: share of policy episodes; needs `make_policy`, called once with the
            recording env (image and privileged observations on) to give obs → action.
        policy_name: recorded in each policy episode's metadata (e.g. the run folder).

    Returns:
        {"out", "episodes", "frames", "positives", "kinds": {kind: count}, "wall_s"}.
    """
    spec = task if isinstance(task, TaskSpec) else load_task(task)
    if cameras is not None:
        unknown = sorted(set(cameras) - {c.name for c in spec.cameras})
        if unknown:
            raise ConfigError(f"cameras {unknown} are not cameras of task {spec.name} "
                              f"({[c.name for c in spec.cameras]})")
        spec = dataclasses.replace(spec, cameras=tuple(c for c in spec.cameras if c.name in cameras))
    fractions = (near_miss_fraction, random_fraction, policy_fraction)
    if episodes < 1 or sum(fractions) > 1 + 1e-9 or min(fractions) < 0:  # 0.2 + 0.1 + 0.7 > 1 in floats
        raise ConfigError(f"need episodes ≥ 1 and near_miss, random and policy fractions ≥ 0 summing to ≤ 1, got "
                          f"{episodes}, {near_miss_fraction}, {random_fraction}, {policy_fraction}")
    if policy_fraction > 0 and make_policy is None:
        raise ConfigError("policy_fraction > 0 needs make_policy (collect-frames --policy RUN)")
    if not 1 <= hold_steps[0] <= hold_steps[1]:
        raise ConfigError(f"hold_steps must be (low, high) with 1 ≤ low ≤ high, got {hold_steps}")
    if spec.twin is None:
        raise ConfigError(f"task {spec.name} has no twin: ground-truth labels need one (label frames by hand instead)")
    rng = np.random.default_rng(seed)
    expert = make_expert(spec, seed=seed, noise=expert_noise)
    writer = EpisodeWriter(out_dir, spec)
    env = RobotEnv(spec, in_process=True, image_obs=True, privileged_obs=True)
    policy = None
    if policy_fraction > 0:
        try:
            policy = make_policy(env)
        except BaseException:
            env.close()
            raise
    t0 = time.monotonic()
    kinds = dict.fromkeys(EPISODE_KINDS, 0)
    frames = positives = 0
    try:
        for i in range(episodes):
            u = rng.random()
            kind = "random" if u < random_fraction else "near_miss" if u < random_fraction + near_miss_fraction \
                else "policy" if u < sum(fractions) else "success"
            buf = _twin_episode(env, expert, kind, rng, seed=seed + i, hold_steps=hold_steps,
                                release_probability=release_probability, max_steps=max_steps or spec.episode_steps,
                                policy=policy)
            meta = {"source": "classifier_collect", "kind": kind, "seed": seed + i, "operator_label": None}
            if kind == "policy":
                meta["policy"] = policy_name
            writer.save(buf, meta)
            kinds[kind] += 1
            frames += len(buf) + 1
            positives += int(sum(buf.success))
            log.info("collect %d/%d: %s, %d steps, %d success frames", i + 1, episodes, kind, len(buf),
                     sum(buf.success))
    finally:
        env.close()
    return {"out": str(writer.dir), "episodes": episodes, "frames": frames, "positives": positives, "kinds": kinds,
            "wall_s": round(time.monotonic() - t0, 2)}


def _twin_episode(env: Any, expert: Any, kind: str, rng: np.random.Generator, *, seed: int,
                  hold_steps: tuple[int, int], release_probability: float, max_steps: int,
                  policy: Callable[[Any], np.ndarray] | None = None) -> EpisodeBuffer:
    """One episode of `collect_twin_frames`; a phase machine over expert / policy / random / hover / hold / release."""
    obs, info = env.reset(seed=seed)
    expert.reset()
    if hasattr(expert, "grasp_above_center_m"):  # pick_cube: see GRASP_ABOVE_CENTER_M
        expert.grasp_above_center_m = rng.uniform(0.0, GRASP_ABOVE_CENTER_M) if rng.random() < 0.5 else 0.0
    buf = EpisodeBuffer()
    buf.start(obs, info)
    scale_m = env.task.action.translation_scale_m
    cube = "cube_pose" in info["privileged"]
    phase = "policy" if kind == "policy" else "expert"
    switch_at = int(rng.integers(0, 45)) if kind == "random" else int(rng.integers(15, 40))
    left = int(rng.integers(hold_steps[0], hold_steps[1] + 1))
    # Cube heights above its rest height [m]; success needs the lift height (pick_cube: 5 cm). Half
    # of the near misses hover within 1.5 cm below it: without them the classifier never saw
    # 4–5 cm, and a policy rewarded by it learned to stop there (it fired at 3.6–4.9 cm lifts).
    lift_m = env.task.twin.pick_cube.lift_height_m  # collect_twin_frames refuses tasks without a twin
    if kind == "near_miss":
        band_m = 0.015
        low_m, high_m = (0.005, lift_m - band_m) if rng.random() < 0.5 else (lift_m - band_m, lift_m - 0.002)
    else:
        low_m, high_m = lift_m + 0.02, lift_m + 0.10
    hover_m = rng.uniform(low_m, high_m)
    rest_z = None
    walk = np.zeros(7)
    jerky = kind == "random" and rng.random() < 0.5
    if kind == "random":  # mostly easy negatives: keep them from crowding out the rest
        max_steps = min(max_steps, int(rng.integers(30, 61)))
    for t in range(max_steps):
        if phase == "expert":
            if kind == "random" and t >= switch_at:
                phase = "random"
            elif kind == "near_miss" and (getattr(expert, "phase", None) == "lift" if cube else t >= switch_at):
                phase = "hold"
        action = np.zeros(7)
        if phase == "expert":
            action = expert.act(obs, info)
        elif phase == "policy":
            action = np.asarray(policy(obs), np.float64)
        elif phase == "random" and jerky:  # an untrained policy: every step new, the gripper stopped part way
            action[:3], action[5], action[6] = rng.uniform(-1.0, 1.0, 3), rng.uniform(-0.3, 0.3), rng.uniform(-1.0, 1.0)
        elif phase == "random":
            walk = 0.7 * walk + 0.3 * rng.normal(0.0, 1.0, 7)
            action[:3], action[5] = walk[:3], 0.3 * walk[5]
            action[6] = 1.0 if walk[6] > 0 else -1.0
        elif phase == "hold":
            action[:2] = rng.normal(0.0, 0.3, 2)
            action[6] = 1.0
            if cube:
                z = float(info["privileged"]["cube_pose"][2])
                rest_z = z if rest_z is None else rest_z
                action[2] = (rest_z + hover_m - z) / scale_m
        elif phase == "release":
            action[6] = -1.0
        obs, reward, terminated, truncated, info = env.step(np.clip(action, -1.0, 1.0))
        buf.add(action, obs, reward, terminated, truncated, info, intervention=False)
        if info.get("reflex"):
            break
        if phase in ("expert", "policy") and kind in ("success", "policy") and info["success"]:
            phase, rest_z = "hold", None
            if cube:  # hold relative to the table, not to where success first registered
                rest_z = float(info["privileged"]["cube_pose"][2]) - lift_m
        elif phase == "hold":
            left -= 1
            if left <= 0:
                if rng.random() >= release_probability:
                    break
                phase, left = "release", int(rng.integers(4, 10))
        elif phase == "release":
            left -= 1
            if left <= 0:
                break
    return buf
