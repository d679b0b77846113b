"""The fast paths of issue 25 keep the behaviour of the slow ones: one parse per
scan with the same record, WAL checkpoints off the scan's commit with the chain
intact, the inline ticket check giving the same rows and errors as the
field-by-field one, central SQLite's durability setting. No timing here (bench/)."""

from __future__ import annotations

import hashlib
import time

import pytest

from crypto import gt1
from gate import ledger, scanlog
from gate.appliance import DB_NAME, Gate

NOW = 1_807_283_662


def _listed(gate, issuer, tmp_path, n: int, entries: int = 1):
    from crypto.issuer import ticket_record

    from conftest import write_jsonl
    wallets = [issuer.mint(entries=entries) for _ in range(n)]
    src = write_jsonl(tmp_path / "t.jsonl", [ticket_record(w, entries=entries) for w in wallets])
    ledger.import_tickets(gate.conn, src, event=issuer.event, data_key=gate.data_key, now=0)
    return wallets


def test_a_scan_parses_the_code_once_and_logs_the_same_holder_proof(gate, issuer, tmp_path, monkeypatch):
    # Fails if the record path parses the QR again, or if the proof fields it
    # logs differ from what parsing the code gives (central re-checks them).
    (w,) = _listed(gate, issuer, tmp_path, 1)
    qr = w.code(NOW)
    expected = scanlog.holder_proof(qr)
    calls = []
    real = gt1.parse_qr
    monkeypatch.setattr(gt1, "parse_qr", lambda text: calls.append(text) or real(text))
    d, entry = gate.scan(qr, now=NOW)
    assert d.accepted and len(calls) == 1
    assert entry.record["cred_sha"] == expected["cred_sha"] == hashlib.sha256(gt1.parse_qr(qr).credential).digest()
    assert entry.record["proof"] == expected["proof"]
    # the proof rides along for the log only: it is not part of the decision's answer
    assert "proof" not in d.to_json()


def test_a_decision_without_its_parse_still_logs_the_proof(gate, issuer, tmp_path):
    # A decision rebuilt elsewhere (dataclasses.replace keeps it; a new one has none)
    # falls back to parsing the code: the record is the same either way.
    from dataclasses import replace
    (w,) = _listed(gate, issuer, tmp_path, 1)
    qr = w.code(NOW)
    d = gate.decide(qr, now=NOW)
    e = gate.record(replace(d, proof=None), now=NOW, qr=qr)
    assert e.record["proof"] == scanlog.holder_proof(qr)["proof"]


def test_checkpoints_run_off_the_scan_path_and_the_chain_stays_whole(gate, issuer, tmp_path):
    # Fails if the scan connection still checkpoints on its own commits, if the
    # background checkpoint never runs (the WAL would grow without end), or if
    # it breaks the chain or loses a record.
    wallets = _listed(gate, issuer, tmp_path, 60)
    gate.scan(wallets[0].code(NOW), now=NOW)
    cp = gate._checkpointer
    assert cp is not None
    assert gate.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    cp.every = 10
    for w in wallets[1:]:
        d, _ = gate.scan(w.code(NOW), now=NOW)
        assert d.accepted
    cp.close()  # joins the thread: every nudged checkpoint has run
    assert cp.runs >= 1
    _whole_after_reopening(gate, 60)
    assert (gate.data_dir / DB_NAME).exists()


def _whole_after_reopening(gate, records: int) -> None:
    """The chain holds ``records`` admissions, and what the checkpoints copied is
    what a fresh reader of the file sees (the gate is closed)."""
    rep = scanlog.verify_chain(gate.conn)
    assert rep.ok and rep.records == records
    gate.close()
    g2 = Gate.open(gate.data_dir, now=NOW)
    try:
        assert scanlog.verify_chain(g2.conn).records == records
        assert g2.conn.execute("SELECT count(*) FROM usage").fetchone()[0] == records
    finally:
        g2.close()


def test_back_to_back_scans_keep_the_wal_from_growing(gate, issuer, tmp_path):
    # Fails if the WAL grows with every scan when scans come back to back (the
    # thread's checkpoint never caught up with the writer, so SQLite never started
    # the WAL over: ~20 KB more file per scan, each commit an append), or if
    # starting it over loses a record.
    wallets = _listed(gate, issuer, tmp_path, 260)
    wal = gate.data_dir / (DB_NAME + "-wal")
    gate.scan(wallets[0].code(NOW), now=NOW)
    cp = gate._checkpointer
    cp.every = 10
    sizes = []
    for i, w in enumerate(wallets[1:], 1):
        d, _ = gate.scan(w.code(NOW), now=NOW)
        assert d.accepted
        if i in (60, 259):
            sizes.append(wal.stat().st_size)
    assert cp.runs >= 5 and cp.tails >= 5
    # 200 more scans add ~4 MB to a WAL that is never started over; started over,
    # it stays about the size of a few checkpoint periods
    assert sizes[1] < 2 * sizes[0], sizes
    _whole_after_reopening(gate, 260)


def test_the_scan_copies_no_backlog_a_reader_held_back(gate, issuer, tmp_path):
    # Fails if the scan connection follows up a checkpoint that could not copy
    # everything (a reader held the WAL): its tail would be the whole backlog,
    # on a scan, before the relay may open.
    import sqlite3
    wallets = _listed(gate, issuer, tmp_path, 80)
    gate.scan(wallets[0].code(NOW), now=NOW)
    cp = gate._checkpointer
    cp.every = 10
    reader = sqlite3.connect(gate.data_dir / DB_NAME, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM scans").fetchone()  # a snapshot: frames after it stay
    try:
        for w in wallets[1:40]:
            assert gate.scan(w.code(NOW), now=NOW)[0].accepted
        deadline = time.monotonic() + 10
        while cp.runs < 3 and time.monotonic() < deadline:  # wakes coalesce on a busy machine
            cp._wake.set()
            time.sleep(0.02)
        assert cp.runs >= 3 and cp.tails == 0
    finally:
        reader.execute("COMMIT")
        reader.close()
    for w in wallets[40:]:  # released: complete passes, and the scan follows them up
        assert gate.scan(w.code(NOW), now=NOW)[0].accepted
    assert cp.tails >= 1
    assert scanlog.verify_chain(gate.conn).records == 80


def _lane(gate):
    """test_lane's lane (simulated relay and passage sensor, clock at NOW), with no
    cooldown: back-to-back codes are all decided."""
    from test_lane import _lane as lane_on

    lane, _ = lane_on(gate)
    lane.cooldown_s = 0.0
    return lane


def test_a_lane_copies_the_wal_tail_after_its_turnstile_cycle(gate, issuer, tmp_path):
    # Fails if a lane's scan runs the follow-up checkpoint copy (~0.5-1 ms, once per
    # thread pass) between its commit and its relay pulse, or while the passage is
    # watched (a sensor edge then could be missed): that upkeep waits for the end of
    # the cycle. Also fails if the lane never runs it, for an admission or a refusal.
    wallets = _listed(gate, issuer, tmp_path, 3)
    lane = _lane(gate)
    assert lane.submit(wallets[0].code(NOW), captured_ns=0).outcome == "passed"
    cp = gate._checkpointer
    seen = []
    real_pulse, real_wait = lane.relay.pulse, lane.sensor.wait_passage
    lane.relay.pulse = lambda ms, tag=None: (seen.append(("pulse", cp.tails)), real_pulse(ms, tag=tag))
    lane.sensor.wait_passage = lambda timeout: (seen.append(("passage", cp.tails)), real_wait(timeout))[1]

    def after_a_complete_pass() -> int:
        cp.every = 1
        cp.committed()  # one wake of the thread (no other pass can follow it)
        deadline = time.monotonic() + 10
        while not cp._copied.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cp._copied.is_set(), "the checkpoint thread never completed a pass"
        cp.every = 10**9
        return cp.tails

    before = after_a_complete_pass()
    assert lane.submit(wallets[1].code(NOW), captured_ns=0).outcome == "passed"
    assert seen == [("pulse", before), ("passage", before)]  # not yet at the relay nor at the passage
    assert cp.tails == before + 1 and not cp._copied.is_set()  # done once the cycle ended

    seen.clear()
    before = after_a_complete_pass()
    ev = lane.submit(wallets[1].code(NOW), captured_ns=0)  # shown again: refused, nothing opens
    assert ev.outcome == "rejected" and ev.decision.reason.value == "REPLAY" and seen == []
    assert cp.tails == before + 1


def test_back_to_back_lane_scans_keep_the_wal_from_growing(gate, issuer, tmp_path):
    # The lane's side of test_back_to_back_scans_keep_the_wal_from_growing: fails if
    # the copy a lane defers to the end of its cycle is never made (the WAL would grow
    # ~20 KB per scan again), or if a record is lost.
    wallets = _listed(gate, issuer, tmp_path, 200)
    wal = gate.data_dir / (DB_NAME + "-wal")
    lane = _lane(gate)
    assert lane.submit(wallets[0].code(NOW), captured_ns=0).outcome == "passed"
    cp = gate._checkpointer
    cp.every = 10
    sizes = []
    for i, w in enumerate(wallets[1:], 1):
        assert lane.submit(w.code(NOW), captured_ns=0).outcome == "passed"
        if i in (50, 199):
            sizes.append(wal.stat().st_size)
    assert cp.runs >= 5 and cp.tails >= 5
    assert sizes[1] < 2 * sizes[0], sizes
    assert scanlog.verify_chain(gate.conn).ok  # every record chained, each scan with its passage
    assert gate.conn.execute("SELECT count(*) FROM scans WHERE kind = 'scan' AND accepted = 1").fetchone() == (200,)

RECORDS = [
    {"ticket_id": "ab" * 16, "event": "e", "tier": "GA", "zone": None, "version": 1, "status": "valid",
     "entries": 1, "reentry": False, "face_required": False, "face_template": None, "holder": None},
    {"ticket_id": "0123456789abcdef", "event": "e", "version": 3, "status": "revoked", "entries": 0},
    {"ticket_id": "ab" * 16, "event": "e", "tier": "Tribüne", "zone": "北", "version": 1, "status": "valid",
     "entries": 2, "reentry": True, "face_required": True, "holder": "Zoë"},
    {"ticket_id": "AB" * 16, "event": "e", "version": 1, "status": "valid", "entries": 1},
    {"ticket_id": "zz" * 16, "event": "e", "version": 1, "status": "valid", "entries": 1},
    {"ticket_id": "ab" * 16, "event": "other", "version": 1, "status": "valid", "entries": 1},
    {"ticket_id": "ab" * 16, "event": "e", "version": 0, "status": "valid", "entries": 1},
    {"ticket_id": "ab" * 16, "event": "e", "version": True, "status": "valid", "entries": 1},
    {"ticket_id": "ab" * 16, "event": "e", "version": 1, "status": "used", "entries": 1},
    {"ticket_id": "ab" * 16, "event": "e", "version": 1, "status": "valid", "entries": -1},
    {"ticket_id": "ab" * 16, "event": "e", "version": 1, "status": "valid", "entries": 2 ** 63},
    {"ticket_id": "ab" * 16, "event": "e", "version": 1, "status": "valid", "entries": 1, "reentry": 1},
    {"ticket_id": "ab" * 16, "event": "e", "version": 1, "status": "valid", "entries": 1, "tier": 5},
    {"ticket_id": "ab" * 16, "event": "e", "version": 1, "status": "valid", "entries": 1, "holder": "\udc80"},
    {"ticket_id": "ab" * 7, "event": "e", "version": 1, "status": "valid", "entries": 1},
    {"ticket_id": "abc" * 11, "event": "e", "version": 1, "status": "valid", "entries": 1},
    ["not", "a", "map"],
    {"ticket_id": "ab" * 16, "event": "e", "version": 1, "status": [], "entries": 1},
    {"ticket_id": "ab" * 16, "event": "e", "version": 1, "status": {"valid": 1}, "entries": 1},
    {"ticket_id": "ab" * 16, "event": "e", "version": 1, "status": ["valid"], "entries": 1},
    {"ticket_id": "0123456789abcd  ", "event": "e", "version": 1, "status": "valid", "entries": 1},
    {"ticket_id": "0123456789abcd\t\n", "event": "e", "version": 1, "status": "valid", "entries": 1},
]


@pytest.mark.parametrize("rec", RECORDS, ids=range(len(RECORDS)))
def test_the_inline_ticket_check_gives_the_rows_and_errors_of_the_full_one(rec):
    # Fails if the fast path of a first sync accepts a record the full check
    # refuses, refuses one it accepts, or builds a different row.
    key = bytes(32)

    def outcome(fn):
        try:
            return fn(rec, "e", key, keep_template=True)
        except ValueError as exc:
            return ("error", str(exc))
    assert outcome(ledger.ticket_row) == outcome(ledger._ticket_row_checked)


def _as_array(rec):
    """A record of RECORDS as a row of the rows layout (every column present)."""
    return [rec.get(c, False if c in ("reentry", "face_required") else None) for c in ledger.TICKET_COLUMNS]


@pytest.mark.parametrize("rec", [r for r in RECORDS if isinstance(r, dict) and r["event"] == "e"],
                         ids=lambda r: str(r)[:40])
def test_a_ticket_row_array_gives_the_row_and_error_of_its_record(rec):
    # Fails if the rows layout of the ticket feed accepts what the record check
    # refuses, refuses what it accepts, or builds a different row.
    key = bytes(32)
    arr = _as_array(rec)

    def outcome(fn, obj):
        try:
            return fn(obj, "e", key, keep_template=True)
        except ValueError as exc:
            return ("error", str(exc))
    record = {"event": "e", **dict(zip(ledger.TICKET_COLUMNS, arr))}
    assert outcome(ledger.ticket_row_from_array, arr) == outcome(ledger._ticket_row_checked, record)


@pytest.mark.parametrize("arr", [["ab" * 16, "GA"], {"ticket_id": "ab" * 16}, "ab" * 16, None,
                                 ["ab" * 16, "GA", None, 1, "valid", 1, False, False, None, None, "extra"]])
def test_a_ticket_row_that_is_not_an_array_of_ten_is_refused(arr):
    with pytest.raises(ValueError, match="array of 10 values"):
        ledger.ticket_row_from_array(arr, "e", bytes(32))


def test_the_rows_layout_syncs_the_same_ledger_as_items_and_old_centrals_still_work(tmp_path, monkeypatch):
    # Fails if the rows layout (what the gate asks for) applies a different ledger
    # from the items layout, if central's rows differ from its items, or if a
    # gate can no longer sync from a central that answers items only.
    import json as _json

    import requests

    from sync import client as sc
    from sync.central.app import ServerThread, create_app
    from sync.central.store import CentralStore

    store = CentralStore(tmp_path / "central")
    store.create_event("evt-rows")
    base = {"event": "evt-rows", "tier": "GA", "zone": None, "version": 1, "status": "valid", "entries": 1,
            "reentry": False, "face_required": False, "face_template": None, "holder": None}
    recs = [{**base, "ticket_id": f"{i:032x}", "entries": i % 3, "reentry": i % 2 == 0,
             "zone": "北" if i % 5 == 0 else None, "holder": "Zoë <b>" if i % 7 == 0 else None,
             "status": "revoked" if i % 11 == 0 else "valid", "version": 1 + i % 4} for i in range(1200)]
    store.add_tickets(recs)
    server = ServerThread(create_app(store)).start()
    try:
        gates = []
        for name in ("rows", "items"):
            g = Gate.init(tmp_path / name, event="evt-rows")
            sc.enroll(g, server.url, store.enrol_code("evt-rows"))
            gates.append(g)
        token = sc.token_path(gates[0]).read_text().strip()
        url = f"{server.url}/v1/events/evt-rows/tickets?limit=700"
        auth = {"Authorization": f"Bearer {token}"}
        as_items = requests.get(url, headers=auth).json()
        as_rows = requests.get(url + "&layout=rows", headers=auth).json()
        assert as_rows["columns"] == list(ledger.TICKET_COLUMNS) and "items" not in as_rows
        assert as_rows["cursor"] == as_items["cursor"] and as_rows["more"] is as_items["more"] is True
        assert [{"event": "evt-rows", **dict(zip(as_rows["columns"], r))} for r in as_rows["rows"]] == as_items["items"]
        wrong = requests.get(url + "&layout=columns", headers=auth)
        assert wrong.status_code == 400 and "layout" in wrong.json()["error"], wrong.text

        asked = []
        real = sc.CentralClient.call
        monkeypatch.setattr(sc.CentralClient, "call",
                            lambda self, m, path, **kw: asked.append((kw.get("params") or {}).get("layout"))
                            or real(self, m, path, **kw))
        assert sc.pull_tickets(gates[0], sc.client_for(gates[0]), page=500) == 1200
        assert set(asked) == {"rows"}

        def old_central(self, m, path, **kw):  # a central from before the rows layout: items only
            params = dict(kw.pop("params", None) or {})
            params.pop("layout", None)
            return real(self, m, path, params=params, **kw)
        monkeypatch.setattr(sc.CentralClient, "call", old_central)
        assert sc.pull_tickets(gates[1], sc.client_for(gates[1]), page=500) == 1200
        dump = [g.conn.execute("SELECT * FROM tickets ORDER BY ticket_id").fetchall() for g in gates]
        assert dump[0] == dump[1] and len(dump[0]) == 1200
        assert {r[0]: r for r in dump[0]}[f"{7:032x}"][10] == "Zoë <b>"
        for g in gates:
            g.close()
    finally:
        server.stop()
        store.close()


def test_ticket_rows_with_other_columns_apply_nothing(tmp_path, monkeypatch):
    # Fails if a gate applies rows whose column order it does not know (a newer or
    # broken central): the values would land in the wrong fields.
    from gate.db import get_setting
    from sync import client as sc
    from sync.central import feeds
    from sync.central.app import ServerThread, create_app
    from sync.central.store import CentralStore

    store = CentralStore(tmp_path / "central")
    store.create_event("evt-cols")
    base = {"event": "evt-cols", "tier": "GA", "zone": None, "version": 1, "status": "valid", "entries": 1,
            "reentry": False, "face_required": False, "face_template": None, "holder": None}
    store.add_tickets([{**base, "ticket_id": f"{i:032x}"} for i in range(10)])
    monkeypatch.setattr(feeds, "TICKET_COLUMNS", tuple(reversed(feeds.TICKET_COLUMNS)))
    server = ServerThread(create_app(store)).start()
    try:
        g = Gate.init(tmp_path / "g", event="evt-cols")
        sc.enroll(g, server.url, store.enrol_code("evt-cols"))
        with pytest.raises(sc.ApiError, match="columns"):
            sc.pull_tickets(g, sc.client_for(g))
        assert g.conn.execute("SELECT count(*) FROM tickets").fetchone()[0] == 0
        assert get_setting(g.conn, "sync.tickets_cursor") is None
        g.close()
    finally:
        server.stop()
        store.close()


def test_central_sqlite_is_durable_unless_told(tmp_path):
    # Fails if central acknowledges uploads from a SQLite database that a power cut
    # may roll back, without the operator having asked for it in the URL.
    from sync.central.db import Database

    def synchronous(url):
        d = Database(url)
        try:
            with d.engine.connect() as c:
                return c.exec_driver_sql("PRAGMA synchronous").scalar()
        finally:
            d.close()
    assert synchronous(f"sqlite:///{tmp_path / 'a.db'}") == 2  # FULL
    assert synchronous(f"sqlite:///{tmp_path / 'b.db'}?synchronous=normal") == 1  # NORMAL
    with pytest.raises(ValueError, match="synchronous"):
        Database(f"sqlite:///{tmp_path / 'c.db'}?synchronous=off")


def test_a_large_ticket_page_goes_gzipped_only_to_clients_that_ask(tmp_path):
    # Fails if an old client (no Accept-Encoding: gzip) gets compressed bytes, if a
    # client that asks gets the page uncompressed, or if the gate's sync of a
    # compressed feed differs from the plain one (the wire format is docs/sync.md).
    import gzip
    import json as _json

    import requests

    from sync import client as sc
    from sync.central.app import ServerThread, create_app
    from sync.central.store import CentralStore

    store = CentralStore(tmp_path / "central")
    store.create_event("evt-gz")
    base = {"event": "evt-gz", "tier": "GA", "zone": None, "version": 1, "status": "valid", "entries": 1,
            "reentry": False, "face_required": False, "face_template": None, "holder": None}
    ids = [f"{i:032x}" for i in range(2500)]
    store.add_tickets([{**base, "ticket_id": t} for t in ids])
    server = ServerThread(create_app(store)).start()
    try:
        g = Gate.init(tmp_path / "g", event="evt-gz")
        sc.enroll(g, server.url, store.enrol_code("evt-gz"))
        token = sc.token_path(g).read_text().strip()
        url = f"{server.url}/v1/events/evt-gz/tickets?limit=5000"
        auth = {"Authorization": f"Bearer {token}"}
        plain = requests.get(url, headers={**auth, "Accept-Encoding": "identity"}, stream=True)
        raw = plain.raw.read()
        assert "Content-Encoding" not in plain.headers and _json.loads(raw)["items"][0]["ticket_id"] == ids[0]
        packed = requests.get(url, headers={**auth, "Accept-Encoding": "gzip"}, stream=True)
        assert packed.headers["Content-Encoding"] == "gzip"
        assert _json.loads(gzip.decompress(packed.raw.read())) == _json.loads(raw)
        small = requests.get(url.replace("5000", "10"), headers={**auth, "Accept-Encoding": "gzip"}, stream=True)
        assert "Content-Encoding" not in small.headers  # a small page is not worth compressing
        assert sc.pull_tickets(g, sc.client_for(g), page=1000) == 2500
        assert g.conn.execute("SELECT count(*) FROM tickets").fetchone()[0] == 2500
        g.close()
    finally:
        server.stop()
        store.close()


def test_grouped_ticket_pages_write_the_good_pages_before_a_bad_one(tmp_path):
    # Pages are written in groups; a bad page must still leave the pages before it
    # applied with their cursor (as page by page did), and apply nothing of itself.
    # Fails if a group is lost with the bad page, or the cursor passes the bad page.
    from gate.db import get_setting
    from sync import client as sc
    from sync.central.app import ServerThread, create_app
    from sync.central.store import CentralStore

    store = CentralStore(tmp_path / "central")
    store.create_event("evt-grp")
    base = {"event": "evt-grp", "tier": "GA", "zone": None, "version": 1, "status": "valid", "entries": 1,
            "reentry": False, "face_required": False, "face_template": None, "holder": None}
    store.add_tickets([{**base, "ticket_id": f"{i:032x}"} for i in range(25)])
    with store.writer() as db:
        bad = db.scalar("SELECT change_seq FROM tickets ORDER BY change_seq LIMIT 1 OFFSET 22")
        db.run("UPDATE tickets SET entries = -5 WHERE change_seq = :c", {"c": bad})
    server = ServerThread(create_app(store)).start()
    try:
        g = Gate.init(tmp_path / "g", event="evt-grp")
        sc.enroll(g, server.url, store.enrol_code("evt-grp"))
        with pytest.raises(sc.ApiError, match="invalid ticket"):
            sc.pull_tickets(g, sc.client_for(g), page=10)  # pages 1-2 good, page 3 holds the bad one
        assert g.conn.execute("SELECT count(*) FROM tickets").fetchone()[0] == 20
        assert get_setting(g.conn, "sync.tickets_cursor") is not None
        with store.writer() as db:
            db.run("UPDATE tickets SET entries = 1 WHERE change_seq = :c", {"c": bad})
        assert sc.pull_tickets(g, sc.client_for(g), page=10) == 5  # resumes after the good pages
        assert g.conn.execute("SELECT count(*) FROM tickets").fetchone()[0] == 25
        g.close()
    finally:
        server.stop()
        store.close()


@pytest.mark.parametrize("tid", ["0123456789abcd  ", "0123456789abcd\t\n", " 0123456789abcde", "0123456789ab cde"])
def test_a_ticket_id_with_whitespace_is_refused_on_every_path(tid):
    # bytes.fromhex() skips whitespace: a check that relied on it alone took
    # "0123456789abcd  " for an 8-byte id that no code can ever name.
    rec = {"ticket_id": tid, "event": "e", "version": 1, "status": "valid", "entries": 1}
    for check, obj in ((ledger.ticket_row, rec), (ledger._ticket_row_checked, rec),
                       (ledger.ticket_row_from_array, _as_array(rec))):
        with pytest.raises(ValueError, match="ticket_id"):
            check(obj, "e", bytes(32), keep_template=True)
