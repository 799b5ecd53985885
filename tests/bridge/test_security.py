"""Loopback by default; anything wider needs CurveZMQ keys, and unauthenticated clients get nothing."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.bridge.client import BridgeClient
from robot_rl.bridge.security import generate_keys, is_local_address
from robot_rl.bridge.serve import ServeConfig, start_server
from robot_rl.bridge.server_config import ServerConfig
from robot_rl.errors import BridgeTimeout, ConfigError


@pytest.mark.parametrize("address,local", [
    ("tcp://127.0.0.1:5555", True), ("tcp://localhost:5555", True), ("tcp://[::1]:5555", True),
    ("ipc:///tmp/robot", True), ("inproc://x", True), ("tcp://0.0.0.0:5555", False),
    ("tcp://*:5555", False), ("tcp://10.0.0.2:5555", False), ("tcp://eth0:5555", False),
])
def test_local_addresses(address, local):
    assert is_local_address(address) is local


def test_non_loopback_without_keys_refused():
    with pytest.raises(ConfigError, match="robot-rl keys"):
        ServerConfig(bind="tcp://0.0.0.0:5555")
    with pytest.raises(ConfigError, match="without authentication"):
        ServerConfig(bind="tcp://127.0.0.1:5555", pub_bind="tcp://0.0.0.0:5556")


def test_keys_refuse_to_overwrite(tmp_path):
    generate_keys(tmp_path / "k")
    with pytest.raises(ConfigError, match="--overwrite"):
        generate_keys(tmp_path / "k")
    generate_keys(tmp_path / "k", overwrite=True)


def test_curve_server_accepts_only_authorized_clients(tmp_path):
    keys = generate_keys(tmp_path / "keys")
    other = generate_keys(tmp_path / "intruder")  # a valid key pair the server never authorized
    (tmp_path / "intruder" / "server.key").unlink()
    (tmp_path / "keys" / "server.key").rename(tmp_path / "intruder" / "server.key")
    (tmp_path / "keys" / "server.key").write_bytes((tmp_path / "intruder" / "server.key").read_bytes())
    stack = start_server(ServeConfig(bind="tcp://0.0.0.0:0", pub_bind="", keys_dir=str(tmp_path / "keys")))
    port = stack.address.rsplit(":", 1)[1]
    address = f"tcp://127.0.0.1:{port}"
    try:
        with BridgeClient(address, keys_dir=tmp_path / "keys", timeout_s=5.0) as ok:
            ok.reset(seed=0)
            obs = ok.step(np.zeros(6), hold_s=0.01)
            assert obs.state.mode == "track"
        with pytest.raises(BridgeTimeout, match="CurveZMQ keys"):
            BridgeClient(address, connect_timeout_s=1.0)  # no keys at all
        with pytest.raises(BridgeTimeout, match="are its keys the ones in your --keys-dir"):
            BridgeClient(address, keys_dir=tmp_path / "intruder", connect_timeout_s=1.0)  # unknown client key
    finally:
        stack.close()
    assert keys["client_secret"].stat().st_mode & 0o077 == 0  # secrets are private
    assert other["server_secret"].exists()
