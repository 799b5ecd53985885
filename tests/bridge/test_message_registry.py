"""The message registry shared by the bridge protocol and the actor ↔ learner wire."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from robot_rl.bridge import protocol as P
from robot_rl.bridge.codec import MessageRegistry
from robot_rl.errors import ProtocolError, ProtocolVersionMismatch
from robot_rl.learning import wire as W


def test_registry_sets_kind_and_round_trips():
    reg = MessageRegistry(version=3)

    @reg.message("ping")
    @dataclass(frozen=True)
    class Ping:
        KIND: ClassVar[str]
        n: int

    assert Ping.KIND == "ping" and reg.kinds == {"ping": Ping}
    assert reg.decode([bytes(f) for f in reg.encode(Ping(4))]) == Ping(4)
    with pytest.raises(ProtocolVersionMismatch):
        MessageRegistry(version=4).decode(reg.encode(Ping(4)))
    with pytest.raises(ValueError, match="already registered"):
        reg.message("ping")(type("Other", (), {}))


def test_each_protocol_encodes_only_its_own_kinds():
    assert isinstance(P.REGISTRY, MessageRegistry) and isinstance(W.REGISTRY, MessageRegistry)
    assert set(P.REGISTRY.kinds).isdisjoint(W.REGISTRY.kinds)
    beat = W.Heartbeat("a0", 1, 0, 10, 2)
    bye = P.Bye(3)
    with pytest.raises(TypeError, match="not a protocol message"):
        P.encode(beat)
    with pytest.raises(TypeError, match="not a protocol message"):
        W.encode(bye)
    # The same bytes on the wrong socket are refused by kind (versions differ too: check kind alone).
    foreign = MessageRegistry(W.VERSION)
    foreign.kinds.update(P.REGISTRY.kinds)
    with pytest.raises(ProtocolError) as err:
        W.decode(foreign.encode(bye))
    assert err.value.code == "unknown_kind"
    assert W.decode(W.encode(beat)) == beat
    step = W.Step(0, 0, np.ones(3, np.float32), {}, np.zeros(2, np.float32), 1.0, False, False)
    assert W.decode(W.encode(step)).reward == 1.0
