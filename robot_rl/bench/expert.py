"""`robot-rl bench expert`: success rate of the scripted expert through the bridge."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from robot_rl.bridge.serve import ServeConfig, start_server
from robot_rl.envs.robot_env import RobotEnv
from robot_rl.teleop.scripted import make_expert


@dataclass(frozen=True)
class ExpertBench:
    """Scripted expert episodes on the embedded twin server (real sockets, real controller)."""

    task: str = "pick_cube"
    backend: Literal["twin", "franka-double", "ur-double", "ros2"] = "twin"
    """Arm backend behind the server: the twin, the Franka / UR backend code driving twin
    physics through its vendor-API double, or the ROS 2 backend against the ROS 2 twin driver
    (started here as its own process, and stopped)."""
    ros2_config: str = "hardware/ros2/twin_driver.yaml"
    """ros2 only: the arm config both the twin driver and the backend read."""
    ros2_driver_args: tuple[str, ...] = ()
    """ros2 only: extra flags for the twin driver, e.g. `--physics-step-ms 2` on a busy PC."""
    arm: Literal["panda", "ur5e"] | None = None
    """Twin arm model (twin backend); default: the task's `twin.arm`."""
    ur_mode: Literal["torque", "servo"] = "torque"
    """ur-double only: `directTorque` running the impedance law, or admittance over `servoL`."""
    reset_motion: Literal["auto", "motion", "teleport"] = "auto"
    """Resets: "auto" teleports on the twin and drives through the controller on the doubles."""
    episodes: int = 50
    seed: int = 0
    images: bool = False
    """Also render the task's cameras every step (slower; same success)."""
    json: bool = False


def run(cfg: ExpertBench) -> dict:
    motion = cfg.reset_motion if cfg.reset_motion != "auto" else ("teleport" if cfg.backend == "twin" else "motion")
    driver = None
    if cfg.backend == "ros2":
        from robot_rl.twin.doubles.ros2_driver import DriverProcess

        driver = DriverProcess.start(cfg.task, cfg.ros2_config, seed=cfg.seed, extra=cfg.ros2_driver_args)
    try:
        stack = start_server(ServeConfig(backend=cfg.backend, arm=cfg.arm, ur_mode=cfg.ur_mode, task=cfg.task,
                                         bind="tcp://127.0.0.1:0", pub_bind="", reset_motion=motion,
                                         ros2_config=cfg.ros2_config if driver else None,
                                         stream_cameras=None if cfg.images or not driver else False))
    except BaseException:
        if driver:
            driver.stop()
        raise
    try:
        env = RobotEnv(stack.task, server=stack.address, image_obs=cfg.images, client_name="bench-expert")
    except BaseException:
        stack.close()
        if driver:
            driver.stop()
        raise
    expert = make_expert(env.task, seed=cfg.seed)
    successes, lengths, reflexes = [], [], 0
    t0 = time.perf_counter()
    try:
        for ep in range(cfg.episodes):
            obs, info = env.reset(seed=cfg.seed + ep)
            expert.reset()
            steps = 0
            while True:
                obs, reward, terminated, truncated, info = env.step(expert.act(obs, info))
                steps += 1
                if terminated or truncated:
                    break
            successes.append(bool(info["success"]))
            lengths.append(steps)
            reflexes += "reflex" in info
    finally:
        env.close()
        stack.close()
        if driver:
            driver.stop()
    wall = time.perf_counter() - t0
    return {"bench": "expert", "task": cfg.task, "backend": cfg.backend, "arm": stack.service.arm.name,
            **({"ur_mode": cfg.ur_mode} if cfg.backend in ("ur", "ur-double") else {}),
            **({"ros2_config": cfg.ros2_config, "ros2_driver_args": list(cfg.ros2_driver_args),
                "driver_stalls": driver.stalls()} if driver else {}),
            "reset_motion": motion, "episodes": cfg.episodes,
            "success_rate": round(float(np.mean(successes)), 3),
            "mean_steps": round(float(np.mean(lengths)), 1), "reflex_episodes": reflexes,
            "wall_s": round(wall, 1), "env_steps_per_s": round(sum(lengths) / wall, 1),
            "transport": "embedded server over tcp loopback" + (", ROS 2 topics to the twin driver process"
                                                                 if driver else "")}
