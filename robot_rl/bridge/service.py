"""What the robot PC does with each request, independent of sockets.

`RobotService` validates requests against the robot PC's safety limits, hands commands to the
control runtime and builds `Observation` replies from snapshots and camera frames. The socket
server (`bridge/server.py`) and the in-process link (`bridge/local.py`) both call it, so the
in-process twin env runs exactly the same validation, controller and safety code as a robot PC.

Errors are raised (`SafetyViolation`, `ProtocolError`, `ConfigError`); callers turn them into
error replies. Threading: one thread (the server's) calls every method.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_rl.bridge import protocol as P
from robot_rl.config import from_dict, to_dict
from robot_rl.control import rotations
from robot_rl.control.commands import (
    ClearErrorCommand,
    CoreEvent,
    ParamsCommand,
    ResetCommand,
    TargetCommand,
)
from robot_rl.control.impedance import ImpedanceGains
from robot_rl.control.runtime import ControlLoopDied
from robot_rl.control.safety import (
    CommandLimits,
    WorkspaceBox,
    check_absolute_target,
    target_from_delta,
    widened_limit,
)
from robot_rl.control.snapshot import Mode, Snapshot
from robot_rl.drivers.arm import ArmSpec
from robot_rl.drivers.camera import FrameSource
from robot_rl.errors import ProtocolError, SafetyViolation
from robot_rl.task_spec import TaskSpec

log = logging.getLogger(__name__)

_MODE_NAMES = {int(m): m.name.lower() for m in Mode}
RESET_POSE_STREAM = 0x5E7
"""Second word of the reset pose's seed (numpy SeedSequence entropy [seed, RESET_POSE_STREAM])."""
OUTSIDE_BOX_TOL_M = 0.02
"""Motion commands are refused (`reset_required`) while the measured TCP is farther than this
outside the workspace box: at start-up an arm may be anywhere, and only a reset brings it in.
Closer than this is compliance or contact against a wall, which delta commands handle."""


@dataclass(frozen=True)
class Later:
    """The reply is not ready yet: due at `deadline_ns` (hold_s), or when reset `reset_id` ends."""

    deadline_ns: int
    reset_id: int | None = None


class RobotService:
    """Request logic of one robot (arm runtime + frame source + task). See the module docstring."""

    def __init__(self, *, runtime: Any, frames: FrameSource, task: TaskSpec, arm: ArmSpec, backend: str,
                 server_name: str = "robot", reset_motion: str = "auto", reset_timeout_s: float = 20.0) -> None:
        self.runtime = runtime
        self.frame_source = frames
        self.task = task
        self.arm = arm
        self.backend = backend
        self.server_name = server_name
        self.reset_motion = reset_motion
        self.reset_timeout_s = reset_timeout_s
        self.gains: ImpedanceGains = task.gains
        self.box: WorkspaceBox = task.workspace
        self.limits: CommandLimits = task.limits
        # The task file's limits are the outer bounds: set_params may only tighten them.
        self.outer_box, self.outer_limits = task.workspace, task.limits
        self.control_fault: str | None = None
        """Why the control loop is dead (None while it runs): motion is refused until restart."""
        self._last_snap: Snapshot | None = None
        self.camera_sizes = frames.camera_sizes()
        self.resets_in_flight: set[int] = set()
        self._next_reset_id = 1
        self._rng = np.random.default_rng()
        self._wire_layout: tuple | None = None

    @property
    def realtime(self) -> bool:
        return self.runtime.realtime

    # ---- requests ----------------------------------------------------------------------------

    def welcome(self, pub_address: str = "") -> P.Welcome:
        snap = self.snapshot()
        return P.Welcome(
            protocol_version=P.PROTOCOL_VERSION, server_name=self.server_name, backend=self.backend,
            task=self.task.name, clock="monotonic" if self.realtime else "sim", realtime=self.realtime,
            watchdog_s=self.limits.watchdog_s, n_joints=self.arm.n_joints,
            gripper_max_width_m=self.arm.gripper_max_width_m,
            cameras=tuple(P.CameraInfo(n, h, w) for n, (h, w) in self.camera_sizes.items()),
            privileged=tuple(name for name, _ in snap.layout.privileged_sizes),
            workspace_min_m=np.array(self.box.min_m), workspace_max_m=np.array(self.box.max_m),
            server_time_ns=time.monotonic_ns(), pub_address=pub_address)

    def check_cameras(self, names: tuple[str, ...]) -> None:
        """Each name a configured camera, at most once: the reply's size is bounded by the setup."""
        for n in names:
            if n not in self.camera_sizes:
                raise ProtocolError(f"unknown camera {n!r}; this server has {list(self.camera_sizes)}",
                                    code="unknown_camera")
        if len(set(names)) != len(names):
            raise ProtocolError(f"camera list {list(names)[:8]} names a camera more than once; ask for each "
                                "camera once", code="duplicate_camera")

    # ---- supervision -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Newest state of the control loop, or its last one when the loop has died."""
        if self.control_fault is None:
            try:
                self._last_snap = self.runtime.snapshot()
                return self._last_snap
            except (TimeoutError, ControlLoopDied):  # a loop killed mid-write leaves the lock held
                if self.control_alive():
                    raise
        if self._last_snap is None:
            raise ControlLoopDied(f"the control loop produced no state ({self.control_fault})")
        return self._last_snap

    def control_alive(self) -> bool:
        """False, with the cause remembered in `control_fault`, once the control loop has died."""
        if self.control_fault is None:
            try:
                self.runtime.check_alive()
                return True
            except ControlLoopDied as exc:
                self.control_fault = str(exc)
                log.error("%s: motion is refused until an operator sends restart_control", exc)
        return False

    def check_control(self) -> None:
        """Raise SafetyViolation `fault` when the control loop is dead."""
        if not self.control_alive():
            raise SafetyViolation(f"the control loop is not running ({self.control_fault}); the arm is held by "
                                  "its brakes / the vendor's stop. Send restart_control (robot-rl robot "
                                  "restart-control) once the cause is understood", code="fault")

    def restart_control(self, msg: P.RestartControl) -> P.Observation:
        """Start a fresh control loop after the old one died; it holds the arm where it is."""
        try:
            self.runtime.check_alive()
        except ControlLoopDied as exc:
            self.control_fault = self.control_fault or str(exc)
        if self.control_fault is None:
            raise SafetyViolation("the control loop is running; restart_control is only for a dead loop",
                                  code="control_alive")
        try:  # the dead loop's own last tick, unless it died mid-write (then the last one read)
            last = self.runtime.snapshot()
        except Exception:
            last = self._last_snap
        resume = None
        if last is not None and last.layout.sim_state_size:
            resume = np.array(last.get("sim_state"))
        log.warning("restarting the control loop (was: %s)", self.control_fault)
        self.runtime.restart(resume)
        self.control_fault = None
        self.resets_in_flight.clear()
        return self.observation(msg.seq, ())

    def _check_moveable(self, snap: Snapshot) -> None:
        if snap.mode == Mode.REFLEX:
            raise SafetyViolation(f"arm is holding after a safety reflex ({snap.fault_message()}); "
                                  "send clear_error (env.reset does) to continue", code="reflex_active")
        if snap.mode == Mode.MOVING or self.resets_in_flight:
            raise SafetyViolation("a reset motion is in progress; wait for its reply", code="resetting")

    def command(self, msg: P.Command, *, unseen_watchdog_trips: int | None = None) -> P.Observation | Later:
        """Validate and apply a command; the observation `hold_s` later (or when it will be due).

        `unseen_watchdog_trips`: the watchdog trip count the controlling client has already seen
        in a reply. If the watchdog has held the arm since, the validated command is not applied:
        the reply is the hold itself (the env ends its episode) and only the next command moves.
        """
        self.check_cameras(msg.cameras)
        if msg.hold_s > self.limits.max_hold_s:
            raise SafetyViolation(f"hold_s {msg.hold_s} exceeds max_hold_s {self.limits.max_hold_s}", code="bad_hold")
        self.check_control()
        snap = self.snapshot()
        self._check_moveable(snap)
        pose = snap.get("pose")
        lo, hi, tol = self.box.min_m, self.box.max_m, OUTSIDE_BOX_TOL_M
        if not (lo[0] - tol <= pose[0] <= hi[0] + tol and lo[1] - tol <= pose[1] <= hi[1] + tol
                and lo[2] - tol <= pose[2] <= hi[2] + tol):
            outside = self.box.violation(pose, tol_m=tol, tol_rad=np.pi)
            raise SafetyViolation(f"the arm is outside the workspace box ({outside}); send reset to bring it in "
                                  "before stepping", code="reset_required")
        if msg.mode == "delta":
            target, clipped = target_from_delta(pose, msg.target, self.box, self.limits)
        else:
            target, clipped = check_absolute_target(pose, msg.target, self.box, self.limits), False
        gripper = None
        if msg.gripper_width_m is not None:
            gripper = min(msg.gripper_width_m, self.arm.gripper_max_width_m)
        if (unseen_watchdog_trips is not None and snap.mode == Mode.WATCHDOG_HOLD
                and snap.int("watchdog_trips") > unseen_watchdog_trips):
            log.info("command %d answered with the watchdog hold: the controller was silent for more than %.2f s",
                     msg.seq, self.limits.watchdog_s)
            return self.observation(msg.seq, msg.cameras, snap)
        self.runtime.submit(TargetCommand(msg.seq, target, gripper, clipped))
        if not self.realtime:
            self.runtime.advance(msg.hold_s)
            return self.observation(msg.seq, msg.cameras)
        if msg.hold_s <= 0:
            return self.observation(msg.seq, msg.cameras)
        return Later(time.monotonic_ns() + int(msg.hold_s * 1e9))

    def reset(self, msg: P.Reset) -> P.Observation | Later:
        """Start a reset; stepped runtimes finish it before returning."""
        self.check_cameras(msg.cameras)
        self.check_control()
        snap = self.snapshot()
        if snap.mode == Mode.REFLEX:
            raise SafetyViolation(f"arm is holding after a safety reflex ({snap.fault_message()}); "
                                  "send clear_error before reset", code="reflex_active")
        if self.resets_in_flight:
            raise SafetyViolation("a reset motion is in progress; wait for its reply", code="resetting")
        seed = msg.seed if msg.seed is not None else int(self._rng.integers(2**31))
        goal = self._reset_goal(msg, seed)
        rid = self._next_reset_id
        self._next_reset_id += 1
        self.frame_source.on_reset(seed)
        gripper = None if msg.gripper_width_m is None else min(msg.gripper_width_m, self.arm.gripper_max_width_m)
        self.runtime.submit(ResetCommand(rid, goal, joint_reset=msg.joint_reset, scene_seed=seed,
                                         gripper_width_m=gripper, teleport=self._teleport_resets()))
        if not self.realtime:
            return self.finish_reset(msg.seq, msg.cameras, rid, self.runtime.wait_event(self.reset_timeout_s))
        self.resets_in_flight.add(rid)
        return Later(time.monotonic_ns() + int(self.reset_timeout_s * 1e9), rid)

    def finish_reset(self, seq: int, cameras: tuple[str, ...], rid: int, events: list[CoreEvent]) -> object:
        """The reply to reset `rid` given the core's events (an Error if it failed or timed out)."""
        self.resets_in_flight.discard(rid)
        for e in events:
            if e.request_id == rid and e.kind == "reset_done":
                return self.observation(seq, cameras)
            if e.request_id == rid:
                return P.Error(seq, "reset_failed", f"reset failed: {e.message}")
        return P.Error(seq, "reset_timeout", f"reset did not finish within {self.reset_timeout_s} s")

    def _teleport_resets(self) -> bool:
        mode = self.reset_motion
        return self.backend == "twin" and (mode == "teleport" or (mode == "auto" and not self.realtime))

    def _reset_goal(self, msg: P.Reset, seed: int) -> np.ndarray:
        spec = self.task.reset
        goal = np.array(msg.pose if msg.pose is not None else spec.pose, dtype=np.float64)
        if msg.pose is not None:
            why = self.box.violation(goal)
            if why is not None:
                raise SafetyViolation(f"reset pose refused: {why}", code="outside_workspace")
            goal[3:] = rotations.quat_normalize(goal[3:])
        if msg.randomize:
            # A stream of its own: the twin places its objects from default_rng(seed), and drawing
            # the same numbers here made the start pose a fixed fraction of the object's offset.
            rng = np.random.default_rng([seed, RESET_POSE_STREAM])
            goal[:3] += rng.uniform(-1, 1, 3) * np.asarray(spec.randomize_xyz_m)
            yaw = rng.uniform(-spec.randomize_yaw_rad, spec.randomize_yaw_rad) if spec.randomize_yaw_rad else 0.0
            goal[3:] = rotations.quat_normalize(rotations.quat_mul(rotations.rotvec_to_quat(np.array([0, 0, yaw])),
                                                                   goal[3:]))
        goal, _ = self.box.clip(goal)
        return goal

    def clear_error(self, msg: P.ClearError) -> P.Observation:
        self.check_control()
        self.runtime.submit(ClearErrorCommand())
        if not self.realtime:
            self.runtime.advance(0.001)
        else:
            deadline = time.monotonic() + 0.5
            while self.snapshot().mode == Mode.REFLEX and time.monotonic() < deadline:
                time.sleep(0.001)
        return self.observation(msg.seq, ())

    def set_params(self, msg: P.SetParams) -> P.Ok:
        """Apply new gains and tighter limits; a limit wider than the task file's is refused."""
        self.check_control()
        gains = from_dict(ImpedanceGains, {**to_dict(self.gains), **(msg.gains or {})}, where="gains")
        box = from_dict(WorkspaceBox, {**to_dict(self.box), **(msg.workspace or {})}, where="workspace")
        limits = from_dict(CommandLimits, {**to_dict(self.limits), **(msg.limits or {})}, where="limits")
        wider = widened_limit(self.outer_box, self.outer_limits, box, limits)
        if wider is not None:
            where = self.task.source or f"task {self.task.name}"
            raise SafetyViolation(f"set_params may only tighten limits: {wider}, the limit set in {where}. "
                                  "To widen it, edit that file on the robot PC and restart robot-rl serve",
                                  code="limit_widened")
        self.gains, self.box, self.limits = gains, box, limits
        self.runtime.submit(ParamsCommand(gains=gains, box=box, limits=limits))
        if not self.realtime:
            self.runtime.advance(0.001)
        return P.Ok(msg.seq, "parameters applied", {"gains": to_dict(gains), "workspace": to_dict(box),
                                                     "limits": to_dict(limits)})

    # ---- observations ------------------------------------------------------------------------

    def observation(self, seq: int, cameras: tuple[str, ...], snap: Snapshot | None = None) -> P.Observation:
        """State of the newest tick (all floats but the simulator state) plus the named frames.
        When the control loop is dead: its last state, mode "fault", the cause in `fault`."""
        snap = snap or self.snapshot()
        names, sizes, length = self._state_layout(snap)
        if self.control_fault is not None:
            mode, fault = "fault", f"control loop not running: {self.control_fault}"
        else:
            mode = _MODE_NAMES.get(snap.int("mode"), "fault")
            fault = snap.fault_message() if snap.int("fault") else ""
        state = P.RobotState(
            tick=snap.tick, t_capture_ns=snap.t_capture_ns, mode=mode,
            fault=fault, command_seq=snap.int("command_seq"),
            target_clipped=bool(snap.int("target_clipped")), watchdog_trips=snap.int("watchdog_trips"),
            names=names, sizes=sizes, values=snap.floats[:length])
        frames: tuple[P.CameraFrame, ...] = ()
        if cameras:
            sim_state = snap.get("sim_state") if snap.layout.sim_state_size else None
            frames = tuple(P.CameraFrame(f.camera, f.seq, f.t_capture_ns, f.t_receive_ns, f.image)
                           for f in self.frame_source.frames(cameras, sim_state, snap.t_capture_ns))
        return P.Observation(seq, state, frames, time.monotonic_ns())

    def _state_layout(self, snap: Snapshot) -> tuple[tuple[str, ...], tuple[int, ...], int]:
        if self._wire_layout is None or self._wire_layout[0] is not snap.layout:
            items = [(n, s.stop - s.start) for n, s in snap.layout.float_slices().items() if n != "sim_state"]
            self._wire_layout = (snap.layout, tuple(n for n, _ in items), tuple(k for _, k in items),
                                 sum(k for _, k in items))
        return self._wire_layout[1:]

    def close(self) -> None:
        """Close the frame source (call from the serving thread: it owns the renderers)."""
        self.frame_source.close()
