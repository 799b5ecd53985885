"""Where the user-editable folders live: `tasks/`, `sim/`, `hardware/` at the checkout's top level.

robot_rl is installed editable from a checkout (`pip install -e .`), so these folders sit beside
the package. `ROBOT_RL_HOME` points elsewhere (e.g. a lab's own copy of tasks and scenes).
"""

from __future__ import annotations

import os
from pathlib import Path

from robot_rl.errors import ConfigError


def home() -> Path:
    """Folder holding tasks/, sim/ and hardware/."""
    env = os.environ.get("ROBOT_RL_HOME")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[1]


def user_dir(name: str) -> Path:
    path = home() / name
    if not path.is_dir():
        raise ConfigError(
            f"folder {path} not found: robot_rl expects tasks/, sim/ and hardware/ beside the package. "
            "Install from a checkout with `pip install -e .`, or set ROBOT_RL_HOME to a folder holding them."
        )
    return path


def sim_file(relative: str | os.PathLike) -> Path:
    """A scene file: an absolute path as given, else relative to sim/."""
    path = Path(relative)
    if not path.is_absolute():
        path = user_dir("sim") / path
    if not path.is_file():
        raise ConfigError(f"MJCF file {path} does not exist")
    return path
