"""Actor ↔ learner messages over ZeroMQ (same msgpack + raw-buffer codec as the robot bridge).

    actor  ──DEALER──►  learner ROUTER : ActorHello, Step (one per env step), Heartbeat, EvalReport
    actor  ◄─────────── learner ROUTER : LearnerAck (reply to hello and heartbeats)
    actor  ◄──SUB────── learner PUB    : Weights (trainable parameters, versioned)

Every Step carries the actor's sequence number; the learner acknowledges the highest number
received and the highest persisted to disk, and the actor keeps (and resends after a learner
restart) everything not yet persisted, so nothing sent is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import numpy as np

from robot_rl.bridge.codec import ArraySpec, MessageRegistry

VERSION = 1
REGISTRY = MessageRegistry(VERSION)
"""Every message kind of the actor ↔ learner wire."""
F32 = ArraySpec("<f4", (None,))
IMAGE = ArraySpec("|u1", (None, None, 3))


_message = REGISTRY.message


@_message("actor_hello")
@dataclass(frozen=True)
class ActorHello:
    KIND: ClassVar[str]
    run: str
    actor: str
    next_seq: int
    """The sequence number the actor will send next (0 for a fresh actor)."""
    oldest_seq: int
    """The oldest step the actor can still (re)send; older unreceived steps are lost for good."""
    state_dim: int
    action_dim: int
    cameras: tuple[str, ...] = ()


@_message("learner_ack")
@dataclass(frozen=True)
class LearnerAck:
    KIND: ClassVar[str]
    run: str
    received_seq: int
    """Highest step sequence number received with nothing missing before it (−1: none); the
    learner drops steps that arrive after a gap, and the actor resends from here."""
    persisted_seq: int
    """Highest step sequence number written to disk (−1: none); the actor may forget these."""
    weights_version: int
    update: int
    error: str = ""
    """Non-empty when the learner refuses this actor (wrong run or shapes); the actor stops."""
    hello_required: bool = False
    """The learner does not know this actor (it restarted, or the actor never said hello)."""


@_message("step")
@dataclass(frozen=True)
class Step:
    """One env step. `obs_*` only on an episode's first step (observations are sent once)."""

    KIND: ClassVar[str]
    seq: int
    episode: int
    next_state: Annotated[np.ndarray, F32]
    next_images: dict[str, Annotated[np.ndarray, IMAGE]]
    action: Annotated[np.ndarray, F32]
    reward: float
    terminated: bool
    truncated: bool
    intervention: bool = False
    grasp_penalty: float = 0.0
    obs_state: Annotated[np.ndarray, F32] | None = None
    obs_images: dict[str, Annotated[np.ndarray, IMAGE]] | None = None
    episode_stats: dict[str, Any] | None = None
    """On an episode's last step: return, length, success, interventions, cycle time."""


@_message("heartbeat")
@dataclass(frozen=True)
class Heartbeat:
    KIND: ClassVar[str]
    actor: str
    next_seq: int
    oldest_seq: int
    env_steps: int
    weights_version: int


@_message("eval_report")
@dataclass(frozen=True)
class EvalReport:
    """Deterministic evaluation run by the actor at `env_step` with weights `weights_version`."""

    KIND: ClassVar[str]
    env_step: int
    weights_version: int
    success_rate: float
    episodes: int
    mean_steps: float
    mean_return: float
    cycle_time_s: float | None
    """Mean duration of the successful episodes (None: none succeeded)."""


@_message("weights")
@dataclass(frozen=True)
class Weights:
    KIND: ClassVar[str]
    version: int
    update: int
    run: str
    params: dict[str, Annotated[np.ndarray, ArraySpec("<f4", None)]]
    """Trainable parameters (and buffers) by state-dict name."""


def encode(msg: object) -> list:
    return REGISTRY.encode(msg)


def decode(frames: list) -> object:
    return REGISTRY.decode(frames)
