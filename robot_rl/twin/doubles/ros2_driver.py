"""A ROS 2 twin driver: the Panda twin behind a Cartesian impedance controller, playing an arm's
ROS 2 driver (like franka_ros2's Cartesian impedance example) for `robot-rl serve --backend ros2`.

    python -m robot_rl.twin.doubles.ros2_driver --task pick_cube [--config hardware/ros2/twin_driver.yaml]

It reads the same YAML as the backend (`robot_rl/ros2/arm_config.py`), so topics and joint names
agree, and in real time (1 kHz physics) it:

- subscribes to the command topic: a PoseStamped target that robot_rl's impedance law tracks (the
  task's gains), or a TwistStamped integrated into that target (twist mode; stale after 100 ms);
- subscribes to the gripper's std_msgs/Float64 opening [m];
- publishes sensor_msgs/JointState (arm joints and the two finger joints, each half the opening)
  at 500 Hz and the external wrench (base frame, at the TCP) at 100 Hz;
- publishes the task's ground truth and scene state, and takes scene resets
  (`robot_rl/ros2/twin_scene.py`: `<ns>/privileged` 50 Hz, `<ns>/sim_state` 30 Hz, `<ns>/reset_scene`).
  Every message costs the receiving executor thread CPU, so the slow topics are only as fast as
  their readers need (an env step is 100 ms; a camera frame 33 ms).

Threads: the ROS 2 executor thread stores the newest command, gripper and reset request (one
assignment each); the main thread owns the physics and publishes. SIGINT/SIGTERM stop it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from robot_rl.control.runtime import set_fifo
from robot_rl.control.impedance import GainTargets, LawState, cartesian_impedance_step
from robot_rl.control import rotations
from robot_rl.ros2.arm_config import Ros2ArmConfig, load_arm_config
from robot_rl.ros2.node_thread import NodeThread
from robot_rl.ros2.twin_scene import PRIVILEGED, RESET_SCENE, SIM_STATE, privileged_msg, topic
from robot_rl.errors import DeviceNotFound
from robot_rl.task_spec import TaskSpec, load_task
from robot_rl.twin.backend import TwinBackend

log = logging.getLogger(__name__)

TWIST_STALE_NS = 100_000_000
"""Twist mode: a twist older than this counts as zero (a velocity controller's own timeout)."""
MAX_LAG_NS = 50_000_000
"""Behind real time by more than this (a stall): drop the missed time instead of catching up."""
DEFAULT_NAMESPACE = "/robot_rl_twin"
READY_TEXT = "robot_rl twin driver publishing"
STALL_TEXT = "fell behind real time"


@dataclass(frozen=True)
class DriverArgs:
    """`python -m robot_rl.twin.doubles.ros2_driver`."""

    task: str = "pick_cube"
    """Task name in tasks/ (or a YAML path): its twin scene, gains and law limits."""
    config: str = "hardware/ros2/twin_driver.yaml"
    """The ROS 2 arm config the backend uses: topics, joint names, command mode."""
    namespace: str | None = None
    """Move every topic under the config's twin namespace (default /robot_rl_twin) to this one."""
    seed: int = 0
    """Initial scene layout."""
    joint_states_hz: float = 500.0
    wrench_hz: float = 100.0
    privileged_hz: float = 50.0
    sim_state_hz: float = 30.0
    physics_step_ms: int = 1
    """Physics step [ms]: 1 (1 kHz, the twin's own timestep) or 2, which halves the CPU the driver
    needs (a shared or slow PC that cannot keep 1 kHz in real time)."""
    control_every: int = 2
    """Run the impedance law every this many 1 ms physics steps, holding its torque in between
    (2: a 500 Hz controller, which keeps a busy desktop CPU in real time; 1: 1 kHz like Franka's)."""
    filter_alpha: float = 0.04
    """The controller's reference low-pass per control tick (τ ≈ 50 ms at 500 Hz): smooths the
    commands' steps at their publication rate."""
    max_tcp_speed_m_per_s: float = 0.3
    """The controller's own TCP speed limit (the serving side already limits to the task's)."""
    parent_pid: int | None = None
    """Stop when this process is gone (`DriverProcess` passes its own pid: no orphaned drivers)."""
    rt_priority: int | None = 70
    """SCHED_FIFO priority of the physics and controller thread, as ros2_control runs a real
    driver's loop (None: normal priority). Below robot-rl serve's control loop (80). Without the
    permission it warns and runs at normal priority, falling behind real time under load."""


def _renamespace(cfg: Ros2ArmConfig, namespace: str) -> Ros2ArmConfig:
    old = cfg.twin.namespace.rstrip("/") if cfg.twin is not None else DEFAULT_NAMESPACE
    new = namespace.rstrip("/")

    def move(name: str | None) -> str | None:
        return new + name[len(old):] if name is not None and name.startswith(old + "/") else name

    gripper = cfg.gripper and replace(cfg.gripper, command_topic=move(cfg.gripper.command_topic),
                                      state_topic=move(cfg.gripper.state_topic))
    twin = cfg.twin and replace(cfg.twin, namespace=new)
    return replace(cfg, joint_states_topic=move(cfg.joint_states_topic), wrench_topic=move(cfg.wrench_topic),
                   command=replace(cfg.command, topic=move(cfg.command.topic)), gripper=gripper, twin=twin)


class TwinDriver:
    """The physics, the controller and the node; `run()` until `stop()` (see the module docstring)."""

    def __init__(self, task: TaskSpec, cfg: Ros2ArmConfig, args: DriverArgs) -> None:
        from geometry_msgs.msg import PoseStamped, TwistStamped, WrenchStamped
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64, Float64MultiArray, Int64MultiArray

        from robot_rl.ros2 import messages

        self._m = m = messages
        self.cfg, self.args = cfg, args
        self.arm, self.hooks = TwinBackend(task, initial_seed=args.seed, arm=cfg.arm).build(realtime=False)
        spec = self.arm.spec
        self._gains = GainTargets.of(task.gains)
        if not 1 <= args.control_every <= 10:
            raise ValueError(f"control_every must be in [1, 10], got {args.control_every}")
        if args.physics_step_ms not in (1, 2):
            raise ValueError(f"physics_step_ms must be 1 or 2, got {args.physics_step_ms}")
        self._step_ns = args.physics_step_ms * 1_000_000
        self.arm.model.opt.timestep = 1e-3 * args.physics_step_ms
        self._law = replace(task.law, torque_limit_nm=tuple(spec.torque_limit_nm), filter_alpha=args.filter_alpha,
                            max_tcp_speed_m_per_s=args.max_tcp_speed_m_per_s,
                            tick_s=1e-3 * args.physics_step_ms * args.control_every)
        self._q_home = np.asarray(spec.q_home_rad)
        reading = self.arm.read()
        self._state = LawState.initial(reading.pose_base_tcp, self._gains, spec.n_joints)
        self._target = reading.pose_base_tcp.copy()
        self._names = list(cfg.joint_names)
        self._fingers = list(cfg.gripper.finger_joints) if cfg.gripper is not None else []
        self._ns = cfg.twin.namespace if cfg.twin is not None else DEFAULT_NAMESPACE
        self._reset_id = 0
        self._stop = False
        # Newest inputs, swapped in by callbacks on the executor thread.
        self._pose_in: np.ndarray | None = None
        self._twist_in: tuple[int, np.ndarray] | None = None
        self._width_in: float | None = None
        self._reset_in: tuple[int, int] | None = None
        self.commands = 0
        self.stalls = 0

        self.link = NodeThread("robot_rl_twin_driver")
        node = self.link.node
        out = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self._pub_joints = node.create_publisher(JointState, cfg.joint_states_topic, out)
        self._pub_wrench = (node.create_publisher(WrenchStamped, cfg.wrench_topic, out)
                            if cfg.wrench_topic is not None else None)
        self._pub_priv = node.create_publisher(Float64MultiArray, topic(self._ns, PRIVILEGED), out)
        self._pub_sim = node.create_publisher(Float64MultiArray, topic(self._ns, SIM_STATE), out)
        self._float64_array = Float64MultiArray
        if cfg.command.mode == "pose":
            node.create_subscription(PoseStamped, cfg.command.topic, self._on_pose, qos_profile_sensor_data)
        else:
            node.create_subscription(TwistStamped, cfg.command.topic, self._on_twist, qos_profile_sensor_data)
        if cfg.gripper is not None:
            node.create_subscription(Float64, cfg.gripper.command_topic, self._on_width, 10)
        node.create_subscription(Int64MultiArray, topic(self._ns, RESET_SCENE), self._on_reset,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self._js_msg = m.joint_state(0, self._names + self._fingers, np.zeros(0), np.zeros(0))
        self._last_tau = np.zeros(spec.n_joints)
        self._reading = reading
        self._priv_buf = {name: np.zeros(size) for name, size in self.hooks.privileged_sizes}
        self._sim_buf = np.zeros(self.hooks.sim_state_size)

    # ---- executor thread ------------------------------------------------------------------------

    def _on_pose(self, msg) -> None:
        try:
            self._pose_in = self._m.pose_of(msg)
            self.commands += 1
        except ValueError as exc:
            log.warning("dropped a target pose: %s", exc)

    def _on_twist(self, msg) -> None:
        try:
            self._twist_in = (time.monotonic_ns(), self._m.twist_of(msg))
            self.commands += 1
        except ValueError as exc:
            log.warning("dropped a twist: %s", exc)

    def _on_width(self, msg) -> None:
        if np.isfinite(msg.data):
            self._width_in = float(msg.data)

    def _on_reset(self, msg) -> None:
        if len(msg.data) == 2:
            self._reset_in = (int(msg.data[0]), int(msg.data[1]))

    # ---- main thread ------------------------------------------------------------------------------

    def stop(self, *_) -> None:
        self._stop = True

    def _apply_inputs(self, reading, now_ns: int) -> None:
        if self._pose_in is not None:
            self._target, self._pose_in = self._pose_in, None
        twist = self._twist_in
        if twist is not None and now_ns - twist[0] < TWIST_STALE_NS:
            v, dt = twist[1], self._law.tick_s
            t = self._target
            pos = t[:3] + v[:3] * dt
            lead = pos - reading.pose_base_tcp[:3]
            n = float(np.linalg.norm(lead))
            if n > 0.03:  # the integrated target stays near the arm (a blocked arm: no wind-up)
                pos = reading.pose_base_tcp[:3] + lead * (0.03 / n)
            q = rotations.qnormalize(rotations.qmul(rotations.qfrom_rotvec(*(v[3:] * dt)), tuple(t[3:])))
            self._target = np.array([*pos, *q])
        if self._width_in is not None:
            self.arm.set_gripper(self._width_in)
            self._width_in = None
        reset = self._reset_in
        if reset is not None:
            self._reset_in = None
            self.hooks.reset_scene(reset[1])
            self._reset_id = reset[0]
            log.info("scene reset (request %d, seed %d)", reset[0], reset[1])

    def _tick(self, tick: int, now_ns: int) -> None:
        """One physics step; the law runs (and the inputs apply) every `control_every` steps."""
        if tick % self.args.control_every == 0:
            reading = self.arm.read()
            self._apply_inputs(reading, now_ns)
            self._state, self._last_tau = cartesian_impedance_step(self._state, reading, self._target, self._gains,
                                                                   self._q_home, self._law)
            self._reading = reading
        self.arm.write_torque(self._last_tau)
        self.hooks.after_tick()

    def _every(self, hz: float) -> int:
        """Ticks between publications at `hz`."""
        return max(1, round(1000 / (hz * self.args.physics_step_ms)))

    def _publish(self, tick: int, now_ns: int) -> None:
        a = self.args
        r = self._reading
        if tick % self._every(a.joint_states_hz) == 0:
            # One message reused (building a JointState costs more than publishing it).
            js, fingers = self._js_msg, [r.gripper_width_m / 2] * len(self._fingers)
            js.header.stamp = self._m.stamp_of_ns(now_ns)
            js.position = r.q_rad.tolist() + fingers
            js.velocity = r.dq_rad_per_s.tolist() + [0.0] * len(fingers)
            js.effort = self._last_tau.tolist() + [0.0] * len(fingers)
            self._pub_joints.publish(js)
            if self._pub_wrench is not None and tick % self._every(a.wrench_hz) == 0:
                self._pub_wrench.publish(self._m.wrench_stamped(now_ns, self.cfg.base_frame, r.wrench_ext_base))
        if tick % self._every(a.privileged_hz) == 0:
            self.hooks.write_privileged(self._priv_buf)
            flat = np.concatenate([self._priv_buf[name] for name, _ in self.hooks.privileged_sizes])
            self._pub_priv.publish(privileged_msg(self.hooks.privileged_sizes, flat, self._reset_id))
        if tick % self._every(a.sim_state_hz) == 0:
            self.hooks.write_sim_state(self._sim_buf)
            self._pub_sim.publish(self._float64_array(data=self._sim_buf.tolist()))

    def run(self) -> None:
        """Tick at 1 kHz of wall time until `stop()`; catches up after short stalls."""
        self.link.start()
        if self.args.rt_priority is not None:
            set_fifo(self.args.rt_priority)
        tick = 0
        t_next = time.monotonic_ns()
        print(f"{READY_TEXT}: {self.cfg.arm} on {self.cfg.joint_states_topic}, "
              f"commanded on {self.cfg.command.topic} ({self.cfg.command.mode}); ground truth under {self._ns}",
              flush=True)
        while not self._stop:
            now = time.monotonic_ns()
            if now < t_next:
                time.sleep((t_next - now) / 1e9)
                continue
            if now - t_next > MAX_LAG_NS:
                self.stalls += 1
                log.warning("%s by %.0f ms (stall %d): skipping the missed time", STALL_TEXT,
                            (now - t_next) / 1e6, self.stalls)
                t_next = now
            self._tick(tick, now)
            self._publish(tick, now)
            if tick % 1000 == 0 and self.args.parent_pid is not None and os.getppid() != self.args.parent_pid:
                log.warning("parent process %d is gone: stopping", self.args.parent_pid)
                self._stop = True
            tick += 1
            t_next += self._step_ns

    def close(self) -> None:
        self.link.close()


class DriverProcess:
    """The twin driver in a child process (benchmarks, tests); its output goes to a temp file.
    `stop()` ends it with SIGTERM (it then joins its ROS 2 thread and exits 0)."""

    def __init__(self, proc: subprocess.Popen, log_path: Path) -> None:
        self.proc, self.log_path = proc, log_path
        self._final: str | None = None

    @classmethod
    def start(cls, task: str, config: str, *, seed: int = 0, extra: tuple[str, ...] = (),
              ready_timeout_s: float = 60.0) -> DriverProcess:
        """Start it and wait until it publishes.

        Raises:
            DeviceNotFound: it exited, or did not publish within `ready_timeout_s`.
        """
        fd, name = tempfile.mkstemp(prefix="robot-rl-twin-driver-", suffix=".log")
        with os.fdopen(fd, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "robot_rl.twin.doubles.ros2_driver", "--task", task,
                                     "--config", config, "--seed", str(seed), "--parent-pid", str(os.getpid()),
                                     *extra],
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        driver = cls(proc, Path(name))
        deadline = time.monotonic() + ready_timeout_s
        while READY_TEXT not in driver.output():
            if proc.poll() is not None or time.monotonic() > deadline:
                driver.stop()
                raise DeviceNotFound(f"the ROS 2 twin driver did not start (exit {proc.returncode}): "
                                     f"{driver.output()[-2000:]}")
            time.sleep(0.1)
        return driver

    def output(self) -> str:
        """Everything it printed so far (all of it once stopped)."""
        if self._final is not None:
            return self._final
        return self.log_path.read_text(errors="replace")

    def stalls(self) -> int:
        """How often it fell behind real time by more than MAX_LAG_NS."""
        return self.output().count(STALL_TEXT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crashed driver (no goodbye on any topic)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._final is None:
            self._final = self.output()
            self.log_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    import tyro

    args = tyro.cli(DriverArgs, args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s twin-driver %(levelname)s %(message)s")
    cfg = load_arm_config(args.config)
    if args.namespace is not None:
        cfg = _renamespace(cfg, args.namespace)
    driver = TwinDriver(load_task(args.task), cfg, args)
    signal.signal(signal.SIGINT, driver.stop)
    signal.signal(signal.SIGTERM, driver.stop)
    try:
        driver.run()
    finally:
        driver.close()


if __name__ == "__main__":
    main()
