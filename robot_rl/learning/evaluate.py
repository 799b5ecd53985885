"""Evaluation of `robot-rl train` checkpoints: load a checkpoint (a file or a run folder's newest),
rebuild its agent for an env, and run deterministic episodes (success rate and cycle time, the
mean duration of the successful episodes). `robot-rl eval` (cli/eval.py) dispatches here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from robot_rl.agents.diffusion_checkpoint import is_base_state
from robot_rl.config import from_dict
from robot_rl.envs.actions import ActionScaler, action_dim_of
from robot_rl.envs.make import make_env
from robot_rl.errors import ConfigError
from robot_rl.learning.checkpoints import LATEST_FILE, latest_checkpoint_path
from robot_rl.learning.config import TrainConfig, make_agent
from robot_rl.learning.policy import obs_batch, policy_action, run_episodes


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
    if not isinstance(state, dict) or not (isinstance(state.get("config"), dict) or is_base_state(state)):
        raise ConfigError(f"{path} is not a checkpoint of `robot-rl train`, `robot-rl finetune` or `robot-rl train-bc`")
    return state, path


def load_agent(path: Path) -> tuple[dict, TrainConfig]:
    """(agent state, TrainConfig) from a checkpoint file or the newest checkpoint of a run folder."""
    state, path = load_state(path)
    return state, train_config_of(state, path)


def train_config_of(state: dict, path: Path) -> TrainConfig:
    """The TrainConfig a `robot-rl train` checkpoint was written with (ConfigError for a diffusion
    base or a checkpoint of another command, e.g. `robot-rl finetune --method residual-ppo`)."""
    if is_base_state(state):
        raise ConfigError(f"{path} is a diffusion BC base, not a `robot-rl train` checkpoint")
    if set(state["config"]) - {f.name for f in fields(TrainConfig)}:
        raise ConfigError(f"{path} is not a `robot-rl train` checkpoint (a finetune run's?): give a `robot-rl train` run")
    return from_dict(TrainConfig, state["config"], where=f"checkpoint {path}")


def agent_policy(state: dict, cfg: TrainConfig, env: gym.Env, *, deterministic: bool, seed: int | None = None,
                 where: str = "checkpoint") -> Callable[[Any], np.ndarray]:
    """obs → env action of the agent a `robot-rl train` checkpoint holds, acting in `env`.

    The observation layout `env` gives this agent must be the one it was trained on (ConfigError
    naming the difference otherwise). Stochastic actions (deterministic=False) draw from a
    generator seeded with `seed`, so a recording can be replayed.
    """
    layout = cfg.layout_of(env)
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
    cfg = train_config_of(state, file)
    if cfg.env is not None or cfg.task != task:
        raise ConfigError(f"{file} was trained on {cfg.env or cfg.task!r}, not on task {task!r}")
    if cfg.base is not None:
        raise ConfigError(f"{file} is a residual run over base {cfg.base}: record with the base's own env instead")
    return agent_policy(state, cfg, env, deterministic=deterministic, seed=seed, where=f"checkpoint {file}")

def evaluate_agent(state: dict, path: Path, *, episodes: int, seed: int, stochastic: bool = False,
                   server: str | None = None, keys_dir: str | None = None) -> dict[str, Any]:
    """Success rate, mean steps and cycle time of a `robot-rl train` checkpoint (its own env stack;
    a residual run's base is loaded from the path in its config)."""
    cfg = train_config_of(state, path)
    kwargs = cfg.kwargs()
    if server is not None:
        kwargs.update(server=server, keys_dir=keys_dir)
    cfg = replace(cfg, env_kwargs=json.dumps(kwargs), eval_episodes=episodes)
    env = make_env(cfg.env_config(), base=cfg.load_base())
    try:
        act = agent_policy(state, cfg, env, deterministic=not stochastic, seed=seed, where=f"checkpoint {path}")
        step_s = getattr(getattr(env.unwrapped, "task", None), "step_s", None)
        result = run_episodes(env, act, episodes, seed)
    finally:
        env.close()
    return {"update": int(state["update"]), "episodes": episodes, "success_rate": result["success_rate"],
            "mean_steps": result["mean_steps"], "cycle_time_s": cycle_time_s(result, step_s)}


def cycle_time_s(result: dict, step_s: float | None) -> float | None:
    """Mean duration of the successful episodes: simulated time on a stepped twin, wall time otherwise."""
    if result["success_mean_steps"] is None:
        return None
    if step_s and result["clock"] == "sim":
        return result["success_mean_steps"] * step_s
    return result["success_mean_wall_s"]
