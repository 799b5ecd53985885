"""Request flooder for `robot-rl bench bridge --flood`: a separate process that sends a paced stream
of garbage and valid requests to a bridge server's request socket, as a misbehaving process on the
robot PC would, and never reads the replies.

    python -m robot_rl.bench.flood tcp://127.0.0.1:5555 --rate-per-s 8000 --duration-s 10

It prints one JSON line `{"event": "flooding", ...}` once its first messages are out, and a last
one `{"event": "done", "sent": …, "sent_per_s": …}` when it stops: after `--duration-s`, on
SIGTERM/SIGINT, or when its parent process dies. Loopback addresses only.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import time
from dataclasses import dataclass

import msgpack
import numpy as np
import zmq

from robot_rl.bridge import protocol as P

MIX = (("garbage", 0.25), ("bad_header", 0.20), ("hello_monitor", 0.05), ("observe", 0.20),
       ("observe_cameras", 0.10), ("command_no_hello", 0.20))
"""Share of each kind of message in the flood. Garbage and bad headers go out on an anonymous
socket, hello and get_observation on a monitor socket, commands on a socket that never said hello."""
_LOOPBACK = ("tcp://127.0.0.1:", "tcp://localhost:", "tcp://[::1]:", "ipc://", "inproc://")


@dataclass(frozen=True)
class FloodConfig:
    address: str
    """The server's request socket (loopback only)."""
    rate_per_s: float = 8000.0
    duration_s: float = 10.0
    """Stop by itself after this long."""
    cameras: tuple[str, ...] = ()
    """Cameras the `observe_cameras` requests ask for (the server's camera names)."""
    seed: int = 0


def _pool(rng: np.random.Generator, kind: str, cameras: tuple[str, ...], n: int) -> list[list[bytes]]:
    """n pre-encoded messages of one kind (encoding them at 8 000/s would cost the flooder more
    than sending them)."""
    enc = lambda msg: [bytes(f) for f in P.encode(msg)]
    out = []
    for i in range(n):
        seq = 1 + i
        if kind == "garbage":
            out.append([rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
                        for _ in range(int(rng.integers(1, 4)))])
        elif kind == "bad_header":
            good = msgpack.packb({"v": P.PROTOCOL_VERSION, "kind": "command",
                                  "body": {"seq": seq, "mode": "delta", "target": 0}, "arrays": [["<f8", [6]]]})
            variants = [
                good[: int(rng.integers(1, len(good)))],  # truncated msgpack
                msgpack.packb([1, 2, 3]),  # not a map
                msgpack.packb({"v": 99, "kind": "command", "body": {}, "arrays": []}),  # wrong version
                msgpack.packb({"v": P.PROTOCOL_VERSION, "kind": "command", "body": {"seq": "x"}, "arrays": []}),
                msgpack.packb({"v": P.PROTOCOL_VERSION, "kind": "get_observation", "body": {"seq": seq},
                               "arrays": [["<f8", [1 << 20]]]}),  # array declared, no buffer
                b"\xc1" * int(rng.integers(1, 64)),  # never-used msgpack byte
            ]
            out.append([variants[i % len(variants)]] + ([bytes(48)] if i % 3 == 0 else []))
        elif kind == "hello_monitor":
            out.append(enc(P.Hello(P.PROTOCOL_VERSION, "flood", "monitor")))
        elif kind == "observe":
            out.append(enc(P.GetObservation(seq, ())))
        elif kind == "observe_cameras":
            out.append(enc(P.GetObservation(seq, cameras)))
        elif kind == "command_no_hello":
            delta = np.zeros(6)
            delta[0] = 0.001 if i % 2 else -0.001
            out.append(enc(P.Command(seq, "delta", delta)))
        else:
            raise ValueError(f"unknown flood message kind {kind!r}; kinds are {[k for k, _ in MIX]}")
    return out


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent dies (elsewhere the parent-pid check in the loop
    still stops the flood)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def flood(cfg: FloodConfig, *, out=sys.stdout) -> dict:
    """Send the flood until `duration_s` passes, SIGTERM/SIGINT arrives or the parent dies; return
    {"sent", "dropped", "elapsed_s", "sent_per_s", "by_kind"} (dropped: sends refused as the
    socket's queue was full)."""
    if not cfg.address.startswith(_LOOPBACK):
        raise ValueError(f"the flooder only targets loopback servers, got {cfg.address!r}; "
                         "run it on the robot PC against tcp://127.0.0.1:PORT")
    if cfg.rate_per_s <= 0 or cfg.duration_s <= 0:
        raise ValueError(f"rate_per_s and duration_s must be > 0, got {cfg.rate_per_s} and {cfg.duration_s}")
    if "observe_cameras" in dict(MIX) and not cfg.cameras:
        kinds = [(k, w) for k, w in MIX if k != "observe_cameras"]
    else:
        kinds = list(MIX)
    rng = np.random.default_rng(cfg.seed)
    pools = {k: _pool(rng, k, cfg.cameras, 64) for k, _ in kinds}
    weights = np.array([w for _, w in kinds])
    schedule = rng.choice(len(kinds), size=4096, p=weights / weights.sum())

    ctx = zmq.Context()
    socks = {}
    for name in ("anonymous", "monitor", "no_hello"):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 1_000_000)  # never block: a full queue is counted as dropped
        s.setsockopt(zmq.RCVHWM, 16)  # replies are never read: keep few of them here
        s.connect(cfg.address)
        socks[name] = s
    sock_of = {"garbage": "anonymous", "bad_header": "anonymous", "hello_monitor": "monitor", "observe": "monitor",
               "observe_cameras": "monitor", "command_no_hello": "no_hello"}
    plan = [(kinds[j][0], socks[sock_of[kinds[j][0]]], pools[kinds[j][0]]) for j in schedule]

    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    parent = os.getppid()
    _die_with_parent()

    more, last = int(zmq.SNDMORE) | int(zmq.NOBLOCK), int(zmq.NOBLOCK)
    by_kind = {k: 0 for k, _ in kinds}
    sent = dropped = i = 0
    # The monitor socket says hello before its first get_observation, as a real monitor would.
    socks["monitor"].send_multipart(P.encode(P.Hello(P.PROTOCOL_VERSION, "flood", "monitor")), zmq.NOBLOCK)
    announced = False
    t0 = time.monotonic()
    end = t0 + cfg.duration_s
    try:
        while not stop:
            now = time.monotonic()
            if now >= end or os.getppid() != parent:
                break
            due = int((now - t0) * cfg.rate_per_s) - sent - dropped
            for _ in range(min(due, 1000)):  # a late wake-up catches up, but not in one unbounded burst
                kind, sock, pool = plan[i % len(plan)]
                frames = pool[i % len(pool)]
                i += 1
                try:
                    for f in frames[:-1]:
                        sock.send(f, more, copy=True)
                    sock.send(frames[-1], last, copy=True)
                    sent += 1
                    by_kind[kind] += 1
                except zmq.Again:
                    dropped += 1
            if not announced and sent:
                announced = True
                print(json.dumps({"event": "flooding", "pid": os.getpid(), "address": cfg.address}), file=out,
                      flush=True)
            time.sleep(0.001)
    finally:
        elapsed = time.monotonic() - t0
        for s in socks.values():
            s.close(0)
        ctx.term()
    result = {"event": "done", "sent": sent, "dropped": dropped, "elapsed_s": round(elapsed, 4),
              "sent_per_s": round(sent / elapsed, 1) if elapsed > 0 else 0.0, "rate_per_s": cfg.rate_per_s,
              "by_kind": by_kind}
    print(json.dumps(result), file=out, flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m robot_rl.bench.flood", description=__doc__.splitlines()[0])
    ap.add_argument("address", help="the server's request socket, e.g. tcp://127.0.0.1:5555 (loopback only)")
    ap.add_argument("--rate-per-s", type=float, default=FloodConfig.rate_per_s)
    ap.add_argument("--duration-s", type=float, default=FloodConfig.duration_s)
    ap.add_argument("--cameras", nargs="*", default=[], help="camera names for get_observation requests")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        flood(FloodConfig(a.address, a.rate_per_s, a.duration_s, tuple(a.cameras), a.seed))
    except ValueError as exc:
        sys.exit(f"flood: {exc}")


if __name__ == "__main__":
    main()
