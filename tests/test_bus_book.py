"""The venue bus core (gate/bus.py) and its service threads against real SQLite
gates, no network: catch-up recovers a dropped live record, a rollback heard on
the bus before central delivers its admission, and hooks that raise."""

from __future__ import annotations

import time

import cbor2
import pytest

from crypto import gt1
from crypto.issuer import Issuer
from gate.keyfiles import load_device_key
from gate import bus
from gate.appliance import Gate
from gate.decision import Reason

EVENT = "evt-bus-book"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def two(tmp_path):
    """Gates A (north-1) and B (north-2); B trusts A's device key."""
    iss = Issuer(EVENT)
    a = Gate.init(tmp_path / "a", event=EVENT, lane="north-1")
    b = Gate.init(tmp_path / "b", event=EVENT, lane="north-2")
    for g in (a, b):
        g.trust(iss.keyring())
    key_a = load_device_key(a.data_dir)
    bus.store_trust(b.conn, [bus.TrustedDevice(a.config.device_id, gt1.raw_public(key_a))], "test")
    yield iss, a, b, key_a
    a.close()
    b.close()


def _admit(g: Gate, ticket, now: float):
    d, entry = g.scan(ticket.code(now), now=now)
    assert d.reason is Reason.ACCEPT
    return entry.seq


def test_catch_up_fetches_a_live_record_that_was_dropped(two):
    iss, a, b, key_a = two
    dev_a, now = a.config.device_id, time.time()
    t1, t2 = iss.mint(rotating=False), iss.mint(rotating=False)
    _, s2 = _admit(a, t1, now), _admit(a, t2, now)  # the first is the record B never hears live
    book = bus.BusBook(b.conn, b.config.device_id, EVENT)
    # B hears only the second record live; the first was dropped
    assert book.receive(bus.message_for(a.conn, key_a, dev_a, s2).encode()) == "accepted"
    assert b.decide(t2.code(now), now=now).reason is Reason.ALREADY_USED
    assert b.decide(t1.code(now), now=now).reason is Reason.ACCEPT  # the gap
    # a live message does not count as caught up: B still asks for A's records from the start
    assert book.since()[dev_a] == 0
    answer = [m for _, _, m in bus.answer_since(a.conn, key_a, dev_a, book.since())]
    assert book.receive_catch_up(answer) == 1
    # fails if catch-up asks after the highest seq held (s2) and never fetches s1
    assert b.decide(t1.code(now), now=now).reason is Reason.ALREADY_USED
    assert book.since()[dev_a] == s2  # a complete answer advances it (persisted in bus_caught_up)
    assert bus.BusBook(b.conn, b.config.device_id, EVENT).since()[dev_a] == s2


def test_answer_since_sends_only_peer_records_after_the_asked_seq(two):
    iss, a, b, key_a = two
    dev_a, now = a.config.device_id, time.time()
    s1, s2 = _admit(a, iss.mint(rotating=False), now), _admit(a, iss.mint(rotating=False), now)
    book = bus.BusBook(b.conn, b.config.device_id, EVENT)
    for s in (s1, s2):
        book.receive(bus.message_for(a.conn, key_a, dev_a, s).encode())
    key_b = load_device_key(b.data_dir)
    relayed = [(d, s) for d, s, _ in bus.answer_since(b.conn, key_b, b.config.device_id,
                                                      {dev_a: s1, b.config.device_id: 10**9})]
    assert relayed == [(dev_a, s2)]


def test_rollback_heard_on_the_bus_before_central_delivers_the_admission(two):
    from sync.client import pull_admissions
    iss, a, b, key_a = two
    dev_a, now = a.config.device_id, time.time()
    t1 = iss.mint(rotating=False)
    s1 = _admit(a, t1, now)
    rb = a.rollback(s1, now=now).seq
    book = bus.BusBook(b.conn, b.config.device_id, EVENT)
    # B hears only the rollback on the bus (bus_voids), then central brings the admission
    assert book.receive(bus.message_for(a.conn, key_a, dev_a, rb).encode()) == "accepted"
    rec = cbor2.loads(a.conn.execute("SELECT record FROM scans WHERE seq = ?", (s1,)).fetchone()[0])

    class Central:
        def page(self, path, cursor, limit):
            return ([{"device_id": dev_a, "seq": s1, "ticket_id": rec["ticket_id"], "mode": "entry",
                      "consumes": True, "ts_ms": rec.get("ts_ms"), "lane": "north-1"}], "c1", False)

    assert pull_admissions(b, Central()) == 1
    # fails if central's copy is stored as a live admission (voided = 0)
    assert b.conn.execute("SELECT voided FROM remote_admissions WHERE device_id = ? AND seq = ?",
                          (dev_a, s1)).fetchone() == (1,)
    assert b.decide(t1.code(now), now=now).reason is Reason.ACCEPT


def test_raising_hooks_do_not_stop_the_bus_threads(two):
    from sync.bus_service import BusService
    iss, a, b, key_a = two
    dev_a, now = a.config.device_id, time.time()
    seqs = [_admit(a, iss.mint(rotating=False), now) for _ in range(2)]
    peers = [0]

    class Port:
        def publish(self, device_id, seq, message): ...
        def subscribe(self, handler): ...
        def answer(self, handler): ...
        def query(self, since, timeout_s): return []
        def peers(self): return peers[0]
        def close(self): ...

    svc = BusService(b.data_dir, Port(), device_id=b.config.device_id, event=EVENT)
    states, stored = [], []

    def boom(*_):
        raise RuntimeError("hook failed")
    svc.on_state += [boom, lambda st, n: states.append(st)]
    svc.on_stored += [boom, lambda rec: stored.append(rec["seq"])]
    svc.start()
    try:
        def wait(cond, what):
            deadline = time.monotonic() + 10
            while not cond():
                assert time.monotonic() < deadline, what
                time.sleep(0.02)
        peers[0] = 1
        wait(lambda: states == [bus.LinkState.VENUE], "VENUE reported")
        peers[0] = 0  # fails if the first raising hook killed the monitor
        wait(lambda: states == [bus.LinkState.VENUE, bus.LinkState.ALONE], "ALONE reported after a failing hook")
        for s in seqs:  # fails if the first raising on_stored hook killed the receiver
            svc._on_message(bus.message_for(a.conn, key_a, dev_a, s).encode())
        wait(lambda: stored == seqs, "both records stored and reported")
        assert svc.book.errors == 4 and "hook failed" in svc.book.last_error
        assert svc.status()["errors"] == 4
    finally:
        svc.close()
