"""CurveZMQ keys and the loopback rule: serving beyond this machine requires authentication.

`robot-rl keys --out DIR` writes:

    DIR/server.key, DIR/server.key_secret            the robot PC's key pair
    DIR/client.key, DIR/client.key_secret            a learner's key pair (copy to the learner)
    DIR/authorized_clients/client.key                public keys the server accepts

The robot PC needs `server.key_secret` and `authorized_clients/`; a learner needs its own
`client.key_secret` and the server's public `server.key`.
"""

from __future__ import annotations

import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from robot_rl.errors import ConfigError

AUTHORIZED_DIR = "authorized_clients"


def is_local_address(address: str) -> bool:
    """True for ipc://, inproc:// and tcp:// bound to a loopback address."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    if not address.startswith("tcp://"):
        raise ConfigError(f"address {address!r} must start with tcp://, ipc:// or inproc://")
    host = urlsplit(address).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # interface names, '*', hostnames: reachable from outside


def generate_keys(out_dir: Path, *, client_name: str = "client", overwrite: bool = False) -> dict[str, Path]:
    """Create the server and one client key pair in `out_dir` (see module docstring)."""
    out_dir = Path(out_dir)
    if (out_dir / "server.key_secret").exists() and not overwrite:
        raise ConfigError(f"{out_dir}/server.key_secret exists; pass --overwrite to replace the server keys "
                          "(clients holding the old server.key will no longer connect)")
    out_dir.mkdir(parents=True, exist_ok=True)
    server_pub, server_sec = zmq.auth.create_certificates(str(out_dir), "server")
    client_pub, client_sec = zmq.auth.create_certificates(str(out_dir), client_name)
    authorized = out_dir / AUTHORIZED_DIR
    authorized.mkdir(exist_ok=True)
    shutil.copy(client_pub, authorized / Path(client_pub).name)
    for secret in (server_sec, client_sec):
        Path(secret).chmod(0o600)
    return {"server_public": Path(server_pub), "server_secret": Path(server_sec),
            "client_public": Path(client_pub), "client_secret": Path(client_sec), "authorized": authorized}


@dataclass(frozen=True)
class ServerKeys:
    """Where the robot PC's CurveZMQ material lives."""

    server_secret: Path
    authorized_dir: Path

    @staticmethod
    def from_dir(keys_dir: Path) -> ServerKeys:
        keys_dir = Path(keys_dir)
        keys = ServerKeys(keys_dir / "server.key_secret", keys_dir / AUTHORIZED_DIR)
        if not keys.server_secret.is_file():
            raise ConfigError(f"{keys.server_secret} not found: create keys with `robot-rl keys --out {keys_dir}`")
        if not keys.authorized_dir.is_dir() or not any(keys.authorized_dir.glob("*.key")):
            raise ConfigError(f"{keys.authorized_dir} holds no client public keys (*.key): no client could connect")
        return keys


@dataclass(frozen=True)
class ClientKeys:
    """Where a learner's CurveZMQ material lives."""

    client_secret: Path
    server_public: Path

    @staticmethod
    def from_dir(keys_dir: Path, *, client_name: str = "client") -> ClientKeys:
        keys_dir = Path(keys_dir)
        keys = ClientKeys(keys_dir / f"{client_name}.key_secret", keys_dir / "server.key")
        for path in (keys.client_secret, keys.server_public):
            if not path.is_file():
                raise ConfigError(f"{path} not found: copy it from the robot PC's `robot-rl keys` output")
        return keys


def start_authenticator(context: zmq.Context, keys: ServerKeys) -> ThreadAuthenticator:
    """ZAP handler accepting only clients whose public key is in `authorized_dir`."""
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.authorized_dir))
    return auth


def make_curve_server(socket: zmq.Socket, keys: ServerKeys) -> None:
    public, secret = zmq.auth.load_certificate(str(keys.server_secret))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True


def make_curve_client(socket: zmq.Socket, keys: ClientKeys) -> None:
    public, secret = zmq.auth.load_certificate(str(keys.client_secret))
    server_public, _ = zmq.auth.load_certificate(str(keys.server_public))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = server_public
