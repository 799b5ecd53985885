"""`robot-rl eval` of residual-ppo and DSRL runs: the frozen base plus the trained residual or
noise policy, deterministic by default, on the twin or (a base without privileged state) on the
robot PC at `--server`.

residual-sac runs are `robot-rl train` runs and evaluate as such (robot_rl.learning.evaluate);
`robot-rl eval` (cli/eval.py) dispatches by checkpoint kind.
"""

from __future__ import annotations

from typing import Any

from robot_rl.agents.diffusion_checkpoint import load_base
from robot_rl.config import from_dict
from robot_rl.envs.make import base_env
from robot_rl.envs.noise_action import NoiseActionEnv
from robot_rl.envs.residual import ResidualEnv
from robot_rl.errors import ConfigError
from robot_rl.finetune.dsrl import evaluate_noise_agent, make_noise_agent
from robot_rl.finetune.ppo import ResidualActorCritic, evaluate_residual, residual_layout
from robot_rl.finetune.run import FinetuneConfig


def is_finetune_state(state: dict[str, Any]) -> bool:
    """A checkpoint or final.pt written by `robot-rl finetune` (residual-ppo, DSRL)."""
    config = state.get("config")
    return isinstance(config, dict) and "method" in config and "base" in config


def evaluate_finetuned(state: dict[str, Any], *, episodes: int, seed: int, stochastic: bool = False,
                       server: str | None = None, keys_dir: str | None = None) -> dict[str, Any]:
    """Success rate, mean steps and cycle time (steps of the successful episodes × the task's step
    period) of a residual-ppo or DSRL checkpoint."""
    cfg = from_dict(FinetuneConfig, state["config"], where="checkpoint config")
    base = load_base(cfg.base)
    env = base_env(base, cfg.task, server=server, keys_dir=keys_dir)
    step_s = env.task.step_s
    try:
        if cfg.method in ("dsrl-sac", "dsrl-na"):
            env = NoiseActionEnv(env, base.policy, base.layout, bound=cfg.dsrl.noise_bound, seed=seed)
            agent = make_noise_agent(env, cfg.dsrl)
            agent.load_state_dict(state["agent"])
            agent.eval()
            result = evaluate_noise_agent(agent, env, episodes, seed, stochastic=stochastic)
        elif cfg.method == "residual-ppo":
            env = ResidualEnv(env, base.policy, base.layout, scale=cfg.ppo.residual_scales(base.policy.action_dim),
                              seed=seed)
            layout = residual_layout(env)
            model = ResidualActorCritic(layout.state_dim, base.policy.action_dim, cfg.ppo)
            model.load_state_dict(state["model"])
            result = evaluate_residual(model, env, layout, episodes, seed, stochastic=stochastic)
        else:
            raise ConfigError(f"a {cfg.method} run evaluates from its run folder (robot-rl eval --checkpoint "
                              f"{cfg.runs_dir}/{cfg.run_name}), not from this file")
    finally:
        env.close()
    won = result["success_mean_steps"]
    return {"method": cfg.method, "base": cfg.base, "env_steps": state.get("env_steps"), "episodes": episodes,
            "success_rate": result["success_rate"], "mean_steps": result["mean_steps"],
            "cycle_time_s": None if won is None else round(won * step_s, 3)}
