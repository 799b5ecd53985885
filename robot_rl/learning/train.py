"""`robot-rl train`, `robot-rl learner`, `robot-rl actor`: the distributed run, locally or split
over machines. `train` runs the learner in this process and the actor as a child process."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

from robot_rl.config import from_dict, to_dict
from robot_rl.errors import ConfigError
from robot_rl.learning.actor import Actor, ActorOptions
from robot_rl.learning.config import TrainConfig
from robot_rl.learning.learner import Learner
from robot_rl.learning.progress import ProgressView, RunStatus
from robot_rl.task_spec import load_task
from robot_rl.teleop.intervention import check_intervention

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainCommand(TrainConfig):
    """Train on the embedded twin (or any env): learner here, actor in a child process."""

    resume: bool = False
    """Continue the run in runs/<run>: reload its checkpoint and every persisted step."""
    progress: Literal["auto", "live", "lines", "off"] = "auto"
    """Progress on stderr: a live panel on a terminal, one line every 30 s (and at each phase change)
    into a file or pipe; "auto" picks by whether stderr is a terminal."""

    @property
    def config(self) -> TrainConfig:
        return _config_of(self)


@dataclass(frozen=True)
class LearnerCommand(TrainConfig):
    """The learner alone (actors connect to --learner)."""

    resume: bool = False
    progress: Literal["auto", "live", "lines", "off"] = "auto"

    @property
    def config(self) -> TrainConfig:
        return _config_of(self)


@dataclass(frozen=True)
class ActorCommand(TrainConfig):
    """An actor for a learner elsewhere. With --config-file it uses a run's config exactly."""

    config_file: str | None = None
    """A run's config.json (written by the learner): the actor then uses exactly that config."""
    resume: bool = False
    actor: str = "actor0"
    sent_log: str | None = None

    @property
    def config(self) -> TrainConfig:
        return _config_of(self)


def _config_of(cmd: TrainConfig) -> TrainConfig:
    """The plain TrainConfig part of a command."""
    return TrainConfig(**{f.name: getattr(cmd, f.name) for f in fields(TrainConfig)})


def run_learner(cmd: LearnerCommand) -> dict:
    cfg = cmd.config
    preflight(cfg, local_actor=False)
    status = RunStatus(cfg.run_name, cfg.env_steps)
    learner = Learner(cfg, resume=cmd.resume, status=status)
    with _view(cmd.progress, status):
        return learner.run()


def run_actor(cmd: ActorCommand) -> None:
    cfg = cmd.config
    if cmd.config_file is not None:
        cfg = from_dict(TrainConfig, json.loads(Path(cmd.config_file).read_text()), where="config")
    run_dir = Path(cfg.runs_dir) / cfg.run_name
    Actor(cfg, ActorOptions(str(run_dir), actor=cmd.actor, resume=cmd.resume, sent_log=cmd.sent_log)).run()


def spawn_actor(cfg: TrainConfig, *, resume: bool, sent_log: str | None = None,
                extra_env: dict | None = None) -> subprocess.Popen:
    """`robot-rl actor` for `cfg` as a child process (its config passed through a JSON file)."""
    run_dir = Path(cfg.runs_dir) / cfg.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_file = run_dir / "actor_config.json"
    cfg_file.write_text(json.dumps(to_dict(cfg)))
    args = [sys.executable, "-m", "robot_rl.cli.main", "actor", "--config-file", str(cfg_file)]
    if resume:
        args.append("--resume")
    if sent_log:
        args += ["--sent-log", sent_log]
    return subprocess.Popen(args, env={**os.environ, **(extra_env or {})}, start_new_session=True)


DEFAULT_LEARNER = TrainConfig.__dataclass_fields__["learner"].default


def free_port_pair() -> int:
    """A loopback port p with p + 1 also free (step socket and weights socket)."""
    while True:
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


def _exit_on_termination() -> Callable[[], None]:
    """SIGTERM / SIGHUP raise SystemExit here, so `run_train`'s cleanup stops the actor: it runs in
    its own session (Ctrl-C reaches only this process) and would otherwise go on acting after a
    `kill` or a closed terminal. Returns the function that restores the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def preflight(cfg: TrainConfig, *, local_actor: bool) -> None:
    """Configuration errors the actor would only meet after starting, raised here before any
    process is spawned (ConfigError naming the fix). `local_actor`: the actor runs on this machine,
    so the files it reads must exist here too."""
    task = load_task(cfg.task) if cfg.env is None else None
    check_intervention(cfg.intervention, task, where=f"--env {cfg.env}" if cfg.env else f"task {cfg.task}")
    if local_actor and cfg.classifier is not None and not Path(cfg.classifier).is_file():
        raise ConfigError(f"--classifier {cfg.classifier} does not exist: train one with `robot-rl train-classifier`")


@contextmanager
def _view(progress: str, status: RunStatus) -> Iterator[None]:
    if progress == "off":
        yield
        return
    with ProgressView(status, live=None if progress == "auto" else progress == "live"):
        yield


def run_train(cmd: TrainCommand) -> dict:
    """Learner in this process, actor as a child; both stop together."""
    cfg = cmd.config
    preflight(cfg, local_actor=True)
    if cfg.learner == DEFAULT_LEARNER:  # local run: private ports, so concurrent runs never meet
        cfg = replace(cfg, learner=f"tcp://127.0.0.1:{free_port_pair()}")
    status = RunStatus(cfg.run_name, cfg.env_steps)
    learner = Learner(cfg, resume=cmd.resume, status=status)  # binds its sockets before the actor connects
    actor = spawn_actor(cfg, resume=cmd.resume)
    restore = _exit_on_termination()
    try:
        with _view(cmd.progress, status):
            result = learner.run(actor_alive=lambda: actor.poll() is None)
        actor.wait(timeout=120)
        if actor.returncode:
            raise RuntimeError(f"the actor exited with code {actor.returncode}; see its log above")
        return result
    finally:
        restore()
        if actor.poll() is None:
            os.killpg(actor.pid, signal.SIGTERM)
            try:
                actor.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(actor.pid, signal.SIGKILL)
