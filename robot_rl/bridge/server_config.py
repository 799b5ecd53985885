"""Sockets and policies of the robot server (`bridge/server.py`), as one typed config."""

from __future__ import annotations

from dataclasses import dataclass, field

from robot_rl.bridge.admission import AdmissionConfig
from robot_rl.bridge.security import is_local_address
from robot_rl.errors import ConfigError


@dataclass(frozen=True)
class ServerConfig:
    """Sockets and policies of the robot server."""

    bind: str = "tcp://127.0.0.1:5555"
    """Request socket. Anything but loopback/ipc requires `keys_dir`."""
    pub_bind: str | None = None
    """PUB stream of observations; None derives it (TCP port + 1), "" disables it."""
    keys_dir: str | None = None
    """CurveZMQ keys from `robot-rl keys`; required to bind beyond loopback."""
    pub_rate_hz: float = 30.0
    """Real-time servers publish at this rate; stepped servers publish every reply."""
    reply_queue_bytes: int = 8 << 20
    """Replies queued for one client are bounded to about this many bytes (the send high-water
    mark is set from the largest possible reply); beyond it replies to that client are dropped."""
    client_ttl_s: float = 60.0
    """Clients not heard from for this long are forgotten (they are told `hello_required`)."""
    control_release_s: float = 5.0
    """A control client silent for this long no longer blocks another control hello."""
    heartbeat_ivl_s: float = 1.0
    """ZMTP heartbeat period; connections that stop answering heartbeats are dropped…"""
    heartbeat_timeout_s: float = 10.0
    """…after this long (a stalled or vanished peer cannot hold a connection open)."""
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    """Share of the server thread that clients other than the controller may use."""

    def __post_init__(self) -> None:
        for addr in (self.bind, self.pub_bind or ""):
            if addr and not is_local_address(addr) and self.keys_dir is None:
                raise ConfigError(
                    f"refusing to serve {addr} without authentication: binding beyond loopback requires "
                    "CurveZMQ keys. Create them with `robot-rl keys --out DIR` and pass --keys-dir DIR.")
        if self.reply_queue_bytes < 1 << 16:
            raise ConfigError(f"reply_queue_bytes must be ≥ 65536, got {self.reply_queue_bytes}")
        if not 0.0 < self.heartbeat_ivl_s <= self.heartbeat_timeout_s:
            raise ConfigError(f"heartbeat_ivl_s ({self.heartbeat_ivl_s}) must be > 0 and ≤ heartbeat_timeout_s "
                              f"({self.heartbeat_timeout_s})")

    def resolved_pub(self) -> str:
        if self.pub_bind is not None:
            return self.pub_bind
        if self.bind.startswith("tcp://") and self.bind.rsplit(":", 1)[-1].isdigit():
            host, port = self.bind.rsplit(":", 1)
            return f"{host}:{int(port) + 1 if int(port) else 0}"
        if self.bind.startswith(("ipc://", "inproc://")):
            return self.bind + "-pub"
        return ""
