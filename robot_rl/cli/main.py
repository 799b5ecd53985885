"""`robot-rl`: one command, one subcommand per job. Each subcommand is a dataclass; this module
only parses and dispatches to the matching `run(cfg)`."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Annotated, Union

import tyro

from robot_rl.bench import BENCHES, BenchConfig
from robot_rl.bridge.serve import ServeConfig
from robot_rl.errors import RobotRLError
from robot_rl.teleop.record import RecordConfig


@dataclass(frozen=True)
class KeysConfig:
    """Generate CurveZMQ keys for serving beyond loopback (see robot_rl/bridge/security.py)."""

    out: str = "keys"
    """Folder for the server and client key pairs."""
    client_name: str = "client"
    overwrite: bool = False


@dataclass(frozen=True)
class TasksConfig:
    """List the task specs in tasks/ (or print one with --name)."""

    name: str | None = None


def _run_keys(cfg: KeysConfig) -> None:
    from robot_rl.bridge.security import generate_keys

    paths = generate_keys(cfg.out, client_name=cfg.client_name, overwrite=cfg.overwrite)
    print(f"robot PC:  robot-rl serve --bind tcp://0.0.0.0:5555 --keys-dir {cfg.out}   "
          f"(uses {paths['server_secret'].name} and {paths['authorized'].name}/)")
    print(f"learner:   copy {paths['client_secret'].name} and {paths['server_public'].name} into a keys folder "
          f"and pass keys_dir= / --keys-dir")


def _run_tasks(cfg: TasksConfig) -> None:
    from robot_rl.config import to_dict
    from robot_rl.task_spec import load_task, task_names

    if cfg.name is None:
        for name in task_names():
            t = load_task(name)
            print(f"{name:16s} {t.description}")
    else:
        print(json.dumps(to_dict(load_task(cfg.name)), indent=2))


def _run_serve(cfg: ServeConfig) -> None:
    from robot_rl.bridge import serve

    serve.run(cfg)


def _run_record(cfg: RecordConfig) -> None:
    from robot_rl.teleop import record

    print(json.dumps(record.run(cfg)))


def _run_bench(cfg: BenchConfig) -> None:
    result = BENCHES[type(cfg)](cfg)
    if getattr(cfg, "json", False):
        print(json.dumps(result), flush=True)
    else:
        for k, v in result.items():
            print(f"{k:32s} {v}")


COMMANDS = {
    "serve": (ServeConfig, _run_serve, "Serve an arm and its cameras on the robot bridge (twin today)."),
    "record": (RecordConfig, _run_record, "Record demo episodes with keyboard, SpaceMouse or a scripted expert."),
    "bench": (BenchConfig, _run_bench, "Benchmarks (bridge, controller, expert); --json prints one JSON line."),
    "keys": (KeysConfig, _run_keys, "Generate CurveZMQ keys for serving beyond loopback."),
    "tasks": (TasksConfig, _run_tasks, "List the task specs in tasks/ (or print one with --name)."),
}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("ROBOT_RL_LOG", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    Command = Union[tuple(Annotated[cls, tyro.conf.subcommand(name, description=text)]
                          for name, (cls, _, text) in COMMANDS.items())]
    cfg = tyro.cli(Command, args=argv, prog="robot-rl",
                   description="robot_rl: real-robot RL over a ZeroMQ bridge, with MuJoCo twins.")
    if type(cfg) in BENCHES:
        fn = _run_bench
    else:
        fn = next(fn for cls, fn, _ in COMMANDS.values() if cls is type(cfg))
    try:
        fn(cfg)
    except RobotRLError as exc:
        print(f"robot-rl: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
