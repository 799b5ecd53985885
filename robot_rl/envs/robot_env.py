"""Gymnasium env over the robot bridge: the same env drives the twin and a physical arm.

    env = gymnasium.make("robot_rl/PickCube-v0")                          # embedded twin server
    env = gymnasium.make("robot_rl/PickCube-v0", arm="ur5e")              # ... with the UR5e twin arm
    env = gymnasium.make("robot_rl/PickCube-v0", server="tcp://10.0.0.2:5555", keys_dir="keys")
    env = gymnasium.make("robot_rl/PickCube-v0", in_process=True)         # no sockets (vectorized sim)

Action: Box(−1, 1, (7,)) = [Δx Δy Δz, Δrx Δry Δrz, gripper], scaled by the task's
`translation_scale_m` / `rotation_scale_rad`; the gripper closes above 0.5 and opens below −0.5
(SERL's convention). One step = one `Command` round trip: the observation is taken 1/step_hz
after the command took effect.

Observation (Dict): tcp_pose (7: xyz m, quat wxyz in the hemisphere of the task's nominal
orientation: q and −q are one rotation, and near a tool-down pose the sign an arm or MuJoCo reports
flips with tiny tilts, which a network reads as a jump across its input range), tcp_vel (6: m/s, rad/s), gripper_width (1: m),
force (3: N), torque (3: N·m) — base frame, float32 — and `images` {camera: (H, W, 3) uint8}.
`privileged_obs=True` adds the twin's object state (e.g. cube pose) for state-based learning.

Reward: 1.0 on the step the task succeeds (twin ground truth), which terminates the episode;
truncated at `episode_steps`, when a safety reflex stops the arm (`info["reflex"]`), or when the
robot PC's watchdog held the arm because this process went silent (`info["watchdog_hold"]`: the
step's command was not applied, and the transition does not follow from the action).
`info` carries the round-trip time, capture timestamps and frame ages.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from robot_rl.bridge import protocol as P
from robot_rl.errors import BridgeRemoteError, ConfigError
from robot_rl.task_spec import TaskSpec, load_task, with_twin_arm

SAFETY_TRACKERS = ("success", "peak_contact_force_n", "tcp_min_m", "tcp_max_m")
"""Privileged vectors that are bookkeeping, never observations."""

STATE_BOUNDS = {"tcp_pose": (7, 10.0), "tcp_vel": (6, 100.0), "gripper_width": (1, 1.0), "force": (3, 1e4),
                "torque": (3, 1e3)}
"""(size, bound) of each state observation: far beyond any physical value (m, m/s, rad/s, N, N·m);
values are clipped into them so observations always lie in the space."""
PRIVILEGED_BOUND = 100.0


def canonical_quat(q: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """q or −q (the same rotation), whichever lies in the hemisphere of `reference` (wxyz)."""
    return -q if float(np.dot(q, reference)) < 0.0 else q


class RobotEnv(gym.Env):
    """See the module docstring.

    Args:
        task: task name in tasks/ or a YAML path.
        server: robot server address; None starts an embedded twin server on loopback.
        keys_dir: CurveZMQ keys for a server that requires them.
        in_process: run the twin in this process without sockets (vectorized simulation).
        image_obs: include camera images (False: state only, and no rendering cost).
        privileged_obs: include the twin's object state in the observation.
        render_mode: "rgb_array" returns the cameras side by side.
        arm: arm model of the embedded or in-process twin ("panda", "ur5e"); replaces the task's
            `twin.arm` (in `self.task` too). Not with `server`: a robot server serves its own arm.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: str | TaskSpec = "pick_cube", *, server: str | None = None, keys_dir: str | None = None,
                 in_process: bool = False, image_obs: bool = True, privileged_obs: bool = False,
                 render_mode: str | None = None, client_name: str = "robot_rl-env", arm: str | None = None) -> None:
        super().__init__()
        if arm is not None and server is not None:
            raise ConfigError(f"arm={arm!r} chooses the arm of an embedded twin; the server at {server} serves "
                              "its own (start it with `robot-rl serve --arm ...`)")
        self.task = with_twin_arm(task if isinstance(task, TaskSpec) else load_task(task), arm)
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if in_process and server is not None:
            raise ConfigError("in_process=True runs its own twin; do not also pass server=")
        self.render_mode = render_mode
        self.image_obs = image_obs
        self.privileged_obs = privileged_obs
        self._stack = None
        if in_process:
            from robot_rl.bridge.local import LocalLink
            from robot_rl.bridge.serve import ServeConfig, build_service

            self.link = LocalLink(build_service(ServeConfig(task=self.task.name), task=self.task))
        else:
            if server is None:
                from robot_rl.bridge.serve import ServeConfig, start_server

                self._stack = start_server(ServeConfig(task=self.task.name, bind="tcp://127.0.0.1:0", pub_bind=""),
                                           task=self.task)
                server = self._stack.address
            from robot_rl.bridge.client import BridgeClient

            self.link = BridgeClient(server, name=client_name, keys_dir=keys_dir)
        welcome = self.link.welcome
        self.cameras = tuple(c.name for c in self.task.cameras) if (image_obs or render_mode) else ()
        served = {c.name: (c.height, c.width) for c in welcome.cameras}
        missing = [c for c in self.cameras if c not in served]
        if missing:
            raise ConfigError(f"task {self.task.name} needs cameras {missing} that {self.link.address} does not "
                              f"serve (it has {list(served)})")
        self._gripper_max = welcome.gripper_max_width_m
        self.action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)
        obs_spaces: dict[str, spaces.Space] = {
            name: spaces.Box(-bound, bound, (size,), np.float32) for name, (size, bound) in STATE_BOUNDS.items()}
        if image_obs:
            obs_spaces["images"] = spaces.Dict({
                name: spaces.Box(0, 255, (*served[name], 3), np.uint8) for name in self.cameras})
        self._privileged_names: tuple[str, ...] = ()
        if privileged_obs:
            if not welcome.privileged:
                raise ConfigError(f"privileged_obs needs a twin backend; {self.link.address} serves a "
                                  f"{welcome.backend} arm without ground truth")
            snap = self.link.observe()
            self._privileged_names = tuple(n for n in welcome.privileged if n not in SAFETY_TRACKERS)
            obs_spaces["privileged"] = spaces.Dict({
                n: spaces.Box(-PRIVILEGED_BOUND, PRIVILEGED_BOUND, snap.state.privileged[n].shape, np.float32)
                for n in self._privileged_names})
        self.observation_space = spaces.Dict(obs_spaces)
        if self.task.reward.type == "twin_success" and "success" not in welcome.privileged:
            raise ConfigError(f"task {self.task.name} rewards twin ground truth, but {self.link.address} serves a "
                              f"{welcome.backend} arm: use a reward classifier on physical arms")
        self._nominal_quat = np.asarray(self.task.workspace.nominal_quat_wxyz, np.float32)
        act = self.task.action
        self._scale = np.array([act.translation_scale_m] * 3 + [act.rotation_scale_rad * a for a in act.rotation_axes])
        self._steps = 0
        self._episodes = 0
        self._last: P.Observation | None = None

    # ---- gymnasium API -----------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        if self._last is not None and self._last.state.mode == "reflex":
            self.link.clear_error()
        every = self.task.reset.joint_reset_every
        joint_reset = bool(options.get("joint_reset", every > 0 and self._episodes > 0 and self._episodes % every == 0))
        scene_seed = int(self.np_random.integers(2**31))
        act = self.task.action
        gripper = act.gripper_fixed_width_m if act.gripper == "fixed" else None
        try:
            obs = self.link.reset(seed=scene_seed, joint_reset=joint_reset, gripper_width_m=gripper,
                                  cameras=self.cameras)
        except BridgeRemoteError as exc:
            if exc.code != "reflex_active":
                raise
            self.link.clear_error()
            obs = self.link.reset(seed=scene_seed, joint_reset=joint_reset, gripper_width_m=gripper,
                                  cameras=self.cameras)
        self._steps = 0
        self._episodes += 1
        self._last = obs
        return self._observation(obs), self._info(obs, scene_seed=scene_seed)

    def step(self, action: np.ndarray):
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be 7 finite numbers in [-1, 1], got {action!r}")
        a = np.clip(a, -1.0, 1.0)
        delta = a[:6] * self._scale
        act = self.task.action
        if act.gripper == "fixed":
            gripper = act.gripper_fixed_width_m
        else:
            gripper = 0.0 if a[6] > 0.5 else self._gripper_max if a[6] < -0.5 else None
        self._steps += 1
        try:
            obs = self.link.step(delta, mode="delta", gripper_width_m=gripper, hold_s=self.task.step_s,
                                 cameras=self.cameras)
        except BridgeRemoteError as exc:
            if exc.code != "reflex_active":
                raise
            obs = self.link.observe(self.cameras)  # the arm is holding: end the episode, reset clears it
        self._last = obs
        success = bool(obs.state.privileged["success"][0]) if "success" in obs.state.privileged else False
        reward = 1.0 if (success and self.task.reward.type == "twin_success") else 0.0
        reflex = obs.state.mode == "reflex"
        held = obs.state.mode == "watchdog_hold"
        terminated = success and self.task.reward.type == "twin_success"
        truncated = (self._steps >= self.task.episode_steps or reflex or held) and not terminated
        info = self._info(obs)
        info["success"] = success
        if reflex:
            info["reflex"] = obs.state.fault
        if held:
            info["watchdog_hold"] = True
        return self._observation(obs), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self._last is None or not self._last.frames:
            return None
        return np.concatenate([f.image for f in self._last.frames], axis=1)

    def close(self) -> None:
        link, self.link = getattr(self, "link", None), None
        if link is not None:
            link.close()
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    # ---- helpers -----------------------------------------------------------------------------

    def _observation(self, obs: P.Observation) -> dict[str, Any]:
        s = obs.state
        w = s.wrench_ext_base
        raw = {"tcp_pose": s.pose_base_tcp, "tcp_vel": s.twist_base_tcp, "gripper_width": [s.gripper_width_m],
               "force": w[:3], "torque": w[3:]}
        out: dict[str, Any] = {k: np.clip(np.asarray(v, dtype=np.float32), -STATE_BOUNDS[k][1], STATE_BOUNDS[k][1])
                               for k, v in raw.items()}
        out["tcp_pose"][3:] = canonical_quat(out["tcp_pose"][3:], self._nominal_quat)
        if self.image_obs:
            frames = {f.camera: f.image for f in obs.frames}
            out["images"] = {name: np.array(frames[name]) for name in self.cameras}
        if self.privileged_obs:
            priv = s.privileged
            out["privileged"] = {n: np.clip(priv[n].astype(np.float32), -PRIVILEGED_BOUND, PRIVILEGED_BOUND)
                                 for n in self._privileged_names}
        return out

    def _info(self, obs: P.Observation, **extra: Any) -> dict[str, Any]:
        s = obs.state
        timing = self.link.last_timing
        info: dict[str, Any] = {
            "rtt_ms": timing.rtt_ms if timing else float("nan"),
            "t_capture_ns": s.t_capture_ns,
            "t_server_send_ns": obs.t_send_ns,
            "q_rad": s.q_rad.copy(),  # not in the observation: recordings keep it (MCAP joint states)
            "dq_rad_per_s": s.dq_rad_per_s.copy(),
            "clock": self.link.welcome.clock,
            "tick": s.tick,
            "mode": s.mode,
            "command_seq": s.command_seq,
            "target_clipped": s.target_clipped,
            "frame_age_ms": {f.camera: (s.t_capture_ns - f.t_capture_ns) / 1e6 for f in obs.frames},
            "privileged": {k: v.copy() for k, v in s.privileged.items()},
            **extra,
        }
        return info
