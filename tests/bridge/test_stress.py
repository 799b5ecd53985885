"""10 000 random and adversarial messages against a real-time twin server in its own process.

The server must stay up, answer every bad message with an error, keep the TCP inside the
workspace box and the contact force within the configured bound, and end with the task file's
limits in force, whatever the stream holds: integers beyond int64, bad seeds, duplicate cameras,
attempts to widen limits and to take control from a second connection included.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import msgpack
import numpy as np
import pytest
import zmq

from robot_rl.bridge import protocol as P
from robot_rl.config import to_dict
from robot_rl.errors import BridgeRemoteError, BridgeTimeout
from robot_rl.task_spec import load_task

N_MESSAGES = 10_000
BOX_TOL_M = 0.005
"""The arm tracks a box-clipped target with a compliant controller: allow it 5 mm of overshoot."""


def _raw_command(seq: int, body: dict, arrays: list, bufs: list[bytes]) -> list[bytes]:
    base = {"seq": seq, "mode": "delta", "target": 0}
    base.update(body)
    return [msgpack.packb({"v": P.PROTOCOL_VERSION, "kind": "command", "body": base, "arrays": arrays}), *bufs]


RESET_AT = (1000, 2000)
"""Messages replaced by a valid reset (seed 0 as at the start: the cube under the arm again)."""
INT_EDGES = (2**63, 2**64 - 1, -1)
"""msgpack's integers reach 2^64 − 1: 2^64 itself cannot be sent."""
WIDENINGS = ({"workspace": {"max_m": [5.0, 5.0, 5.0]}}, {"workspace": {"min_m": [-5.0, -5.0, -5.0]}},
             {"workspace": {"rot_bound_rad": [3.0, 3.0, 3.0]}}, {"limits": {"max_contact_force_n": 500.0}},
             {"limits": {"watchdog_s": 10.0}}, {"limits": {"max_step_m": 0.3}}, {"limits": {"max_hold_s": 10.0}})


def make_hardening_message(rng: np.random.Generator, seq: int) -> tuple[str, list[bytes]]:
    """Messages of the robot-PC hardening issue; every one must be refused."""
    enc = lambda msg: [bytes(f) for f in P.encode(msg)]
    edge = INT_EDGES[int(rng.integers(len(INT_EDGES)))]
    r = rng.random()
    if r < 0.35:
        kind, field = [("command", "seq"), ("command", "t_send_ns"), ("get_observation", "seq"), ("reset", "seq"),
                       ("clear_error", "seq"), ("set_params", "seq"), ("restart_control", "seq")][int(rng.integers(7))]
        if kind == "command":
            return "int_edge!", _raw_command(seq, {field: edge}, [["<f8", [6]]], [np.zeros(6).tobytes()])
        return "int_edge!", [msgpack.packb({"v": P.PROTOCOL_VERSION, "kind": kind, "body": {field: edge},
                                            "arrays": []})]
    if r < 0.55:
        seed = (-5, -1, 2**63, 2**64 - 1)[int(rng.integers(4))]
        body = {"seq": seq, "seed": seed, "randomize": bool(rng.random() < 0.5)}
        return "bad_seed!", [msgpack.packb({"v": P.PROTOCOL_VERSION, "kind": "reset", "body": body, "arrays": []})]
    if r < 0.75:
        cams = ("wrist",) * int(rng.integers(2, 257)) if rng.random() < 0.5 else ("front", "wrist", "front")
        if rng.random() < 0.5:
            return "dup_cameras!", enc(P.GetObservation(seq, cams))
        return "dup_cameras!", enc(P.Command(seq, "delta", np.zeros(6), cameras=cams))
    return "widen!", enc(P.SetParams(seq, **WIDENINGS[int(rng.integers(len(WIDENINGS)))]))


BACKENDS = ["twin", "franka-double", "ur-double"]
"""The twin, and the Franka and UR backends through their vendor-API doubles: every limit holds on each."""


def make_message(rng: np.random.Generator, seq: int, pose: np.ndarray, box) -> tuple[str, list[bytes]]:
    """(category, frames); categories ending in '!' must be refused."""
    enc = lambda msg: [bytes(f) for f in P.encode(msg)]
    r = rng.random()
    if r < 0.08:
        return make_hardening_message(rng, seq)
    if r < 0.09:
        return "takeover!", enc(P.Hello(P.PROTOCOL_VERSION, "intruder", "control"))
    r = rng.random()
    if r < 0.33:
        d = rng.normal(size=6) * [0.02, 0.02, 0.02, 0.05, 0.05, 0.1]
        d[:3] *= min(1.0, 0.045 / max(np.linalg.norm(d[:3]), 1e-9))
        d[3:] *= min(1.0, 0.3 / max(np.linalg.norm(d[3:]), 1e-9))
        return "delta", enc(P.Command(seq, "delta", d, float(rng.choice([0.0, 0.08])) if rng.random() < 0.3 else None))
    if r < 0.43:
        return "push_down", enc(P.Command(seq, "delta", np.array([0, 0, -0.045, 0, 0, 0.0])))
    if r < 0.48:
        target = pose.copy()
        target[:3] = np.clip(target[:3] + rng.uniform(-0.02, 0.02, 3), box.min_m, box.max_m)
        return "absolute", enc(P.Command(seq, "absolute", target))
    if r < 0.50:
        return "observe", enc(P.GetObservation(seq, ("wrist",)))
    if r < 0.58:
        d = np.zeros(6)
        d[int(rng.integers(6))] = rng.choice([-1, 1]) * 10 ** rng.uniform(-0.35, 3)  # beyond 0.05 m and 0.35 rad
        return "huge_step!", enc(P.Command(seq, "delta", d))
    if r < 0.66:
        d = np.zeros(6)
        d[int(rng.integers(6))] = rng.choice([math.nan, math.inf, -math.inf])
        return "non_finite!", _raw_command(seq, {}, [["<f8", [6]]], [d.tobytes()])
    if r < 0.73:
        target = pose.copy()
        axis = int(rng.integers(3))
        target[axis] = (box.max_m[axis] + rng.uniform(0.01, 1.0)) if rng.random() < 0.5 else (
            box.min_m[axis] - rng.uniform(0.01, 1.0))
        return "out_of_box!", enc(P.Command(seq, "absolute", target))
    if r < 0.76:
        target = pose.copy()
        target[:3] = np.array(box.max_m) if np.linalg.norm(pose[:3] - box.max_m) > 0.1 else np.array(box.min_m)
        return "far_absolute!", enc(P.Command(seq, "absolute", target))
    if r < 0.84:
        return "garbage!", [rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
                            for _ in range(int(rng.integers(1, 4)))]
    if r < 0.89:
        shape = [[6], [7], [2, 3], [0]][int(rng.integers(4))]
        dtype = str(rng.choice(["<f4", "<i8", "|u1"]))
        n = int(np.prod(shape)) * {"<f4": 4, "<i8": 8, "|u1": 1}[dtype]
        if shape == [6] and dtype == "<f4":
            shape = [3, 2]
        return "bad_array!", _raw_command(seq, {}, [[dtype, shape]], [bytes(n)])
    if r < 0.92:
        kind = rng.choice(["teleport", "observation", "welcome", "", "error"])
        return "bad_kind!", [msgpack.packb({"v": P.PROTOCOL_VERSION, "kind": str(kind), "body": {"seq": seq},
                                            "arrays": []})]
    if r < 0.95:
        q = pose.copy()
        q[3:] = rng.normal(size=4) * 3
        return "bad_quaternion!", enc(P.Command(seq, "absolute", q))
    if r < 0.96:
        return "oversized!", _raw_command(seq, {}, [["<f8", [6]]], [np.zeros(6).tobytes(), bytes(1 << 20)])
    if r < 0.98:
        return "bad_field!", _raw_command(seq, {"hold_s": -1.0 if rng.random() < 0.5 else "soon"},
                                          [["<f8", [6]]], [np.zeros(6).tobytes()])
    return "unknown_camera!", enc(P.Command(seq, "delta", np.zeros(6), cameras=("thermal",)))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_ten_thousand_adversarial_messages(serve_process, backend):
    task = load_task("pick_cube")
    box = task.workspace
    server = serve_process("--task", "pick_cube", "--pace", "realtime", "--backend", backend,
                           env={"ROBOT_RL_LOG": "INFO"})
    client = server.client(timeout_s=10.0)
    try:
        client.reset(seed=0)
    except BridgeRemoteError:  # a reflex at start-up (the Franka double's missed packets on a stalled VM)
        client.clear_error()
        client.reset(seed=0)
    rng = np.random.default_rng(1234)
    pose = client.observe().state.pose_base_tcp.copy()
    answered = Counter()
    refused_valid = Counter()
    slowest = (0.0, -1, "")
    intruder = zmq.Context.instance().socket(zmq.DEALER)  # a second process trying to take the arm
    intruder.setsockopt(zmq.LINGER, 0)
    intruder.connect(server.address)
    # Resets restart the twin's trackers (peak force, TCP extremes): fold them in as they come.
    seen = {"peak_contact_force_n": 0.0, "tcp_min_m": np.full(3, np.inf), "tcp_max_m": np.full(3, -np.inf)}

    def fold(priv: dict) -> None:
        seen["peak_contact_force_n"] = max(seen["peak_contact_force_n"], float(priv["peak_contact_force_n"][0]))
        seen["tcp_min_m"] = np.minimum(seen["tcp_min_m"], priv["tcp_min_m"])
        seen["tcp_max_m"] = np.maximum(seen["tcp_max_m"], priv["tcp_max_m"])

    modes = Counter()
    stalls = 0
    for i in range(N_MESSAGES):
        category, frames = make_message(rng, 1000 + i, pose, box)
        if i in RESET_AT:  # early, so the long stretch after the last one still reaches the table
            category, frames = "reset", [bytes(f) for f in P.encode(P.Reset(1000 + i, seed=0))]
        if category == "reset":
            fold(client.observe().state.privileged)
        t0 = time.monotonic()
        try:
            if category == "takeover!":
                intruder.send_multipart(frames)
                if not intruder.poll(10_000):
                    raise BridgeTimeout("no reply to a takeover attempt in 10 s")
                reply = P.decode(intruder.recv_multipart())
            else:
                reply = client.send_raw(frames)
        except BridgeTimeout as exc:
            raise AssertionError(f"message {i} ({category}) got no reply; server log:\n{server.output()[-3000:]}") from exc
        if category == "takeover!":
            assert isinstance(reply, P.Error) and reply.code == "control_held", reply
        slowest = max(slowest, (time.monotonic() - t0, i, category))
        if category.endswith("!"):
            assert isinstance(reply, P.Error), f"message {i} ({category}) was not refused: {reply}"
            assert reply.message
            answered[category] += 1
        else:
            if isinstance(reply, P.Error):
                stops = ([line for line in server.output().splitlines() if "stopped (REFLEX)" in line]
                         if reply.code == "reflex_active" else [])
                if stops and all("communication_constraints_violation" in line for line in stops):
                    # This shared VM stalled the control process for ≥ 20 packets: the Franka
                    # double stops as a Franka would. A machine fault, not a limit: clear and go on.
                    stalls += 1
                    client.clear_error()
                else:
                    refused_valid[reply.code] += 1
            else:
                assert isinstance(reply, P.Observation)
                pose = reply.state.pose_base_tcp.copy()
                fold(reply.state.privileged)
                modes[reply.state.mode] += 1
                answered[category] += 1
        if i % 2500 == 2499:
            priv = client.observe().state.privileged
            assert np.all(priv["tcp_min_m"] >= np.array(box.min_m) - BOX_TOL_M), priv["tcp_min_m"]
            assert np.all(priv["tcp_max_m"] <= np.array(box.max_m) + BOX_TOL_M), priv["tcp_max_m"]
    assert server.alive()
    state = client.observe().state
    fold(state.privileged)
    priv = {k: np.atleast_1d(v) for k, v in seen.items()}
    assert sum(answered.values()) + sum(refused_valid.values()) + stalls == N_MESSAGES
    assert stalls <= 20, f"{stalls} missed-packet stops: this machine cannot keep a 1 kHz loop"
    assert not refused_valid, f"valid commands were refused: {refused_valid}; server log:\n{server.output()[-2000:]}"
    assert state.mode != "reflex"
    assert np.all(priv["tcp_min_m"] >= np.array(box.min_m) - BOX_TOL_M)
    assert np.all(priv["tcp_max_m"] <= np.array(box.max_m) + BOX_TOL_M)
    assert priv["peak_contact_force_n"][0] <= task.limits.max_contact_force_n
    assert priv["peak_contact_force_n"][0] > 1.0, (seen, dict(answered), dict(modes))  # the stream did push the arm into contact
    assert answered["push_down"] > 500 and sum(v for k, v in answered.items() if k.endswith("!")) > 4000
    for category in ("int_edge!", "bad_seed!", "dup_cameras!", "widen!", "takeover!"):
        assert answered[category] > 20, (category, dict(answered))
    in_force = client.set_params()  # nothing widened the task file's limits
    assert in_force["workspace"] == to_dict(box) and in_force["limits"] == to_dict(task.limits)
    intruder.close()
    print(f"\n{dict(answered)}; peak contact force {priv['peak_contact_force_n'][0]:.1f} N "
          f"(bound {task.limits.max_contact_force_n} N); TCP min {priv['tcp_min_m'].round(4)}, "
          f"max {priv['tcp_max_m'].round(4)}; slowest reply {slowest[0] * 1e3:.1f} ms (message {slowest[1]}, "
          f"{slowest[2]}); missed-packet stops cleared: {stalls}")
    client.close()
    print(f"server log: {len(server.output())} bytes")
