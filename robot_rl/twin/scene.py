"""Build a twin's MjModel from a scene file in sim/, the chosen arm (included as `arm.xml`) and an
optional tool mounted in the hand."""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from robot_rl import paths
from robot_rl.errors import ConfigError
from robot_rl.twin import arm_models

FINGER_JOINTS = ("finger_left", "finger_right")
GRIPPER_ACTUATOR = "gripper"
ROBOT_ROOT_BODY = "link0"
HAND_BODY = "hand"
TCP_SITE = "tcp"
TOOL_SITE = "tool_mount"


def arm_joint_names(n_joints: int) -> tuple[str, ...]:
    """Names of an n-joint arm's joints: joint1..jointN (panda_twin.xml's convention)."""
    return tuple(f"joint{i}" for i in range(1, n_joints + 1))


def arm_actuator_names(n_joints: int) -> tuple[str, ...]:
    """Names of an n-joint arm's torque motors: tau1..tauN."""
    return tuple(f"tau{i}" for i in range(1, n_joints + 1))


@dataclass(frozen=True)
class SceneSource:
    """Which files make a twin scene."""

    scene: str
    """MJCF scene in sim/ (or an absolute path). It includes its arm as `arm.xml`."""
    tool: str | None = None
    """Optional MJCF whose bodies are mounted at the hand's `tool_mount` site (e.g. a held peg)."""
    arm: str = arm_models.DEFAULT_ARM
    """Arm model (`arm_models.ARM_MODELS`) whose MJCF stands in for the scene's `arm.xml`."""


def build_model(source: SceneSource) -> mujoco.MjModel:
    """Compile the scene with `source.arm` as its arm; mount the tool rigidly in the hand (its
    weight gravity-compensated like a configured payload on a real arm).

    Raises:
        ConfigError: unknown arm, a missing or invalid file, or a model lacking the names the twin
            needs (e.g. a scene that includes an arm file directly instead of `arm.xml`).
    """
    arm = arm_models.arm_model(source.arm)
    scene_path = paths.sim_file(source.scene)
    arm_path = paths.sim_file(arm.mjcf)
    # The arm file's bytes stand in for the scene's `<include file="arm.xml"/>`; only its text is
    # substituted, so the compiled model is the one a scene including that file directly gives.
    # MuJoCo matches these names by base name, the top file's too: a file itself named arm.xml is
    # read as it is.
    include = {} if scene_path.name == arm_models.ARM_INCLUDE else {arm_models.ARM_INCLUDE: arm_path.read_bytes()}
    try:
        spec = mujoco.MjSpec.from_file(str(scene_path), include=include)
        if source.tool is not None:
            tool_spec = mujoco.MjSpec.from_file(str(paths.sim_file(source.tool)))
            site = spec.site(TOOL_SITE)
            if site is None:
                raise ConfigError(f"scene {scene_path} has no site '{TOOL_SITE}' to mount tool {source.tool} on")
            spec.attach(tool_spec, site=site, prefix="tool_")
        model = spec.compile()
    except ValueError as exc:  # mujoco reports XML and compile errors as ValueError
        raise ConfigError(f"could not compile twin scene {scene_path}: {exc}") from exc
    _check_names(model, scene_path, arm)
    return model


def _check_names(model: mujoco.MjModel, path: object, arm: arm_models.ArmModel) -> None:
    n = arm.spec.n_joints
    missing = []
    for kind, names in (("joint", arm_joint_names(n) + FINGER_JOINTS),
                        ("actuator", arm_actuator_names(n) + (GRIPPER_ACTUATOR,)),
                        ("site", (TCP_SITE,)), ("body", (ROBOT_ROOT_BODY, HAND_BODY))):
        for name in names:
            if mujoco.mj_name2id(model, getattr(mujoco.mjtObj, f"mjOBJ_{kind.upper()}"), name) < 0:
                missing.append(f"{kind} '{name}'")
    if missing:
        raise ConfigError(f"twin model {path} with arm {arm.name!r} lacks {', '.join(missing)}: an arm model "
                          f"must keep panda_twin.xml's names, and a scene must include its arm as "
                          f"'{arm_models.ARM_INCLUDE}'")
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"joint{n + 1}") >= 0:
        raise ConfigError(f"twin model {path} has a joint{n + 1}, so its arm is not the {n}-joint {arm.name!r}: "
                          f"include the arm as '{arm_models.ARM_INCLUDE}' so the task or --arm can choose it")


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
