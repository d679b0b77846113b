"""The central at venue-group scale (issue 14), on SQLite and PostgreSQL:
several `central serve` processes on one database, concurrent uploads of the
same batches, commit-ordered cursors, venues, and the faults: PostgreSQL
restarted mid-upload, an API process killed mid-batch, an exhausted connection
pool. (Migrations run twice, at once or interrupted: tests/test_central_schema.py.)"""

from __future__ import annotations

import base64
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gate import scanlog
from gate.appliance import Gate
from gate.db import transaction
from sync import client as sc
from sync.central.app import ServerThread, create_app
from sync.central.reconcile import build_report, build_venue_report, render_venue_text
from sync.central.store import CentralStore
from conftest import GATE_BIN, run_gate
from ports import free_port, wait_until_serving

EVENT = "evt-scale"


class Serve:
    """A real `gate central serve` process."""

    def __init__(self, data: Path, db: str | None, *extra: str):
        self.port = free_port()
        args = [str(GATE_BIN), "--data", str(data), "central"] + (["--db", db] if db else []) + \
            ["serve", "--port", str(self.port), *extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            wait_until_serving(self.url + "/v1/time", proc=self.proc, what="central serve")
        except AssertionError as exc:
            if self.proc.poll() is None:
                self.proc.kill()
            raise AssertionError(f"{exc}\n{self.proc.communicate()[1].decode(errors='replace')}") from None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc.stderr.close()


@pytest.fixture
def two_serves(tmp_path, central_db):
    store = CentralStore(tmp_path / "central", central_db)
    store.create_event(EVENT)
    serves = [Serve(tmp_path / "central", central_db), Serve(tmp_path / "central", central_db)]
    yield store, serves
    for s in serves:
        s.stop()
    store.close()


def _fill(g: Gate, tickets: list[str], *, start_ms: int, lane_gap_ms: int = 1100) -> None:
    """Chained scan records straight into the gate's log (what real scans leave),
    one admission per ticket at a turnstile's pace."""
    seq, prev = scanlog.head(g.conn)
    rows = []
    for i, tid in enumerate(tickets):
        seq += 1
        rec = {"kind": "scan", "ts_ms": start_ms + i * lane_gap_ms, "device": g.config.device_id,
               "lane": g.policy.lane, "event": g.policy.event, "mode": "entry", "decision": "accept",
               "reason": "ACCEPT", "ticket_id": tid, "step": None, "version": 1, "unlisted": False,
               "consumes": True, "face_e4": None, "qr_sha": None, "seq": seq}
        data = scanlog.encode_record(rec)
        prev = scanlog.chain_hash(prev, data)
        rows.append((seq, rec["ts_ms"], "scan", tid, "ACCEPT", 1, data, prev))
    with transaction(g.conn):
        g.conn.executemany("INSERT INTO scans VALUES (?,?,?,?,?,?,?,?)", rows)


def _batch(g: Gate, after: int, n: int) -> dict:
    from gate.keyfiles import load_device_key
    key = load_device_key(g.data_dir)
    rows = g.conn.execute("SELECT seq, record, hash FROM scans WHERE seq > ? ORDER BY seq LIMIT ?",
                          (after, n)).fetchall()
    last, h = rows[-1][0], rows[-1][2]
    return {"device_id": g.config.device_id, "from_seq": rows[0][0],
            "records": [base64.b64encode(r[1]).decode() for r in rows], "head_hash": h.hex(),
            "head_sig": base64.b64encode(key.sign(scanlog.head_message(g.config.device_id, last, h))).decode()}


def _stored(store, device_id: str) -> list[tuple[int, int]]:
    with store.reader() as db:
        return [tuple(r) for r in db.all("SELECT seq, count(*) FROM scans WHERE device_id = :d GROUP BY seq"
                                         " ORDER BY seq", {"d": device_id})]


def _ids(n: int, salt: str = "") -> list[str]:
    import hashlib
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest()[:32] for i in range(n)]


# ------------------------------------------------------------------ stateless API


def test_two_serve_processes_answer_alike_and_store_concurrent_batches_once(two_serves, tmp_path):
    store, (a, b) = two_serves
    store.issue(EVENT, count=5, out=tmp_path / "w")
    g = Gate.init(tmp_path / "g1", event=EVENT, lane="l1")
    sc.enroll(g, a.url, store.enrol_code(EVENT))
    _fill(g, _ids(600), start_ms=int(time.time() * 1000) - 700_000)
    ca, cb = (sc.CentralClient(s.url, sc.token_path(g).read_text()) for s in (a, b))
    # the same device's batches, each sent through both processes at the same moment
    with ThreadPoolExecutor(4) as pool:
        for after in range(0, 600, 100):
            batch = _batch(g, after, 100)
            acks = list(pool.map(lambda c: c.upload(EVENT, batch)["stored_through"], (ca, cb, ca, cb)))
            assert acks == [after + 100] * 4  # (a lost race would answer 409/500 or store a seq twice)
    assert _stored(store, g.config.device_id) == [(s, 1) for s in range(1, 601)]
    for path in (f"/v1/events/{EVENT}/tickets", f"/v1/events/{EVENT}/admissions"):
        assert ca.page(path, "", 1000) == cb.page(path, "", 1000)
    assert ca.keyring(EVENT) == cb.keyring(EVENT)


def test_admission_cursor_never_skips_rows_under_concurrent_writers(two_serves, tmp_path):
    """A follower paging /admissions with its cursor while 6 gates upload through two
    processes must end with every admission: a cursor that skipped a row committed
    later with a lower number would lose it for good (ids allocated at insert time
    instead of in commit order fail this on PostgreSQL)."""
    store, serves = two_serves
    gates = []
    start = int(time.time() * 1000) - 3_600_000
    for i in range(6):
        g = Gate.init(tmp_path / f"g{i}", event=EVENT, lane=f"l{i}")
        sc.enroll(g, serves[i % 2].url, store.enrol_code(EVENT))
        _fill(g, _ids(300, f"g{i}-"), start_ms=start)
        gates.append(g)
    follower = sc.CentralClient(serves[0].url, sc.token_path(gates[0]).read_text())
    seen, cursor, stop = [], "", threading.Event()

    def follow():
        nonlocal cursor
        while True:
            finished = stop.is_set()
            while True:
                items, cursor, more = follower.page(f"/v1/events/{EVENT}/admissions", cursor, 37)
                seen.extend((it["device_id"], it["seq"]) for it in items)
                if not more:
                    break
            if finished:
                return

    t = threading.Thread(target=follow)
    t.start()

    def push(i):
        g = Gate.open(gates[i].data_dir, now=time.time())
        return sc.push_scans(g, sc.client_for(g, serves[i % 2].url), batch_size=25)

    with ThreadPoolExecutor(6) as pool:
        assert sum(pool.map(push, range(6))) == 1800
    stop.set()
    t.join(60)
    assert len(seen) == 1800 and len(set(seen)) == 1800


# ------------------------------------------------------------------ venues


def test_devices_serve_their_own_event_and_reports_per_event_and_venue(tmp_path, central_db):
    store = CentralStore(tmp_path / "central", central_db)
    for ev, venue in (("night-1", "arena"), ("night-2", "arena"), ("other", "club")):
        store.create_event(ev, venue=venue)
    for ev in ("night-1", "night-2", "other"):
        store.issue(ev, count=2, out=tmp_path / ev)
    server = ServerThread(create_app(store)).start()
    try:
        g = Gate.init(tmp_path / "g", event="night-1", lane="n")
        sc.enroll(g, server.url, store.enrol_code("night-1"))
        client = sc.client_for(g)
        assert len(client.page("/v1/events/night-1/tickets", "", 10)[0]) == 2  # its own event
        for other in ("night-2", "other"):  # one device, one event: also the same venue's other night
            with pytest.raises(sc.ApiError) as exc:
                client.page(f"/v1/events/{other}/tickets", "", 10)
            assert exc.value.status == 403
        _fill(g, _ids(3, "n1"), start_ms=int(time.time() * 1000))
        assert sc.push_scans(g, client) == 3
    finally:
        server.stop()
    assert build_report(store, "night-1")["venue"] == "arena"
    rep = build_venue_report(store, "arena")
    assert [(e["event"], e["admitted"]) for e in rep["events"]] == [("night-1", 3), ("night-2", 0)]
    assert "night-2" in render_venue_text(rep) and "other" not in render_venue_text(rep)
    db = ["--db", store.db_url] if store.db_url else []
    out = run_gate(tmp_path / "central", "central", *db, "report", "--venue", "arena").stdout
    assert "night-1" in out and "night-2" in out
    store.close()


# ------------------------------------------------------------------ faults


def _lock_waiters(pg, dbname: str) -> int:
    import psycopg
    with psycopg.connect(host=str(pg.sock), port=pg.port, user=pg.user, dbname="postgres", autocommit=True) as c:
        return c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                         (dbname,)).fetchone()[0]


def test_fault_postgresql_restarted_mid_upload_batch_retried_and_stored_once(tmp_path):
    # The restart must hit a batch central is in the middle of: the test holds the scans table,
    # waits until central's handling of a batch is blocked on it inside PostgreSQL (seen in
    # pg_stat_activity), and only then restarts the server. A restart between batches (or after
    # the last one) proves nothing, and is no longer possible here.
    import psycopg
    from pg import PgCluster
    with PgCluster() as pg:
        url = pg.create_db()
        dbname = url.split("@/")[1].split("?")[0]
        store = CentralStore(tmp_path / "central", url, pool_timeout=2)
        store.create_event(EVENT)
        server = ServerThread(create_app(store)).start()
        try:
            g = Gate.init(tmp_path / "g", event=EVENT, lane="l")
            sc.enroll(g, server.url, store.enrol_code(EVENT))
            _fill(g, _ids(2000), start_ms=int(time.time() * 1000) - 2_500_000)
            client = sc.client_for(g)
            client.timeout = (2, 60)
            sc.push_scans(g, client, batch_size=50)  # the first 2000 go through: central works
            _fill(g, _ids(500, "more"), start_ms=int(time.time() * 1000) - 400_000)
            blocker = psycopg.connect(host=str(pg.sock), port=pg.port, user=pg.user, dbname=dbname)
            blocker.execute("LOCK TABLE scans IN ACCESS EXCLUSIVE MODE")  # held until the restart ends it
            in_flight: dict = {}

            def push():
                try:
                    sc.push_scans(g, client, batch_size=50)
                except sc.ApiError as exc:
                    in_flight["error"] = exc

            pusher = threading.Thread(target=push)
            pusher.start()
            deadline = time.monotonic() + 120
            while _lock_waiters(pg, dbname) == 0:  # central's handling of the batch waits on the lock
                assert pusher.is_alive() and time.monotonic() < deadline, "no upload ever waited inside PostgreSQL"
                time.sleep(0.02)
            pg.restart()  # connections die: the batch waiting in central fails, nothing of it stored
            pusher.join(120)
            blocker.close()
            err = in_flight.get("error")
            assert err is not None, "the batch in flight was acknowledged through a restart"
            assert err.status in (None, 503), err  # never a 500
            errors = [err.status]
            for _ in range(200):  # what the gate's sync loop does: retry the unacknowledged batch
                try:
                    sc.push_scans(g, client, batch_size=50)
                    break
                except sc.ApiError as exc:
                    errors.append(exc.status)
                    assert exc.status in (None, 503), exc
                    time.sleep(0.2)
            print("upload errors around the restart", errors)
            assert sc.outbox_length(g) == 0
            assert _stored(store, g.config.device_id) == [(s, 1) for s in range(1, 2501)]
        finally:
            server.stop()
            store.close()


def test_fault_api_process_killed_mid_batch_loses_nothing_acknowledged(two_serves, tmp_path, central_db):
    # The kill must land while a batch is in flight at the process: the gate uploads through a
    # pass-through proxy that counts requests handed to the process and not answered, and notes
    # one whose connection the process accepted and then dropped with no answer. The test kills
    # once batches flow and one is being forwarded; a kill that still fell between batches proves
    # nothing, so it then kills a fresh process and tries again until one lands.
    from faulty_proxy import FaultyProxy
    from gate.db import get_setting

    store, (serve, b) = two_serves
    g = Gate.init(tmp_path / "g", event=EVENT, lane="l")
    sc.enroll(g, serve.url, store.enrol_code(EVENT))
    total, start = 0, int(time.time() * 1000) - 40_000_000
    spawned: list[Serve] = []
    try:
        for attempt in range(5):
            _fill(g, _ids(1500, f"a{attempt}-"), start_ms=start + total * 1100)
            total += 1500
            with FaultyProxy(serve.url) as proxy:
                pusher = threading.Thread(target=_push_quietly, args=(g.data_dir, proxy.url))
                pusher.start()
                deadline = time.monotonic() + 120
                while len(_stored(store, g.config.device_id)) < total - 1200 and pusher.is_alive():
                    assert time.monotonic() < deadline, "the upload did not get going"
                    time.sleep(0.005)
                while proxy.forwarding == 0 and pusher.is_alive():  # a batch is at the process now
                    time.sleep(0.0005)
                serve.kill()
                pusher.join(120)
            acked = get_setting(g.conn, "sync.uploaded_through", 0)
            stored = [s for s, _ in _stored(store, g.config.device_id)]
            assert stored[:acked] == list(range(1, acked + 1))  # every acknowledged record is there
            print(f"attempt {attempt}: acked {acked}, stored {len(stored)}, lost in flight {proxy.lost}")
            if any(path.endswith("/scans") for _, path in proxy.lost):
                break
            serve = Serve(tmp_path / "central", central_db)  # missed: a new process, more records, again
            spawned.append(serve)
        else:
            raise AssertionError("in 5 attempts no kill landed on a batch in flight")
    finally:
        for s in spawned:
            s.stop()
    sc.push_scans(g, sc.client_for(g, b.url), batch_size=500)  # the gate goes on through the other one
    assert _stored(store, g.config.device_id) == [(s, 1) for s in range(1, total + 1)]


def _push_quietly(data: Path, url: str) -> None:
    g = Gate.open(data, now=time.time())  # this thread's own connection, as the sync loop has
    try:
        sc.push_scans(g, sc.client_for(g, url), batch_size=100)
    except sc.ApiError:
        pass  # the process died under the gate
    finally:
        g.close()


def test_fault_pool_exhausted_answers_503_with_retry_after_and_the_gate_honours_it(tmp_path, central_db):
    store = CentralStore(tmp_path / "central", central_db, pool_size=1, pool_timeout=0.5)
    store.create_event(EVENT)
    server = ServerThread(create_app(store)).start()
    try:
        g = Gate.init(tmp_path / "g", event=EVENT, lane="l")
        sc.enroll(g, server.url, store.enrol_code(EVENT))
        with store.reader():  # the only connection is taken (a long report, a stuck client)
            rep = sc.sync_once(g, sc.client_for(g))
        assert not rep.ok and any("503" in e for e in rep.errors), rep.errors
        assert rep.retry_after is not None and rep.retry_after >= 1
        policy = sc.RetryPolicy(base_s=0.01, cap_s=30, jitter=0)
        assert policy.delay(1) == 0.01
        assert policy.delay(1, retry_after=rep.retry_after) == rep.retry_after  # waits as long as asked
        assert policy.delay(1, retry_after=3600) == 30  # within the cap
        # the lane's sync loop waits as central asked (a loop that ignored it would retry in 10 ms)
        from sync.loop import SyncLoop
        loop = SyncLoop.for_gate(g, policy=policy)
        with store.reader():
            loop.step(g)
        assert loop.next_wait is not None and loop.next_wait >= rep.retry_after
        assert sc.sync_once(g, sc.client_for(g)).ok  # and recovers once a connection is free
    finally:
        server.stop()
        store.close()


# the schema the previous release created (SQLite, before migrations existed)
UNVERSIONED_SCHEMA = '''
CREATE TABLE IF NOT EXISTS events (event TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS issuer_keys (
    kid TEXT PRIMARY KEY, event TEXT NOT NULL, pub BLOB NOT NULL, status TEXT NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tickets (
    ticket_id TEXT PRIMARY KEY, event TEXT NOT NULL, tier TEXT NOT NULL DEFAULT '', zone TEXT,
    version INTEGER NOT NULL DEFAULT 1, status TEXT NOT NULL DEFAULT 'valid',
    entries INTEGER NOT NULL DEFAULT 1, reentry INTEGER NOT NULL DEFAULT 0,
    face_required INTEGER NOT NULL DEFAULT 0, face_template TEXT, holder TEXT,
    change_seq INTEGER NOT NULL, revoked_at REAL);
CREATE INDEX IF NOT EXISTS tickets_feed ON tickets(event, change_seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS enrol_codes (
    code_hash TEXT PRIMARY KEY, event TEXT NOT NULL, created REAL NOT NULL, used_by TEXT);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, event TEXT NOT NULL, pub BLOB NOT NULL, token_hash TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active', enrolled_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS scans (
    id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL,
    ts_ms INTEGER, kind TEXT, mode TEXT, decision TEXT, reason TEXT, ticket_id TEXT,
    unlisted INTEGER, consumes INTEGER, ref INTEGER, lane TEXT, record BLOB NOT NULL,
    hash BLOB NOT NULL, received REAL NOT NULL, UNIQUE (device_id, seq));
CREATE INDEX IF NOT EXISTS scans_ticket ON scans(event, ticket_id);
CREATE INDEX IF NOT EXISTS scans_rollback ON scans(device_id, ref) WHERE kind = 'rollback';
CREATE TABLE IF NOT EXISTS problems (
    id INTEGER PRIMARY KEY, event TEXT, device_id TEXT, kind TEXT NOT NULL, detail TEXT NOT NULL,
    at REAL NOT NULL);
'''


def test_an_unversioned_central_db_is_upgraded_in_place(tmp_path):
    import sqlite3
    data = tmp_path / "central"
    data.mkdir()
    conn = sqlite3.connect(data / "central.db")
    conn.executescript(UNVERSIONED_SCHEMA)
    conn.execute("INSERT INTO events VALUES ('old', 1.0)")
    conn.execute("INSERT INTO counters VALUES ('change', 7)")
    conn.execute("INSERT INTO devices VALUES ('gate-old', 'old', ?, 'h', 'active', 1.0)", (b"k" * 32,))
    for seq in (1, 2):
        conn.execute("INSERT INTO scans (device_id, seq, event, ts_ms, kind, mode, decision, reason, ticket_id,"
                     " unlisted, consumes, ref, lane, record, hash, received) VALUES"
                     " ('gate-old', ?, 'old', 1000, 'scan', 'entry', 'accept', 'ACCEPT', ?, 0, 1, NULL, 'l', x'00',"
                     " x'00', 1.0)", (seq, f"t{seq}"))
    conn.commit()
    conn.close()
    store = CentralStore(data)  # (a schema step that assumed an empty database would fail here)
    items, cursor, _ = store.admissions("old", 0, 10)
    assert [i["ticket_id"] for i in items] == ["t1", "t2"] and cursor == 2
    assert build_report(store, "old")["per_gate"] == {"gate-old": 2}
    with store.writer() as db:  # feed counters continue after what is stored
        assert db.scalar("SELECT value FROM counters WHERE name = 'scan'") == 2
        assert db.scalar("SELECT value FROM counters WHERE name = 'change'") == 7
    assert store.db.migrate() == []
    store.close()
