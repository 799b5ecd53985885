"""Build the env a run acts in, wrappers included, from one `EnvConfig`.

The stack, inside out: the robot_rl env of a task (or any gymnasium id), then a success-classifier
reward (`classifier`), then a residual wrapper over a frozen diffusion base (`base`). Loaded
objects (the base) are passed in by the caller, which loads them once and shares them between
its envs; nothing is cached here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import gymnasium as gym

from robot_rl.agents.diffusion_checkpoint import BaseCheckpoint
from robot_rl.agents.obs_layout import ObsLayout
from robot_rl.agents.sac_config import residual_scales
from robot_rl.envs.classifier_reward import ClassifierReward
from robot_rl.envs.registration import ENV_IDS
from robot_rl.envs.residual import ResidualEnv
from robot_rl.envs.robot_env import RobotEnv
from robot_rl.errors import ConfigError
from robot_rl.task_spec import RewardSpec, load_task

TASK_ENV_IDS = {task: env_id for env_id, task in ENV_IDS.items()}


@dataclass(frozen=True)
class EnvConfig:
    """What an env stack is made of (`TrainConfig.env_config()` derives it from a run's flags)."""

    task: str | None = "pick_cube"
    """robot_rl task (tasks/<name>.yaml or a YAML path); ignored when `env` is given."""
    env: str | None = None
    """Any gymnasium env id with Box/Dict observations and Box actions."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the env (e.g. {"server": "tcp://10.0.0.2:5555"})."""
    arm: str | None = None
    """Arm of the task's embedded twin ("panda", "ur5e"; `RobotEnv(arm=)`); None: the task's `twin.arm`."""
    obs: Literal["state", "pixels"] = "state"
    privileged: bool = True
    """State runs on a twin task also observe the twin's object state."""
    classifier: str | None = None
    """Success classifier checkpoint: reward and termination come from it."""
    classifier_consecutive: int = 2
    base: str | None = None
    """Path of the frozen diffusion base of a residual run (the loaded base is passed to make_env)."""
    residual_scale: float | None = None
    """Residual scale of a residual run (base-normalized units; `SACConfig.residual_scale`)."""
    residual_gripper_scale: float | None = None
    """Residual scale of the last action dimension, the gripper (None: `residual_scale`)."""
    residual_enable_episodes: int = 0
    seed: int = 0

    @staticmethod
    def of_base(base: BaseCheckpoint, task: str | None = None, **kwargs: Any) -> EnvConfig:
        """The env a diffusion base acts in: its task, observation kind and privileged setting."""
        return EnvConfig(task=task or base.task, obs=base.obs, privileged=base.privileged, **kwargs)


def make_env(cfg: EnvConfig, *, base: BaseCheckpoint | None = None, render_images: bool | None = None) -> gym.Env:
    """The env stack of `cfg`. With `cfg.classifier`, reward and termination come from the success
    classifier (cameras are rendered for it even when the agent learns from state) and info keeps
    the env's own verdict as `env_success`; with `cfg.base`, `base` (its loaded checkpoint) must
    be given and a `ResidualEnv` wraps the stack. `render_images` overrides whether cameras render."""
    if (cfg.base is None) != (base is None):
        raise ValueError("make_env: pass the loaded base (load_base(cfg.base)) exactly when cfg.base is set")
    kwargs = dict(cfg.env_kwargs)
    images = (cfg.obs == "pixels" or cfg.classifier is not None) if render_images is None else render_images
    if cfg.env is not None:
        env = gym.make(cfg.env, **kwargs)
    else:
        if cfg.classifier is not None and "task" not in kwargs:
            # The classifier alone decides success: the twin's ground truth must not end episodes.
            kwargs["task"] = replace(load_task(cfg.task), reward=RewardSpec(type="none"))
        kwargs.setdefault("image_obs", images)
        if cfg.arm is not None:
            kwargs.setdefault("arm", cfg.arm)
        kwargs.setdefault("privileged_obs", cfg.privileged and cfg.obs == "state")
        env_id = TASK_ENV_IDS.get(cfg.task)
        if env_id is None:  # any task spec in tasks/ (or a YAML path): build the env directly
            env = RobotEnv(kwargs.pop("task", cfg.task), **kwargs)
        else:
            env = gym.make(env_id, **kwargs)
    if cfg.classifier is not None and images:
        env = ClassifierReward(env, cfg.classifier, consecutive=cfg.classifier_consecutive)
    if base is not None:
        env = _residual(cfg, env, base)
    return env


def _residual(cfg: EnvConfig, env: gym.Env, base: BaseCheckpoint) -> ResidualEnv:
    if cfg.env is None and base.task != cfg.task:
        raise ConfigError(f"base {cfg.base} was trained on {base.task!r}, this run's task is {cfg.task!r}")
    if base.layout.images and not ObsLayout.of(env.observation_space).images:
        raise ConfigError(f"base {cfg.base} sees cameras: run with --obs pixels")
    if cfg.residual_scale is None:
        raise ConfigError(f"a residual run over {cfg.base} needs a residual scale (--agent.residual-scale)")
    scales = residual_scales(cfg.residual_scale, cfg.residual_gripper_scale, base.policy.action_dim)
    return ResidualEnv(env, base.policy, base.layout, scale=scales, seed=cfg.seed,
                       enable_over_episodes=cfg.residual_enable_episodes)


def base_env(base: BaseCheckpoint, task: str | None = None, *, in_process: bool = True, server: str | None = None,
             keys_dir: str | None = None) -> RobotEnv:
    """The bare env a diffusion base acts in: the embedded twin (in this process by default), or
    the robot PC at `server` (a base that observes the twin's object state needs a twin there:
    RobotEnv says so otherwise). Fine-tuning methods wrap it themselves."""
    where: dict[str, Any] = {"in_process": in_process} if server is None else {"server": server, "keys_dir": keys_dir}
    return RobotEnv(task or base.task, image_obs=bool(base.layout.images),
                    privileged_obs=base.privileged and base.obs == "state", **where)


def layout_of(env: gym.Env, *, obs: Literal["state", "pixels"], privileged: bool) -> ObsLayout:
    """The observation layout an agent reads from `env`: cameras only for pixel runs, the twin's
    object state only when `privileged`."""
    return ObsLayout.of(env.observation_space, include=("privileged",) if privileged else (), images=obs == "pixels")

