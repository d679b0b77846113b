"""The ops room's way to the central database.

Every query in this package is portable SQL with ``:name`` parameters (SQLite
and PostgreSQL alike: no date functions, times are bucketed with integer
arithmetic on ``ts_ms``). They run through :func:`reader` / :func:`writer`, which
use the store's own ``store.reader()`` and ``store.migrations`` when the store
has them, and otherwise a small shim over today's SQLite store: a separate
connection per thread (a WAL snapshot, so pages never block ingest).
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager

# The ops room's own tables, created through the store's migrations.
MIGRATIONS = [
    ("ops_0001_accounts", [
        """CREATE TABLE IF NOT EXISTS ops_accounts (
            name VARCHAR(64) PRIMARY KEY, role VARCHAR(16) NOT NULL, salt VARCHAR(64) NOT NULL,
            pwhash VARCHAR(128) NOT NULL, failed INTEGER NOT NULL DEFAULT 0,
            locked_until DOUBLE PRECISION NOT NULL DEFAULT 0, created DOUBLE PRECISION NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS ops_sessions (
            token_hash VARCHAR(64) PRIMARY KEY, name VARCHAR(64) NOT NULL,
            created DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS ops_capacity (
            event VARCHAR(200) PRIMARY KEY, capacity INTEGER NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS ops_gate_status (
            device_id VARCHAR(200) PRIMARY KEY, last_contact DOUBLE PRECISION NOT NULL,
            link VARCHAR(16), outbox INTEGER, clock_offset_ms INTEGER, ledger_age_s INTEGER,
            reported_at DOUBLE PRECISION)""",
    ]),
]


class _Conn:
    def __init__(self, conn):
        self.conn = conn

    def all(self, sql: str, params: dict | None = None) -> list[dict]:
        cur = self.conn.execute(sql, params or {})
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def one(self, sql: str, params: dict | None = None) -> dict | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def run(self, sql: str, params: dict | None = None) -> int:
        return self.conn.execute(sql, params or {}).rowcount


class OpsDB:
    """``reader()`` and ``writer()`` over the central store (see module doc)."""

    def __init__(self, store):
        self.store = store
        self.native = hasattr(store, "reader") and hasattr(store, "migrations")
        self._local = threading.local()
        if self.native:
            names = {m[0] if isinstance(m, tuple) else getattr(m, "name", None) for m in store.migrations}
            for name, stmts in MIGRATIONS:
                if name not in names:
                    store.migrations.append((name, stmts))
            if hasattr(store, "migrate"):
                store.migrate()
        else:
            with self.writer() as db:
                for _, stmts in MIGRATIONS:
                    for s in stmts:
                        db.run(s)

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.store.dir / "central.db", isolation_level=None, timeout=30,
                                check_same_thread=False)
            self._local.conn = c
        return c

    @contextmanager
    def reader(self):
        if self.native:
            with self.store.reader() as db:
                yield db
            return
        c = self._conn()
        c.execute("BEGIN")  # one snapshot for the whole page
        try:
            yield _Conn(c)
        finally:
            c.execute("COMMIT")

    @contextmanager
    def writer(self):
        if self.native and hasattr(self.store, "writer"):
            with self.store.writer() as db:
                yield db
            return
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            yield _Conn(c)
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")
