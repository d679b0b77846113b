"""The ops room's way to the central database: the store's own ``reader()`` /
``writer()`` (SQLite or PostgreSQL, SQLAlchemy Core) with rows as dicts, and
the ops tables added to ``store.migrations``.

Every query in this package is portable SQL with ``:name`` parameters: no date
functions, times are bucketed with integer arithmetic on ``ts_ms``.
"""

from __future__ import annotations

from contextlib import contextmanager

OPS_SCHEMA_1 = """
CREATE TABLE ops_accounts (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, salt TEXT NOT NULL, pwhash TEXT NOT NULL,
    failed INTEGER NOT NULL DEFAULT 0, locked_until {real} NOT NULL DEFAULT 0, created {real} NOT NULL);
CREATE TABLE ops_sessions (
    token_hash TEXT PRIMARY KEY, name TEXT NOT NULL, created {real} NOT NULL, expires {real} NOT NULL);
CREATE TABLE ops_capacity (event TEXT PRIMARY KEY, capacity INTEGER NOT NULL);
CREATE TABLE ops_gate_status (
    device_id TEXT PRIMARY KEY, last_contact {real} NOT NULL, link TEXT, outbox {bigint},
    clock_offset_ms {bigint}, ledger_age_s {bigint}, reported_at {real})
"""
MIGRATION_NAME = "ops_1_accounts_sessions_status"


def register_migrations(migrations) -> None:
    from sync.central.store import Migration
    if not any(m.name == MIGRATION_NAME for m in migrations):
        migrations.append(Migration(MIGRATION_NAME, OPS_SCHEMA_1))


class _Rows:
    """The store's DB with rows as dicts (column name -> value)."""

    def __init__(self, db):
        self.db = db

    def all(self, sql: str, params: dict | None = None) -> list[dict]:
        return [dict(r._mapping) for r in self.db.all(sql, params or {})]

    def one(self, sql: str, params: dict | None = None) -> dict | None:
        r = self.db.one(sql, params or {})
        return None if r is None else dict(r._mapping)

    def run(self, sql: str, params: dict | None = None) -> int:
        return self.db.run(sql, params or {})


class OpsDB:
    def __init__(self, store):
        self.store = store
        register_migrations(store.migrations)
        store.db.migrate()  # runs only what is not applied yet (the ops tables, once)

    @contextmanager
    def reader(self):
        with self.store.reader() as db:
            yield _Rows(db)

    @contextmanager
    def writer(self):
        with self.store.writer() as db:
            yield _Rows(db)
