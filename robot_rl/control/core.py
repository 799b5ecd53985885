"""The control loop body: one `step()` per 1 kHz tick, owning the arm backend.

`ControlCore` turns commands into torques: it tracks client targets with the Cartesian impedance
law, holds the pose when the controlling client goes silent (watchdog) or a reflex fires, runs
reset motions, and writes a snapshot every tick. It has no clock of its own (time comes from the
arm reading) and no sockets: runtimes (`control/runtime.py`) decide where and how often it runs.

Threading: exactly one thread calls `step()`, `submit()` may be called from any thread (it only
appends to a deque), `events()` is drained by the server thread.
"""

from __future__ import annotations

import collections
import logging
import math
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from robot_rl.control import impedance
from robot_rl.control.commands import (
    ClearErrorCommand,
    CoreConfig,
    CoreEvent,
    ParamsCommand,
    ResetCommand,
    SceneHooks,
    TargetCommand,
)
from robot_rl.control.impedance import GainTargets, ImpedanceGains, JointGains, LawLimits, LawState
from robot_rl.control.safety import widened_limit
from robot_rl.control.snapshot import (
    Fault,
    Mode,
    SnapshotBuffer,
    SnapshotLayout,
    fault_text,
)
from robot_rl.control.trajectory import JointSegment, PoseSegment
from robot_rl.drivers.arm import ArmBackend, ArmCommand, ArmReading, ArmSpec

log = logging.getLogger(__name__)

Ticks = Iterator[np.ndarray | None]

MAX_FAILED_TICKS = 1000
"""Consecutive ticks whose control step raised before the loop gives up (1 s at 1 kHz): each of
them still brakes with damping, but a step that never recovers is a loop that must be restarted."""

_STILL_M2_PER_S2 = 0.003 ** 2
_STILL_RAD2_PER_S2 = 0.03 ** 2
"""Braking ends (and the hold pose is fixed) below 3 mm/s and 0.03 rad/s."""


def _law_for_arm(law: LawLimits, spec: ArmSpec) -> LawLimits:
    """The task's law limits at the arm's torque limits and control period. The reference and gain
    filter keeps its time constant (≈ tick_s/α) whatever the period."""
    alpha = law.filter_alpha
    if spec.period_s != law.tick_s:
        alpha = min(1.0, 1.0 - (1.0 - alpha) ** (spec.period_s / law.tick_s))
    return replace(law, torque_limit_nm=tuple(spec.torque_limit_nm), tick_s=spec.period_s, filter_alpha=alpha)


def _joint_gains_for_arm(gains: JointGains, spec: ArmSpec) -> JointGains:
    """The configured joint-reset gains when they have one entry per joint (the default is the
    Panda's 7); for another arm, the stiffest joint keeps the configured maximum and the others
    scale with their torque limit, so a weak wrist joint gets a soft spring (UR5e: 600 N·m/rad
    on the 150 N·m joints, 112 on the 28 N·m wrists)."""
    k = gains.stiffness_nm_per_rad
    if len(k) == spec.n_joints:
        return gains
    top = max(spec.torque_limit_nm)
    return JointGains(tuple(max(k) * t / top for t in spec.torque_limit_nm))


class ControlStepFailed(RuntimeError):
    """The control step and its damping fallback both failed: the loop must stop."""


@dataclass
class _Reset:
    request_id: int
    steps: Ticks


class ControlCore:
    """See the module docstring. `buffer` receives one snapshot per tick."""

    def __init__(self, backend: ArmBackend, config: CoreConfig, *, scene: SceneHooks | None = None,
                 buffer: SnapshotBuffer | None = None) -> None:
        self.backend = backend
        self.spec = backend.spec
        self.config = replace(config, law=_law_for_arm(config.law, self.spec),
                              joint_gains=_joint_gains_for_arm(config.joint_gains, self.spec))
        self.scene = scene
        self.layout = SnapshotLayout(
            n_joints=self.spec.n_joints,
            privileged_sizes=scene.privileged_sizes if scene else (),
            sim_state_size=scene.sim_state_size if scene else 0,
        )
        self.buffer = buffer if buffer is not None else SnapshotBuffer(self.layout)
        self._slices = self.layout.float_slices()
        self._priv_views = {name: self.buffer.floats[self._slices["priv." + name]]
                            for name, _ in self.layout.privileged_sizes}
        self._inbox: collections.deque = collections.deque()
        self._events: collections.deque[CoreEvent] = collections.deque()
        self._q_home = np.asarray(self.spec.q_home_rad, dtype=np.float64)
        self._q_min = np.asarray(self.spec.q_min_rad)
        self._q_max = np.asarray(self.spec.q_max_rad)
        self._dq_reflex = np.asarray(self.spec.dq_max_rad_per_s) * self.config.joint_velocity_margin
        # Joint positions and speeds are checked in one vector comparison per tick.
        self._state_lo = np.concatenate((self._q_min + self.config.joint_limit_margin_rad, -self._dq_reflex))
        self._state_hi = np.concatenate((self._q_max - self.config.joint_limit_margin_rad, self._dq_reflex))
        self._gain_targets = GainTargets.of(self.config.gains)
        self._outer_box, self._outer_limits = self.config.box, self.config.limits
        self._reset_law = replace(self.config.law, max_tcp_speed_m_per_s=max(
            self.config.law.max_tcp_speed_m_per_s, 1.2 * self.config.reset.speed_m_per_s))
        self._law: LawState | None = None
        self._target = np.zeros(7)
        self._mode = Mode.HOLD
        self._fault = Fault.NONE
        self._fault_value = 0.0
        self._command_seq = 0
        self._target_clipped = False
        self._last_command_ns = 0
        self._watchdog_trips = 0
        self._reset: _Reset | None = None
        self._reset_id_done = 0
        self._tick = 0
        self._now_ns = 0
        self._gripper_width = self.spec.gripper_max_width_m
        self._last_tau = np.zeros(self.spec.n_joints)
        self._reading: ArmReading | None = None
        self._braking = False
        self._failed_ticks = 0
        self._failures_logged = 0

    # ---- any thread -------------------------------------------------------------------------

    def submit(self, command: TargetCommand | ResetCommand | ClearErrorCommand | ParamsCommand) -> None:
        """Queue a command for the next tick (thread-safe)."""
        self._inbox.append(command)

    def events(self) -> list[CoreEvent]:
        """Drain events emitted since the last call."""
        out = []
        while self._events:
            out.append(self._events.popleft())
        return out

    # ---- control thread only ------------------------------------------------------------------

    def step(self, *, publish: bool = True) -> ArmReading:
        """One tick: read the arm, apply commands, compute and send torques, write the snapshot.

        `publish=False` skips the snapshot (stepped runtimes publish only the last tick of an
        `advance`, since nobody can read in between); safety trackers still update every tick.

        Total: a step that raises (a bug, a backend hiccup) does not end the loop. The tick then
        brakes with damping only and the arm enters REFLEX with `Fault.INTERNAL`; the next tick
        tries the normal step again.

        Raises:
            ControlStepFailed: the damping brake itself failed, or MAX_FAILED_TICKS steps in a
                row raised: the loop must stop (a real arm's own watchdog then stops it).
        """
        try:
            reading = self._step(publish)
        except Exception as exc:
            return self._fail_safe(exc)
        self._failed_ticks = 0
        return reading

    def _step(self, publish: bool) -> ArmReading:
        reading = self.backend.read()
        self._reading = reading
        self._now_ns = reading.t_capture_ns
        if self._law is None:
            self._hold_at(reading, gains=self.config.gains)
        while self._inbox:
            if self._apply_contained(self._inbox.popleft(), reading):
                reading = self.backend.read()  # the simulator state jumped (teleport)
                self._reading = reading
        if self._mode != Mode.REFLEX:
            self._check_faults(reading)
        if (self._mode == Mode.TRACK
                and self._now_ns - self._last_command_ns > self.config.limits.watchdog_s * 1e9):
            self._mode = Mode.WATCHDOG_HOLD
            self._watchdog_trips += 1
            self._start_braking()
        if self._braking:
            # Stop with damping alone: the reference follows the arm until it is still, so the
            # hold pose is where the arm came to rest (no spring pulls it back from an overshoot).
            self._hold_at(reading)
            tw = reading.twist_base_tcp
            if (tw[0] * tw[0] + tw[1] * tw[1] + tw[2] * tw[2] < _STILL_M2_PER_S2
                    and tw[3] * tw[3] + tw[4] * tw[4] + tw[5] * tw[5] < _STILL_RAD2_PER_S2):
                self._braking = False

        joint_target = self._advance_reset(reading) if self._reset is not None else None
        if joint_target is not None:
            k, d = self.config.joint_gains.vectors()
            tau, remembered = impedance.joint_impedance_step(self._law.prev_tau_nm, reading, joint_target, k, d,
                                                             self.config.law)
            self._law = self._law._replace(ref_pose=reading.pose_base_tcp.copy(), prev_tau_nm=remembered)
            self._target = reading.pose_base_tcp.copy()
        else:
            law = self._reset_law if self._mode == Mode.MOVING else self.config.law
            self._law, tau = impedance.cartesian_impedance_step(self._law, reading, self._target, self._gain_targets,
                                                                self._q_home, law)
        self.backend.write(ArmCommand(tau, self._law.ref_pose, self._law.gains, joint_target))
        self._last_tau = tau
        self._tick += 1
        if self.scene is not None:
            self.scene.after_tick()
        if publish or self._events:
            self._write_snapshot(reading)
        return reading

    # ---- internals ---------------------------------------------------------------------------

    def _fail_safe(self, exc: Exception) -> ArmReading:
        """Brake with joint damping alone (plus gravity), enter REFLEX, publish; see `step`."""
        self._failed_ticks += 1
        if self._failures_logged < 3 or self._failed_ticks == MAX_FAILED_TICKS:
            self._failures_logged += 1
            # The traceback goes in as text: a record holding the frames would keep this core (and
            # its views of the shared snapshot) alive for as long as a log handler keeps records.
            trace = "\n" + "".join(traceback.format_exception(exc)) if self._failures_logged == 1 else ""
            log.error("control step failed (%d in a row): %s: %s; braking with damping only%s",
                      self._failed_ticks, type(exc).__name__, exc, trace)
        if self._failed_ticks >= MAX_FAILED_TICKS:
            raise ControlStepFailed(f"the control step failed {self._failed_ticks} ticks in a row "
                                    f"(last: {type(exc).__name__}: {exc})") from exc
        try:
            try:
                reading = self.backend.read()
            except Exception:
                if self._reading is None:
                    raise
                reading = self._reading  # brake on the last good sample rather than not at all
            _, d = self.config.joint_gains.vectors()
            prev = self._law.prev_tau_nm if self._law is not None else np.zeros(self.spec.n_joints)
            tau, remembered = impedance.limit_torque(-d * reading.dq_rad_per_s, prev, reading.gravity_nm,
                                                     self.config.law)
            gains = self._law.gains if self._law is not None else GainTargets.of(self.config.gains).matrix
            # A position-controlled arm holds where it is measured: no reference to pull it anywhere.
            self.backend.write(ArmCommand(tau, reading.pose_base_tcp, gains))
            self._last_tau = tau
            self._reading = reading
            if self._reset is not None:
                self._events.append(CoreEvent("reset_failed", self._reset.request_id,
                                              f"the control step failed: {type(exc).__name__}"))
            self._reset = None
            self._braking = False
            self._fault, self._fault_value, self._mode = Fault.INTERNAL, float(self._failed_ticks), Mode.REFLEX
            self._target = reading.pose_base_tcp.copy()
            if self._law is not None:
                self._law = self._law._replace(ref_pose=self._target.copy(), prev_tau_nm=remembered)
            self._tick += 1
            self._write_snapshot(reading)
            return reading
        except Exception as brake_exc:
            raise ControlStepFailed(f"the control step failed ({type(exc).__name__}: {exc}) and so did the "
                                    f"damping brake ({type(brake_exc).__name__}: {brake_exc})") from brake_exc

    def _apply_contained(self, cmd: object, reading: ArmReading) -> bool:
        """`_apply`, but a command that raises is dropped (its reset fails) and the arm holds."""
        try:
            return self._apply(cmd, reading)
        except Exception as exc:
            log.error("control core could not apply %s: %s: %s; holding", type(cmd).__name__, type(exc).__name__, exc)
            if isinstance(cmd, ResetCommand):
                self._events.append(CoreEvent("reset_failed", cmd.request_id, f"{type(exc).__name__}: {exc}"))
                if self._reset is not None and self._reset.request_id == cmd.request_id:
                    self._reset = None
                self._gain_targets = GainTargets.of(self.config.gains)
            if self._mode in (Mode.MOVING, Mode.TRACK):
                self._mode = Mode.HOLD
            self._hold_at(reading)
            return True  # read again: a failed teleport may have moved the simulated arm part way

    def _hold_at(self, reading: ArmReading, *, gains: ImpedanceGains | None = None) -> None:
        """Hold the measured pose: the spring force vanishes at once, damping brakes the arm."""
        pose = reading.pose_base_tcp.copy()
        self._target = pose
        if self._law is None:
            self._law = LawState.initial(pose, gains or self.config.gains, self.spec.n_joints)
        else:
            self._law = self._law._replace(ref_pose=pose)

    def _set_gripper(self, width_m: float) -> None:
        width = float(np.clip(width_m, 0.0, self.spec.gripper_max_width_m))
        if width != self._gripper_width:
            self._gripper_width = width
            self.backend.set_gripper(width)

    def _apply(self, cmd: object, reading: ArmReading) -> bool:
        """Apply one command; True when the arm state jumped and must be read again."""
        if isinstance(cmd, TargetCommand):
            if self._mode in (Mode.REFLEX, Mode.MOVING):
                return False  # the server refuses these with an error reply; never move here
            # Defence in depth: the server validated, the loop clips to the box again.
            target, clipped = self.config.box.clip(cmd.target_pose)
            self._target = target
            self._target_clipped = clipped or cmd.target_clipped
            self._command_seq = cmd.seq
            self._last_command_ns = self._now_ns
            self._mode = Mode.TRACK
            self._braking = False
            if cmd.gripper_width_m is not None:
                self._set_gripper(cmd.gripper_width_m)
        elif isinstance(cmd, ResetCommand):
            if self._mode == Mode.REFLEX:
                self._events.append(CoreEvent("reset_failed", cmd.request_id,
                                              f"robot is in reflex ({self._fault_text()}): send clear_error first"))
                return False
            if self._reset is not None:
                self._events.append(CoreEvent("reset_failed", self._reset.request_id, "superseded by a new reset"))
            self._mode = Mode.MOVING
            if cmd.teleport and self.scene is not None:
                self._teleport(cmd)
                self._reset = _Reset(cmd.request_id, self._settle_steps(cmd))
                return True
            self._gain_targets = GainTargets.of(self.config.reset_gains)
            self._reset = _Reset(cmd.request_id, self._reset_steps(cmd, reading))
        elif isinstance(cmd, ClearErrorCommand):
            if self._mode == Mode.REFLEX:
                self.backend.recover()
                self._fault = Fault.NONE
                self._fault_value = 0.0
                self._mode = Mode.HOLD
                self._hold_at(reading)
                # This tick's reading predates the recovery and may still carry the arm's fault
                # (UR protective stop): read again, so the fault check sees the arm as it is now.
                return True
        elif isinstance(cmd, ParamsCommand):
            box, limits = cmd.box or self.config.box, cmd.limits or self.config.limits
            if widened_limit(self._outer_box, self._outer_limits, box, limits) is not None:
                return False  # the server refuses these; the loop never widens its start-up limits
            self.config = replace(self.config, gains=cmd.gains or self.config.gains, box=box, limits=limits)
            if self._mode != Mode.MOVING:
                self._gain_targets = GainTargets.of(self.config.gains)
        else:  # pragma: no cover - internal misuse
            raise TypeError(f"unknown core command {type(cmd).__name__}")
        return False

    def _teleport(self, cmd: ResetCommand) -> None:
        width = self.spec.gripper_max_width_m if cmd.gripper_width_m is None else cmd.gripper_width_m
        self.scene.teleport_arm(cmd.goal_pose, width)
        self._gripper_width = width
        if cmd.scene_seed is not None:
            self.scene.reset_scene(cmd.scene_seed)
        # Start the law afresh at the goal: no filter or torque history crosses a teleport, so
        # two resets with the same seed give the same state.
        self._law = LawState.initial(cmd.goal_pose, self.config.gains, self.spec.n_joints)
        self._gain_targets = GainTargets.of(self.config.gains)
        self._target = np.array(cmd.goal_pose, dtype=np.float64)

    def _settle_steps(self, cmd: ResetCommand) -> Ticks:
        for _ in range(int(self.config.reset.scene_settle_s / self.config.law.tick_s)):
            yield None

    def _fault_text(self) -> str:
        return fault_text(self._fault, self._fault_value)

    def _start_braking(self) -> None:
        """Brake with extra damping: the law's gains jump to `brake_damping_factor`·D now and the
        gain filter brings them back to nominal over ~0.2 s."""
        self._braking = True
        gains = self._law.gains.copy()
        gains[1] *= self.config.brake_damping_factor
        self._law = self._law._replace(gains=gains)

    def _enter_reflex(self, fault: Fault, value: float, reading: ArmReading) -> None:
        self._fault, self._fault_value, self._mode = fault, value, Mode.REFLEX
        self._start_braking()
        if self._reset is not None:
            self._events.append(CoreEvent("reset_failed", self._reset.request_id, f"reflex: {self._fault_text()}"))
            self._reset = None
            self._gain_targets = GainTargets.of(self.config.gains)
        self._hold_at(reading)

    def _check_faults(self, reading: ArmReading) -> None:
        if reading.fault:
            self._enter_reflex(Fault.BACKEND, float(reading.fault), reading)
            return
        w = reading.wrench_ext_base
        force = math.sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2])
        if force > self.config.limits.max_contact_force_n:
            self._enter_reflex(Fault.CONTACT_FORCE, force, reading)
            return
        q, dq = reading.q_rad, reading.dq_rad_per_s
        x = np.concatenate((q, dq))
        if not ((x < self._state_lo) | (x > self._state_hi)).any():
            return
        if (np.abs(dq) > self._dq_reflex).any():
            self._enter_reflex(Fault.JOINT_VELOCITY, float(np.max(np.abs(dq))), reading)
        else:
            margin = np.minimum(q - self._q_min, self._q_max - q)
            self._enter_reflex(Fault.JOINT_LIMIT, float(np.min(margin)), reading)

    def _advance_reset(self, reading: ArmReading) -> np.ndarray | None:
        try:
            joint_target = next(self._reset.steps)
        except StopIteration:
            self._events.append(CoreEvent("reset_done", self._reset.request_id))
            self._reset_id_done = self._reset.request_id
            self._reset = None
            self._gain_targets = GainTargets.of(self.config.gains)
            self._mode = Mode.HOLD
            return None
        return joint_target

    def _reset_steps(self, cmd: ResetCommand, start: ArmReading) -> Ticks:
        """Generator run once per tick: yields a joint target (joint phase) or None (Cartesian phase,
        with `self._target` set)."""
        cfg = self.config.reset
        tick_s = self.config.law.tick_s
        speed = cfg.speed_m_per_s
        if cmd.open_gripper and self.spec.gripper_max_width_m > 0:
            opened_already = self._gripper_width >= self.spec.gripper_max_width_m
            self._set_gripper(self.spec.gripper_max_width_m)
            if not opened_already:
                for _ in range(int(cfg.gripper_open_s / tick_s)):
                    yield None
        # Lift first, so a peg in a hole or a grasped object leaves vertically.
        here = self._read_pose()
        lifted = here.copy()
        lifted[2] = max(here[2], cmd.goal_pose[2])
        yield from self._follow(PoseSegment.plan(here, lifted, speed_m_per_s=speed,
                                                 speed_rad_per_s=cfg.speed_rad_per_s))
        if cmd.joint_reset:
            seg = JointSegment.plan(self._last_q, self._q_home, speed_rad_per_s=cfg.joint_speed_rad_per_s)
            for i in range(int(np.ceil(seg.duration_s / tick_s)) + 200):
                yield seg.at(i * tick_s)
            self._target = self._read_pose()
        here = self._read_pose()
        yield from self._follow(PoseSegment.plan(here, cmd.goal_pose, speed_m_per_s=speed,
                                                 speed_rad_per_s=cfg.speed_rad_per_s))
        if cmd.gripper_width_m is not None:
            self._set_gripper(cmd.gripper_width_m)
        if cmd.scene_seed is not None and self.scene is not None:
            self.scene.reset_scene(cmd.scene_seed)
        if cmd.gripper_width_m is not None or cmd.scene_seed is not None:
            for _ in range(int(cfg.scene_settle_s / tick_s)):
                yield None
        for _ in range(int(cfg.settle_timeout_s / tick_s)):
            pose = self._read_pose()
            if (np.linalg.norm(pose[:3] - cmd.goal_pose[:3]) < cfg.settle_tol_m
                    and np.linalg.norm(self._last_twist[:3]) < cfg.settle_speed_m_per_s):
                break
            yield None

    def _follow(self, seg: PoseSegment) -> Ticks:
        tick_s = self.config.law.tick_s
        for i in range(int(np.ceil(seg.duration_s / tick_s)) + 1):
            self._target = seg.at(i * tick_s)
            yield None

    # Values of the current tick's reading, for the reset generator.
    def _read_pose(self) -> np.ndarray:
        return self._reading.pose_base_tcp.copy()

    @property
    def _last_q(self) -> np.ndarray:
        return self._reading.q_rad.copy()

    @property
    def _last_twist(self) -> np.ndarray:
        return self._reading.twist_base_tcp

    def _write_snapshot(self, reading: ArmReading) -> None:
        b, s = self.buffer, self._slices
        # Everything that can fail is done before the lock is taken, and the lock is released
        # whatever happens: a reader must never wait on a writer that raised mid-write.
        ints = np.array((self._tick, reading.t_capture_ns, int(self._mode), int(self._fault), self._command_seq,
                         self._reset_id_done, int(self._target_clipped), self._watchdog_trips), dtype=np.int64)
        b.begin()
        try:
            self._fill_snapshot(b, s, ints, reading)
        finally:
            b.commit()

    def _fill_snapshot(self, b: SnapshotBuffer, s: dict[str, slice], ints: np.ndarray, reading: ArmReading) -> None:
        b.ints[1:] = ints
        f = b.floats
        f[s["q"]] = reading.q_rad
        f[s["dq"]] = reading.dq_rad_per_s
        f[s["pose"]] = reading.pose_base_tcp
        f[s["twist"]] = reading.twist_base_tcp
        f[s["wrench"]] = reading.wrench_ext_base
        f[s["gripper_width"]] = reading.gripper_width_m
        f[s["target"]] = self._target
        f[s["reference"]] = self._law.ref_pose
        f[s["tau"]] = self._last_tau
        f[s["fault_value"]] = self._fault_value
        if self.scene is not None:
            self.scene.write_privileged(self._priv_views)
            self.scene.write_sim_state(f[s["sim_state"]])
