"""Build a twin's MjModel from a scene file in sim/ (plus an optional tool mounted in the hand)."""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from robot_rl import paths
from robot_rl.errors import ConfigError

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
ARM_ACTUATORS = tuple(f"tau{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_left", "finger_right")
GRIPPER_ACTUATOR = "gripper"
ROBOT_ROOT_BODY = "link0"
HAND_BODY = "hand"
TCP_SITE = "tcp"
TOOL_SITE = "tool_mount"


@dataclass(frozen=True)
class SceneSource:
    """Which files make a twin scene."""

    scene: str
    """MJCF scene in sim/ (or an absolute path). It includes the arm."""
    tool: str | None = None
    """Optional MJCF whose bodies are mounted at the hand's `tool_mount` site (e.g. a held peg)."""


def build_model(source: SceneSource) -> mujoco.MjModel:
    """Compile the scene; mount the tool rigidly in the hand (its weight gravity-compensated like a
    configured payload on a real arm)."""
    scene_path = paths.sim_file(source.scene)
    try:
        spec = mujoco.MjSpec.from_file(str(scene_path))
        if source.tool is not None:
            tool_spec = mujoco.MjSpec.from_file(str(paths.sim_file(source.tool)))
            site = spec.site(TOOL_SITE)
            if site is None:
                raise ConfigError(f"scene {scene_path} has no site '{TOOL_SITE}' to mount tool {source.tool} on")
            spec.attach(tool_spec, site=site, prefix="tool_")
        model = spec.compile()
    except ValueError as exc:  # mujoco reports XML and compile errors as ValueError
        raise ConfigError(f"could not compile twin scene {scene_path}: {exc}") from exc
    _check_names(model, scene_path)
    return model


def _check_names(model: mujoco.MjModel, path: object) -> None:
    missing = []
    for kind, names in (("joint", ARM_JOINTS + FINGER_JOINTS), ("actuator", ARM_ACTUATORS + (GRIPPER_ACTUATOR,)),
                        ("site", (TCP_SITE,)), ("body", (ROBOT_ROOT_BODY, HAND_BODY))):
        for name in names:
            if mujoco.mj_name2id(model, getattr(mujoco.mjtObj, f"mjOBJ_{kind.upper()}"), name) < 0:
                missing.append(f"{kind} '{name}'")
    if missing:
        raise ConfigError(f"twin model {path} lacks {', '.join(missing)}: an arm model must keep panda_twin.xml's names")


def subtree_bodies(model: mujoco.MjModel, root: int) -> np.ndarray:
    """Ids of `root` and all its descendants."""
    inside = np.zeros(model.nbody, dtype=bool)
    inside[root] = True
    for b in range(root + 1, model.nbody):  # parents always precede children in MuJoCo's order
        if inside[model.body_parentid[b]]:
            inside[b] = True
    return np.flatnonzero(inside)


def geom_mask(model: mujoco.MjModel, bodies: np.ndarray) -> np.ndarray:
    """Boolean mask over geoms belonging to `bodies`."""
    in_set = np.zeros(model.nbody, dtype=bool)
    in_set[bodies] = True
    return in_set[model.geom_bodyid]


def sim_state_size(model: mujoco.MjModel) -> int:
    """Length of the vector renderers need: qpos, mocap positions and quaternions."""
    return model.nq + 7 * model.nmocap


def write_sim_state(model: mujoco.MjModel, data: mujoco.MjData, out: np.ndarray) -> None:
    nq, nm = model.nq, model.nmocap
    out[:nq] = data.qpos
    out[nq:nq + 3 * nm] = data.mocap_pos.ravel()
    out[nq + 3 * nm:] = data.mocap_quat.ravel()


def load_sim_state(model: mujoco.MjModel, data: mujoco.MjData, state: np.ndarray) -> None:
    nq, nm = model.nq, model.nmocap
    data.qpos[:] = state[:nq]
    data.mocap_pos[:] = state[nq:nq + 3 * nm].reshape(nm, 3)
    data.mocap_quat[:] = state[nq + 3 * nm:].reshape(nm, 4)
