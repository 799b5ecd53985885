"""What clients other than the controller may cost the robot server: token buckets of handler time.

The control client is never charged. Every other routing id (monitors, strangers, garbage) has a
bucket of server-thread seconds, refilled at `per_client_s_per_s`, and all of them together share
one more at `all_others_s_per_s`. Their requests wait in one small FIFO per client, served
round-robin while the buckets allow: a monitor over its share is slowed down, not refused, and a
flood overflows its own FIFO, whose oldest requests are dropped undecoded (a microsecond each).
Either way no content, rate or number of sockets takes more than that share of the thread that
serves the controller.

Threading: the server thread only.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class AdmissionConfig:
    per_client_s_per_s: float = 0.05
    """Server-thread seconds per second one non-controlling client may use (5 %: a monitor at 30 Hz
    with two streamed camera frames uses about 1 %)."""
    all_others_s_per_s: float = 0.15
    """Server-thread seconds per second all non-controlling clients together may use (15 %)."""
    burst_s: float = 0.05
    """Bucket size: how much a quiet client may spend at once. A bucket's debt is capped at the
    same amount, so one slow request (a renderer's first frame) holds that client back at most
    burst_s / per_client_s_per_s (1 s), within a client's reply timeout."""

    def __post_init__(self) -> None:
        for name in ("per_client_s_per_s", "all_others_s_per_s", "burst_s"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")


class _Bucket:
    __slots__ = ("tokens_ns", "t_ns")

    def __init__(self, tokens_ns: float, t_ns: int) -> None:
        self.tokens_ns = tokens_ns
        self.t_ns = t_ns


MAX_BUCKETS = 4096
"""Buckets kept; a full bucket carries no information, so the stalest are dropped first."""


class Admission:
    """See the module docstring. `admit` before handling a request, `charge` its cost after."""

    def __init__(self, config: AdmissionConfig = AdmissionConfig()) -> None:
        self.config = config
        self._burst_ns = config.burst_s * 1e9
        self._buckets: dict[bytes, _Bucket] = {}
        self._all = _Bucket(self._burst_ns, 0)
        self.dropped = 0
        """Requests dropped so far (a client's FIFO overflowed)."""

    def _refill(self, b: _Bucket, rate: float, now_ns: int) -> None:
        b.tokens_ns = min(self._burst_ns, b.tokens_ns + (now_ns - b.t_ns) * rate)
        b.t_ns = now_ns

    def admit(self, key: bytes, now_ns: int) -> bool:
        """True if `key` may be served now (its bucket and the shared one are not empty)."""
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= MAX_BUCKETS:
                for k in sorted(self._buckets, key=lambda k: self._buckets[k].t_ns)[:MAX_BUCKETS // 4]:
                    del self._buckets[k]
            b = self._buckets[key] = _Bucket(self._burst_ns, now_ns)
        self._refill(b, self.config.per_client_s_per_s, now_ns)
        self._refill(self._all, self.config.all_others_s_per_s, now_ns)
        return b.tokens_ns > 0 and self._all.tokens_ns > 0

    def charge(self, key: bytes, cost_ns: int) -> None:
        """Spend `cost_ns` of server-thread time from `key`'s bucket and the shared one."""
        b = self._buckets.get(key)
        if b is not None:
            b.tokens_ns = max(-self._burst_ns, b.tokens_ns - cost_ns)
        self._all.tokens_ns = max(-self._burst_ns, self._all.tokens_ns - cost_ns)


class FairQueue:
    """Requests of clients other than the controller: a FIFO per client (at most
    `max_per_client`, oldest dropped first), served round-robin within the `Admission` budgets.

    Args:
        admission: the budgets; `pop` only returns requests of clients it admits.
        max_per_client: requests one client may have waiting.
        max_clients: clients that may have requests waiting; beyond, new clients' requests drop.
        max_bytes: bytes of requests waiting in all; beyond, new requests drop.
    """

    def __init__(self, admission: Admission, *, max_per_client: int = 64, max_clients: int = 1024,
                 max_bytes: int = 32 << 20) -> None:
        self.admission = admission
        self.max_per_client = max_per_client
        self.max_clients = max_clients
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._fifos: OrderedDict[bytes, deque] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self._fifos)

    def push(self, key: bytes, request: list, nbytes: int) -> None:
        """Queue `request` (its frames, `nbytes` in all) for `key`, or drop it (counted)."""
        fifo = self._fifos.get(key)
        if fifo is None:
            if len(self._fifos) >= self.max_clients:
                self.admission.dropped += 1
                return
            fifo = self._fifos[key] = deque()
        if len(fifo) >= self.max_per_client:
            self.nbytes -= fifo.popleft()[1]
            self.admission.dropped += 1
        if self.nbytes + nbytes > self.max_bytes:
            self.admission.dropped += 1
            if not fifo:
                del self._fifos[key]
            return
        fifo.append((request, nbytes))
        self.nbytes += nbytes

    def pop(self, now_ns: int) -> tuple[bytes, object] | None:
        """The next request of a client whose budget allows it (round-robin), or None."""
        for key in self._fifos:
            if self.admission.admit(key, now_ns):
                fifo = self._fifos[key]
                request, nbytes = fifo.popleft()
                self.nbytes -= nbytes
                if fifo:
                    self._fifos.move_to_end(key)
                else:
                    del self._fifos[key]
                return key, request
        return None
