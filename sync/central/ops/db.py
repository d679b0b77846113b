"""The ops room's way to the central database: the store's own ``reader()`` /
``writer()`` (SQLite or PostgreSQL, SQLAlchemy Core) with rows as dicts. The
ops tables are schema revisions like the others
(``sync/central/schema/versions/ops_*.py``), there when the store is open.

Every query in this package is portable SQL with ``:name`` parameters: no date
functions, times are bucketed with integer arithmetic on ``ts_ms``.
"""

from __future__ import annotations

from contextlib import contextmanager


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

    @contextmanager
    def reader(self):
        with self.store.reader() as db:
            yield _Rows(db)

    @contextmanager
    def writer(self):
        with self.store.writer() as db:
            yield _Rows(db)
