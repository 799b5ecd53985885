"""Generic wire codec: frozen dataclasses to a msgpack header plus raw array buffers, and back,
with every field checked against its declared type. No pickle: the decoder only ever builds the
dataclasses it is given. A `MessageRegistry` maps one protocol's message kinds to dataclasses:
`bridge/protocol.py` (robot bridge) and `learning/wire.py` (actor ↔ learner) each declare theirs in one.
"""

from __future__ import annotations

import dataclasses
import math
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import msgpack
import numpy as np

from robot_rl.errors import ProtocolError, ProtocolVersionMismatch

_MAX_ARRAYS = 64
_MAX_STR = 4096
_MAX_LIST = 256
_DTYPES = {"<f8": np.float64, "<f4": np.float32, "|u1": np.uint8, "<u2": np.uint16, "<i8": np.int64}


@dataclass(frozen=True)
class ArraySpec:
    """Declared dtype and shape of an array field; None in `shape` means any length, and
    `shape=None` means any shape (up to 4 dimensions)."""

    dtype: str
    shape: tuple[int | None, ...] | None

    def matches(self, shape: tuple[int, ...]) -> bool:
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(w is None or w == n for w, n in zip(self.shape, shape))


def F64(*shape: int | None) -> ArraySpec:
    return ArraySpec("<f8", shape)


INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class IntRange:
    """Declared range of an integer field, checked at decode time (`Annotated[int, IntRange(0, 9)]`).
    Every integer field is at least checked to fit in int64: the robot PC stores them in int64
    snapshots and hands seeds to numpy, and a value that does not fit must be refused on arrival,
    not fail where it is first used."""

    lo: int = INT64_MIN
    hi: int = INT64_MAX


class MessageRegistry:
    """The message kinds of one wire protocol (at one version), shared by every protocol built on
    this codec (`bridge/protocol.py`, `learning/wire.py`): register each message dataclass with
    `@registry.message("kind")` (which also sets its `KIND`), then `encode` / `decode` messages.
    Decoding builds only registered classes and refuses any other kind with `unknown_kind`."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.kinds: dict[str, type] = {}

    def message(self, kind: str):
        """Class decorator: register the dataclass under `kind` and set its `KIND`."""
        def register(cls: type) -> type:
            if kind in self.kinds:
                raise ValueError(f"message kind {kind!r} is already registered to {self.kinds[kind].__name__}")
            cls.KIND = kind
            self.kinds[kind] = cls
            return cls
        return register

    def encode(self, msg: object) -> list[bytes | memoryview]:
        """Frames of a registered message: msgpack header, then one raw buffer per array."""
        kind = getattr(type(msg), "KIND", None)
        if kind is None or self.kinds.get(kind) is not type(msg):
            raise TypeError(f"{type(msg).__name__} is not a protocol message")
        return encode_frames(msg, kind, self.version)

    def decode(self, frames: list, *, max_bytes: int | None = None) -> object:
        """The registered message carried by `frames`; see `decode_frames` for what is refused."""
        return decode_frames(frames, self.kinds, self.version, max_bytes=max_bytes)


def encode_frames(msg: object, kind: str, version: int) -> list[bytes | memoryview]:
    """Frames of a dataclass message: header first, then one buffer per array (zero-copy views)."""
    arrays: list[np.ndarray] = []
    body = _pack(msg, arrays)
    header = msgpack.packb({"v": version, "kind": kind, "body": body,
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


def decode_frames(frames: list, kinds: dict[str, type], version: int, *, max_bytes: int | None = None) -> object:
    """The message carried by `frames` (bytes, memoryviews or zmq.Frame objects), one of `kinds`.

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
    if header["v"] != version:
        raise ProtocolVersionMismatch(
            f"peer speaks protocol version {header['v']!r}, this side speaks {version}: "
            "install the same robot_rl version on the robot PC and the learner")
    cls = kinds.get(header["kind"]) if isinstance(header["kind"], str) else None
    if cls is None:
        raise ProtocolError(f"unknown message kind {header['kind']!r}; known kinds: {list(kinds)}",
                            code="unknown_kind")
    ctx = _Ctx(_read_arrays(header["arrays"], bufs[1:]))
    msg = _decoder(cls)(header["body"], ctx, header["kind"])
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


def _compile(tp: Any) -> _Decoder:
    origin = get_origin(tp)
    if origin is Annotated:
        spec = get_args(tp)[1]
        if isinstance(spec, IntRange):
            return lambda v, ctx, where: _int_in(v, where, spec.lo, spec.hi)
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
                if plain is int and any(not INT64_MIN <= x <= INT64_MAX for x in v):
                    raise ProtocolError(f"{_path(where)} holds an integer outside int64", code="bad_field")
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
    return _int_in(v, where, INT64_MIN, INT64_MAX)


def _int_in(v: Any, where: Any, lo: int, hi: int) -> int:
    if type(v) is int:
        if lo <= v <= hi:
            return v
        raise ProtocolError(f"{_path(where)} = {v} is outside [{lo}, {hi}]", code="bad_field")
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
        want = tuple("any" if w is None else w for w in spec.shape or ())
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
    if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
        raise ProtocolError(f"{_path(where)} = {value} does not fit in int64", code="bad_field")
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
