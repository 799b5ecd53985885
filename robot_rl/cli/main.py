"""`robot-rl`: one command, one subcommand per job. Each subcommand is a dataclass parsed by tyro
and handed to its `run(cfg)`; modules are imported only for the subcommand asked for, so the
robot PC's `robot-rl serve` never imports torch."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import tyro

from robot_rl.errors import RobotRLError


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


def run_keys(cfg: KeysConfig) -> None:
    from robot_rl.bridge.security import generate_keys

    paths = generate_keys(cfg.out, client_name=cfg.client_name, overwrite=cfg.overwrite)
    print(f"robot PC:  robot-rl serve --bind tcp://0.0.0.0:5555 --keys-dir {cfg.out}   "
          f"(uses {paths['server_secret'].name} and {paths['authorized'].name}/)")
    print(f"learner:   copy {paths['client_secret'].name} and {paths['server_public'].name} into a keys folder "
          f"and pass keys_dir= / --keys-dir")


def run_tasks(cfg: TasksConfig) -> None:
    from robot_rl.config import to_dict
    from robot_rl.task_spec import load_task, task_names

    if cfg.name is None:
        for name in task_names():
            print(f"{name:16s} {load_task(name).description}")
    else:
        print(json.dumps(to_dict(load_task(cfg.name)), indent=2))


def run_bench(cfg: Any) -> None:
    from robot_rl.bench import BENCHES

    result = BENCHES[type(cfg)](cfg)
    if getattr(cfg, "json", False):
        print(json.dumps(result), flush=True)
    else:
        for k, v in result.items():
            print(f"{k:32s} {v}")


def _print_json(fn):
    def run(cfg: Any) -> None:
        print(json.dumps(fn(cfg), default=str), flush=True)
    return run


COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (config "module:Class", runner "module:function", one-line help)
    "serve": ("robot_rl.bridge.serve:ServeConfig", "robot_rl.bridge.serve:run",
              "Serve an arm and its cameras on the robot bridge (twin today)."),
    "ros2-bridge": ("robot_rl.ros2.bridge_node:Ros2BridgeConfig", "robot_rl.ros2.bridge_node:run",
                    "A robot server as a ROS 2 node: state, cameras, diagnostics; teleop twists; reset."),
    "robot": ("robot_rl.bridge.operator:RobotCommand", "robot_rl.bridge.operator:run",
              "Operator: status of a robot server, restart-control after a fault, clear-error."),
    "record": ("robot_rl.teleop.record:RecordConfig", "robot_rl.teleop.record:run",
               "Record demo episodes with keyboard, SpaceMouse or a scripted expert."),
    "train": ("robot_rl.learning.train:TrainCommand", "robot_rl.learning.train:run_train",
              "Train an agent: learner here, actor in a child process (embedded twin by default)."),
    "learner": ("robot_rl.learning.train:LearnerCommand", "robot_rl.learning.train:run_learner",
                "Run the learner alone; actors connect to its --learner address."),
    "actor": ("robot_rl.learning.train:ActorCommand", "robot_rl.learning.train:run_actor",
              "Run an actor for a learner elsewhere."),
    "eval": ("robot_rl.cli.eval:EvalConfig", "robot_rl.cli.eval:run",
             "Evaluate a checkpoint: deterministic episodes, success rate and cycle time."),
    "collect-frames": ("robot_rl.rewards.collect:CollectConfig", "robot_rl.rewards.collect:run_collect",
                       "Record twin episodes labeled by ground truth for a success classifier."),
    "train-classifier": ("robot_rl.rewards.train:ClassifierConfig", "robot_rl.rewards.train:run",
                         "Train a success classifier on recorded frames; reports held-out accuracy, FPR, FNR."),
    "eval-classifier": ("robot_rl.rewards.evaluate:ClassifierEvalConfig",
                        "robot_rl.rewards.evaluate:evaluate_classifier",
                        "Score a success classifier on other recordings: FPR, FNR, false successes per episode kind."),
    "train-bc": ("robot_rl.learning.train_bc:TrainBCConfig", "robot_rl.learning.train_bc:run",
                 "Train a diffusion BC policy on recorded episodes (a base for robot-rl finetune)."),
    "finetune": ("robot_rl.finetune.run:FinetuneConfig", "robot_rl.finetune.run:run",
                 "Fine-tune a frozen diffusion BC base: residual-sac, residual-ppo, dsrl-sac, dsrl-na."),
    "plot": ("robot_rl.learning.plot:PlotConfig", "robot_rl.learning.plot:run",
             "Plot success rate vs env steps (IQM and bootstrap band across seeds) as PNG."),
    "export": ("robot_rl.data.mcap_export:ExportConfig", "robot_rl.data.mcap_export:run",
               "Export recorded episodes as a ROS 2-typed MCAP file (Foxglove, ros2 bag): --mcap FOLDER."),
    "bench": ("robot_rl.bench:BenchConfig", "robot_rl.cli.main:run_bench",
              "Benchmarks; --json prints one JSON line."),
    "keys": ("robot_rl.cli.main:KeysConfig", "robot_rl.cli.main:run_keys",
             "Generate CurveZMQ keys for serving beyond loopback."),
    "tasks": ("robot_rl.cli.main:TasksConfig", "robot_rl.cli.main:run_tasks",
              "List the task specs in tasks/ (or print one with --name)."),
}
PRINTS_RESULT = {"record", "train", "learner", "plot", "eval", "collect-frames", "train-classifier", "eval-classifier",
                 "train-bc", "finetune"}
"""Runners that return a summary dict, printed as one JSON line."""
RESUMABLE = {"train", "learner", "actor", "finetune"}
"""Commands with --resume (their run folders keep what an interrupted run did)."""


def _load(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _usage() -> str:
    lines = ["usage: robot-rl COMMAND [options]   (robot-rl COMMAND --help for its options)", "",
             "robot_rl: real-robot RL over a ZeroMQ bridge, with MuJoCo twins.", "", "commands:"]
    lines += [f"  {name:17s} {text}" for name, (_, _, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=os.environ.get("ROBOT_RL_LOG", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name = argv[0]
    if name not in COMMANDS:
        print(f"robot-rl: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    config_ref, runner_ref, text = COMMANDS[name]
    cfg = tyro.cli(_load(config_ref), args=argv[1:], prog=f"robot-rl {name}", description=text)
    runner = _load(runner_ref)
    if name in PRINTS_RESULT:
        runner = _print_json(runner)
    try:
        runner(cfg)
    except RobotRLError as exc:
        print(f"robot-rl: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C is how a run is stopped, not a crash: no traceback
        hint = " (continue it with the same command and --resume)" if name in RESUMABLE else ""
        print(f"robot-rl {name}: interrupted{hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
