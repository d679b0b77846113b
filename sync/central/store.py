"""The reference central's storage, opened once: ``CentralStore(dir)`` (SQLite
at ``dir/central.db``, the default) or ``CentralStore(dir, "postgresql://...")``
(the directory then holds only the issuer keys); see :mod:`sync.central.db` for
the two backends and :mod:`sync.central.schema` for the schema (Alembic
revisions, applied when a store opens).

The work is in one module per job; each function takes the store first, and
the store binds them as its methods so callers write ``store.issue(...)``:

- :mod:`.issuing`: events, issuer keys, ticket issuance, revocation, reissue;
- :mod:`.devices`: enrolment codes, registration, tokens, status, quarantine;
- :mod:`.ingest`: scan uploads, decoded once, judged and stored as facts;
- :mod:`.feeds`: the ticket, admissions and device pages gates read;
- :mod:`sync.central.reconcile`: the reconciliation report.

The store itself only opens the database (migrating it), keeps the directory
private, and hands out transactions: :meth:`reader` / :meth:`writer`.
"""

from __future__ import annotations

import os
from pathlib import Path

from gate.errors import ConfigError
from sync.central import devices as dev  # (store.devices is the feed's trust list)
from sync.central import feeds, ingest, issuing
from sync.central.db import Database, Unavailable
from sync.central.errors import CentralError

__all__ = ["CentralStore", "CentralError", "Unavailable"]


def _harden_dir(path: Path) -> None:
    """The central's directory 0700 and every file in it 0600, whatever existed before."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    for root, dirs, files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o700)
        for f in files:
            fp = os.path.join(root, f)
            if not os.path.islink(fp):
                os.chmod(fp, 0o600)


class CentralStore:
    """``CentralStore(data_dir)``: SQLite at ``data_dir/central.db``;
    ``CentralStore(data_dir, db_url="postgresql://...")``: PostgreSQL.
    ``migrate=False``: open without bringing the schema to the newest revision
    (tests of the migrations themselves)."""

    def __init__(self, data_dir: Path, db_url: str | None = None, *, pool_size: int = 8,
                 pool_timeout: float = 10.0, migrate: bool = True):
        self.dir = Path(data_dir)
        self.db_url = db_url  # None: the SQLite file under data_dir
        _harden_dir(self.dir)
        old = os.umask(0o077)  # files SQLite creates (the WAL, its index) are 0600 too
        try:
            try:
                self.db = Database(db_url or f"sqlite:///{self.dir / 'central.db'}",
                                   pool_size=pool_size, pool_timeout=pool_timeout)
            except ValueError as exc:  # a URL SQLAlchemy cannot parse or we do not support
                raise ConfigError(f"--db {db_url}: {exc}") from None
            if migrate:
                try:
                    self.db.migrate()
                except Unavailable as exc:
                    cause = exc.__cause__ or exc
                    first = (str(getattr(cause, "orig", cause)).strip().splitlines() or ["?"])[0]
                    raise ConfigError(f"cannot open the central database ({first}): "
                                      "check --db and that the server is running") from None
        finally:
            os.umask(old)
        _harden_dir(self.dir)

    @property
    def dialect(self) -> str:
        return self.db.dialect

    def close(self) -> None:
        self.db.close()
        if getattr(self, "_legacy_conn", None) is not None:
            self._legacy_conn.close()

    @property
    def conn(self):
        """Legacy: a plain sqlite3 connection (autocommit) to the SQLite database, for
        old scripts and tests. New code uses :meth:`reader` / :meth:`writer`, which
        work on both backends."""
        if self.db.sqlite_path is None:
            raise AttributeError("store.conn exists for SQLite only: use store.reader() / store.writer()")
        if getattr(self, "_legacy_conn", None) is None:
            import sqlite3
            self._legacy_conn = sqlite3.connect(self.db.sqlite_path, isolation_level=None,
                                                check_same_thread=False, timeout=30)
        return self._legacy_conn

    # the read/write API the modules (and the ops room, the report) build on
    def reader(self, scratch: bool = False):
        """``with store.reader() as db: db.all(sql, params)``: a snapshot on its own
        connection that never blocks ingest (``scratch=True``: TEMP tables allowed)."""
        return self.db.reader(scratch)

    def writer(self):
        """``with store.writer() as db: db.run(sql, params)``: one write transaction."""
        return self.db.writer()

    # ------------------------------------------------------------ the jobs (see each module)

    create_event = issuing.create_event
    events = issuing.events
    event_info = issuing.event_info
    require_event = issuing.require_event
    rotate_key = issuing.rotate_key
    signing_key = issuing.signing_key
    keyring = issuing.keyring
    issue = issuing.issue
    add_tickets = issuing.add_tickets
    revoke = issuing.revoke
    reissue = issuing.reissue

    enrol_code = dev.enrol_code
    register = dev.register
    device_for_token = dev.device_for_token
    revoke_device = dev.revoke_device
    release_device = dev.release_device
    device_status = dev.device_status

    store_scans = ingest.store_scans
    stored_through = ingest.stored_through

    ticket_page = feeds.ticket_page
    ticket_rows = feeds.ticket_rows
    admissions = feeds.admissions
    devices = feeds.devices
