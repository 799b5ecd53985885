"""Benchmarks: `robot-rl bench NAME [--json]`, each printing one JSON line of figures."""

from __future__ import annotations

from typing import Annotated, Union

import tyro

from robot_rl.bench import bridge, controller, diffusion, expert, finetune, learner, learning, ros2

BENCHES = {
    bridge.BridgeBench: bridge.run,
    controller.ControllerBench: controller.run,
    expert.ExpertBench: expert.run,
    diffusion.DiffusionBench: diffusion.run,
    learner.LearnerBench: learner.run,
    learning.LearningBench: learning.run,
    finetune.FinetuneBench: finetune.run,
    ros2.Ros2Bench: ros2.run,
}

BenchConfig = Union[
    Annotated[bridge.BridgeBench, tyro.conf.subcommand("bridge")],
    Annotated[controller.ControllerBench, tyro.conf.subcommand("controller")],
    Annotated[expert.ExpertBench, tyro.conf.subcommand("expert")],
    Annotated[diffusion.DiffusionBench, tyro.conf.subcommand("diffusion")],
    Annotated[learner.LearnerBench, tyro.conf.subcommand("learner")],
    Annotated[learning.LearningBench, tyro.conf.subcommand("learning")],
    Annotated[finetune.FinetuneBench, tyro.conf.subcommand("finetune")],
    Annotated[ros2.Ros2Bench, tyro.conf.subcommand("ros2")],
]
