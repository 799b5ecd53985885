"""`robot-rl finetune --base CKPT --method M`: lift a frozen diffusion BC policy with RL.

    residual-sac  residual SAC in the distributed actor/learner (interventions, --server for a
                  physical arm): the real-arm path
    residual-ppo  ResiP: residual PPO over many in-process twin envs
    dsrl-sac      SAC in the base's latent-noise space
    dsrl-na       DSRL with noise aliasing: action critic on executed chunks, distilled noise critic

Every method writes runs/<run>/metrics.jsonl with eval lines (success rate vs env steps; env
steps always count primitive steps of the env, also when an agent decides once per chunk), so
`robot-rl plot` compares them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from robot_rl.agents.diffusion_checkpoint import BaseCheckpoint, load_base
from robot_rl.agents.sac import host_metrics
from robot_rl.agents.sac_config import SACConfig
from robot_rl.config import to_dict
from robot_rl.cpu import setup_torch
from robot_rl.envs.make import base_env
from robot_rl.envs.noise_action import NoiseActionEnv
from robot_rl.envs.residual import ResidualEnv
from robot_rl.errors import ConfigError
from robot_rl.finetune.dsrl import DSRLConfig, train_dsrl
from robot_rl.finetune.ppo import PPOConfig, evaluate_residual, residual_layout, train_ppo
from robot_rl.learning.checkpoints import checkpoint_name, load_latest_checkpoint, save_checkpoint
from robot_rl.learning.device import check_device_name, resolve_device
from robot_rl.learning.metrics import MetricsWriter, read_metrics
from robot_rl.learning.run_dir import RunDir
from robot_rl.learning.train import TrainCommand, run_train

FINAL_FILE = "final.pt"
"""residual-ppo and DSRL runs: the trained agent and the run's config, written at the end."""

RESIDUAL_SAC = SACConfig(residual_scale=0.3, residual_gripper_scale=1.0, actor_warmup_updates=1_000,
                         explore_std=0.3, n_step=3, critic_updates_per_actor_update=1)
"""The residual-sac agent's defaults (see FinetuneConfig.residual). Wider than ResiP's 0.1 (as are
residual-ppo's, PPOConfig): on pick_cube's 0.40 base, 0.1 gained 8 points in 20k env steps over 3 seeds,
this set 34, and 40 with 2 updates per env step (FinetuneConfig.utd; BENCHMARKS.md)."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tune a frozen diffusion BC base (robot-rl train-bc) with residual RL or DSRL."""

    base: str
    """Diffusion BC checkpoint (robot-rl train-bc --out …)."""
    method: Literal["residual-sac", "residual-ppo", "dsrl-sac", "dsrl-na"] = "residual-sac"
    task: str | None = None
    """Default: the task the base was trained on."""
    env_steps: int = 20_000
    """Budget in env steps (primitive steps, whatever the method)."""
    eval_every: int = 5_000
    eval_episodes: int = 50
    seed: int = 0
    run: str = ""
    """Run folder name (default: <task>_<method>_s<seed>)."""
    runs_dir: str = "runs"
    server: str | None = None
    """residual-sac on a physical arm: its robot PC (default: the embedded twin)."""
    keys_dir: str | None = None
    intervention: Literal["none", "scripted", "keyboard", "spacemouse"] = "none"
    """residual-sac: who may take over (their actions are stored as residuals)."""
    residual: SACConfig = RESIDUAL_SAC
    """residual-sac agent: residual 0.3 in normalized units and 1.0 on the gripper (a ±1 gripper
    command can be held back, not flipped), 1000 critic-only updates first, exploration noise 0.3
    in residual units, 3-step returns (ResFiT). residual-ppo has its own scales, the same by default
    (`--ppo.residual-scale`, `--ppo.residual-gripper-scale`)."""
    dsrl: DSRLConfig = DSRLConfig()
    ppo: PPOConfig = PPOConfig()
    learning_starts: int = 500
    """residual-sac: env steps before updates start."""
    utd: float = 2.0
    """residual-sac: learner updates per env step (2: +40 points on pick_cube's 0.40 base in 20k
    env steps over 3 seeds, 1: +34)."""
    torch_threads: int = 1
    """Intra-op threads of this process (residual-sac: of the learner and of the actor)."""
    demos: str | None = None
    """residual-sac: recorded episodes (robot-rl record) for the demo buffer, sampled 50/50 with the
    online steps as in `robot-rl train`; stored as residuals of the base (the demo action minus the
    base's proposal, over the residual scale, clipped to ±1)."""
    enable_over_episodes: int = 0
    """residual-sac: progressive enabling, the residual acts in training episode k with
    probability k/N (0: from the start)."""
    resume: bool = False
    """Continue the run in runs_dir/run from its last checkpoint (residual-sac: every persisted
    step too; residual-ppo and DSRL: checkpoints every `checkpoint_every` env steps)."""
    checkpoint_every: int = 10_000
    """residual-ppo and DSRL: env steps between checkpoints (DSRL's hold its whole replay: a few MB
    per 10k env steps on state observations)."""
    device: str = "cpu"
    """Where the networks train: cpu, cuda, cuda:N or auto (CUDA when torch sees one): residual-sac's
    learner, DSRL's agent, residual-ppo's model. Envs, the base they act with and residual-sac's
    actor stay on the CPU."""

    def __post_init__(self) -> None:
        check_device_name(self.device)
        if self.env_steps < 1 or self.eval_every < 1 or self.eval_episodes < 0:
            raise ConfigError("env_steps and eval_every must be ≥ 1, eval_episodes ≥ 0")
        if self.method != "residual-sac" and (self.server is not None or self.intervention != "none"):
            raise ConfigError(f"--server and --intervention go with residual-sac (the distributed path), "
                              f"not {self.method}")
        if self.demos is not None and self.method != "residual-sac":
            raise ConfigError(f"--demos fills residual-sac's demo buffer; {self.method} has none")
        if self.checkpoint_every < 1:
            raise ConfigError("checkpoint_every must be ≥ 1")
        if self.residual.residual_scale is None:
            raise ConfigError("--residual.residual-scale must be set (e.g. 0.1)")

    @property
    def run_name(self) -> str:
        return self.run or f"{self.task}_{self.method}_s{self.seed}"


def run(cfg: FinetuneConfig) -> dict:
    base = load_base(cfg.base)
    if cfg.task is not None and cfg.task != base.task:
        raise ConfigError(f"base {cfg.base} was trained on {base.task!r}, not {cfg.task!r}")
    cfg = replace(cfg, task=base.task)
    resolve_device(cfg.device)  # a missing CUDA device fails before any env starts
    setup_torch(cfg.torch_threads)
    base_eval = (base.extra.get("evaluation") or {}).get("success_rate")
    t0 = time.monotonic()
    if cfg.method == "residual-sac":
        result = _residual_sac(cfg, base)
    elif cfg.method == "residual-ppo":
        result = _residual_ppo(cfg, base)
    else:
        result = _dsrl(cfg, base)
    return {"method": cfg.method, "task": cfg.task, "base": cfg.base, "base_success_rate": base_eval,
            "run_dir": f"{cfg.runs_dir}/{cfg.run_name}", "wall_min": round((time.monotonic() - t0) / 60, 2), **result}


def _residual_sac(cfg: FinetuneConfig, base: BaseCheckpoint) -> dict:
    kwargs = {} if cfg.server is None else {"server": cfg.server, "keys_dir": cfg.keys_dir}
    cmd = TrainCommand(task=cfg.task, obs=base.obs, privileged=base.privileged, encoder=base.encoder,
                       agent=cfg.residual, base=cfg.base, env_steps=cfg.env_steps, eval_every=cfg.eval_every,
                       eval_episodes=cfg.eval_episodes, intervention=cfg.intervention, seed=cfg.seed,
                       run=cfg.run_name, runs_dir=cfg.runs_dir, env_kwargs=json.dumps(kwargs),
                       torch_threads=cfg.torch_threads, device=cfg.device,
                       learning_starts=cfg.learning_starts, utd=cfg.utd,
                       residual_enable_episodes=cfg.enable_over_episodes, demos=cfg.demos, max_lead_steps=None if cfg.server else 250,
                       resume=cfg.resume)
    summary = run_train(cmd)
    evals = read_metrics(f"{cfg.runs_dir}/{cfg.run_name}", "eval")
    demos = {k: summary[k] for k in ("demo_transitions", "demo_residual_clipped") if k in summary and cfg.demos}
    return {"env_steps": summary["env_steps"], **demos, "evals": [success_point(e) for e in evals]}


def success_point(e: dict) -> dict:
    """An eval line of metrics.jsonl as the summary point {env_step, success_rate}."""
    return {"env_step": int(e["env_step"]), "success_rate": float(e["success_rate"])}


def _dsrl(cfg: FinetuneConfig, base: BaseCheckpoint) -> dict:
    variant = "sac" if cfg.method == "dsrl-sac" else "na"
    env = NoiseActionEnv(base_env(base, cfg.task), base.policy, base.layout, bound=cfg.dsrl.noise_bound, seed=cfg.seed)
    eval_env = NoiseActionEnv(base_env(base, cfg.task), base.policy, base.layout, bound=cfg.dsrl.noise_bound,
                              seed=cfg.seed + 1)
    with _session(cfg) as run:
        last_log = [0]

        def on_step(step: int, m: dict) -> None:
            run.progress.advance(step)
            if m and step - last_log[0] >= 1_000:
                last_log[0] = step
                run.metrics.write("train", step, host_metrics(m))  # the one wait for the device per log line

        try:
            out = train_dsrl(env, eval_env, cfg.dsrl, variant=variant, env_steps=cfg.env_steps,
                             eval_every=cfg.eval_every, eval_episodes=cfg.eval_episodes, seed=cfg.seed,
                             on_eval=run.record_eval, on_step=on_step, checkpoint=run.checkpoint,
                             checkpoint_every=cfg.checkpoint_every, restore=run.restore,
                             device=resolve_device(cfg.device))
        finally:
            env.close()
            eval_env.close()
        run.save_final({"agent": {k: v.cpu() for k, v in out["agent"].state_dict().items()},  # loads anywhere
                        "env_steps": out["env_steps"]})
    return {"env_steps": out["env_steps"], "updates": out["updates"], "evals": [success_point(e) for e in out["evals"]]}


def _residual_ppo(cfg: FinetuneConfig, base: BaseCheckpoint) -> dict:
    def make_env(index: int):
        # The index, not a call counter, picks the base's noise seed: with --ppo.async-envs each
        # env is built in its own worker process.
        return ResidualEnv(base_env(base, cfg.task), base.policy, base.layout,
                           scale=cfg.ppo.residual_scales(base.policy.action_dim),
                           seed=cfg.seed * 1000 + index + 2)

    eval_env = make_env(-1)
    layout = residual_layout(eval_env)

    def evaluate(model, step: int) -> dict:
        return evaluate_residual(model, eval_env, layout, cfg.eval_episodes, cfg.seed + 10_000 + step)

    with _session(cfg) as run:
        def eval_fn(model, step: int) -> dict:
            if not cfg.eval_episodes:
                return {"success_rate": 0.0, "episodes": 1, "mean_steps": 0.0}
            r = evaluate(model, step)
            run.record_eval(step, r)
            return r

        def on_rollout(step: int, m: dict) -> None:
            run.progress.advance(step)
            run.metrics.write("train", step, m)

        try:
            out = train_ppo(make_env, layout, cfg.ppo, env_steps=cfg.env_steps, eval_fn=eval_fn,
                            eval_every=cfg.eval_every, seed=cfg.seed, on_rollout=on_rollout, checkpoint=run.checkpoint,
                            checkpoint_every=cfg.checkpoint_every, restore=run.restore,
                            device=resolve_device(cfg.device))
        finally:
            eval_env.close()
        run.save_final({"model": {k: v.cpu() for k, v in out["model"].state_dict().items()},  # loads anywhere
                        "env_steps": out["env_steps"]})
    evals = out["evals"] if cfg.eval_episodes else []
    return {"env_steps": out["env_steps"], "evals": [success_point(e) for e in evals]}


class _progress:
    """A rich progress bar over env steps with the latest evaluation."""

    def __init__(self, cfg: FinetuneConfig) -> None:
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("eval {task.fields[eval]}"), TimeElapsedColumn(),
                                 console=Console(stderr=True))  # stdout: the JSON result
        self.task = self.progress.add_task(f"{cfg.method} {cfg.task}", total=cfg.env_steps, eval="-")

    def __enter__(self) -> _progress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def advance(self, step: int) -> None:
        self.progress.update(self.task, completed=step)

    def eval(self, step: int, rate: float) -> None:
        self.progress.update(self.task, eval=f"{rate:.2f} @ {step}")


@dataclass
class _Session:
    """What residual-ppo and DSRL share around their training loop: the run folder (resumed with
    `--resume`), its metrics, the progress bar and the checkpoint to continue from."""

    cfg: FinetuneConfig
    run_dir: RunDir
    metrics: MetricsWriter
    progress: _progress
    restore: dict | None

    def checkpoint(self, state: dict) -> None:
        # The config makes checkpoints loadable by `robot-rl eval`.
        save_checkpoint(self.run_dir, checkpoint_name(int(state["env_steps"])), state | {"config": to_dict(self.cfg)},
                        keep_last=2)

    def record_eval(self, step: int, r: dict) -> None:
        self.metrics.write_eval(step, success_rate=r["success_rate"], episodes=r["episodes"],
                                mean_steps=r["mean_steps"], cycle_time_s=None)
        self.progress.eval(step, r["success_rate"])

    def save_final(self, state: dict) -> None:
        torch.save(state | {"config": to_dict(self.cfg)}, self.run_dir.path / FINAL_FILE)


@contextmanager
def _session(cfg: FinetuneConfig) -> Iterator[_Session]:

    with RunDir(cfg.run_name, root=cfg.runs_dir, config=cfg, resume=cfg.resume) as run_dir, \
            MetricsWriter(run_dir) as metrics, _progress(cfg) as progress:
        restore = load_latest_checkpoint(run_dir) if cfg.resume else None
        if restore is not None:
            progress.advance(int(restore["env_steps"]))
        yield _Session(cfg, run_dir, metrics, progress, restore)
