"""Gymnasium ids of robot_rl's envs. Registering is cheap: nothing is imported until `make`.

The envs talk to a real-time system (latencies in `info` vary), so they are registered as
nondeterministic; the twin's observations are nevertheless reproducible for a given seed.
"""

from __future__ import annotations

import gymnasium as gym

ENV_IDS = {
    "robot_rl/PickCube-v0": "pick_cube",
    "robot_rl/PegInsertion-v0": "peg_insertion",
}


def register_envs() -> None:
    for env_id, task in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="robot_rl.envs.robot_env:RobotEnv", kwargs={"task": task},
                         nondeterministic=True)
