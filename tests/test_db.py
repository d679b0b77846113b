"""The device database: named migrations (all or nothing, each once) and the
remote-usage fold that the decision path reads, on real SQLite files."""

from __future__ import annotations

import random
import sqlite3

import pytest

from gate import db
from gate.db import connect, migrate, transaction
from gate.decision import Mode
from gate.errors import LedgerError
from gate.ledger import SqliteLedgerView


def test_every_migration_applies_once(tmp_path):
    conn = connect(tmp_path / "g.db")
    names = [n for n, _ in db.MIGRATIONS]
    assert [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY rowid")] == names
    assert migrate(conn) == []  # a second run applies nothing
    conn.close()
    conn = connect(tmp_path / "g.db")  # nor does reopening
    assert conn.execute("SELECT count(*) FROM _migrations").fetchone()[0] == len(names)


def test_a_failing_migration_leaves_nothing_behind(tmp_path, monkeypatch):
    # A migration that creates a table and then fails must leave neither the
    # table nor its "applied" record: a rerun (after the fix) applies it once.
    conn = connect(tmp_path / "g.db")

    def broken(d):
        d.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("simulated failure halfway")

    monkeypatch.setattr(db, "MIGRATIONS", [*db.MIGRATIONS, ("900_broken", broken)])
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn)
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM _migrations WHERE name = '900_broken'").fetchone()[0] == 0

    def fixed(d):
        d.execute("CREATE TABLE half_done (x)")

    monkeypatch.setattr(db, "MIGRATIONS", [*db.MIGRATIONS[:-1], ("900_broken", fixed)])
    assert migrate(conn) == ["900_broken"]
    assert migrate(conn) == []


def test_an_unreadable_database_is_a_clear_error(tmp_path):
    path = tmp_path / "g.db"
    path.write_bytes(b"this is not a database file" * 100)
    with pytest.raises(LedgerError, match="cannot open the device database"):
        connect(path)


def _fold(conn, tid):
    """What remote_usage must say for one ticket, computed from scratch."""
    rows = conn.execute("SELECT mode, consumes, ts_ms FROM remote_admissions WHERE ticket_id = ? AND voided = 0",
                        (tid,)).fetchall()
    if not rows:
        return None
    adm = sum(1 for m, c, _ in rows if c == 1 and m == "entry")
    last = max(rows, key=lambda r: r[2])
    return adm, last[0], last[2]


def test_remote_usage_follows_every_insert_void_and_delete(tmp_path):
    # Random inserts, voids (rollbacks) and deletes on remote_admissions; after
    # each, the folded row the decision path reads equals a fold from scratch.
    conn = connect(tmp_path / "g.db")
    view = SqliteLedgerView(conn, None)
    rng = random.Random(7)
    tickets = [f"{i:032x}" for i in range(4)]
    seqs: list[tuple[str, int, str]] = []
    for step in range(300):
        op = rng.random()
        with transaction(conn):
            if op < 0.6 or not seqs:
                dev, seq, tid = rng.choice(["gate-a", "gate-b"]), step, rng.choice(tickets)
                conn.execute("INSERT OR IGNORE INTO remote_admissions (device_id, seq, ticket_id, mode, consumes,"
                             " ts_ms) VALUES (?, ?, ?, ?, ?, ?)",
                             (dev, seq, tid, rng.choice(["entry", "exit"]), rng.choice([0, 1]), 1000 + step))
                seqs.append((dev, seq, tid))
            elif op < 0.85:
                dev, seq, _ = rng.choice(seqs)
                conn.execute("UPDATE remote_admissions SET voided = 1 WHERE device_id = ? AND seq = ?", (dev, seq))
            else:
                dev, seq, _ = seqs.pop(rng.randrange(len(seqs)))
                conn.execute("DELETE FROM remote_admissions WHERE device_id = ? AND seq = ?", (dev, seq))
        for tid in tickets:
            want = _fold(conn, tid)
            got = conn.execute("SELECT admissions, last_kind, last_ts_ms FROM remote_usage WHERE ticket_id = ?",
                               (tid,)).fetchone()
            assert got == want, (step, tid)
            usage = view.usage(tid)
            assert usage.admissions == (want[0] if want else 0)
            assert usage.last_kind == (Mode(want[1]) if want else None)
