"""`robot-rl train` configuration, and the pieces actor and learner both build from it
(the env config, the observation layout, the agent)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym

from robot_rl.agents.diffusion_checkpoint import BaseCheckpoint, load_base
from robot_rl.agents.encoders import EncoderConfig
from robot_rl.agents.obs_encoder import ObsEncoder
from robot_rl.agents.obs_layout import ObsLayout
from robot_rl.agents.sac import SACAgent, SACConfig
from robot_rl.envs.make import EnvConfig, layout_of
from robot_rl.errors import ConfigError
from robot_rl.learning.device import check_device_name
from robot_rl.task_spec import TwinArmName


@dataclass(frozen=True)
class TrainConfig:
    """One training run: env, observations, agent, data, schedule, interventions."""

    task: str | None = "pick_cube"
    """robot_rl task (tasks/<name>.yaml); ignored when `env` is given."""
    arm: TwinArmName | None = None
    """Arm of the task's embedded twin; None: the task's `twin.arm` (the Panda in tasks/)."""
    env: str | None = None
    """Any gymnasium env id with Box/Dict observations and Box actions (e.g. Pendulum-v1)."""
    env_kwargs: str = "{}"
    """JSON object of keyword arguments for gym.make (e.g. '{"server": "tcp://10.0.0.2:5555"}')."""
    obs: Literal["state", "pixels"] = "state"
    privileged: bool = True
    """State runs on a twin task also observe the twin's object state (cube pose, hole position)."""
    encoder: EncoderConfig = EncoderConfig(name="resnet10", image_hw=(128, 128), frozen=True)
    """Pixel runs: image encoder per camera (frozen backbones store embeddings in the buffer)."""
    agent: SACConfig = SACConfig(bc_weight=1.0, explore_std=0.1)
    """HIL-SERL's SAC (2 critics, 2 critic updates per actor update, γ 0.97, LayerNorm) plus a BC
    term on demo rows and mean + noise exploration: on pick_cube the plain set never succeeded in
    its sampled episodes within 8k env steps (BENCHMARKS.md, "Learning from demos and interventions"). `--agent.bc-weight 0
    --agent.explore-std None` is HIL-SERL exactly."""
    demos: str | None = None
    """Folder of recorded episodes (robot-rl record) for the demo buffer."""
    demo_fraction: float = 0.5
    demo_successes: bool = False
    """Self-imitation: copy each episode the policy completes successfully without intervention
    into the demo buffer too, so the actor's BC term (`agent.bc_weight`) also covers the states
    the policy itself reaches."""
    env_steps: int = 20_000
    learning_starts: int = 500
    """Env steps collected (policy acting, untrained) before updates start."""
    pretrain_updates: int = 0
    """Updates the learner runs on the demo buffer before it starts its per-env-step budget (offline
    warm start: the actor's BC term and the critic see the demos before the first episode; steps the
    actor sends meanwhile join the batches). Needs --demos."""
    utd: float = 1.0
    """Agent updates per env step (each runs `agent.critic_updates_per_actor_update` critic steps)."""
    weights_every: int = 50
    """Push trainable weights to the actor every this many updates."""
    max_lead_steps: int | None = 250
    """Simulation: the actor waits when it is this many env steps ahead of the learner's
    update budget, so env steps stay a fair x axis. None: never wait (physical robots)."""
    eval_every: int = 5_000
    eval_episodes: int = 50
    checkpoint_every: int = 2_000
    """Updates between learner checkpoints."""
    log_every: int = 200
    """Updates between training-metric lines (metrics.jsonl, tensorboard)."""
    replay_capacity: int = 200_000
    intervention: Literal["none", "scripted", "keyboard", "spacemouse"] = "none"
    rlif: bool = False
    """RLIF: reward −1 on the step before each intervention, 0 otherwise (env reward ignored)."""
    grasp_penalty: float = -0.02
    """Added to the gripper critic's reward when the gripper changes state (hybrid gripper only)."""
    classifier: str | None = None
    """Reward from a success classifier checkpoint instead of the task's ground truth. On a twin
    the ground truth then neither rewards nor ends episodes (as on a physical arm); it is only
    logged (`env_success`) to score the run."""
    classifier_consecutive: int = 2
    """Steps in a row the classifier must say success before the episode succeeds."""
    base: str | None = None
    """Residual RL: a frozen diffusion BC checkpoint (robot-rl train-bc) the agent corrects; needs
    --agent.residual-scale (robot-rl finetune --method residual-sac sets it)."""
    residual_enable_episodes: int = 0
    """With --base: progressive enabling (Policy Decorator): the residual acts in training episode k
    with probability k/N, else the base acts alone (0: always on)."""
    seed: int = 0
    run: str = ""
    """Run name (default: <task or env>_<obs>_s<seed>)."""
    runs_dir: str = "runs"
    learner: str = "tcp://127.0.0.1:5650"
    """Learner's step socket; weights are published on the next port. `robot-rl train` picks free
    loopback ports when this is left at its default."""
    torch_threads: int = 1
    device: str = "cpu"
    """Learner device: cpu, cuda, cuda:N or auto (CUDA when torch sees one). The agent, targets,
    optimizers and sampled batches live there; replay stays in host memory and actors act on the CPU."""
    compile: bool = True
    """Learner: torch.compile the critic ensembles (1.2–1.5× faster updates on CPU, ≈ 20 s of
    compiling at the first updates, cached on disk after; needs a C++ compiler, else eager)."""
    matmul_precision: Literal["highest", "high", "medium"] = "highest"
    """Learner float32 matmuls (torch.set_float32_matmul_precision): "high" allows TF32 on
    NVIDIA GPUs, "medium" bfloat16 (also on CPUs with AMX / AVX512-BF16, ≈ 2× faster matmuls,
    ≈ 0.3 % relative error). "highest" is exact float32."""

    def __post_init__(self) -> None:
        check_device_name(self.device)
        if self.task is None and self.env is None:
            raise ConfigError("give a task (--task pick_cube) or a gymnasium env id (--env Pendulum-v1)")
        if self.arm is not None and self.env is not None:
            raise ConfigError(f"--arm {self.arm} chooses the twin arm of a robot_rl task; --env {self.env} is "
                              "another gymnasium env (pass its own options in --env-kwargs)")
        try:
            kwargs = json.loads(self.env_kwargs)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"env_kwargs must be a JSON object, got {self.env_kwargs!r}: {exc}") from exc
        if not isinstance(kwargs, dict):
            raise ConfigError(f"env_kwargs must be a JSON object, got {self.env_kwargs!r}")
        for name in ("env_steps", "eval_every", "weights_every", "checkpoint_every", "log_every", "replay_capacity"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.classifier_consecutive < 1:
            raise ConfigError(f"classifier_consecutive must be ≥ 1, got {self.classifier_consecutive}")
        if self.learning_starts < 0 or self.eval_episodes < 0 or self.utd <= 0:
            raise ConfigError("learning_starts and eval_episodes must be ≥ 0 and utd > 0")
        if self.pretrain_updates < 0:
            raise ConfigError(f"pretrain_updates must be ≥ 0, got {self.pretrain_updates}")
        if self.pretrain_updates and not self.demos:
            raise ConfigError(f"--pretrain-updates {self.pretrain_updates} trains on the demo buffer: "
                              "give --demos DIR (episodes from `robot-rl record`)")
        if not 0.0 <= self.demo_fraction <= 1.0:
            raise ConfigError(f"demo_fraction must be in [0, 1], got {self.demo_fraction}")
        if (self.base is None) != (self.agent.residual_scale is None):
            raise ConfigError("a residual run needs both --base CKPT and --agent.residual-scale (e.g. 0.1); "
                              "`robot-rl finetune --method residual-sac` sets both")

    def update_budget(self, env_steps: int) -> int:
        """Updates the learner owes after `env_steps` env steps: the pretraining ones, then `utd`
        per step beyond `learning_starts` (negative before then). The actor's lead throttle uses
        the inverse, `env_steps_covered`."""
        return self.pretrain_updates + int((env_steps - self.learning_starts) * self.utd)

    def env_steps_covered(self, updates: int) -> float:
        """Env steps whose updates `updates` completes (inverse of `update_budget`)."""
        return max(0, updates - self.pretrain_updates) / self.utd + self.learning_starts

    @property
    def run_name(self) -> str:
        return self.run or f"{self.env or self.task}_{self.obs}_s{self.seed}"

    @property
    def weights_address(self) -> str:
        host, port = self.learner.rsplit(":", 1)
        return f"{host}:{int(port) + 1}"

    def kwargs(self) -> dict[str, Any]:
        return json.loads(self.env_kwargs)

    def env_config(self) -> EnvConfig:
        """The env stack this run acts in (`envs.make.make_env` builds it)."""
        return EnvConfig(task=self.task, env=self.env, env_kwargs=self.kwargs(), arm=self.arm, obs=self.obs,
                         privileged=self.privileged, classifier=self.classifier,
                         classifier_consecutive=self.classifier_consecutive, base=self.base,
                         residual_scale=self.agent.residual_scale,
                         residual_gripper_scale=self.agent.residual_gripper_scale,
                         residual_enable_episodes=self.residual_enable_episodes, seed=self.seed)

    def layout_of(self, env: gym.Env) -> ObsLayout:
        """The observation layout this run's agent reads from `env`."""
        return layout_of(env, obs=self.obs, privileged=self.privileged)

    def load_base(self) -> BaseCheckpoint | None:
        """The frozen diffusion base of a residual run (None otherwise); load it once and pass it
        to every env of the process (`make_env(cfg.env_config(), base=…)`)."""
        return None if self.base is None else load_base(self.base)


def make_agent(cfg: TrainConfig, layout: ObsLayout, action_dim: int) -> SACAgent:
    encoder = ObsEncoder(layout.state_dim, layout.camera_names if cfg.obs == "pixels" else (),
                         cfg.encoder if cfg.obs == "pixels" else None)
    return SACAgent(encoder, encoder.feature_dim, action_dim, cfg.agent)
