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

import dataclasses
import math
import types
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

import msgpack
import numpy as np

from robot_rl.errors import ProtocolError, ProtocolVersionMismatch

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 1 << 20
"""Requests (client → server) larger than this are refused with an error reply (1 MiB)."""
MAX_MESSAGE_BYTES = 64 << 20
"""Hard cap set as ZMQ_MAXMSGSIZE: larger frames drop the connection without a reply."""
_MAX_ARRAYS = 64
_MAX_STR = 4096
_MAX_LIST = 256
_DTYPES = {"<f8": np.float64, "<f4": np.float32, "|u1": np.uint8, "<u2": np.uint16, "<i8": np.int64}


@dataclass(frozen=True)
class ArraySpec:
    """Declared dtype and shape of an array field; None in `shape` means any length."""

    dtype: str
    shape: tuple[int | None, ...]

    def matches(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(w is None or w == n for w, n in zip(self.shape, shape))


def F64(*shape: int | None) -> ArraySpec:
    return ArraySpec("<f8", shape)


_KINDS: dict[str, type] = {}


def _message(kind: str):
    def register(cls):
        cls.KIND = kind
        _KINDS[kind] = cls
        return cls
    return register


# ---- handshake ---------------------------------------------------------------------------------

Role = Literal["control", "monitor"]


@_message("hello")
@dataclass(frozen=True)
class Hello:
    """First request of every client. `control` clients may move the arm (the newest one wins);
    `monitor` clients only read state and frames and never feed the watchdog."""

    KIND: ClassVar[str]
    protocol_version: int
    client_name: str
    role: Role = "control"


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
    seq: int
    mode: Literal["delta", "absolute"]
    target: Annotated[np.ndarray, F64(None)]
    gripper_width_m: float | None = None
    """Gripper opening to command; None leaves it as it is. 0 closes (grasps)."""
    hold_s: float = 0.0
    """Reply after the arm has tracked the command this long (one env step: 1/step_hz)."""
    cameras: tuple[str, ...] = ()
    """Cameras whose newest frames the reply must carry."""
    t_send_ns: int = 0

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
    seq: int
    cameras: tuple[str, ...] = ()


@_message("reset")
@dataclass(frozen=True)
class Reset:
    """Reset motion (precision gains, lift, optional joint reset, move) and, on the twin, a scene
    re-randomization; replies with an `Observation` once the arm has settled at the reset pose."""

    KIND: ClassVar[str]
    seq: int
    pose: Annotated[np.ndarray, F64(7)] | None = None
    """Reset pose; None uses the task's reset pose."""
    randomize: bool = True
    """Add the task's reset-pose randomization."""
    joint_reset: bool = False
    seed: int | None = None
    """Seed of the pose and scene randomization (None: server-chosen)."""
    gripper_width_m: float | None = None
    """Gripper opening at the end of the reset (None: open)."""
    cameras: tuple[str, ...] = ()


@_message("clear_error")
@dataclass(frozen=True)
class ClearError:
    """Leave a safety reflex (and clear arm errors); replies with an Observation."""

    KIND: ClassVar[str]
    seq: int


@_message("set_params")
@dataclass(frozen=True)
class SetParams:
    """Change controller parameters. Each mapping uses the field names of the config dataclass:
    `gains` → ImpedanceGains, `workspace` → WorkspaceBox, `limits` → CommandLimits; omitted
    fields keep their current value. Replies `Ok` with the parameters now in force."""

    KIND: ClassVar[str]
    seq: int
    gains: dict[str, Any] | None = None
    workspace: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None


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
    """"hold", "track", "watchdog_hold", "moving" or "reflex"."""
    fault: str
    """Why the arm is in reflex ("" otherwise)."""
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


Request = Union[Hello, Command, GetObservation, Reset, ClearError, SetParams]
Reply = Union[Welcome, Observation, Ok, Error]
MESSAGE_KINDS = tuple(_KINDS)


# ---- encoding ----------------------------------------------------------------------------------


def encode(msg: object) -> list[bytes | memoryview]:
    """Frames of a message: header first, then one buffer per array (zero-copy views)."""
    kind = getattr(type(msg), "KIND", None)
    if kind is None:
        raise TypeError(f"{type(msg).__name__} is not a protocol message")
    arrays: list[np.ndarray] = []
    body = _pack(msg, arrays)
    header = msgpack.packb({"v": PROTOCOL_VERSION, "kind": kind, "body": body,
                            "arrays": [[a.dtype.str, list(a.shape)] for a in arrays]}, use_bin_type=True)
    return [header] + [memoryview(a).cast("B") for a in arrays]


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


_PLAIN = (int, float, str, bool, type(None))


def _pack(value: Any, arrays: list[np.ndarray]) -> Any:
    t = type(value)
    if t in _PLAIN:
        return value
    if t is np.ndarray:
        return _pack_array(value, arrays)
    names = _FIELD_NAMES.get(t)
    if names is None:
        if not dataclasses.is_dataclass(value):
            if isinstance(value, (list, tuple)):
                return [_pack(v, arrays) for v in value]
            if isinstance(value, dict):
                return {str(k): _pack(v, arrays) for k, v in value.items()}
            if isinstance(value, np.generic):
                return value.item()
            if isinstance(value, np.ndarray):
                return _pack_array(value, arrays)
            raise TypeError(f"cannot put {t.__name__} on the wire")
        names = _FIELD_NAMES[t] = tuple(f.name for f in dataclasses.fields(value))
    out = {}
    for n in names:  # inlined common cases: this runs for every field of every message
        v = getattr(value, n)
        tv = type(v)
        if tv in _PLAIN:
            out[n] = v
        elif tv is np.ndarray:
            out[n] = _pack_array(v, arrays)
        else:
            out[n] = _pack(v, arrays)
    return out


def _pack_array(a: np.ndarray, arrays: list[np.ndarray]) -> int:
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    if a.dtype.str not in _DTYPES:
        raise TypeError(f"dtype {a.dtype} cannot go on the wire; use one of {sorted(_DTYPES)}")
    arrays.append(a)
    return len(arrays) - 1


def decode(frames: list, *, max_bytes: int | None = None) -> object:
    """The message carried by `frames` (bytes, memoryviews or zmq.Frame objects).

    Raises:
        ProtocolError: size, header, version, kind, field, dtype, shape or non-finite problems;
            `code` names the class of problem and the message names the field.
    """
    if not frames:
        raise ProtocolError("empty message", code="bad_message")
    bufs = [f.buffer if hasattr(f, "buffer") else f for f in frames]
    if max_bytes is not None:
        total = sum(memoryview(b).nbytes for b in bufs)
        if total > max_bytes:
            raise ProtocolError(f"message of {total} bytes exceeds the {max_bytes}-byte request limit",
                                code="too_large")
    try:
        header = msgpack.unpackb(bufs[0], raw=False, strict_map_key=True, max_str_len=1 << 20,
                                 max_bin_len=1 << 20, max_array_len=1 << 16, max_map_len=1 << 12)
    except Exception as exc:  # msgpack raises many types on garbage
        raise ProtocolError(f"header is not valid msgpack ({type(exc).__name__}: {exc})", code="bad_header") from exc
    if not isinstance(header, dict) or len(header) != 4 or set(header) != _HEADER_KEYS:
        raise ProtocolError("header must be a map with exactly the keys v, kind, body, arrays", code="bad_header")
    if header["v"] != PROTOCOL_VERSION:
        raise ProtocolVersionMismatch(
            f"peer speaks protocol version {header['v']!r}, this side speaks {PROTOCOL_VERSION}: "
            "install the same robot_rl version on the robot PC and the learner")
    cls = _KINDS.get(header["kind"]) if isinstance(header["kind"], str) else None
    if cls is None:
        raise ProtocolError(f"unknown message kind {header['kind']!r}; known kinds: {list(_KINDS)}",
                            code="unknown_kind")
    ctx = _Ctx(_read_arrays(header["arrays"], bufs[1:]))
    msg = _decoder(cls)(header["body"], ctx, cls.KIND)
    if len(ctx.used) != len(ctx.arrays):
        raise ProtocolError(f"{len(ctx.arrays) - len(ctx.used)} array buffer(s) not referenced by any field",
                            code="bad_arrays")
    return msg


_HEADER_KEYS = {"v", "kind", "body", "arrays"}


class _Ctx:
    __slots__ = ("arrays", "used")

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = arrays
        self.used: set[int] = set()


def _read_arrays(table: Any, bufs: list) -> list[np.ndarray]:
    if type(table) is not list or len(table) != len(bufs) or len(table) > _MAX_ARRAYS:
        raise ProtocolError(f"array table lists {len(table) if isinstance(table, list) else '?'} arrays "
                            f"but {len(bufs)} buffer frames follow the header", code="bad_arrays")
    out = []
    for i, entry in enumerate(table):
        try:
            code, shape = entry
            dtype = _DTYPES[code]
            shape = tuple(shape)
            if len(shape) > 4 or (shape and min(shape) < 0):
                raise ValueError("bad shape")
            a = np.frombuffer(bufs[i], dtype=dtype).reshape(shape)
        except (ValueError, TypeError, KeyError) as exc:
            raise ProtocolError(f"array {i}: descriptor {entry!r} does not match its {memoryview(bufs[i]).nbytes}-byte "
                                f"frame ({exc}); dtypes allowed: {sorted(_DTYPES)}", code="bad_arrays") from exc
        out.append(a)
    return out


# Decoders are compiled once per declared type: a closure per field, so decoding a message costs
# a few dict lookups per field instead of re-reading type hints.
_Decoder = Any
_DECODERS: dict[Any, _Decoder] = {}


def _decoder(tp: Any) -> _Decoder:
    dec = _DECODERS.get(tp)
    if dec is None:
        dec = _DECODERS[tp] = _compile(tp)
    return dec


def _compile(tp: Any) -> _Decoder:  # noqa: C901 - one branch per supported type
    origin = get_origin(tp)
    if origin is Annotated:
        spec = get_args(tp)[1]
        return lambda v, ctx, where: _unpack_array(spec, v, ctx, where)
    if origin in (Union, types.UnionType):
        non_none = [a for a in get_args(tp) if a is not type(None)]
        nullable = len(non_none) < len(get_args(tp))
        inner = _decoder(non_none[0])

        def union(v: Any, ctx: _Ctx, where: str) -> Any:
            if v is None:
                if nullable:
                    return None
                raise ProtocolError(f"{_path(where)} must not be null", code="bad_field")
            return inner(v, ctx, where)
        return union
    if origin is Literal:
        allowed = get_args(tp)

        def literal(v: Any, ctx: _Ctx, where: str) -> Any:
            if not isinstance(v, str | int) or v not in allowed:
                raise ProtocolError(f"{_path(where)} must be one of {list(allowed)}, got {v!r}", code="bad_field")
            return v
        return literal
    if origin is tuple:
        item_type = get_args(tp)[0]
        inner = _decoder(item_type)
        # Lists of plain str/int (camera names, state layout) are checked in one pass.
        plain = item_type if item_type in (str, int) else None

        def tuple_(v: Any, ctx: _Ctx, where: str) -> Any:
            if type(v) is not list or len(v) > _MAX_LIST:
                raise ProtocolError(f"{_path(where)} must be a list of at most {_MAX_LIST} items", code="bad_field")
            if plain is not None and all(type(x) is plain for x in v):
                if plain is str and any(len(x) > _MAX_STR for x in v):
                    raise ProtocolError(f"{_path(where)} holds a string over {_MAX_STR} characters", code="bad_field")
                return tuple(v)
            return tuple(inner(x, ctx, (where, f"[{i}]")) for i, x in enumerate(v))
        return tuple_
    if origin is dict:
        inner = _decoder(get_args(tp)[1])

        def dict_(v: Any, ctx: _Ctx, where: str) -> Any:
            if not isinstance(v, dict) or len(v) > _MAX_LIST:
                raise ProtocolError(f"{_path(where)} must be a map of at most {_MAX_LIST} entries", code="bad_field")
            return {k: inner(x, ctx, (where, k)) for k, x in v.items()}
        return dict_
    if dataclasses.is_dataclass(tp):
        return _compile_dataclass(tp)
    if tp is Any:
        def any_(v: Any, ctx: _Ctx, where: str) -> Any:
            _check_plain(v, where, depth=0)
            return v
        return any_
    if tp in _SCALARS:
        return _SCALARS[tp]
    raise TypeError(f"unsupported protocol field type {tp}")  # pragma: no cover - declarations above


def _compile_dataclass(cls: type) -> _Decoder:
    hints = get_type_hints(cls, include_extras=True)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    plan = [(f.name, _decoder(hints[f.name]),
             f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING) for f in fields]
    names = {f.name for f in fields}

    def dataclass_(v: Any, ctx: _Ctx, where: str) -> Any:
        if type(v) is not dict:
            raise ProtocolError(f"{_path(where)} must be a map", code="bad_field")
        if len(v.keys() - names):
            raise ProtocolError(f"{_path(where)}: unknown field(s) {sorted(map(str, v.keys() - names))}", code="bad_field")
        kwargs = {}
        for name, dec, required in plan:
            if name in v:
                kwargs[name] = dec(v[name], ctx, (where, name))
            elif required:
                raise ProtocolError(f"{_path(where)}.{name} is missing", code="bad_field")
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"{_path(where)}: {exc}", code="bad_field") from exc
    return dataclass_


def _bool(v: Any, ctx: _Ctx, where: str) -> bool:
    if v is True or v is False:
        return v
    raise ProtocolError(f"{_path(where)} must be a bool, got {type(v).__name__}", code="bad_field")


def _int(v: Any, ctx: _Ctx, where: str) -> int:
    if type(v) is int:
        return v
    raise ProtocolError(f"{_path(where)} must be an integer, got {type(v).__name__}", code="bad_field")


def _float(v: Any, ctx: _Ctx, where: str) -> float:
    if type(v) is float:
        if math.isfinite(v):
            return v
        raise ProtocolError(f"{_path(where)} is {v}: NaN and inf are refused", code="non_finite")
    if type(v) is int:
        return float(v)
    raise ProtocolError(f"{_path(where)} must be a number, got {type(v).__name__}", code="bad_field")


def _str(v: Any, ctx: _Ctx, where: str) -> str:
    if type(v) is str and len(v) <= _MAX_STR:
        return v
    raise ProtocolError(f"{_path(where)} must be a string of at most {_MAX_STR} characters", code="bad_field")


_SCALARS = {bool: _bool, int: _int, float: _float, str: _str}


def _unpack_array(spec: ArraySpec, index: Any, ctx: _Ctx, where: str) -> np.ndarray:
    if type(index) is not int or not 0 <= index < len(ctx.arrays) or index in ctx.used:
        raise ProtocolError(f"{_path(where)} must reference an unused array buffer, got {index!r}", code="bad_arrays")
    ctx.used.add(index)
    a = ctx.arrays[index]
    if a.dtype.str != spec.dtype:
        raise ProtocolError(f"{_path(where)} must have dtype {np.dtype(spec.dtype)}, got {a.dtype}", code="bad_dtype")
    if a.shape != spec.shape and not spec.matches(a.shape):
        want = tuple("any" if w is None else w for w in spec.shape)
        raise ProtocolError(f"{_path(where)} must have shape {want}, got {a.shape}", code="bad_shape")
    # sum() propagates NaN and inf in half the time of isfinite().all(); a sum that overflows
    # (entries near 1e308) is refused too: no robot quantity is that large.
    if spec.dtype[1] == "f" and not math.isfinite(a.sum()):
        raise ProtocolError(f"{_path(where)} contains NaN, inf or absurdly large values", code="non_finite")
    return a


def _path(where: Any) -> str:
    """Dotted field path from the nested (parent, name) tuples built while decoding."""
    parts = []
    while isinstance(where, tuple):
        where, name = where
        parts.append(name if name.startswith("[") else "." + name)
    return where + "".join(reversed(parts))


def _check_plain(value: Any, where: Any, depth: int) -> None:
    """Free-form values (set_params mappings): numbers, strings, bools, lists and maps only."""
    if depth > 4:
        raise ProtocolError(f"{_path(where)} is nested too deeply", code="bad_field")
    if isinstance(value, float) and not math.isfinite(value):
        raise ProtocolError(f"{_path(where)} is {value}: NaN and inf are refused", code="non_finite")
    if isinstance(value, (list, tuple)):
        if len(value) > _MAX_LIST:
            raise ProtocolError(f"{_path(where)} has more than {_MAX_LIST} items", code="bad_field")
        for i, v in enumerate(value):
            _check_plain(v, (where, f"[{i}]"), depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_plain(v, (where, str(k)), depth + 1)
    elif not isinstance(value, (int, float, str, bool, type(None))):
        raise ProtocolError(f"{_path(where)} has unsupported type {type(value).__name__}", code="bad_field")
