"""The robot bridge wire protocol: the one module both ends of every socket import.

A message is a ZeroMQ multipart message:

    frame 0   msgpack header {"v": PROTOCOL_VERSION, "kind": str, "body": {...}, "arrays": [[dtype, shape], ...]}
    frame 1+  raw array buffers, C order, in the order of "arrays"

In "body", a field declared as an array holds the index of its buffer. No pickle anywhere: a
decoder only ever builds the dataclasses declared here, and it checks every field's type, every
array's dtype, shape, size and finiteness, the protocol version and the total size.

Conventions for every field: SI units with the unit in the name (`_m`, `_rad`, `_s`, `_ns`, `_n`),
poses `[x y z qw qx qy qz]` in the robot base frame (quaternion scalar first, as MuJoCo), times
from `time.monotonic_ns()` on the sending machine (`clock` in `Welcome` says when the server
stamps with simulated time instead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

import numpy as np

from robot_rl.bridge.codec import F64, INT64_MAX, ArraySpec, IntRange, MessageRegistry
from robot_rl.errors import ProtocolError

PROTOCOL_VERSION = 2
"""2: hello carries take_control; restart_control and bye; integer fields range-checked."""
MAX_REQUEST_BYTES = 1 << 20
"""Requests (client → server) larger than this are refused with an error reply (1 MiB)."""
MAX_MESSAGE_BYTES = 64 << 20
"""Hard cap set as ZMQ_MAXMSGSIZE: larger frames drop the connection without a reply."""
REGISTRY = MessageRegistry(PROTOCOL_VERSION)
"""Every message kind of the bridge protocol."""

Seq = Annotated[int, IntRange(0, INT64_MAX)]
"""Request sequence numbers: non-negative and int64 (the control loop stores them in int64)."""
Seed = Annotated[int, IntRange(0, INT64_MAX)]
"""Randomization seeds: numpy refuses negative seeds, so they are refused on arrival."""
TimeNs = Annotated[int, IntRange(0, INT64_MAX)]


_message = REGISTRY.message


# ---- handshake ---------------------------------------------------------------------------------

Role = Literal["control", "monitor"]


@_message("hello")
@dataclass(frozen=True)
class Hello:
    """First request of every client. `control` clients may move the arm, one at a time;
    `monitor` clients only read state and frames and never feed the watchdog.

    A control hello while another control client holds the arm is refused with `control_held`
    unless `take_control` is set (or the holder has been silent for the server's release time),
    so a second process started by mistake cannot take the arm from a running one."""

    KIND: ClassVar[str]
    protocol_version: int
    client_name: str
    role: Role = "control"
    take_control: bool = False
    """Take the arm from the control client holding it; its in-flight requests are answered
    `control_taken`."""


@dataclass(frozen=True)
class CameraInfo:
    name: str
    height: int
    width: int


@_message("welcome")
@dataclass(frozen=True)
class Welcome:
    """Server's answer to Hello: what it serves."""

    KIND: ClassVar[str]
    protocol_version: int
    server_name: str
    backend: str
    """"twin", "franka", "ur"…"""
    task: str
    clock: Literal["monotonic", "sim"]
    """"sim": timestamps are simulated time (stepped twin); "monotonic": robot-PC monotonic clock."""
    realtime: bool
    """True when the arm moves in real time; False when each command advances simulated time."""
    watchdog_s: float
    n_joints: int
    gripper_max_width_m: float
    cameras: tuple[CameraInfo, ...]
    privileged: tuple[str, ...]
    """Names of ground-truth vectors in `RobotState.privileged` (twin only; empty on real arms)."""
    workspace_min_m: Annotated[np.ndarray, F64(3)]
    workspace_max_m: Annotated[np.ndarray, F64(3)]
    server_time_ns: int
    pub_address: str
    """Where the PUB stream of observations is bound ("" if disabled)."""


# ---- requests ----------------------------------------------------------------------------------


@_message("command")
@dataclass(frozen=True)
class Command:
    """Move the arm; the reply is an `Observation` taken `hold_s` after the command took effect.

    mode "delta": `target` = `[dx dy dz rx ry rz]` (m, rad), a base-frame translation and a
    rotation applied as R(Δ)·R_current to the *measured* pose; clipped to the workspace box.
    mode "absolute": `target` = a pose `[x y z qw qx qy qz]`; refused if outside the box or
    farther than the per-command step limit.
    """

    KIND: ClassVar[str]
    seq: Seq
    mode: Literal["delta", "absolute"]
    target: Annotated[np.ndarray, F64(None)]
    gripper_width_m: float | None = None
    """Gripper opening to command; None leaves it as it is. 0 closes (grasps)."""
    hold_s: float = 0.0
    """Reply after the arm has tracked the command this long (one env step: 1/step_hz)."""
    cameras: tuple[str, ...] = ()
    """Cameras whose newest frames the reply must carry (each at most once)."""
    t_send_ns: TimeNs = 0

    def __post_init__(self) -> None:
        want = 6 if self.mode == "delta" else 7
        if self.target.shape != (want,):
            raise ValueError(f"command target for mode {self.mode!r} must have shape ({want},), got {self.target.shape}")
        if self.hold_s < 0:
            raise ValueError(f"hold_s must be ≥ 0, got {self.hold_s}")
        if self.gripper_width_m is not None and not 0.0 <= self.gripper_width_m <= 1.0:
            raise ValueError(f"gripper_width_m must be in [0, 1] m, got {self.gripper_width_m}")


@_message("get_observation")
@dataclass(frozen=True)
class GetObservation:
    """Newest state (and frames) without moving; does not feed the watchdog."""

    KIND: ClassVar[str]
    seq: Seq
    cameras: tuple[str, ...] = ()


@_message("reset")
@dataclass(frozen=True)
class Reset:
    """Reset motion (precision gains, lift, optional joint reset, move) and, on the twin, a scene
    re-randomization; replies with an `Observation` once the arm has settled at the reset pose."""

    KIND: ClassVar[str]
    seq: Seq
    pose: Annotated[np.ndarray, F64(7)] | None = None
    """Reset pose; None uses the task's reset pose."""
    randomize: bool = True
    """Add the task's reset-pose randomization."""
    joint_reset: bool = False
    seed: Seed | None = None
    """Seed of the pose and scene randomization, in [0, 2^63) (None: server-chosen)."""
    gripper_width_m: float | None = None
    """Gripper opening at the end of the reset, m in [0, 1] (None: open)."""
    cameras: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Also checked by the codec on the wire; here for requests built in process (LocalLink).
        if self.seed is not None and not 0 <= self.seed <= INT64_MAX:
            raise ValueError(f"reset seed must be in [0, 2^63), got {self.seed}")
        if self.gripper_width_m is not None and not 0.0 <= self.gripper_width_m <= 1.0:
            raise ValueError(f"reset gripper_width_m must be in [0, 1] m, got {self.gripper_width_m}")
        if self.pose is not None:
            if self.pose.shape != (7,):
                raise ValueError(f"reset pose must have shape (7,), got {self.pose.shape}")
            norm = math.hypot(*(float(v) for v in self.pose[3:]))  # no overflow for huge entries
            if not abs(norm - 1.0) <= 1e-3:  # also refuses zero, denormal and overflowing quaternions
                raise ProtocolError(f"reset pose quaternion must be unit length (w x y z), has norm {norm:.6g}",
                                    code="bad_quaternion")


@_message("clear_error")
@dataclass(frozen=True)
class ClearError:
    """Leave a safety reflex (and clear arm errors); replies with an Observation."""

    KIND: ClassVar[str]
    seq: Seq


@_message("set_params")
@dataclass(frozen=True)
class SetParams:
    """Change controller parameters. Each mapping uses the field names of the config dataclass:
    `gains` → ImpedanceGains, `workspace` → WorkspaceBox, `limits` → CommandLimits; omitted
    fields keep their current value. Replies `Ok` with the parameters now in force.

    The task file (and the robot PC's config) sets the outer limits: box, step, contact force,
    watchdog and hold limits may only be tightened here; a widening is refused with
    `limit_widened`, naming the limit and where it is set."""

    KIND: ClassVar[str]
    seq: Seq
    gains: dict[str, Any] | None = None
    workspace: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None


@_message("restart_control")
@dataclass(frozen=True)
class RestartControl:
    """Operator request: start a new control loop after the old one died (state mode "fault").
    The new loop holds the arm where it is; send reset before stepping again. Refused while the
    control loop is alive."""

    KIND: ClassVar[str]
    seq: Seq


@_message("bye")
@dataclass(frozen=True)
class Bye:
    """The client is leaving: forget it and release control if it held it. Replies `Ok`."""

    KIND: ClassVar[str]
    seq: Seq


# ---- replies -----------------------------------------------------------------------------------


STATE_FIELDS = {"q": None, "dq": None, "pose": 7, "twist": 6, "wrench": 6, "gripper_width": 1, "target": 7}
"""Slices every `RobotState.values` must contain (None: one entry per joint). Twin ground truth
adds slices named "priv.<name>"."""


@dataclass(frozen=True)
class RobotState:
    """One control tick's state, as sampled on the robot PC.

    The float state travels as one float64 vector, `values`, cut into named slices by `names` and
    `sizes` (one buffer instead of a dozen keeps the reply fast to decode). Read it through the
    properties, or `get(name)`:

        q (n,) rad · dq (n,) rad/s · pose (7,) TCP pose · twist (6,) m/s, rad/s · wrench (6,) N, N·m,
        external, at the TCP · gripper_width (1,) m · target (7,) commanded pose · priv.* twin only
    """

    tick: int
    t_capture_ns: int
    mode: str
    """"hold", "track", "watchdog_hold", "moving", "reflex", or "fault" when the control loop has
    died (the state is its last one; motion is refused until `restart_control`)."""
    fault: str
    """Why the arm is in reflex or fault ("" otherwise)."""
    command_seq: int
    """seq of the last command the controller applied."""
    target_clipped: bool
    """The last command's target was clipped to the workspace box."""
    watchdog_trips: int
    names: tuple[str, ...]
    sizes: tuple[int, ...]
    values: Annotated[np.ndarray, F64(None)]

    def __post_init__(self) -> None:
        key = (self.names, self.sizes)
        if key in _VALID_LAYOUTS:  # checked before: only the length can differ
            if _VALID_LAYOUTS[key] != self.values.shape[0]:
                raise ValueError(f"state sizes add up to {_VALID_LAYOUTS[key]} but values has "
                                 f"{self.values.shape[0]} entries")
            return
        if len(self.names) != len(self.sizes) or any(n < 0 for n in self.sizes):
            raise ValueError("state names and sizes must pair up with non-negative sizes")
        if sum(self.sizes) != self.values.shape[0]:
            raise ValueError(f"state sizes add up to {sum(self.sizes)} but values has {self.values.shape[0]} entries")
        slices = _state_slices(self.names, self.sizes)
        n = slices["q"].stop - slices["q"].start if "q" in slices else 0
        for name, size in STATE_FIELDS.items():
            got = slices.get(name)
            if got is None or got.stop - got.start != (n if size is None else size):
                raise ValueError(f"state slice {name!r} missing or of the wrong size")
        if len(_VALID_LAYOUTS) < 64:
            _VALID_LAYOUTS[key] = sum(self.sizes)

    def get(self, name: str) -> np.ndarray:
        return self.values[_state_slices(self.names, self.sizes)[name]]

    @property
    def q_rad(self) -> np.ndarray:
        return self.get("q")

    @property
    def dq_rad_per_s(self) -> np.ndarray:
        return self.get("dq")

    @property
    def pose_base_tcp(self) -> np.ndarray:
        return self.get("pose")

    @property
    def twist_base_tcp(self) -> np.ndarray:
        return self.get("twist")

    @property
    def wrench_ext_base(self) -> np.ndarray:
        return self.get("wrench")

    @property
    def gripper_width_m(self) -> float:
        return float(self.get("gripper_width")[0])

    @property
    def target_base_tcp(self) -> np.ndarray:
        return self.get("target")

    @property
    def privileged(self) -> dict[str, np.ndarray]:
        """Twin ground truth by name (object poses, success, safety peaks); empty on real arms."""
        return {name[5:]: self.get(name) for name in self.names if name.startswith("priv.")}


_VALID_LAYOUTS: dict[tuple[tuple[str, ...], tuple[int, ...]], int] = {}
_SLICE_CACHE: dict[tuple[tuple[str, ...], tuple[int, ...]], dict[str, slice]] = {}


def _state_slices(names: tuple[str, ...], sizes: tuple[int, ...]) -> dict[str, slice]:
    key = (names, sizes)
    out = _SLICE_CACHE.get(key)
    if out is None:
        out, i = {}, 0
        for name, size in zip(names, sizes):
            out[name] = slice(i, i + size)
            i += size
        if len(_SLICE_CACHE) < 64:
            _SLICE_CACHE[key] = out
    return out


@dataclass(frozen=True)
class CameraFrame:
    """A camera image with its timestamps; crop and resize were applied on the robot PC."""

    camera: str
    seq: int
    t_capture_ns: int
    """When the sensor captured it (robot-PC monotonic clock, or sim time)."""
    t_receive_ns: int
    """When the robot PC received it from the driver."""
    image: Annotated[np.ndarray, ArraySpec("|u1", (None, None, 3))]
    """(H, W, 3) uint8 RGB."""


@_message("observation")
@dataclass(frozen=True)
class Observation:
    """Reply to command, get_observation, reset and clear_error; also what PUB streams."""

    KIND: ClassVar[str]
    seq: int
    """seq of the request answered (-1 on the PUB stream)."""
    state: RobotState
    frames: tuple[CameraFrame, ...] = ()
    t_send_ns: int = 0


@_message("ok")
@dataclass(frozen=True)
class Ok:
    KIND: ClassVar[str]
    seq: int
    message: str = ""
    params: dict[str, Any] | None = None


@_message("error")
@dataclass(frozen=True)
class Error:
    """The request was refused. `code` is stable and machine-readable; `message` says what to do."""

    KIND: ClassVar[str]
    seq: int
    code: str
    message: str


Request = Union[Hello, Command, GetObservation, Reset, ClearError, SetParams, RestartControl, Bye]
Reply = Union[Welcome, Observation, Ok, Error]
MESSAGE_KINDS = tuple(REGISTRY.kinds)


# ---- encoding ----------------------------------------------------------------------------------


def encode(msg: object) -> list[bytes | memoryview]:
    """Frames of a protocol message: msgpack header, then one raw buffer per array."""
    return REGISTRY.encode(msg)


def decode(frames: list, *, max_bytes: int | None = None) -> object:
    """The protocol message carried by `frames`.

    Raises:
        ProtocolError: size, header, version, kind, field, dtype, shape or non-finite problems;
            `code` names the class of problem and the message names the field.
    """
    return REGISTRY.decode(frames, max_bytes=max_bytes)
