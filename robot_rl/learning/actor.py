"""The actor: acts in the env with the newest weights, streams every step to the learner, runs
deterministic evaluations.

If the learner goes silent the actor keeps acting with its last weights (the robot PC's
watchdog still guards the arm) and keeps every step the learner has not yet persisted, resending
them when the learner comes back; `--resume` continues the sequence numbering of a killed actor.

Threading: one thread. Sockets: DEALER to the learner's step socket, SUB to its weights.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zmq

from robot_rl.atomic import write_text_atomic
from robot_rl.envs.actions import ActionScaler, action_dim_of
from robot_rl.envs.make import make_env
from robot_rl.errors import ConfigError
from robot_rl.learning import wire
from robot_rl.learning.config import TrainConfig, make_agent
from robot_rl.learning.policy import load_weights, obs_batch, policy_action, success_of
from robot_rl.task_spec import load_task
from robot_rl.teleop.intervention import make_intervener

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
RESEND_AFTER_S = 1.5
"""Resend from the learner's position when it has not advanced for this long."""
LEARNER_TIMEOUT_S = 5.0
FIRST_UPDATE_GRACE_S = 180.0
"""Silence allowed before the learner's first update (compiling the critics on a slow machine)."""
MAX_OUTBOX = 200_000
"""Steps kept for resending while the learner is unreachable (oldest dropped beyond, with a warning)."""


@dataclass(frozen=True)
class ActorOptions:
    run_dir: str
    actor: str = "actor0"
    resume: bool = False
    sent_log: str | None = None
    """Append the sequence number and a digest of every step sent (resume tests compare them)."""
    connect_timeout_s: float = 120.0


class Actor:
    """See the module docstring. `run()` returns when the configured env steps are done and the
    learner has persisted all of them (or the learner is gone for good)."""

    def __init__(self, cfg: TrainConfig, opts: ActorOptions) -> None:
        self.cfg, self.opts = cfg, opts
        self.run_dir = Path(opts.run_dir)
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)  # identical frozen-backbone init in actor and learner
        self.env = make_env(cfg.env_config(), base=cfg.load_base())
        self.layout = cfg.layout_of(self.env)
        self.scaler = ActionScaler.of(self.env)
        self.agent = make_agent(cfg, self.layout, action_dim_of(self.env)).eval()
        self.task = load_task(cfg.task) if cfg.env is None else None
        self.intervener = make_intervener(cfg.intervention, self.task, seed=cfg.seed)
        # A human takes over at the robot's pace: the embedded twin would otherwise run faster
        # than real time (a physical arm paces itself).
        self.pace_s = _step_s(self.env) if cfg.intervention in ("keyboard", "spacemouse") else 0.0
        self.rng = np.random.default_rng(cfg.seed + 1)
        self.gen = torch.Generator().manual_seed(cfg.seed + 2)
        state = self._load_state() if opts.resume else {}
        self.next_seq = state.get("next_seq", 0)
        self.env_steps = state.get("env_steps", 0)
        self.episodes = state.get("episodes", 0)
        self.next_eval = state.get("next_eval", cfg.eval_every)
        self.weights_version = -1
        self.outbox: collections.OrderedDict[int, list] = collections.OrderedDict()
        self.received_seq = self.persisted_seq = -1
        self.learner_update = 0
        self._last_progress = self._last_resend = 0.0
        self._pending: wire.Step | None = None
        """The newest step, held back one step so RLIF can relabel it (sent with the next one)."""
        self.last_ack = time.monotonic()
        self.learner_lost = False
        ctx = zmq.Context.instance()
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 10_000)
        self.sock.connect(cfg.learner)
        self.weights = ctx.socket(zmq.SUB)
        self.weights.setsockopt(zmq.LINGER, 0)
        self.weights.setsockopt(zmq.RCVHWM, 4)
        self.weights.setsockopt(zmq.SUBSCRIBE, b"")
        self.weights.connect(cfg.weights_address)
        self._sent_log = open(opts.sent_log, "a") if opts.sent_log else None

    # ---- learner link ------------------------------------------------------------------------

    def _hello_msg(self) -> wire.ActorHello:
        return wire.ActorHello(self.cfg.run_name, self.opts.actor, self.next_seq, self._oldest(), self.layout.state_dim,
                               self.agent.action_dim, self.layout.camera_names if self.cfg.obs == "pixels" else ())

    def _hello(self) -> None:
        hello = self._hello_msg()
        deadline = time.monotonic() + self.opts.connect_timeout_s
        self.sock.send_multipart(wire.encode(hello))
        while not self._poll_acks(timeout_ms=500):
            if time.monotonic() > deadline:
                raise ConfigError(f"no learner answered on {self.cfg.learner} within {self.opts.connect_timeout_s} s: "
                                  "is `robot-rl learner` running with the same --learner address?")
            self.sock.send_multipart(wire.encode(hello))

    def _poll_acks(self, timeout_ms: int = 0) -> bool:
        got = False
        while self.sock.poll(timeout_ms):
            timeout_ms = 0
            msg = wire.decode(self.sock.recv_multipart())
            if not isinstance(msg, wire.LearnerAck):
                continue
            if msg.error:
                raise ConfigError(f"the learner refused this actor: {msg.error}")
            if msg.hello_required:  # the learner restarted: introduce ourselves again
                self._send(wire.encode(self._hello_msg()))
                continue
            got = True
            self.last_ack = time.monotonic()
            came_back = self.learner_lost
            if came_back:
                log.info("learner is back (received up to seq %d)", msg.received_seq)
                self.learner_lost = False
            now = time.monotonic()
            if msg.received_seq > self.received_seq:
                self._last_progress = now
            self.received_seq, self.persisted_seq = msg.received_seq, msg.persisted_seq
            self.learner_update = msg.update
            while self.outbox and next(iter(self.outbox)) <= self.persisted_seq:
                self.outbox.popitem(last=False)
            # The learner takes steps strictly in order: if it is stuck behind what was sent (it
            # restarted, or dropped steps that arrived after a gap), send again from its position.
            behind = self.received_seq < self.next_seq - 1
            if behind and (came_back or now - self._last_progress > RESEND_AFTER_S) and now - self._last_resend > RESEND_AFTER_S:
                self._last_resend = now
                self._resend(after=self.received_seq)
        return got

    def _oldest(self) -> int:
        """Oldest step the actor can still send: the outbox's first, or the step held back for RLIF."""
        if self.outbox:
            return next(iter(self.outbox))
        return self._pending.seq if self._pending is not None else self.next_seq

    def _resend(self, *, after: int) -> None:
        for seq, frames in self.outbox.items():
            if seq > after:
                self._send(frames)

    def _send(self, frames: list) -> None:
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            pass  # kept in the outbox; resent after the next acknowledgement

    def _heartbeat(self) -> None:
        self._beat(force=False)

    def _beat(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_beat < HEARTBEAT_S:
            return
        self._last_beat = now
        self._send(wire.encode(wire.Heartbeat(self.opts.actor, self.next_seq, self._oldest(), self.env_steps,
                                              self.weights_version)))
        # The learner's first update compiles its critics (≈ 20 s without answering): expected, not a fault.
        timeout_s = FIRST_UPDATE_GRACE_S if self.learner_update == 0 and self.cfg.compile else LEARNER_TIMEOUT_S
        if not self.learner_lost and now - self.last_ack > timeout_s:
            self.learner_lost = True
            log.warning("learner silent for %.0f s: acting on with weights v%d, keeping %d steps to resend",
                        now - self.last_ack, self.weights_version, len(self.outbox))

    def _throttle(self) -> None:
        """Wait while the learner is more than `max_lead_steps` behind its update budget."""
        lead = self.cfg.max_lead_steps
        if lead is None:
            return
        while True:
            if self.env_steps - self.cfg.env_steps_covered(self.learner_update) <= lead or self.learner_lost:
                return
            self._beat(force=True)
            self._poll_acks(timeout_ms=50)
            self._poll_weights()

    def _poll_weights(self) -> None:
        newest = None
        while self.weights.poll(0):
            newest = self.weights.recv_multipart()
        if newest is None:
            return
        msg = wire.decode(newest)
        if msg.run != self.cfg.run_name or msg.version <= self.weights_version:
            return
        load_weights(self.agent, msg.params)
        self.weights_version = msg.version

    # ---- acting ------------------------------------------------------------------------------

    def _emit(self, step: wire.Step) -> None:
        frames = wire.encode(step)
        self.outbox[step.seq] = frames
        if len(self.outbox) > MAX_OUTBOX:
            dropped, _ = self.outbox.popitem(last=False)
            log.warning("outbox full: dropped step %d the learner never persisted", dropped)
        self._send(frames)
        if self._sent_log is not None:
            digest = hashlib.sha1(b"".join(bytes(f) for f in frames)).hexdigest()
            self._sent_log.write(json.dumps({"seq": step.seq, "digest": digest}) + "\n")
            self._sent_log.flush()

    def run(self) -> None:
        self._last_beat = 0.0
        self._hello()
        try:
            while self.env_steps < self.cfg.env_steps:
                self._episode()
                self._save_state()
                if self.env_steps >= self.next_eval or self.env_steps >= self.cfg.env_steps:
                    self._evaluate()
                    self._save_state()  # the next evaluation point too: a resumed actor does not redo this one
            self._drain(timeout_s=60.0)
        finally:
            self.close()

    def _episode(self) -> None:
        cfg = self.cfg
        obs, info = self.env.reset(seed=int(self.rng.integers(2**31)))
        self.intervener.reset()
        first = True
        ret, length, interventions = 0.0, 0, 0
        prev_intervening = False
        t0 = next_t = time.monotonic()
        while True:
            if self.pace_s:
                next_t += self.pace_s
                time.sleep(max(0.0, next_t - time.monotonic()))
            self._poll_weights()
            self._poll_acks()
            self._heartbeat()
            self._throttle()
            action = policy_action(self.agent, obs_batch(self.layout, obs), deterministic=False, generator=self.gen)
            action, intervening = self.intervener.decide(obs, info, action)
            if intervening and hasattr(self.env, "agent_action"):
                action = self.env.agent_action(action)  # e.g. a residual: record what the agent would output
            next_obs, reward, terminated, truncated, next_info = self.env.step(self.scaler.to_env(action))
            if "agent_action" in next_info:  # what the env really applied, e.g. a residual kept off
                action = np.asarray(next_info["agent_action"], np.float32)
            self.env_steps += 1
            length += 1
            interventions += intervening
            if cfg.rlif:
                reward = 0.0
                if intervening and not prev_intervening and self._pending is not None:
                    self._pending = _with(self._pending, reward=-1.0)  # the step that led the human to take over
            prev_intervening = intervening
            ret += float(reward)
            done = terminated or truncated or self.env_steps >= cfg.env_steps
            stats = None
            if done:
                stats = {"return": ret, "length": length, "success": bool(success_of(next_info, terminated, reward)),
                         "interventions": interventions, "episode": self.episodes,
                         "episode_wall_s": time.monotonic() - t0}
                if "env_success" in next_info:  # a learned reward (classifier) decides; `success` is the env's own
                    stats["reward_success"] = bool(next_info.get("success"))
            step = wire.Step(
                seq=self.next_seq, episode=self.episodes,
                next_state=self.layout.state_vector(next_obs), next_images=self.layout.image_arrays(next_obs),
                action=np.asarray(action, np.float32), reward=float(reward), terminated=bool(terminated),
                truncated=bool(truncated or (done and not terminated)), intervention=bool(intervening),
                grasp_penalty=_grasp_penalty(cfg, obs, action),
                obs_state=self.layout.state_vector(obs) if first else None,
                obs_images=self.layout.image_arrays(obs) if first else None, episode_stats=stats)
            self.next_seq += 1
            first = False
            # One step of delay lets RLIF relabel the step before an intervention.
            if self._pending is not None:
                self._emit(self._pending)
            self._pending = step
            obs, info = next_obs, next_info
            if done:
                break
        self._emit(self._pending)
        self._pending = None
        self.episodes += 1

    def _evaluate(self) -> None:
        """Deterministic episodes with the current weights (not sent as training data)."""
        self.next_eval = (self.env_steps // self.cfg.eval_every + 1) * self.cfg.eval_every
        n = self.cfg.eval_episodes
        if n == 0:
            return
        successes, lengths, returns, cycle = [], [], [], []
        if hasattr(self.env, "evaluating"):  # a residual wrapper: the residual acts in every eval episode
            self.env.evaluating = True
        try:
            self._eval_episodes(n, successes, lengths, returns, cycle)
        finally:
            if hasattr(self.env, "evaluating"):
                self.env.evaluating = False
        report = wire.EvalReport(self.env_steps, self.weights_version, float(np.mean(successes)), n,
                                 float(np.mean(lengths)), float(np.mean(returns)),
                                 float(np.mean(cycle)) if cycle else None)
        log.info("eval at %d env steps (weights v%d): success %.2f", self.env_steps, self.weights_version,
                 report.success_rate)
        self._send(wire.encode(report))

    def _eval_episodes(self, n: int, successes: list, lengths: list, returns: list, cycle: list) -> None:
        for _ in range(n):
            self._poll_weights()
            obs, info = self.env.reset(seed=int(self.rng.integers(2**31)))
            ret, steps = 0.0, 0
            while True:
                self._poll_acks()
                self._heartbeat()
                action = policy_action(self.agent, obs_batch(self.layout, obs), deterministic=True)
                obs, reward, terminated, truncated, info = self.env.step(self.scaler.to_env(action))
                ret += float(reward)
                steps += 1
                if terminated or truncated:
                    break
            ok = bool(success_of(info, terminated, reward))
            successes.append(ok)
            lengths.append(steps)
            returns.append(ret)
            if ok:
                cycle.append(steps * _step_s(self.env))

    def _drain(self, *, timeout_s: float) -> None:
        """Wait until the learner has persisted every step (or give up after timeout_s)."""
        deadline = time.monotonic() + timeout_s
        while self.persisted_seq < self.next_seq - 1 and time.monotonic() < deadline:
            self._heartbeat()
            self._poll_acks(timeout_ms=100)
        if self.persisted_seq < self.next_seq - 1:
            log.warning("learner persisted up to %d of %d steps before the actor stopped", self.persisted_seq,
                        self.next_seq)

    # ---- state -------------------------------------------------------------------------------

    def _state_path(self) -> Path:
        return self.run_dir / f"{self.opts.actor}_state.json"

    def _load_state(self) -> dict:
        path = self._state_path()
        return json.loads(path.read_text()) if path.exists() else {}

    def _save_state(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self._state_path(), json.dumps({"next_seq": self.next_seq, "env_steps": self.env_steps,
                                                          "episodes": self.episodes, "next_eval": self.next_eval}))

    def close(self) -> None:
        self.intervener.close()
        self.env.close()
        self.sock.close(0)
        self.weights.close(0)
        if self._sent_log is not None:
            self._sent_log.close()


def _with(step: wire.Step, **changes) -> wire.Step:
    from dataclasses import replace

    return replace(step, **changes)


def _grasp_penalty(cfg: TrainConfig, obs: dict, action: np.ndarray) -> float:
    """HIL-SERL's grasp penalty: a gripper command that changes the gripper's state."""
    if not cfg.agent.hybrid_gripper or not isinstance(obs, dict) or "gripper_width" not in obs:
        return 0.0
    width = float(np.asarray(obs["gripper_width"]).reshape(-1)[0])
    closing, opening = action[-1] > 0.5, action[-1] < -0.5
    return cfg.grasp_penalty if (closing and width > 0.07) or (opening and width < 0.07) else 0.0


def _step_s(env) -> float:
    task = getattr(env.unwrapped, "task", None)
    return task.step_s if task is not None else 1.0 / env.metadata.get("render_fps", 1)
