"""SAC hyper-parameters, importable without torch (benchmarks and CLIs list them on machines
that only serve the robot)."""

from __future__ import annotations

from dataclasses import dataclass


def residual_scales(scale: float, gripper_scale: float | None, action_dim: int) -> list[float]:
    """One residual scale per action dimension: `scale`, the last (the gripper) at `gripper_scale`
    (None: `scale`)."""
    return [scale] * (action_dim - 1) + [scale if gripper_scale is None else gripper_scale]


@dataclass(frozen=True)
class SACConfig:
    """Hyper-parameters. Defaults follow HIL-SERL; `rlpd()` gives SERL's 10-critic set."""

    hidden: tuple[int, ...] = (256, 256)
    n_critics: int = 2
    critic_subsample: int | None = None
    """Size of the random critic subset whose min forms the target (None: min over all)."""
    critic_updates_per_actor_update: int = 2
    discount: float = 0.97
    n_step: int = 1
    """Critic targets from n-step returns: the discounted rewards of up to n steps of the episode,
    then γ^n · V (ResFiT: 3–5; sparse rewards reach the start of an episode n times faster)."""
    tau: float = 0.005
    lr: float = 3e-4
    temp_init: float = 0.01
    target_entropy: float | None = None
    """None means −|A|/2 (A: the continuous actions)."""
    backup_entropy: bool = True
    layer_norm: bool = True
    batch_size: int = 256
    hybrid_gripper: bool = False
    """Last action dimension is the gripper, learned by a separate discrete (DQN) critic."""
    gripper_epsilon: float = 0.1
    """Exploration rate of the discrete gripper during data collection."""
    explore_std: float | None = None
    """Data collection: None samples the SAC policy (SERL/HIL-SERL); a value acts with the policy's
    mean plus Gaussian noise of this std in action units, clipped to [−1, 1] (TD3/DrQ-v2 style).
    SAC's own std stays wide wherever the critic is flat in the action — on sparse-reward tasks,
    for thousands of updates — so sampled episodes rarely succeed even when the mean does."""
    bc_weight: float = 0.0
    """Weight of a behaviour-cloning term on the batch's demo rows in the actor loss:
    mean squared error of tanh(mean) to the demo action, added to −Q (Q of a sparse 0/1 task is
    O(1)). 0 is SERL/HIL-SERL. A small weight anchors the policy near the demonstrations while
    the critic is still flat in the action, which it is for thousands of updates on sparse rewards."""

    residual_scale: float | None = None
    """Residual RL over a frozen base policy (ResiP / ResFiT): the actor outputs a residual r in
    [−1, 1], the env executes clip(base + residual_scale · r) in the base's normalized units, and
    the critic scores that executed sum. The agent reads the base action from the observation's
    "base_action" entry (robot_rl.envs.residual.ResidualEnv puts it there; ObsLayout passes it on by
    name). The actor's mean layer starts at zero, so the untrained residual leaves the base unchanged."""
    residual_gripper_scale: float | None = None
    """Residual scale of the last action dimension, the gripper (None: `residual_scale`). A binary
    gripper command of ±1 cannot be flipped by a residual of 0.1; 1.0 gives the residual authority
    over when to open and close (the base's timing is a common failure of weak BC policies)."""
    actor_warmup_updates: int = 0
    """Updates that train only the critic before the actor and temperature start (critic warm-up:
    a residual policy should not move before its critic knows the base's values)."""

    def __post_init__(self) -> None:
        if self.residual_scale is not None and not 0.0 < self.residual_scale <= 2.0:
            raise ValueError(f"residual_scale must be None or in (0, 2], got {self.residual_scale}")
        if self.residual_gripper_scale is not None and (
                self.residual_scale is None or not 0.0 < self.residual_gripper_scale <= 2.0):
            raise ValueError("residual_gripper_scale needs residual_scale and must be in (0, 2], "
                             f"got {self.residual_gripper_scale}")
        if self.actor_warmup_updates < 0:
            raise ValueError(f"actor_warmup_updates must be ≥ 0, got {self.actor_warmup_updates}")
        if self.n_critics < 1:
            raise ValueError(f"n_critics must be ≥ 1, got {self.n_critics}")
        if self.critic_subsample is not None and not 1 <= self.critic_subsample <= self.n_critics:
            raise ValueError(f"critic_subsample must be in [1, n_critics={self.n_critics}], got {self.critic_subsample}")
        if self.n_step < 1:
            raise ValueError(f"n_step must be ≥ 1, got {self.n_step}")
        if self.critic_updates_per_actor_update < 1:
            raise ValueError("critic_updates_per_actor_update must be ≥ 1")
        if not 0.0 < self.discount < 1.0:
            raise ValueError(f"discount must be in (0, 1), got {self.discount}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        if self.explore_std is not None and not 0.0 <= self.explore_std <= 2.0:
            raise ValueError(f"explore_std must be None or in [0, 2], got {self.explore_std}")
        if self.bc_weight < 0:
            raise ValueError(f"bc_weight must be ≥ 0, got {self.bc_weight}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be ≥ 2, got {self.batch_size}")

    def residual_scales(self, action_dim: int) -> list[float]:
        """Per-dimension residual scale, the gripper (last dimension) at `residual_gripper_scale`."""
        if self.residual_scale is None:
            raise ValueError("not a residual agent: residual_scale is None")
        return residual_scales(self.residual_scale, self.residual_gripper_scale, action_dim)

    @staticmethod
    def rlpd() -> SACConfig:
        """SERL/RLPD: 10 critics, min over a random 2, 4 critic updates per actor update."""
        return SACConfig(n_critics=10, critic_subsample=2, critic_updates_per_actor_update=4)
