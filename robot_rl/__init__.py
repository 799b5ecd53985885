"""robot_rl: real-robot reinforcement learning over a ZeroMQ robot bridge, with MuJoCo twins.

Importing the package registers the gymnasium environments (cheap: no simulator is loaded).
"""

from __future__ import annotations

import os

# MuJoCo picks its OpenGL backend when first imported; the twin renders headless by default.
os.environ.setdefault("MUJOCO_GL", "egl")

__version__ = "0.1.0"

from robot_rl.envs.registration import register_envs as _register_envs

_register_envs()
