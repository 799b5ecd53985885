"""`robot-rl eval --checkpoint …`: deterministic episodes of any checkpoint robot_rl writes, dispatched
by its kind: a diffusion BC base (`robot-rl train-bc`), a residual-ppo or DSRL run (`robot-rl
finetune`), or a `robot-rl train` run (SAC, residual-sac included). Reports success rate, mean
steps and cycle time (the mean duration of the successful episodes)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robot_rl.agents.diffusion_checkpoint import is_base_state, load_base
from robot_rl.envs.make import EnvConfig, make_env
from robot_rl.errors import ConfigError
from robot_rl.finetune.evaluate import evaluate_finetuned, is_finetune_state
from robot_rl.learning.evaluate import cycle_time_s, evaluate_agent, load_state
from robot_rl.learning.train_bc import evaluate_base


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


def run(cfg: EvalConfig) -> dict[str, Any]:
    state, path = load_state(Path(cfg.checkpoint))
    t0 = time.perf_counter()
    if is_base_state(state):
        result = evaluate_base_file(path, cfg)
    elif is_finetune_state(state):
        result = evaluate_finetuned(state, episodes=cfg.episodes, seed=cfg.seed, stochastic=cfg.stochastic,
                                    server=cfg.server, keys_dir=cfg.keys_dir)
    else:
        result = evaluate_agent(state, path, episodes=cfg.episodes, seed=cfg.seed, stochastic=cfg.stochastic,
                                server=cfg.server, keys_dir=cfg.keys_dir)
    return {"checkpoint": str(cfg.checkpoint), **result, "wall_s": round(time.perf_counter() - t0, 1)}


def evaluate_base_file(path: Path, cfg: EvalConfig) -> dict[str, Any]:
    """A diffusion BC base alone (its chunks sampled from noise seeded by `cfg.seed`)."""
    base = load_base(path)
    kwargs = {} if cfg.server is None else {"server": cfg.server, "keys_dir": cfg.keys_dir}
    env = make_env(EnvConfig.of_base(base, env_kwargs=kwargs))
    try:
        result = evaluate_base(base.policy, env, base.layout, cfg.episodes, seed=cfg.seed)
        step_s = env.unwrapped.task.step_s
    finally:
        env.close()
    cycle = cycle_time_s(result, step_s)
    return {"method": "diffusion-bc", "episodes": cfg.episodes, "success_rate": result["success_rate"],
            "mean_steps": result["mean_steps"], "cycle_time_s": None if cycle is None else round(cycle, 3)}
