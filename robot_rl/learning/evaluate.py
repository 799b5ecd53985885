"""`robot-rl eval --checkpoint …`: deterministic episodes of a trained agent: success rate and
cycle time (mean duration of the successful episodes)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from robot_rl.config import from_dict
from robot_rl.errors import ConfigError
from robot_rl.learning.config import (
    ActionScaler,
    TrainConfig,
    action_dim_of,
    layout_of,
    make_agent,
    make_env,
)
from robot_rl.learning.policy import obs_batch, policy_action, run_episodes
from robot_rl.learning.runs import LATEST_FILE, latest_checkpoint_path
from robot_rl.learning.train_bc import FORMAT as BC_FORMAT


@dataclass(frozen=True)
class EvalConfig:
    """Evaluate a checkpoint (a .pt file or a run folder, whose latest checkpoint is used)."""

    checkpoint: str
    episodes: int = 50
    seed: int = 1000
    server: str | None = None
    """Evaluate on a robot PC instead of the embedded twin."""
    keys_dir: str | None = None
    stochastic: bool = False
    """Sample actions instead of the deterministic (mean) policy."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"episodes must be ≥ 1, got {self.episodes}")


def load_state(path: Path) -> tuple[dict, Path]:
    """(saved state, file) of a checkpoint file, or of the newest checkpoint of a run folder."""
    if path.name == LATEST_FILE and path.is_file():  # checkpoints/latest: a pointer, not a checkpoint
        path = path.parent.parent
    if path.is_dir():
        found = latest_checkpoint_path(path)
        if found is None:
            raise ConfigError(f"{path} holds no checkpoint (checkpoints/latest): train first")
        path = found
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        raise ConfigError(f"{path} cannot be loaded as a checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(state, dict) or not (isinstance(state.get("config"), dict) or state.get("format") == BC_FORMAT):
        raise ConfigError(f"{path} is not a checkpoint of `robot-rl train`, `robot-rl finetune` or `robot-rl train-bc`")
    return state, path


def load_agent(path: Path):
    """(agent state, TrainConfig) from a checkpoint file or the newest checkpoint of a run folder."""
    state, path = load_state(path)
    if "config" not in state:
        raise ConfigError(f"{path} is a diffusion BC base, not an agent checkpoint")
    return state, from_dict(TrainConfig, state["config"], where="checkpoint config")


def agent_policy(state: dict, cfg: TrainConfig, env: gym.Env, *, deterministic: bool, seed: int | None = None,
                 where: str = "checkpoint") -> Callable[[Any], np.ndarray]:
    """obs → env action of the agent a `robot-rl train` checkpoint holds, acting in `env`.

    The observation layout `env` gives this agent must be the one it was trained on (ConfigError
    naming the difference otherwise). Stochastic actions (deterministic=False) draw from a
    generator seeded with `seed`, so a recording can be replayed.
    """
    layout = layout_of(cfg, env)
    agent = make_agent(cfg, layout, action_dim_of(env))
    layout.check_matches(state.get("obs_layout"), what=where)
    try:
        agent.load_state_dict(state["agent"])
    except RuntimeError as exc:  # older checkpoints carry no layout: torch names only tensor shapes
        raise ConfigError(f"{where} does not fit the agent this env needs ({str(exc).splitlines()[-1].strip()}): "
                          "the observation or action changed since it was trained. Retrain, or use the robot_rl "
                          "version it was trained with.") from exc
    agent.eval()
    scaler = ActionScaler.of(env)
    generator = None if deterministic else torch.Generator().manual_seed(0 if seed is None else seed)
    return lambda obs: scaler.to_env(policy_action(agent, obs_batch(layout, obs), deterministic=deterministic,
                                                   generator=generator))


def checkpoint_policy(path: str | Path, env: gym.Env, task: str, *, deterministic: bool = False,
                      seed: int | None = None) -> Callable[[Any], np.ndarray]:
    """`agent_policy` of a run folder's newest checkpoint (or a checkpoint file) of `robot-rl train`
    on `task`, e.g. to record the policy's own episodes for a classifier (collect-frames --policy)."""
    state, file = load_state(Path(path))
    from robot_rl.finetune.evaluate import is_finetune_state  # lazy: finetune builds on learning

    if state.get("format") == BC_FORMAT or is_finetune_state(state):
        raise ConfigError(f"{file} is a diffusion BC base or a finetune run: give a `robot-rl train` run")
    cfg = from_dict(TrainConfig, state["config"], where=f"checkpoint {file}")
    if cfg.env is not None or cfg.task != task:
        raise ConfigError(f"{file} was trained on {cfg.env or cfg.task!r}, not on task {task!r}")
    if cfg.base is not None:
        raise ConfigError(f"{file} is a residual run over base {cfg.base}: record with the base's own env instead")
    return agent_policy(state, cfg, env, deterministic=deterministic, seed=seed, where=f"checkpoint {file}")


def run(cfg: EvalConfig) -> dict:
    state, path = load_state(Path(cfg.checkpoint))
    t0 = time.perf_counter()
    if state.get("format") == BC_FORMAT:  # a diffusion BC base on its own
        result = _evaluate_base(path, cfg)
        return {"checkpoint": str(cfg.checkpoint), **result, "wall_s": round(time.perf_counter() - t0, 1)}
    from robot_rl.finetune.evaluate import evaluate_finetuned, is_finetune_state  # lazy: finetune builds on learning

    if is_finetune_state(state):  # residual-ppo and DSRL runs: base + residual or noise policy
        result = evaluate_finetuned(state, episodes=cfg.episodes, seed=cfg.seed, stochastic=cfg.stochastic,
                                    server=cfg.server, keys_dir=cfg.keys_dir)
        return {"checkpoint": str(cfg.checkpoint), **result, "wall_s": round(time.perf_counter() - t0, 1)}
    train_cfg = from_dict(TrainConfig, state["config"], where="checkpoint config")
    kwargs = train_cfg.kwargs()
    if cfg.server is not None:
        kwargs.update(server=cfg.server, keys_dir=cfg.keys_dir)
    train_cfg = replace(train_cfg, env_kwargs=json.dumps(kwargs), eval_episodes=cfg.episodes)
    env = make_env(train_cfg)
    try:
        act = agent_policy(state, train_cfg, env, deterministic=not cfg.stochastic, seed=cfg.seed,
                           where=f"checkpoint {path}")
        step_s = getattr(getattr(env.unwrapped, "task", None), "step_s", None)
        t0 = time.perf_counter()
        result = run_episodes(env, act, cfg.episodes, cfg.seed)
    finally:
        env.close()
    return {"checkpoint": str(cfg.checkpoint), "update": int(state["update"]), "episodes": cfg.episodes,
            "success_rate": result["success_rate"], "mean_steps": result["mean_steps"],
            "cycle_time_s": _cycle_time_s(result, step_s),
            "wall_s": round(time.perf_counter() - t0, 1)}


def _cycle_time_s(result: dict, step_s: float | None) -> float | None:
    """Mean duration of the successful episodes: simulated time on a stepped twin, wall time otherwise."""
    if result["success_mean_steps"] is None:
        return None
    if step_s and result["clock"] == "sim":
        return result["success_mean_steps"] * step_s
    return result["success_mean_wall_s"]


def _evaluate_base(path: Path, cfg: EvalConfig) -> dict:
    """A diffusion BC base alone (its chunks sampled from noise seeded by `cfg.seed`)."""
    from robot_rl.learning.train_bc import evaluate_base, load_base

    base = load_base(path)
    kwargs = {} if cfg.server is None else {"server": cfg.server, "keys_dir": cfg.keys_dir}
    env_cfg = TrainConfig(task=base.train.task, obs=base.train.obs, privileged=base.train.privileged,
                          encoder=base.train.encoder, env_kwargs=json.dumps(kwargs))
    env = make_env(env_cfg)
    try:
        result = evaluate_base(base.policy, env, base.layout, cfg.episodes, seed=cfg.seed)
        step_s = env.unwrapped.task.step_s
    finally:
        env.close()
    cycle = _cycle_time_s(result, step_s)
    return {"method": "diffusion-bc", "episodes": cfg.episodes, "success_rate": result["success_rate"],
            "mean_steps": result["mean_steps"], "cycle_time_s": None if cycle is None else round(cycle, 3)}
