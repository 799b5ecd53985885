"""The learner: receives the actor's steps, persists them, trains the agent, publishes weights,
logs metrics, checkpoints; `--resume` reloads the checkpoint and every persisted step.

Loop (one thread): drain incoming messages → run updates up to the update-to-data budget →
publish weights every `weights_every` updates → persist pending steps (chunks) → checkpoint.
A silent actor leaves the learner waiting (it logs once, then keeps waiting).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import zmq

from robot_rl.agents.sac import compile_critics, host_metrics, make_optimizers, update
from robot_rl.config import to_dict
from robot_rl.cpu import setup_torch
from robot_rl.data.episodes import iter_episodes
from robot_rl.envs.actions import action_dim_of
from robot_rl.envs.make import make_env
from robot_rl.envs.residual import residual_episode
from robot_rl.errors import ConfigError
from robot_rl.learning import wire
from robot_rl.learning.checkpoints import checkpoint_name, load_latest_checkpoint, save_checkpoint
from robot_rl.learning.config import TrainConfig, make_agent
from robot_rl.learning.device import resolve_device, to_device
from robot_rl.learning.ingest import Ingestor
from robot_rl.learning.metrics import MetricsWriter
from robot_rl.learning.policy import acting_state
from robot_rl.learning.progress import RunStatus
from robot_rl.learning.replay import MixedSampler
from robot_rl.learning.run_dir import RunDir
from robot_rl.learning.step_log import StepLog

log = logging.getLogger(__name__)

PERSIST_EVERY_STEPS = 500
PERSIST_EVERY_S = 5.0
ACTOR_SILENT_S = 10.0


class Learner:
    """See the module docstring. `run()` returns once `cfg.env_steps` steps have arrived, been
    persisted and learned from, and the actor's final evaluation (if any) is logged."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, status: RunStatus | None = None) -> None:
        self.cfg = cfg
        self.status = status or RunStatus(cfg.run_name, cfg.env_steps)
        """What the run's progress display shows (the learner keeps it current)."""
        self.device = resolve_device(cfg.device)
        """Where the agent, its targets, optimizers and each sampled batch live (replay stays in host memory)."""
        setup_torch(cfg.torch_threads, matmul_precision=cfg.matmul_precision)
        torch.manual_seed(cfg.seed)  # identical frozen-backbone init in actor and learner
        self.base = cfg.load_base()
        """A residual run's frozen base: its env wraps it, its demos are re-expressed as residuals of it."""
        env = make_env(cfg.env_config(), base=self.base, render_images=cfg.obs == "pixels")
        try:
            self.layout = cfg.layout_of(env)
            self.action_dim = action_dim_of(env)
        finally:
            env.close()
        # Built on the CPU (the same initial weights as the actor's), then moved.
        self.agent = make_agent(cfg, self.layout, self.action_dim).to(self.device)
        self.opts = make_optimizers(self.agent, cfg.agent)
        if cfg.compile:
            compile_critics(self.agent)
        self.run_dir = RunDir(cfg.run_name, root=cfg.runs_dir, resume=resume, config=cfg,
                              resume_may_differ=("resume", "env_steps", "eval_every", "eval_episodes", "compile"))
        self.metrics = MetricsWriter(self.run_dir)
        self.ingest = Ingestor(self.agent, self.layout, cfg, device=self.device)
        self.sampler = MixedSampler(self.ingest.online, self.ingest.demo, demo_fraction=cfg.demo_fraction,
                                    seed=cfg.seed, n_step=cfg.agent.n_step, discount=cfg.agent.discount)
        self.step_log = StepLog(self.run_dir.path / "replay")
        self.update_count = 0
        self.weights_version = 0
        self.received_seq = -1
        self.env_steps = 0
        self.final_eval_seen = False
        self._normalized = False
        self._train_metrics: dict = {}
        self.demo_residual_clipped: float | None = None
        """Residual runs with demos: fraction of the demos' action entries clipped to ±1 as residuals."""
        if cfg.demos:
            self.status.set_phase(f"loading demos from {cfg.demos}")
            self._load_demos(Path(cfg.demos))
        if resume:
            self._restore()
        ctx = zmq.Context.instance()
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        self.sock.bind(cfg.learner)
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 2)
        self.pub.bind(cfg.weights_address)
        self._actors: set[bytes] = set()
        self._last_actor_msg = time.monotonic()
        self._last_persist = time.monotonic()
        self._actor_silent_logged = False
        log.info("learner %s: state %d, cameras %s, actions %d, demos %d transitions, online %d",
                 cfg.run_name, self.layout.state_dim, self.layout.camera_names, self.action_dim,
                 len(self.ingest.demo), len(self.ingest.online))

    # ---- data ----------------------------------------------------------------------------------

    def _load_demos(self, folder: Path) -> None:
        to_residual = self._residual_demos() if self.cfg.base else None
        n, clipped = 0, []
        for ep in iter_episodes(folder):
            if to_residual is not None:
                ep, frac = to_residual(ep, seed=self.cfg.seed * 1000 + n)
                clipped.append(frac)
            self.ingest.add_episode_file(ep)
            n += 1
        if n == 0:
            raise ConfigError(f"no episodes in {folder}: record some with `robot-rl record --out {folder}`")
        log.info("loaded %d demo episodes (%d transitions) from %s", n, len(self.ingest.demo), folder)
        if clipped:
            self.demo_residual_clipped = round(float(np.mean(clipped)), 4)
            log.info("demos as residuals of base %s: %.1f %% of their action entries clipped to ±1", self.cfg.base,
                     100 * self.demo_residual_clipped)

    def _residual_demos(self):
        """Residual runs store demos as residuals of the base (`envs.residual.residual_episode`)."""
        base = self.base
        return functools.partial(residual_episode, policy=base.policy, layout=base.layout,
                                 scale=self.cfg.agent.residual_scales(base.policy.action_dim))

    def _restore(self) -> None:
        ckpt = load_latest_checkpoint(self.run_dir, map_location=self.device)  # saved on any device
        if ckpt is not None:  # before replaying steps, whose observations a changed env would not fit either
            self.layout.check_matches(ckpt.get("obs_layout"), what=f"run {self.run_dir.path}")
        n = 0
        for frames in self.step_log.replay():
            msg = wire.decode(frames)
            self.ingest.add_step(msg)
            self.received_seq = max(self.received_seq, msg.seq)
            n += 1
        self.ingest.flush()
        self.env_steps = self.received_seq + 1  # persisted steps and the lost ones between them
        if ckpt is not None:
            self.agent.load_state_dict(ckpt["agent"])
            for name, opt in self.opts.items():
                opt.load_state_dict(ckpt["optimizers"][name])
            self.update_count = int(ckpt["update"])
            self._normalized = True  # the standardization came back with the agent's buffers
            self.weights_version = int(ckpt["weights_version"])
            self.sampler.rng.bit_generator.state = ckpt["sampler_rng"]
        log.info("resumed %s: %d persisted steps (up to seq %d), update %d, weights v%d", self.cfg.run_name, n,
                 self.received_seq, self.update_count, self.weights_version)

    def _handle(self, frames: list) -> None:
        identity, payload = frames[0], frames[1:]
        try:
            msg = wire.decode(payload)
        except Exception as exc:  # noqa: BLE001 - a bad message must not stop training
            log.warning("dropped an undecodable message from an actor: %s", exc)
            return
        self._last_actor_msg = time.monotonic()
        self._actor_silent_logged = False
        if not isinstance(msg, wire.ActorHello) and identity not in self._actors:
            # Only actors that introduced themselves (right run, right shapes) may add data.
            if isinstance(msg, wire.Heartbeat):
                self._ack(identity, hello_required=True)
            return
        if isinstance(msg, wire.Step):
            if msg.seq != self.received_seq + 1:
                return  # a resend of something received, or a step after a gap: the actor resends in order
            self.received_seq = msg.seq
            self.env_steps += 1
            self.step_log.append(msg.seq, payload)
            self.ingest.add_step(msg)
            if msg.episode_stats:
                self.metrics.write("episode", self.env_steps, msg.episode_stats, update=self.update_count)
                self.status.on_episode(msg.episode_stats)
        elif isinstance(msg, wire.ActorHello):
            error = self._check_hello(msg)
            if not error:
                self._actors.add(identity)
                self._skip_lost(msg.oldest_seq)
            self._ack(identity, error)
        elif isinstance(msg, wire.Heartbeat):
            self._skip_lost(msg.oldest_seq)
            self._ack(identity)
        elif isinstance(msg, wire.EvalReport):
            self.metrics.write_eval(msg.env_step, success_rate=msg.success_rate, episodes=msg.episodes,
                                    mean_steps=msg.mean_steps,
                                    cycle_time_s=msg.cycle_time_s,
                                    update=self.update_count, extra={"weights_version": msg.weights_version,
                                                                     "mean_return": msg.mean_return})
            log.info("eval at %d env steps: success %.2f", msg.env_step, msg.success_rate)
            self.status.on_eval(msg.env_step, msg.success_rate)
            if msg.env_step >= self.cfg.env_steps:
                self.final_eval_seen = True

    def _skip_lost(self, oldest_seq: int) -> None:
        """Steps before the actor's oldest kept step will never come (an actor crashed holding them)."""
        if oldest_seq > self.received_seq + 1:
            log.warning("steps %d..%d were lost by the actor before reaching the learner; continuing",
                        self.received_seq + 1, oldest_seq - 1)
            # They were taken in the world all the same: count them, or the actor (which counts them)
            # stays more than max_lead_steps ahead of the update budget and both wait for ever.
            self.env_steps += oldest_seq - 1 - self.received_seq
            self.received_seq = oldest_seq - 1

    def _check_hello(self, msg: wire.ActorHello) -> str:
        if msg.run != self.cfg.run_name:
            return f"this learner trains run {self.cfg.run_name!r}, the actor is for {msg.run!r}"
        if msg.state_dim != self.layout.state_dim or msg.action_dim != self.action_dim:
            return (f"actor observes {msg.state_dim} state values and acts in {msg.action_dim} dims; the learner "
                    f"expects {self.layout.state_dim} and {self.action_dim}: the configs differ")
        return ""

    def _ack(self, identity: bytes, error: str = "", *, hello_required: bool = False) -> None:
        ack = wire.LearnerAck(self.cfg.run_name, self.received_seq, self.step_log.persisted_seq,
                              self.weights_version, self.update_count, error, hello_required)
        self.sock.send_multipart([identity, *wire.encode(ack)])

    def _drain(self, timeout_ms: int = 0) -> int:
        n = 0
        while self.sock.poll(timeout_ms):
            timeout_ms = 0
            self._handle(self.sock.recv_multipart())
            n += 1
            if n >= 1000:
                break
        return n

    # ---- training ------------------------------------------------------------------------------

    def _update_budget(self) -> int:
        return self.cfg.update_budget(self.env_steps)

    def _pretrain(self) -> None:
        """`cfg.pretrain_updates` updates before the per-step budget starts (not again on resume:
        the update count came back with the checkpoint). Keeps answering the actor meanwhile."""
        if self.update_count >= self.cfg.pretrain_updates:
            return
        log.info("pretraining: %d updates on %d demo transitions", self.cfg.pretrain_updates, len(self.ingest.demo))
        while self.update_count < self.cfg.pretrain_updates:
            self.status.set_phase(f"pretraining on the demos: update {self.update_count + 1} of "
                                  f"{self.cfg.pretrain_updates}")
            self._drain(timeout_ms=0)
            self._train_step()
            self._persist()  # acknowledges the actor's steps, as the main loop does
            self._update_status()
        self._checkpoint()
        self._publish()
        self.metrics.write("train", self.env_steps, {**host_metrics(self._train_metrics), "pretrain_done": 1.0},
                           update=self.update_count)

    def _train_step(self) -> None:
        if self.update_count == 0 and self.cfg.compile:
            self.status.set_phase("compiling the critics for the first update (torch.compile: ≈ 20 s, "
                                  "cached on disk for later runs)")
        self.ingest.flush()
        if self.update_count == 0 and not self._normalized:
            self._normalize()
        k = self.cfg.agent.critic_updates_per_actor_update
        batch = to_device(self.sampler.sample(self.cfg.agent.batch_size * k), self.device)
        self.agent.train()
        self._train_metrics = update(self.agent, self.opts, batch, self.cfg.agent)
        self.update_count += 1
        if self.update_count % self.cfg.weights_every == 0:
            self._publish()
        if self.update_count % self.cfg.log_every == 0:
            self.metrics.write("train", self.env_steps, host_metrics(self._train_metrics), update=self.update_count)
        if self.update_count % self.cfg.checkpoint_every == 0:
            self._checkpoint()

    def _normalize(self) -> None:
        """Fix the state standardization from everything collected so far (demos + first steps)."""
        parts = [b.transitions()["obs"]["state"] for b in (self.ingest.demo, self.ingest.online) if len(b)]
        states = torch.from_numpy(np.concatenate(parts)).to(self.device)
        self.agent.encoder.set_state_normalization(states)
        self.agent.target_encoder.load_state_dict(self.agent.encoder.state_dict())
        self._normalized = True
        log.info("state standardization fixed from %d observations", len(states))

    def _publish(self) -> None:
        self.weights_version += 1
        msg = wire.Weights(self.weights_version, self.update_count, self.cfg.run_name, acting_state(self.agent))
        try:
            self.pub.send_multipart(wire.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _persist(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.step_log.pending and (force or self.step_log.pending >= PERSIST_EVERY_STEPS
                                      or now - self._last_persist > PERSIST_EVERY_S):
            self.step_log.flush()
            self._last_persist = now

    def _checkpoint(self) -> None:
        self._persist(force=True)
        state = {"agent": self.agent.state_dict(), "optimizers": {k: o.state_dict() for k, o in self.opts.items()},
                 "update": self.update_count, "weights_version": self.weights_version, "env_steps": self.env_steps,
                 "received_seq": self.received_seq, "sampler_rng": self.sampler.rng.bit_generator.state,
                 "config": to_dict(self.cfg), "obs_layout": self.layout.record()}
        save_checkpoint(self.run_dir, checkpoint_name(self.update_count), state)

    def run(self, actor_alive: Callable[[], bool] | None = None) -> dict:
        """Train until every configured env step is learned from; returns final counters.

        `actor_alive` (local runs): when it turns False before the run is done, stop with an error
        instead of waiting for an actor that will not come back.
        """
        self._publish()  # the actor starts from the learner's initial weights
        try:
            self._pretrain()
            while True:
                self._drain(timeout_ms=0 if self._update_budget() > self.update_count else 20)
                if self._update_budget() > self.update_count and (len(self.ingest.online) + len(self.ingest.demo)):
                    self._train_step()
                self._persist()
                done_steps = self.env_steps >= self.cfg.env_steps and self.update_count >= self._update_budget()
                if done_steps and (self.final_eval_seen or self.cfg.eval_episodes == 0):
                    break
                waiting_for_actor = self.env_steps < self.cfg.env_steps or (
                    self.cfg.eval_episodes > 0 and not self.final_eval_seen)
                if waiting_for_actor and actor_alive is not None and not actor_alive() and not self.sock.poll(0):
                    raise RuntimeError(f"the actor process exited at {self.env_steps} of {self.cfg.env_steps} env "
                                       "steps; see its log above (resume with --resume)")
                self._update_status()
                if not self._actors:  # nobody connected yet: a start-up wait, not a fault
                    continue
                # Waiting messages mean the learner was the busy one (e.g. compiling), not the actor.
                silent_s = time.monotonic() - self._last_actor_msg
                if silent_s > ACTOR_SILENT_S and not self._actor_silent_logged and not self.sock.poll(0):
                    log.warning("no message from the actor for %.0f s: waiting (start or restart `robot-rl actor`)",
                                ACTOR_SILENT_S)
                    self._actor_silent_logged = True
            self.status.set_phase("done: final checkpoint")
            self._update_status()
            self._checkpoint()
            self._publish()
            # Keep answering the actor's heartbeats briefly so it sees everything persisted.
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                self._drain(timeout_ms=50)
            return {"env_steps": self.env_steps, "updates": self.update_count, "run_dir": str(self.run_dir.path),
                    "online_transitions": len(self.ingest.online), "demo_transitions": len(self.ingest.demo),
                    **({"demo_residual_clipped": self.demo_residual_clipped} if self.demo_residual_clipped is not None else {})}
        finally:
            self.close()

    def _update_status(self) -> None:
        status, cfg = self.status, self.cfg
        budget = self._update_budget()
        status.on_counters(self.env_steps, self.update_count, max(budget, 0))
        if not self._actors:
            status.set_phase("waiting for the actor to start (it builds its env and agent)")
        elif self.update_count < cfg.pretrain_updates:
            pass  # _pretrain names its phase
        elif self.env_steps < cfg.learning_starts:
            status.set_phase(f"collecting {cfg.learning_starts} env steps before updates start")
        elif self.env_steps >= cfg.env_steps and self.update_count >= budget:
            status.set_phase("final evaluation" if cfg.eval_episodes else "finishing")
        else:
            status.set_phase("training")

    def close(self) -> None:
        self.sock.close(0)
        self.pub.close(0)
        self.metrics.close()
        self.run_dir.close()
