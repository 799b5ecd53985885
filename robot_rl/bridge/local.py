"""In-process link to a `RobotService`: the `BridgeClient` API without sockets or encoding.

Used by the in-process twin env (`RobotEnv(in_process=True)`) so vectorized simulation runs the
same validation, controller and safety code as a served robot, minus the wire. Stepped
runtimes only (real-time replies are deferred, which needs the socket server).
"""

from __future__ import annotations

import time

import numpy as np

from robot_rl.bridge import protocol as P
from robot_rl.bridge.client import StepTiming
from robot_rl.bridge.service import RobotService
from robot_rl.control.runtime import ControlLoopDied
from robot_rl.errors import (
    BridgeRemoteError,
    ConfigError,
    ProtocolError,
    SafetyViolation,
)


class LocalLink:
    """Same calls as `BridgeClient`; errors become `BridgeRemoteError` with the server's codes."""

    def __init__(self, service: RobotService) -> None:
        if service.realtime:
            raise ConfigError("LocalLink needs a stepped (pace=fast) runtime; serve real-time robots over sockets")
        self.service = service
        self.welcome = service.welcome()
        self.address = "in-process"
        self.server_clock_offset_ns = 0
        self.last_timing: StepTiming | None = None
        self._seq = 0

    def _call(self, fn, msg: object) -> object:
        t0 = time.monotonic_ns()
        try:
            reply = fn(msg)
        except (ProtocolError, SafetyViolation) as exc:
            raise BridgeRemoteError(f"{exc.code}: {exc}", code=exc.code) from exc
        except ConfigError as exc:
            raise BridgeRemoteError(f"bad_params: {exc}", code="bad_params") from exc
        except ControlLoopDied:
            try:
                self.service.check_control()  # records the cause and raises it as a `fault`
            except SafetyViolation as exc:
                raise BridgeRemoteError(f"{exc.code}: {exc}", code=exc.code) from exc
            raise
        self.last_timing = StepTiming(t0, time.monotonic_ns())
        if isinstance(reply, P.Error):
            raise BridgeRemoteError(f"{reply.code}: {reply.message}", code=reply.code)
        return reply

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def step(self, target: np.ndarray, *, mode: str = "delta", gripper_width_m: float | None = None,
             hold_s: float = 0.0, cameras: tuple[str, ...] = ()) -> P.Observation:
        try:
            msg = P.Command(self._next(), mode, np.asarray(target, dtype=np.float64), gripper_width_m, hold_s,
                            tuple(cameras), time.monotonic_ns())
        except ValueError as exc:
            raise BridgeRemoteError(f"bad_field: {exc}", code="bad_field") from exc
        if not np.all(np.isfinite(msg.target)):
            raise BridgeRemoteError("non_finite: command target contains NaN or inf", code="non_finite")
        return self._call(self.service.command, msg)

    def observe(self, cameras: tuple[str, ...] = ()) -> P.Observation:
        self.service.check_cameras(tuple(cameras))
        return self.service.observation(self._next(), tuple(cameras))

    def reset(self, *, pose: np.ndarray | None = None, randomize: bool = True, joint_reset: bool = False,
              seed: int | None = None, gripper_width_m: float | None = None,
              cameras: tuple[str, ...] = ()) -> P.Observation:
        try:
            msg = P.Reset(self._next(), None if pose is None else np.asarray(pose, dtype=np.float64), randomize,
                          joint_reset, seed, gripper_width_m, tuple(cameras))
        except ProtocolError as exc:
            raise BridgeRemoteError(f"{exc.code}: {exc}", code=exc.code) from exc
        except ValueError as exc:
            raise BridgeRemoteError(f"bad_field: {exc}", code="bad_field") from exc
        return self._call(self.service.reset, msg)

    def clear_error(self) -> P.Observation:
        return self._call(self.service.clear_error, P.ClearError(self._next()))

    def restart_control(self) -> P.Observation:
        return self._call(self.service.restart_control, P.RestartControl(self._next()))

    def set_params(self, *, gains: dict | None = None, workspace: dict | None = None,
                   limits: dict | None = None) -> dict:
        return self._call(self.service.set_params, P.SetParams(self._next(), gains, workspace, limits)).params or {}

    def close(self) -> None:
        self.service.close()
        self.service.runtime.close()
