"""Wire protocol: round trips of every message kind and refusal of every kind of bad input."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest

from robot_rl.bridge import protocol as P
from robot_rl.errors import ProtocolError, ProtocolVersionMismatch


def state() -> P.RobotState:
    names = ("q", "dq", "pose", "twist", "wrench", "gripper_width", "target", "priv.success")
    sizes = (7, 7, 7, 6, 6, 1, 7, 1)
    return P.RobotState(1, 2, "track", "", 3, False, 0, names, sizes, np.arange(sum(sizes), dtype=np.float64))


MESSAGES = [
    P.Hello(P.PROTOCOL_VERSION, "learner", "monitor"),
    P.Hello(P.PROTOCOL_VERSION, "actor", "control", True),
    P.Welcome(P.PROTOCOL_VERSION, "pc", "twin", "pick_cube", "sim", False, 0.2, 7, 0.08,
              (P.CameraInfo("wrist", 128, 128),), ("success",), np.zeros(3), np.ones(3), 123, "tcp://x:1"),
    P.Command(5, "delta", np.array([0.01, 0, 0, 0, 0, 0.1]), 0.02, 0.1, ("wrist", "front"), 99),
    P.Command(6, "absolute", np.array([0.5, 0, 0.2, 0, 1, 0, 0]), None, 0.0, (), 0),
    P.GetObservation(7, ("wrist",)),
    P.Reset(8, np.array([0.5, 0, 0.2, 0, 1, 0, 0]), True, True, 3, 0.02, ()),
    P.Reset(9),
    P.ClearError(10),
    P.RestartControl(16),
    P.Bye(17),
    P.SetParams(11, {"stiffness_trans_n_per_m": [1000, 1000, 1000]}, None, {"watchdog_s": 0.3}),
    P.Observation(12, state(), (P.CameraFrame("wrist", 4, 5, 6, np.full((8, 6, 3), 7, np.uint8)),), 13),
    P.Ok(14, "fine", {"a": [1, 2]}),
    P.Error(15, "bad_field", "command.target must have shape (6,)"),
]


def same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if hasattr(a, "__dataclass_fields__"):
        return type(a) is type(b) and all(same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    frames = [bytes(f) for f in P.encode(msg)]
    assert same(P.decode(frames), msg)


def test_every_kind_is_covered():
    assert {type(m).KIND for m in MESSAGES} == set(P.MESSAGE_KINDS)


def test_state_accessors():
    s = state()
    np.testing.assert_array_equal(s.pose_base_tcp, np.arange(14, 21))
    assert list(s.privileged) == ["success"] and s.privileged["success"].tolist() == [41.0]
    assert s.gripper_width_m == 33.0


def test_images_are_raw_buffers_not_pickles():
    img = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    frames = P.encode(P.Observation(1, state(), (P.CameraFrame("wrist", 1, 1, 1, img),)))
    assert any(bytes(f) == img.tobytes() for f in frames[1:])
    header = msgpack.unpackb(bytes(frames[0]))
    assert set(header) == {"v", "kind", "body", "arrays"}


def _header(kind="command", body=None, arrays=None, v=P.PROTOCOL_VERSION) -> bytes:
    return msgpack.packb({"v": v, "kind": kind, "body": body if body is not None else
                          {"seq": 1, "mode": "delta", "target": 0}, "arrays": arrays if arrays is not None else
                          [["<f8", [6]]]})


GOOD_BUF = np.zeros(6).tobytes()


@pytest.mark.parametrize("frames,code,words", [
    ([b"\xc1garbage"], "bad_header", "not valid msgpack"),
    ([b""], "bad_header", "not valid msgpack"),
    ([msgpack.packb([1, 2, 3])], "bad_header", "must be a map"),
    ([_header(kind="launch_missiles"), GOOD_BUF], "unknown_kind", "unknown message kind 'launch_missiles'"),
    ([_header(kind=5), GOOD_BUF], "unknown_kind", "unknown message kind 5"),
    ([_header(), np.zeros(6, np.float32).tobytes()], "bad_arrays", "does not match its 24-byte frame"),
    ([_header(arrays=[["<f4", [6]]]), np.zeros(6, np.float32).tobytes()], "bad_dtype",
     "target must have dtype float64, got float32"),
    ([_header(arrays=[["<f8", [7]]]), np.zeros(7).tobytes()], "bad_field", r"must have shape \(6,\), got \(7,\)"),
    ([_header(arrays=[["<f8", [2, 3]]]), GOOD_BUF], "bad_shape", r"target must have shape .*got \(2, 3\)"),
    ([_header(arrays=[["|O", [6]]]), GOOD_BUF], "bad_arrays", r"descriptor \['\|O'"),
    ([_header(arrays=[["<f8", [-6]]]), GOOD_BUF], "bad_arrays", r"descriptor \['<f8', \[-6\]\]"),
    ([_header(), np.array([0, math.nan, 0, 0, 0, 0]).tobytes()], "non_finite", "target contains NaN"),
    ([_header(), np.array([0, 0, 0, math.inf, 0, 0]).tobytes()], "non_finite", "target contains NaN, inf"),
    ([_header(body={"seq": 1, "mode": "delta", "target": 0, "hold_s": math.nan}), GOOD_BUF], "non_finite",
     "hold_s is nan"),
    ([_header(body={"seq": "1", "mode": "delta", "target": 0}), GOOD_BUF], "bad_field",
     "seq must be an integer, got str"),
    ([_header(body={"seq": True, "mode": "delta", "target": 0}), GOOD_BUF], "bad_field",
     "seq must be an integer, got bool"),
    ([_header(body={"seq": 1, "mode": "sideways", "target": 0}), GOOD_BUF], "bad_field", "mode .*got 'sideways'"),
    ([_header(body={"seq": 1, "mode": "delta"}), GOOD_BUF], "bad_field", "target is missing"),
    ([_header(body={"seq": 1, "mode": "delta", "target": 0, "evil": 1}), GOOD_BUF], "bad_field",
     r"unknown field\(s\) \['evil'\]"),
    ([_header(body={"seq": 1, "mode": "delta", "target": 1}), GOOD_BUF], "bad_arrays", "unused array buffer, got 1"),
    ([_header(), GOOD_BUF, GOOD_BUF], "bad_arrays", "1 arrays but 2 buffer frames"),
    ([_header(arrays=[["<f8", [6]], ["<f8", [6]]]), GOOD_BUF, GOOD_BUF], "bad_arrays", "not referenced by any field"),
    ([_header(body={"seq": 1, "mode": "delta", "target": 0, "hold_s": -1.0}), GOOD_BUF], "bad_field",
     "hold_s must be ≥ 0, got -1.0"),
    ([_header(body={"seq": 1, "mode": "delta", "target": 0, "cameras": ["x" * 5000]}), GOOD_BUF], "bad_field",
     "cameras holds a string over 4096 characters"),
    ([_header(kind="set_params", body={"seq": 1, "gains": {"k": [math.inf]}}, arrays=[])], "non_finite",
     r"gains\.k\[0\] is inf"),
    ([_header(kind="set_params", body={"seq": 1, "gains": {"k": {"a": {"b": {"c": {"d": {"e": 1}}}}}}},
              arrays=[])], "bad_field", "nested too deeply"),
])
def test_bad_input_refused_with_code(frames, code, words):
    with pytest.raises(ProtocolError, match=words) as err:  # the message says what was wrong
        P.decode(frames, max_bytes=P.MAX_REQUEST_BYTES)
    assert err.value.code == code


def test_version_mismatch_is_its_own_error():
    with pytest.raises(ProtocolVersionMismatch, match="protocol version 99"):
        P.decode([_header(v=99), GOOD_BUF])


def test_oversized_request_refused():
    big = np.zeros((2 << 20) // 8).tobytes()  # 2 MiB
    with pytest.raises(ProtocolError, match="exceeds") as err:
        P.decode([_header(), big], max_bytes=P.MAX_REQUEST_BYTES)
    assert err.value.code == "too_large"


def test_fuzzed_headers_never_crash_the_decoder():
    rng = np.random.default_rng(0)
    valid = [bytes(f) for f in P.encode(MESSAGES[2])]
    for _ in range(3000):
        frames = list(valid)
        i = int(rng.integers(len(frames)))
        buf = bytearray(frames[i])
        for _ in range(int(rng.integers(1, 4))):
            if buf:
                buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
        frames[i] = bytes(buf)
        try:
            P.decode(frames, max_bytes=P.MAX_REQUEST_BYTES)
        except ProtocolError:
            pass  # refused with a typed error: fine. Any other exception fails the test.


def _raw(kind: str, body: dict, arrays: list | None = None, bufs: list[bytes] | None = None) -> list[bytes]:
    return [msgpack.packb({"v": P.PROTOCOL_VERSION, "kind": kind, "body": body, "arrays": arrays or []}),
            *(bufs or [])]


INT_EDGES = [2**63, 2**64 - 1, -1]
"""Out of range for a request's integers (msgpack cannot carry 2^64 itself: 2^64 − 1 is its largest)."""


@pytest.mark.parametrize("value", INT_EDGES)
@pytest.mark.parametrize("kind,field", [("command", "seq"), ("command", "t_send_ns"), ("get_observation", "seq"),
                                        ("reset", "seq"), ("reset", "seed"), ("clear_error", "seq"),
                                        ("set_params", "seq"), ("restart_control", "seq"), ("bye", "seq"),
                                        ("hello", "protocol_version")])
def test_integer_fields_are_range_checked_at_decode(kind, field, value):
    if field == "protocol_version" and value == -1:
        pytest.skip("-1 fits int64: a version mismatch, answered by the server")
    body = {"hello": {"protocol_version": P.PROTOCOL_VERSION, "client_name": "x"},
            "command": {"seq": 1, "mode": "delta", "target": 0}}.get(kind, {"seq": 1})
    body = dict(body, **{field: value})
    arrays = [["<f8", [6]]] if kind == "command" else []
    bufs = [np.zeros(6).tobytes()] if kind == "command" else []
    with pytest.raises(ProtocolError) as err:
        P.decode(_raw(kind, body, arrays, bufs))
    assert err.value.code == "bad_field" and field in str(err.value)


def test_largest_valid_integers_pass():
    top = 2**63 - 1
    msg = P.decode([bytes(f) for f in P.encode(P.Reset(top, seed=top))])
    assert msg.seq == top and msg.seed == top
    assert P.decode(_raw("set_params", {"seq": 1, "limits": {"watchdog_s": top}})).limits == {"watchdog_s": top}
    with pytest.raises(ProtocolError, match="int64"):
        P.decode(_raw("set_params", {"seq": 1, "limits": {"watchdog_s": 2**63}}))


@pytest.mark.parametrize("quat", [[0, 0, 0, 0], [1e-310, 0, 0, 0], [1e200, 1e200, 0, 0], [2, 0, 0, 0]])
def test_reset_pose_needs_a_unit_quaternion(quat):
    frames = _raw("reset", {"seq": 1, "pose": 0}, [["<f8", [7]]], [np.array([0.5, 0, 0.2, *quat]).tobytes()])
    with pytest.raises(ProtocolError, match="reset pose quaternion must be unit length") as err:
        P.decode(frames)
    assert err.value.code == "bad_quaternion"


@pytest.mark.parametrize("width", [-0.01, 1.5, 1e300])
def test_reset_gripper_width_is_range_checked(width):
    with pytest.raises(ProtocolError) as err:
        P.decode(_raw("reset", {"seq": 1, "gripper_width_m": width}))
    assert err.value.code == "bad_field" and "gripper_width_m" in str(err.value)


@pytest.mark.parametrize("seed", [-1, 2**63])
def test_reset_seed_range_holds_for_requests_built_in_process(seed):
    with pytest.raises(ValueError, match="seed"):
        P.Reset(1, seed=seed)
