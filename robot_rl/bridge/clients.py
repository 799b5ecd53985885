"""Who is connected to the robot server: roles, the one control client, expiry and handover.

A bounded table keyed by ZeroMQ routing id. Monitors can never push the control client out of
it, entries not heard from for `ttl_s` expire (the control client's never does while it holds
the arm), and a control hello while another client holds the arm is refused unless it asks to
take control or the holder has been silent for `release_s`.

Threading: the server thread only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from robot_rl.bridge import protocol as P


@dataclass
class ClientEntry:
    role: str
    name: str
    last_seen_ns: int


@dataclass(frozen=True)
class HelloOutcome:
    """What a hello did: refused (`refusal` is an Error reply) or accepted, possibly taking the arm
    from `previous_controller`."""

    refusal: P.Error | None = None
    previous_controller: bytes | None = None


class ClientTable:
    """See the module docstring.

    Args:
        max_clients: entries kept; when full, the monitor heard from longest ago is forgotten.
        ttl_s: entries silent for this long are forgotten (they say hello again when told to).
        release_s: a control client silent for this long no longer blocks a new control hello.
    """

    def __init__(self, *, max_clients: int = 256, ttl_s: float = 60.0, release_s: float = 5.0) -> None:
        if max_clients < 2:
            raise ValueError(f"max_clients must be ≥ 2, got {max_clients}")
        self.max_clients = max_clients
        self.ttl_ns = int(ttl_s * 1e9)
        self.release_ns = int(release_s * 1e9)
        self._entries: OrderedDict[bytes, ClientEntry] = OrderedDict()  # least recently seen first
        self.controller: bytes | None = None
        self._next_sweep_ns = 0

    def __len__(self) -> int:
        return len(self._entries)

    def seen(self, key: bytes, now_ns: int) -> ClientEntry | None:
        """The entry of `key` (None if unknown or expired), marked as heard from now."""
        self._sweep(now_ns)
        entry = self._entries.get(key)
        if entry is not None:
            entry.last_seen_ns = now_ns
            self._entries.move_to_end(key)
        return entry

    def hello(self, key: bytes, msg: P.Hello, now_ns: int) -> HelloOutcome:
        """Register `key`; a control hello takes the arm only when it is free, released by silence,
        already this client's, or `take_control` is set."""
        self._sweep(now_ns)
        previous = None
        if msg.role == "control":
            holder = self.controller
            if holder is not None and holder != key:
                entry = self._entries.get(holder)
                silent_ns = now_ns - entry.last_seen_ns if entry is not None else self.release_ns
                if not msg.take_control and silent_ns < self.release_ns:
                    name = entry.name if entry is not None else "?"
                    return HelloOutcome(refusal=P.Error(
                        -1, "control_held",
                        f"control client {name!r} holds the arm (last request {silent_ns / 1e9:.1f} s ago); connect "
                        "with take_control=True to take it over (its in-flight requests are then refused), as a "
                        f"monitor to only watch, or again once it has been silent for {self.release_ns / 1e9:.0f} s "
                        "(a crashed client releases the arm that way)"))
                previous = holder
            self.controller = key
        elif key == self.controller:
            self.controller = None  # the control client said hello again as a monitor
        if key not in self._entries and len(self._entries) >= self.max_clients:
            self._evict_one()
        self._entries[key] = ClientEntry(msg.role, msg.client_name, now_ns)
        self._entries.move_to_end(key)
        return HelloOutcome(previous_controller=previous)

    def forget(self, key: bytes) -> None:
        """The client said bye: drop it and release the arm if it held it."""
        self._entries.pop(key, None)
        if key == self.controller:
            self.controller = None

    def _evict_one(self) -> None:
        for k in self._entries:
            if k != self.controller:
                del self._entries[k]
                return

    def _sweep(self, now_ns: int) -> None:
        """Forget entries silent for ttl_s (at most once a second: the oldest come first)."""
        if now_ns < self._next_sweep_ns:
            return
        self._next_sweep_ns = now_ns + 1_000_000_000
        stale = [k for k, e in self._entries.items() if now_ns - e.last_seen_ns > self.ttl_ns and k != self.controller]
        for k in stale:
            del self._entries[k]
