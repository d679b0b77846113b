"""The device database: one SQLite file, WAL, synchronous=FULL, named migrations.

Each migration runs in one transaction together with its "applied" record
(the sqlite-utils ``migrations`` habit), so a crash mid-migration leaves the
database as it was before it.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from gate.errors import DiskFullError, LedgerError, StoreError

if TYPE_CHECKING:  # sqlite_utils pulls in numpy: import it only when migrating
    import sqlite_utils


def _m001_initial(db: "sqlite_utils.Database") -> None:
    db.execute("""CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)""")
    db["keys"].create({
        "kid": str, "event": str, "alg": str, "pub": bytes, "nbf": int, "exp": int,
        "status": str,
    }, pk="kid", not_null={"event", "alg", "pub", "status"})
    db.execute("""
        CREATE TABLE tickets (
            ticket_id TEXT PRIMARY KEY,
            event TEXT NOT NULL,
            tier TEXT NOT NULL DEFAULT '',
            zone TEXT,
            version INTEGER NOT NULL DEFAULT 1,
            status TEXT NOT NULL DEFAULT 'valid',
            entries INTEGER NOT NULL DEFAULT 1,
            reentry INTEGER NOT NULL DEFAULT 0,
            face_required INTEGER NOT NULL DEFAULT 0,
            face_template BLOB,
            holder TEXT
        ) WITHOUT ROWID""")
    # The scan log: append-only, hash-chained. `record` holds the exact CBOR
    # bytes that were hashed; the other columns are an index into it.
    db.execute("""
        CREATE TABLE scans (
            seq INTEGER PRIMARY KEY,
            ts_ms INTEGER NOT NULL,
            kind TEXT NOT NULL,
            ticket_id TEXT,
            reason TEXT,
            accepted INTEGER NOT NULL DEFAULT 0,
            record BLOB NOT NULL,
            hash BLOB NOT NULL
        )""")
    db.execute("CREATE INDEX scans_ticket ON scans(ticket_id) WHERE ticket_id IS NOT NULL")
    # Derived from the scan log, written in the same transaction as each record.
    db.execute("""
        CREATE TABLE usage (
            ticket_id TEXT PRIMARY KEY,
            admissions INTEGER NOT NULL DEFAULT 0,
            last_kind TEXT
        ) WITHOUT ROWID""")
    db.execute("""
        CREATE TABLE steps (
            ticket_id TEXT NOT NULL, step INTEGER NOT NULL,
            PRIMARY KEY (ticket_id, step)
        ) WITHOUT ROWID""")
    db.execute("CREATE TABLE voided (seq INTEGER PRIMARY KEY, by_seq INTEGER NOT NULL)")


def _m002_sync(db: "sqlite_utils.Database") -> None:
    db.execute("ALTER TABLE usage ADD COLUMN last_ts_ms INTEGER")
    # admissions recorded by other gates (sync feed), for cross-gate duplicate detection
    db.execute("""
        CREATE TABLE remote_admissions (
            device_id TEXT NOT NULL, seq INTEGER NOT NULL, ticket_id TEXT NOT NULL,
            mode TEXT NOT NULL, consumes INTEGER NOT NULL, ts_ms INTEGER,
            voided INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (device_id, seq)
        ) WITHOUT ROWID""")
    db.execute("CREATE INDEX remote_ticket ON remote_admissions(ticket_id)")


def _m003_remote_usage(db: "sqlite_utils.Database") -> None:
    # Other gates' admissions folded per ticket, kept by triggers whoever writes
    # remote_admissions (sync pulls, the venue bus): the decision path then reads
    # one row by primary key instead of aggregating remote_admissions.
    db.execute("""
        CREATE TABLE remote_usage (
            ticket_id TEXT PRIMARY KEY, admissions INTEGER NOT NULL,
            last_kind TEXT, last_ts_ms INTEGER
        ) WITHOUT ROWID""")
    refresh = """
            DELETE FROM remote_usage WHERE ticket_id = {t};
            INSERT INTO remote_usage (ticket_id, admissions, last_kind, last_ts_ms)
            SELECT {t},
                   (SELECT count(*) FROM remote_admissions r WHERE r.ticket_id = {t} AND r.voided = 0
                                                              AND r.consumes = 1 AND r.mode = 'entry'),
                   (SELECT r.mode FROM remote_admissions r WHERE r.ticket_id = {t} AND r.voided = 0
                    ORDER BY r.ts_ms DESC LIMIT 1),
                   (SELECT max(r.ts_ms) FROM remote_admissions r WHERE r.ticket_id = {t} AND r.voided = 0)
            WHERE EXISTS (SELECT 1 FROM remote_admissions r WHERE r.ticket_id = {t} AND r.voided = 0);"""
    db.execute(f"CREATE TRIGGER remote_usage_ins AFTER INSERT ON remote_admissions BEGIN"
               f"{refresh.format(t='NEW.ticket_id')} END")
    db.execute(f"CREATE TRIGGER remote_usage_upd AFTER UPDATE ON remote_admissions BEGIN"
               f"{refresh.format(t='OLD.ticket_id')}{refresh.format(t='NEW.ticket_id')} END")
    db.execute(f"CREATE TRIGGER remote_usage_del AFTER DELETE ON remote_admissions BEGIN"
               f"{refresh.format(t='OLD.ticket_id')} END")
    db.execute("""
        INSERT INTO remote_usage (ticket_id, admissions, last_kind, last_ts_ms)
        SELECT a.ticket_id, sum(a.consumes = 1 AND a.mode = 'entry'),
               (SELECT r.mode FROM remote_admissions r WHERE r.ticket_id = a.ticket_id AND r.voided = 0
                ORDER BY r.ts_ms DESC LIMIT 1),
               max(a.ts_ms)
        FROM remote_admissions a WHERE a.voided = 0 GROUP BY a.ticket_id""")


def _m004_bus(db: "sqlite_utils.Database") -> None:
    # the venue bus (gate.bus): trusted devices, peer records as received (for
    # catch-up answers), rollbacks seen before their admission
    db.execute("""
        CREATE TABLE bus_devices (
            device_id TEXT PRIMARY KEY, pub BLOB NOT NULL, status TEXT NOT NULL, source TEXT
        ) WITHOUT ROWID""")
    db.execute("""
        CREATE TABLE bus_records (
            device_id TEXT NOT NULL, seq INTEGER NOT NULL, record BLOB NOT NULL,
            prev BLOB NOT NULL, sig BLOB NOT NULL, PRIMARY KEY (device_id, seq)
        ) WITHOUT ROWID""")
    db.execute("CREATE TABLE bus_voids (device_id TEXT NOT NULL, ref INTEGER NOT NULL,"
               " PRIMARY KEY (device_id, ref)) WITHOUT ROWID")
    # where another gate's admission came from (lane named in refusals; via central | bus)
    db.execute("ALTER TABLE remote_admissions ADD COLUMN lane TEXT")
    db.execute("ALTER TABLE remote_admissions ADD COLUMN via TEXT")
    db.execute("ALTER TABLE remote_admissions ADD COLUMN alone INTEGER NOT NULL DEFAULT 0")
    # remote_usage also names where the last admission was ("lane<US>device"), so a
    # refusal can say "admitted at north-1 3 s ago": the 003 triggers, plus that column
    db.execute("ALTER TABLE remote_usage ADD COLUMN last_where TEXT")
    last = ("(SELECT {col} FROM remote_admissions r WHERE r.ticket_id = {t} AND r.voided = 0"
            " ORDER BY r.ts_ms DESC LIMIT 1)")
    where_col = "coalesce(r.lane, '') || char(31) || r.device_id"
    refresh = """
            DELETE FROM remote_usage WHERE ticket_id = {t};
            INSERT INTO remote_usage (ticket_id, admissions, last_kind, last_ts_ms, last_where)
            SELECT {t},
                   (SELECT count(*) FROM remote_admissions r WHERE r.ticket_id = {t} AND r.voided = 0
                                                              AND r.consumes = 1 AND r.mode = 'entry'),
                   {last_kind},
                   (SELECT max(r.ts_ms) FROM remote_admissions r WHERE r.ticket_id = {t} AND r.voided = 0),
                   {last_where}
            WHERE EXISTS (SELECT 1 FROM remote_admissions r WHERE r.ticket_id = {t} AND r.voided = 0);"""

    def body(t: str) -> str:
        return refresh.format(t=t, last_kind=last.format(col="r.mode", t=t),
                              last_where=last.format(col=where_col, t=t))
    for name in ("ins", "upd", "del"):
        db.execute(f"DROP TRIGGER remote_usage_{name}")
    db.execute(f"CREATE TRIGGER remote_usage_ins AFTER INSERT ON remote_admissions BEGIN{body('NEW.ticket_id')} END")
    db.execute(f"CREATE TRIGGER remote_usage_upd AFTER UPDATE ON remote_admissions BEGIN"
               f"{body('OLD.ticket_id')}{body('NEW.ticket_id')} END")
    db.execute(f"CREATE TRIGGER remote_usage_del AFTER DELETE ON remote_admissions BEGIN{body('OLD.ticket_id')} END")


def _m005_bus_caught_up(db: "sqlite_utils.Database") -> None:
    # per peer device: the seq through which a catch-up answer covered its records.
    # Only catch-up answers advance it (never a live message): a live record that
    # was dropped is still asked for at the next catch-up.
    db.execute("CREATE TABLE bus_caught_up (device_id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID")


def _m006_bus_chain(db: "sqlite_utils.Database") -> None:
    # the venue bus, second message format (docs/bus.md, issue 19): each peer record
    # carries its chain hash and the device's previous usage record; "caught up
    # through" is the highest record linked back to the device's first (no more
    # bus_caught_up); central's quarantine is kept per trusted device and a
    # quarantined device's records are held. Peer records of the old format are
    # dropped: peers send them again at the next catch-up (their admissions stay
    # in remote_admissions).
    db.execute("DROP TABLE bus_caught_up")
    db.execute("DROP TABLE bus_records")
    db.execute("""
        CREATE TABLE bus_records (
            device_id TEXT NOT NULL, seq INTEGER NOT NULL, origin TEXT NOT NULL,
            hash BLOB NOT NULL, pu_seq INTEGER NOT NULL, pu_hash BLOB NOT NULL,
            record BLOB NOT NULL, sig BLOB NOT NULL,
            linked INTEGER NOT NULL DEFAULT 0, held INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (device_id, seq)
        ) WITHOUT ROWID""")
    db.execute("CREATE INDEX bus_records_origin ON bus_records(origin, seq)")
    db.execute("CREATE INDEX bus_records_waiting ON bus_records(origin, pu_seq) WHERE linked = 0")
    db.execute("ALTER TABLE bus_devices ADD COLUMN quarantined INTEGER NOT NULL DEFAULT 0")


MIGRATIONS: list[tuple[str, Callable[["sqlite_utils.Database"], None]]] = [
    ("001_initial", _m001_initial),
    ("002_sync", _m002_sync),
    ("003_remote_usage", _m003_remote_usage),
    ("004_bus", _m004_bus),
    ("005_bus_caught_up", _m005_bus_caught_up),
    ("006_bus_chain", _m006_bus_chain),
]


class Connection(sqlite3.Connection):
    """A device database connection that knows how deep in :func:`transaction` it is
    (the depth is ours, never inferred from ``in_transaction``)."""

    tx_depth = 0


def connect(path: Path) -> Connection:
    """Open (and migrate) the device database."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False,
                               factory=Connection)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        import shutil

        if shutil.disk_usage(path.parent).free < 1_000_000:
            raise DiskFullError(f"the disk holding {path} is full: free space on the data disk; "
                                "every scan recorded before is safe") from None
        raise LedgerError(
            f"cannot open the device database {path}: {exc}. If the disk is full, free space;"
            " if the file is damaged, restore it from a backup or re-provision the gate."
        ) from None
    return conn


class Checkpointer:
    """Copies the WAL back into the database file on its own thread and connection,
    so that no scan's commit waits for it (SQLite's automatic checkpoint runs inside
    the COMMIT that crosses its threshold: on the write path, every ~200 scans),
    and keeps the WAL file from growing.

    The connection that records scans turns its automatic checkpoint off
    (:meth:`attach`) and calls :meth:`committed` after each commit; every
    ``every`` commits the thread runs a PASSIVE checkpoint (it never blocks a
    writer or a reader; what it cannot copy now, a later one does). A failed
    checkpoint loses nothing: the records are in the WAL, which is the durable
    copy, and the next checkpoint (or closing the database) copies them.

    SQLite starts the WAL over from its beginning only when a write transaction
    begins with every frame copied back. Scans arriving back to back always add
    frames while the thread copies, so that moment never came: the WAL grew by
    ~20 KB per scan without end, and every commit appended to the file, which
    makes its fdatasync also write the file's new size and blocks (~1.5x the
    cost of an overwrite here, bench/durable_floor.py). So once the thread has
    copied the bulk, the scan connection copies the few frames committed since
    (a PASSIVE checkpoint of a handful of pages, after its commit, outside any
    transaction): its next transaction rewrites the WAL from the start, in
    blocks the file already has. A lane asks for that copy after its turnstile
    cycle (``committed(defer_tail=True)``, then :meth:`idle`), so it is not
    between a decision and the relay."""

    def __init__(self, path: Path, *, every: int = 200):
        import threading

        self.path = Path(path)
        self.every = every
        self._count = 0
        self._wake = threading.Event()
        self._copied = threading.Event()  # the thread finished a checkpoint the writer has not followed up
        self._stop = False
        self._thread: "threading.Thread | None" = None
        self._conn: "sqlite3.Connection | None" = None
        self.runs = 0  # checkpoints done by the thread (for tests and benches)
        self.tails = 0  # follow-up checkpoints done by the scan connection

    def attach(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA wal_autocheckpoint=0")
        self._conn = conn

    def committed(self, *, defer_tail: bool = False) -> None:
        """After each commit of the scan connection. ``defer_tail``: a lane that is
        about to drive its relay runs the follow-up copy after its cycle (:meth:`idle`)."""
        if self._copied.is_set() and not defer_tail:
            self._tail()
        self._count += 1
        if self._count < self.every:
            return
        self._count = 0
        if self._thread is None:
            import threading

            self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
            self._thread.start()
        self._wake.set()

    def idle(self) -> None:
        """Run the follow-up copy a deferred commit left (the few frames since the
        thread's pass): a lane calls this after its turnstile cycle."""
        if self._copied.is_set():
            self._tail()

    def _tail(self) -> None:
        conn = self._conn
        try:
            if conn is None or getattr(conn, "tx_depth", 0) or conn.in_transaction:
                return  # inside a caller's transaction: the next commit outside it follows up
            self._copied.clear()
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.tails += 1
        except sqlite3.Error:
            pass  # as in the thread: nothing is lost, the WAL only grows until the next one

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                try:
                    busy, log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.runs += 1
                    if not busy and copied == log:
                        # all it saw is copied: the writer's tail is the few frames since.
                        # Not after a partial pass (a reader pinned the WAL, another
                        # checkpoint ran): the tail would be the whole backlog, on a scan.
                        self._copied.set()
                except sqlite3.Error:
                    pass  # nothing is lost (see the class docstring); the next one tries again
        finally:
            conn.close()

    def close(self) -> None:
        if self._thread is not None:
            self._stop = True
            self._wake.set()
            self._thread.join()
            self._thread = None
        self._conn = None


def migrate(conn: sqlite3.Connection) -> list[str]:
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    done = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
    pending = [(name, fn) for name, fn in MIGRATIONS if name not in done]
    if not pending:
        return []
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    applied = []
    for name, fn in pending:
        with transaction(conn):
            fn(db)
            conn.execute("INSERT INTO _migrations VALUES (?, CAST(strftime('%s', 'now') AS REAL))", (name,))
        applied.append(name)
    return applied


def get_setting(conn: sqlite3.Connection, key: str, default=None):
    """A JSON value from the settings table."""
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return default if row is None else json.loads(row[0])


def put_setting(conn: sqlite3.Connection, key: str, value) -> None:
    """Store a JSON value (call inside a transaction when it must go with other writes)."""
    conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, json.dumps(value)))


@contextmanager
def transaction(conn: Connection, mode: str = "IMMEDIATE") -> Iterator[Connection]:
    """One write transaction (``BEGIN IMMEDIATE``: the write lock is taken first, so
    what is read inside it is what the writes are based on). Nested inside another
    ``transaction`` on the same connection it joins that one: the outermost block
    commits or rolls back.

    The nesting depth is counted here, not inferred from ``conn.in_transaction``: a
    transaction this function did not open (one left open by a failed COMMIT, or a
    stray ``BEGIN``) is never joined — that would make every later "durable" write
    part of a transaction that never commits. A COMMIT that fails is rolled back
    and raised as :class:`StoreError`: the caller knows nothing was stored."""
    depth = conn.tx_depth
    if depth:
        conn.tx_depth = depth + 1
        try:
            yield conn
        finally:
            conn.tx_depth = depth
        return
    if conn.in_transaction:  # not ours: never write into it; end it and say so
        _rollback(conn)
        raise StoreError("a transaction this gate did not start was open on the device database: "
                         "it was rolled back and nothing of this write was stored; try again")
    conn.execute(f"BEGIN {mode}")
    conn.tx_depth = 1
    try:
        yield conn
    except BaseException:
        conn.tx_depth = 0
        _rollback(conn)
        raise
    conn.tx_depth = 0
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(conn)
        if "full" in str(exc).lower():
            raise DiskFullError("the data disk is full: nothing more can be recorded; free space on "
                                "the data disk (every scan recorded before is safe)") from exc
        raise StoreError(f"the device database could not commit ({exc}): nothing of it was stored; "
                         "check the data disk and that no other program holds the database") from exc


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is open (SQLite may already have rolled back after an I/O error)."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
