"""Benchmarks: `robot-rl bench NAME [--json]`, each printing one JSON line of figures."""

from __future__ import annotations

from typing import Annotated, Union

import tyro

from robot_rl.bench import bridge, controller, diffusion, expert, finetune, learner, learning

BENCHES = {
    bridge.BridgeBench: bridge.run,
    controller.ControllerBench: controller.run,
    expert.ExpertBench: expert.run,
    diffusion.DiffusionBench: diffusion.run,
    learner.LearnerBench: learner.run,
    learning.LearningBench: learning.run,
    finetune.FinetuneBench: finetune.run,
}

BenchConfig = Union[
    Annotated[bridge.BridgeBench, tyro.conf.subcommand("bridge")],
    Annotated[controller.ControllerBench, tyro.conf.subcommand("controller")],
    Annotated[expert.ExpertBench, tyro.conf.subcommand("expert")],
    Annotated[diffusion.DiffusionBench, tyro.conf.subcommand("diffusion")],
    Annotated[learner.LearnerBench, tyro.conf.subcommand("learner")],
    Annotated[learning.LearningBench, tyro.conf.subcommand("learning")],
    Annotated[finetune.FinetuneBench, tyro.conf.subcommand("finetune")],
]
