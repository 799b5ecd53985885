"""`robot-rl bench finetune`: lift a deliberately weak diffusion BC base with RL.

Builds the base once (scripted demos → `train-bc` on the first `demos` episodes, cached under
runs/bc/), then runs `robot-rl finetune` for each method and seed; reports the base's success,
each seed's deterministic success after the budget, and wall-clock minutes, and draws all
methods' success-vs-env-steps curves into one PNG.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from robot_rl.agents.diffusion import DiffusionConfig
from robot_rl.agents.sac_config import SACConfig
from robot_rl.finetune.dsrl import DSRLConfig
from robot_rl.finetune.ppo import PPOConfig
from robot_rl.finetune.run import RESIDUAL_SAC

Method = Literal["residual-sac", "residual-ppo", "dsrl-sac", "dsrl-na"]


@dataclass(frozen=True)
class FinetuneBench:
    """Fine-tune a weak base with each method over several seeds (a slow benchmark)."""

    task: str = "pick_cube"
    method: tuple[Method, ...] = ("residual-sac", "dsrl-sac", "dsrl-na", "residual-ppo")
    """Methods to run (one or several: --method dsrl-sac dsrl-na)."""
    seeds: int = 3
    steps: int = 20_000
    """Env-step budget of the off-policy methods."""
    ppo_steps: int = 300_000
    """Env-step budget of residual-ppo."""
    eval_every: int = 5_000
    eval_episodes: int = 50
    base: str | None = None
    """Use this base checkpoint instead of building one."""
    demos: int = 3
    """Scripted demos the base is trained on (few: a weak base). On pick_cube: 3 → 0.26 success,
    5 → 0.84, 20 → 0.96; 20 with `--bc.steps 2000` (undertrained) → 0.40."""
    residual_demos: bool = True
    """residual-sac: fill its demo buffer with the scripted demos the base was trained on
    (`robot-rl finetune --demos`), as residuals of the base; its runs are named residual-sac-demos.
    On pick_cube's 0.40 base: 0.84 / 0.86 / 0.84 at 20k env steps (+45 points) against 0.82 / 0.64 /
    0.82 without (+36; BENCHMARKS.md)."""
    bc: DiffusionConfig = DiffusionConfig()
    residual: SACConfig = RESIDUAL_SAC
    """residual-sac agent (`robot-rl finetune`'s default)."""
    dsrl: DSRLConfig = DSRLConfig()
    ppo: PPOConfig = PPOConfig()
    runs_dir: str = "runs/bench_finetune"
    reuse: bool = False
    """Keep finished runs (a final evaluation at the budget in runs_dir/<task>_<method>_seed<i>),
    resume interrupted ones from their last checkpoint (`robot-rl finetune --resume`; one without a
    checkpoint starts over) and run the missing ones: an interrupted benchmark continues where it
    stopped."""
    report_only: bool = False
    """Run nothing: report (and plot) the finished runs only."""
    json: bool = False


def ensure_base(cfg: FinetuneBench) -> Path:
    from robot_rl.bench.learning import DEMOS_VERSION, ensure_demos
    from robot_rl.learning.train_bc import TrainBCConfig
    from robot_rl.learning.train_bc import run as train_bc

    if cfg.base is not None:
        return Path(cfg.base)
    # named by the demos' version too: a base of older demos is not silently reused
    out = Path("runs/bc") / f"{cfg.task}_state_{cfg.demos}demos_h{cfg.bc.hidden}_s{cfg.bc.steps}_{DEMOS_VERSION}.pt"
    if not out.exists():
        demos = ensure_demos(cfg.task, 20, images=False)
        train_bc(TrainBCConfig(demos=str(demos), task=cfg.task, episodes=cfg.demos, diffusion=cfg.bc,
                               out=str(out), eval_episodes=cfg.eval_episodes, torch_threads=1))
    return out


def _residual_demos(cfg: FinetuneBench, base) -> str:
    """The episodes the base was trained on: its own demo folder when it used all of it, else that
    many scripted demos (recorded with the bench's seeds, so the same episodes as a bench base's)."""
    from robot_rl.bench.learning import ensure_demos
    from robot_rl.data.episodes import episode_paths

    own, episodes = Path(base.train["demos"]), base.train.get("episodes")
    if own.is_dir() and episodes in (None, len(episode_paths(own))):
        return str(own)
    return str(ensure_demos(cfg.task, episodes or cfg.demos, images=False))


def run(cfg: FinetuneBench) -> dict:
    import numpy as np

    from robot_rl.finetune.run import FinetuneConfig
    from robot_rl.finetune.run import run as finetune
    from robot_rl.learning.plot import plot_success
    from robot_rl.learning.checkpoints import latest_checkpoint_path
    from robot_rl.agents.diffusion_checkpoint import load_base

    base_path = ensure_base(cfg)
    base = load_base(base_path)
    demos = _residual_demos(cfg, base) if cfg.residual_demos and "residual-sac" in cfg.method else None
    base_success = (base.extra.get("evaluation") or {}).get("success_rate")
    out: dict = {"bench": "finetune", "task": cfg.task, "base": str(base_path), "base_success_rate": base_success,
                 "eval_episodes": cfg.eval_episodes, "seeds": cfg.seeds, "methods": {}}
    run_dirs, labels = [], []
    for method in cfg.method:
        budget = cfg.ppo_steps if method == "residual-ppo" else cfg.steps
        per_seed = []
        label = labels_of(cfg, demos)[cfg.method.index(method)]
        for seed in range(cfg.seeds):
            name = f"{cfg.task}_{label}_seed{seed}"
            run_dir = Path(cfg.runs_dir) / name
            t0 = time.monotonic()
            finished = _finished_run(run_dir, budget) if cfg.reuse or cfg.report_only else None
            if finished is not None:
                per_seed.append(_seed_summary(*finished))
                run_dirs.append(run_dir)
                labels.append(label)
                continue
            if cfg.report_only:
                continue
            resume = cfg.reuse and latest_checkpoint_path(run_dir) is not None
            if run_dir.exists() and not resume:
                import shutil

                shutil.rmtree(run_dir)
            fcfg = replace(FinetuneConfig(base=str(base_path), method=method, env_steps=budget,
                                          eval_every=cfg.eval_every if method != "residual-ppo" else max(cfg.eval_every, budget // 6),
                                          eval_episodes=cfg.eval_episodes, seed=seed, run=name, runs_dir=cfg.runs_dir,
                                          resume=resume, demos=demos if method == "residual-sac" else None),
                           residual=cfg.residual, dsrl=cfg.dsrl, ppo=cfg.ppo)
            result = finetune(fcfg)
            # From the metrics file: a resumed run's evaluations and wall time include its first stretch.
            evals, wall_min = _finished_run(run_dir, budget) or (result["evals"], None)
            per_seed.append(_seed_summary(evals, wall_min if wall_min is not None else
                                          round((time.monotonic() - t0) / 60, 1)))
            run_dirs.append(run_dir)
            labels.append(label)
        if not per_seed:
            continue
        finals = [s["final_success_rate"] for s in per_seed]
        out["methods"][method] = {
            "env_steps": budget, "final_success_rate": finals,
            "mean_final_success_rate": round(float(np.mean(finals)), 3) if None not in finals else None,
            "gain_points": round(100 * (float(np.mean(finals)) - base_success), 1) if base_success is not None and None not in finals else None,
            "wall_min": [s["wall_min"] for s in per_seed], "seeds_reported": len(per_seed), "seeds": per_seed}
        if method == "residual-sac":
            out["methods"][method]["demos"] = demos
    if not run_dirs:
        from robot_rl.errors import ConfigError

        names = ", ".join(f"{cfg.task}_{m}_seed<i>" for m in dict.fromkeys(labels_of(cfg, demos)))
        raise ConfigError(f"no finished runs in {cfg.runs_dir} (looked for {names}): run the benchmark without "
                          "--report-only, or point --runs-dir at its runs")
    png = Path(cfg.runs_dir) / f"{cfg.task}_finetune.png"
    plot_success(run_dirs, png, labels=tuple(labels), align="interpolate",
                 title=f"{cfg.task}: RL over a frozen diffusion BC base (IQM over seeds, 95 % CI)",
                 references={"base policy": base_success} if base_success is not None else None)
    out["plot"] = str(png)
    return out


def labels_of(cfg: FinetuneBench, demos: str | None) -> list[str]:
    """Each method's name in its run folders: residual-sac with demos is residual-sac-demos."""
    return [f"{m}-demos" if m == "residual-sac" and demos else m for m in cfg.method]


def _seed_summary(evals: list[dict], wall_min: float | None) -> dict:
    return {"final_success_rate": evals[-1]["success_rate"] if evals else None,
            "best_success_rate": max((e["success_rate"] for e in evals), default=None),
            "success_by_step": {str(e["env_step"]): e["success_rate"] for e in evals},
            "wall_min": wall_min}


def _finished_run(run_dir: Path, budget: int) -> tuple[list[dict], float | None] | None:
    """(evaluations, wall minutes) of a run that reached its budget, or None (missing or interrupted)."""
    from robot_rl.finetune.run import success_point
    from robot_rl.learning.metrics import finished_run

    done = finished_run(run_dir, budget)
    if done is None:
        return None
    lines, wall_min = done
    return [success_point(m) for m in lines if m.get("kind") == "eval"], wall_min
