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
    # s2 does not link back to A's first record (s1 is missing): B still asks from the start,
    # and the service is told to catch up soon (fails if a gap waits for the 10 s round)
    assert book.since()[dev_a] == 0 and book.last_gap
    answer = [m for _, _, m in bus.answer_since(a.conn, key_a, dev_a, book.since())]
    assert [book.receive(m) for m in answer] == ["accepted", "duplicate"]
    # fails if catch-up asks after the highest seq held (s2) and never fetches s1
    assert b.decide(t1.code(now), now=now).reason is Reason.ALREADY_USED
    assert book.since()[dev_a] == s2  # now linked s1 -> s2 (kept in bus_records)
    assert bus.BusBook(b.conn, b.config.device_id, EVENT).since()[dev_a] == s2


def test_a_record_left_out_by_a_relay_keeps_caught_up_before_it(two):
    # issue 19 item 1, in the core: a relay answers with only A's newest record
    # (genuine, signed). Fails if "caught up through" moves past the left-out ones.
    iss, a, b, key_a = two
    dev_a, now = a.config.device_id, time.time()
    seqs = [_admit(a, iss.mint(rotating=False), now) for _ in range(3)]
    a.scan("junk", now=now)  # a refusal between usage records: seqs are not contiguous
    seqs.append(_admit(a, iss.mint(rotating=False), now))
    book = bus.BusBook(b.conn, b.config.device_id, EVENT)
    newest = bus.message_for(a.conn, key_a, dev_a, seqs[-1]).encode()
    assert book.receive(newest) == "accepted"
    assert book.since()[dev_a] == 0
    # the real A answers from there: everything, and the chain closes up to the newest
    for _, _, m in bus.answer_since(a.conn, key_a, dev_a, book.since()):
        book.receive(m)
    assert book.since()[dev_a] == seqs[-1]
    # a forged link (a genuine record re-wrapped with another previous-usage field) does not verify
    m = bus.parse_message(newest)
    from dataclasses import replace
    forged = replace(m, pu_seq=0, pu_hash=bus.scanlog.GENESIS)
    assert bus.BusBook(b.conn, "someone-else", EVENT).receive(forged.encode()) == "bad_signature"


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
        def answer(self, kind, handler): ...
        def sessions(self): return 1
        def close(self): ...

        def query(self, kind, payload, *, timeout_s, on_reply, on_done):
            if kind == "live" and peers[0]:  # A answers B's challenge with A's key
                q = bus.parse_live_query(payload, EVENT)
                on_reply("zid-a", bus.make_live_answer(key_a, EVENT, dev_a, q.asker, q.nonce))
            on_done()

    svc = BusService(b.data_dir, Port(), device_id=b.config.device_id, event=EVENT)
    states, stored = [], []

    def boom(*_):
        raise RuntimeError("hook failed")
    svc.on_state += [boom, lambda st, n: states.append(st)]
    svc.on_stored += [boom, lambda rec: stored.append(rec["seq"])]
    svc.start()
    try:
        def wait(cond, what):
            deadline = time.monotonic() + 30
            while not cond():
                assert time.monotonic() < deadline, what
                time.sleep(0.02)
        peers[0] = 1
        wait(lambda: states == [bus.LinkState.VENUE], "VENUE reported (A proved it is alive)")
        peers[0] = 0  # fails if the first raising hook killed the monitor
        wait(lambda: states == [bus.LinkState.VENUE, bus.LinkState.ALONE], "ALONE reported after a failing hook")
        for s in seqs:  # fails if the first raising on_stored hook killed the receiver
            svc._on_message(bus.message_for(a.conn, key_a, dev_a, s).encode())
        wait(lambda: stored == seqs, "both records stored and reported")
        assert svc.book.errors == 4 and "hook failed" in svc.book.last_error
        assert svc.status()["errors"] == 4
    finally:
        svc.close()


def test_bus_record_carries_the_digest_never_the_presented_code(two):
    # issue 19 item 6, in the core: a pretix gate's scan record holds the code it was
    # shown (it is uploaded to pretix by secret); the bus message must not.
    iss, a, b, key_a = two
    rec = {"kind": "scan", "seq": 7, "device": "d", "event": EVENT, "lane": "n", "ts_ms": 1, "mode": "entry",
           "decision": "accept", "reason": "ACCEPT", "ticket_id": "ab" * 16, "consumes": True,
           "code": "SECRET-pretix-code", "qr_sha": b"q" * 16, "proof": b"p" * 64, "face_e4": 123}
    m = bus.sign_record(key_a, "d", 7, b"h" * 32, 0, bus.scanlog.GENESIS, rec)
    assert b"SECRET" not in m.encode() and b"qqqq" not in m.encode() and b"pppp" not in m.encode()
    assert cbor2.loads(m.record)["ticket_id"] == "ab" * 16
    assert bus.peek_device(m.encode()) == "d" and bus.peek_device(b"\x88junk") is None


def test_quarantine_holds_and_revocation_voids_what_a_device_published(two):
    iss, a, b, key_a = two
    dev_a, now = a.config.device_id, time.time()
    t1, t2, t3 = (iss.mint(rotating=False) for _ in range(3))
    s1, s2, s3 = _admit(a, t1, now), _admit(a, t2, now), _admit(a, t3, now)
    book = bus.BusBook(b.conn, b.config.device_id, EVENT)
    assert book.receive(bus.message_for(a.conn, key_a, dev_a, s1).encode()) == "accepted"
    assert b.decide(t1.code(now), now=now).reason is Reason.ALREADY_USED
    pub = gt1.raw_public(key_a)
    # central quarantines A: what A published is held back (fails if it still blocks the holder)
    # (no reload_trust(): the book sees the change when it stores, under the write lock; fails
    # if a record of a device quarantined or revoked a moment ago slips past the hold or void)
    bus.store_trust(b.conn, [bus.TrustedDevice(dev_a, pub, "active", quarantined=True)], "central")
    assert b.decide(t1.code(now), now=now).reason is Reason.ACCEPT
    assert book.receive(bus.message_for(a.conn, key_a, dev_a, s2).encode()) == "held"
    assert b.decide(t2.code(now), now=now).reason is Reason.ACCEPT
    assert bus.stored_counts(b.conn)["held_records"] == 2
    # revoked: its records are gone and what it sends is refused
    bus.store_trust(b.conn, [bus.TrustedDevice(dev_a, pub, "revoked")], "central")
    assert bus.stored_counts(b.conn)["peer_records"] == 0
    assert book.receive(bus.message_for(a.conn, key_a, dev_a, s3).encode()) == "revoked"
    assert b.decide(t3.code(now), now=now).reason is Reason.ACCEPT


def test_every_malformed_field_is_counted_malformed_never_an_error(two):
    # issue 19 item 7, in the core: each message is signed with A's real key, so only
    # the field checks can refuse it. Fails if one raises, is stored, or counts elsewhere.
    from dataclasses import replace
    iss, a, b, key_a = two
    dev_a = a.config.device_id
    g = bus.scanlog.GENESIS
    base = {"kind": "scan", "seq": 1, "device": dev_a, "event": EVENT, "lane": "n", "ts_ms": 1000,
            "mode": "entry", "decision": "accept", "reason": "ACCEPT", "ticket_id": "cd" * 16, "consumes": True}

    def signed(rec, seq=1, **over):
        m = bus.BusMessage(dev_a, seq, b"h" * 32, 0, g, bus.scanlog.encode_record(rec), b"")
        m = replace(m, **over)
        return replace(m, sig=key_a.sign(m.signed())).encode()

    bad = [signed({**base, "ts_ms": "1000"}), signed({**base, "ticket_id": 5}), signed({**base, "mode": "up"}),
           signed({**base, "consumes": "yes"}), signed({**base, "seq": 2}), signed({**base, "code": "x"}),
           signed({**base, "seq": 2**64}, seq=2**64), signed({**base, "seq": 2**63}, seq=2**63),
           signed(base, pu_seq=1), signed(base, hash=b"h" * 31), signed({**base, "ts_ms": -1}),
           signed({**base, "kind": "rollback", "ref": 1}), b"\x88" + b"\x00" * 20, cbor2.dumps(["GT1-bus/2"])]
    book = bus.BusBook(b.conn, b.config.device_id, EVENT)
    assert [book.receive(m) for m in bad] == ["malformed"] * len(bad)
    assert book.errors == 0 and bus.stored_counts(b.conn)["peer_records"] == 0
    assert book.receive(signed(base)) == "accepted"


def test_catch_up_replies_are_bounded_per_answering_session():
    from sync.bus_service import _Replies
    r = _Replies(per_replier=3)
    for i in range(10):
        r.add("evil", b"%d" % i)
    r.add("good", b"g")
    r.finish()
    got = []
    while (x := r.next(0.01)) is not None:
        got.append(x)
    assert got == [("evil", b"0"), ("evil", b"1"), ("evil", b"2"), ("good", b"g")] and r.capped == 7
