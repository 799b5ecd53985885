"""Budgets of the clients other than the controller, and the client table: pure, no sockets."""

from __future__ import annotations

import pytest

from robot_rl.bridge import protocol as P
from robot_rl.bridge.admission import Admission, AdmissionConfig, FairQueue
from robot_rl.bridge.clients import ClientTable

MS = 1_000_000


def test_a_client_over_its_share_waits_until_its_bucket_refills():
    adm = Admission(AdmissionConfig(per_client_s_per_s=0.1, all_others_s_per_s=0.5, burst_s=0.01))
    t = 0
    assert adm.admit(b"a", t)
    adm.charge(b"a", 20 * MS)  # 20 ms spent from a 10 ms bucket
    assert not adm.admit(b"a", t + 50 * MS)  # refilled 5 ms: still 5 ms in debt
    assert adm.admit(b"b", t + 50 * MS)  # another client has its own bucket
    assert adm.admit(b"a", t + 110 * MS)


def test_all_other_clients_share_one_bucket():
    adm = Admission(AdmissionConfig(per_client_s_per_s=0.5, all_others_s_per_s=0.1, burst_s=0.01))
    for i in range(3):
        assert adm.admit(bytes([i]), 0)
        adm.charge(bytes([i]), 4 * MS)  # 12 ms in all from a 10 ms shared bucket
    assert not adm.admit(b"new", 0)  # the shared bucket is empty, whoever asks


def test_fair_queue_serves_round_robin_and_a_flood_overflows_only_its_own_fifo():
    adm = Admission(AdmissionConfig(burst_s=1.0))
    q = FairQueue(adm, max_per_client=4)
    for i in range(100):
        q.push(b"flood", [f"f{i}".encode()], 10)
    q.push(b"monitor", [b"m0"], 10)
    assert adm.dropped == 96 and q.nbytes == 50
    served = [q.pop(0) for _ in range(5)]
    keys = [k for k, _ in served]
    assert keys[:2] == [b"flood", b"monitor"]  # the monitor is not behind the flood's backlog
    assert [r for k, r in served if k == b"flood"] == [[b"f96"], [b"f97"], [b"f98"], [b"f99"]]  # newest kept
    assert not q and q.nbytes == 0


def test_fair_queue_bounds_bytes():
    adm = Admission()
    q = FairQueue(adm, max_bytes=100)
    q.push(b"a", [b"x"], 60)
    q.push(b"b", [b"y"], 60)  # would exceed 100 bytes: dropped
    assert adm.dropped == 1 and q.nbytes == 60


def test_over_budget_requests_wait_rather_than_drop():
    adm = Admission(AdmissionConfig(per_client_s_per_s=0.1, burst_s=0.01))
    q = FairQueue(adm)
    q.push(b"viewer", [b"r1"], 10)
    q.push(b"viewer", [b"r2"], 10)
    key, _ = q.pop(0)
    adm.charge(key, 30 * MS)
    assert q.pop(1 * MS) is None and q  # still queued
    assert q.pop(300 * MS) == (b"viewer", [b"r2"])
    assert adm.dropped == 0


def hello(name: str, role: str = "monitor", take: bool = False) -> P.Hello:
    return P.Hello(P.PROTOCOL_VERSION, name, role, take)


def test_table_never_evicts_the_controller_and_expires_silent_monitors():
    table = ClientTable(max_clients=3, ttl_s=10.0, release_s=5.0)
    table.hello(b"ctl", hello("actor", "control"), 0)
    for i in range(10):
        table.hello(bytes([i]), hello(f"m{i}"), 1 + i)
    assert len(table) == 3 and table.controller == b"ctl" and table.seen(b"ctl", 20) is not None
    assert table.seen(bytes([9]), 20) is not None and table.seen(bytes([0]), 20) is None
    later = 30 * 10**9
    assert table.seen(bytes([9]), later) is None  # silent past ttl_s
    assert table.seen(b"ctl", later) is not None  # the controller does not expire


@pytest.mark.parametrize("take,silent_s,taken", [(False, 1.0, False), (True, 1.0, True), (False, 6.0, True)])
def test_takeover_rules(take, silent_s, taken):
    table = ClientTable(release_s=5.0)
    table.hello(b"a", hello("first", "control"), 0)
    outcome = table.hello(b"b", hello("second", "control", take), int(silent_s * 1e9))
    if taken:
        assert outcome.refusal is None and outcome.previous_controller == b"a" and table.controller == b"b"
    else:
        assert outcome.refusal.code == "control_held" and "'first'" in outcome.refusal.message
        assert table.controller == b"a"


def test_bye_releases_control():
    table = ClientTable()
    table.hello(b"a", hello("first", "control"), 0)
    table.forget(b"a")
    assert table.controller is None and table.hello(b"b", hello("second", "control"), 1).refusal is None
