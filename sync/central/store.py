"""The reference central's storage: venues and events, issuer keys, tickets with
a change feed, devices, and scans stored as facts with their hash chains, over
SQLite (default, one file under ``--data``) or PostgreSQL (``--db URL``); see
:mod:`sync.central.db` for the two backends.

Issuer private keys are files (0600) under ``DIR/keys``; only the central has
them. Scans are never refused for what they say (an entry that happened is a
fact); an upload is refused only when it is not authentic or not intact. A
device whose uploads are physically implausible (faster than a turnstile,
outside the event) is quarantined: everything is stored as evidence, but its
admissions are not propagated to other gates unless a holder proof backs them.

Feed cursors (ticket ``change_seq``, scan ``id``) come from the ``counters``
table, incremented at the end of the writing transaction: the counter row stays
locked until that transaction commits, so numbers are handed out in commit
order and a reader never sees a higher number before a lower one commits.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from contextlib import contextmanager
from pathlib import Path

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from crypto import gt1
from crypto.issuer import Wallet, private_raw
from crypto.keyring import IssuerKey
from crypto.sealed import write_secret
from gate.errors import ConfigError
from gate.scanlog import GENESIS, chain_hash, head_message
from sync.central.db import DB, Database, Migration, Unavailable, migrations

__all__ = ["CentralStore", "CentralError", "Migration", "Unavailable", "migrations"]

SCHEMA_1 = """
CREATE TABLE events (
    event {text} PRIMARY KEY, venue {text} NOT NULL DEFAULT '', starts_at {real}, ends_at {real},
    created {real} NOT NULL);
CREATE INDEX events_venue ON events(venue);
CREATE TABLE issuer_keys (
    kid {text} PRIMARY KEY, event {text} NOT NULL, pub {blob} NOT NULL, status {text} NOT NULL,
    created {real} NOT NULL);
CREATE TABLE tickets (
    ticket_id {text} PRIMARY KEY, event {text} NOT NULL, tier {text} NOT NULL DEFAULT '', zone {text},
    version INTEGER NOT NULL DEFAULT 1, status {text} NOT NULL DEFAULT 'valid',
    entries INTEGER NOT NULL DEFAULT 1, reentry INTEGER NOT NULL DEFAULT 0,
    face_required INTEGER NOT NULL DEFAULT 0, face_template {text}, holder {text},
    holder_pub {blob}, change_seq {bigint} NOT NULL, revoked_at {real});
CREATE INDEX tickets_feed ON tickets(event, change_seq);
CREATE TABLE counters (name {text} PRIMARY KEY, value {bigint} NOT NULL);
INSERT INTO counters (name, value) VALUES ('change', 0);
INSERT INTO counters (name, value) VALUES ('scan', 0);
CREATE TABLE enrol_codes (
    code_hash {text} PRIMARY KEY, event {text} NOT NULL, created {real} NOT NULL, used_by {text},
    used_at {real});
CREATE TABLE enrol_failures (id {id}, client {text} NOT NULL, at {real} NOT NULL, why {text} NOT NULL);
CREATE INDEX enrol_failures_client ON enrol_failures(client, at);
CREATE TABLE devices (
    device_id {text} PRIMARY KEY, event {text} NOT NULL, venue {text} NOT NULL DEFAULT '',
    pub {blob} NOT NULL, token_hash {text} NOT NULL UNIQUE, status {text} NOT NULL DEFAULT 'active',
    enrolled_at {real} NOT NULL, quarantined_at {real}, quarantine_reason {text});
CREATE TABLE lane_buckets (
    device_id {text} NOT NULL, lane {text} NOT NULL, tokens {real} NOT NULL, last_ms {bigint},
    PRIMARY KEY (device_id, lane));
CREATE TABLE scans (
    id {bigint} PRIMARY KEY, device_id {text} NOT NULL, seq {bigint} NOT NULL, event {text} NOT NULL,
    ts_ms {bigint}, kind {text}, mode {text}, decision {text}, reason {text}, ticket_id {text},
    unlisted INTEGER, consumes INTEGER, ref {bigint}, lane {text}, proven INTEGER,
    record {blob} NOT NULL, hash {blob} NOT NULL, received {real} NOT NULL, UNIQUE (device_id, seq));
CREATE INDEX scans_event_id ON scans(event, id);
CREATE INDEX scans_ticket ON scans(event, ticket_id);
CREATE INDEX scans_rollback ON scans(device_id, ref) WHERE kind = 'rollback';
CREATE TABLE problems (
    id {id}, event {text}, device_id {text}, kind {text} NOT NULL, detail {text} NOT NULL, at {real} NOT NULL)
"""

# a central.db made before migrations existed (SQLite, the previous release): add what is new
FROM_UNVERSIONED = """
ALTER TABLE events ADD COLUMN venue TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN starts_at REAL;
ALTER TABLE events ADD COLUMN ends_at REAL;
CREATE INDEX events_venue ON events(venue);
ALTER TABLE tickets ADD COLUMN holder_pub BLOB;
INSERT INTO counters (name, value) VALUES ('change', 0) ON CONFLICT (name) DO NOTHING;
INSERT INTO counters (name, value) SELECT 'scan', coalesce(max(id), 0) FROM scans WHERE true
    ON CONFLICT (name) DO NOTHING;
ALTER TABLE enrol_codes ADD COLUMN used_at REAL;
CREATE TABLE enrol_failures (id INTEGER PRIMARY KEY, client TEXT NOT NULL, at REAL NOT NULL, why TEXT NOT NULL);
CREATE INDEX enrol_failures_client ON enrol_failures(client, at);
ALTER TABLE devices ADD COLUMN venue TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN quarantined_at REAL;
ALTER TABLE devices ADD COLUMN quarantine_reason TEXT;
CREATE UNIQUE INDEX devices_token ON devices(token_hash);
CREATE TABLE lane_buckets (
    device_id TEXT NOT NULL, lane TEXT NOT NULL, tokens REAL NOT NULL, last_ms INTEGER,
    PRIMARY KEY (device_id, lane));
ALTER TABLE scans ADD COLUMN proven INTEGER;
CREATE INDEX scans_event_id ON scans(event, id)
"""


def _schema_1(db: DB) -> None:
    legacy = db.dialect == "sqlite" and db.one(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'scans'") is not None
    db.script(FROM_UNVERSIONED if legacy else SCHEMA_1)


migrations.append(Migration("central_1_schema", _schema_1))

TICKET_FIELDS = ("ticket_id", "event", "tier", "zone", "version", "status", "entries", "reentry",
                 "face_required", "face_template", "holder")
SCAN_COLUMNS = ("id", "device_id", "seq", "event", "ts_ms", "kind", "mode", "decision", "reason", "ticket_id",
                "unlisted", "consumes", "ref", "lane", "proven", "record", "hash", "received")

# physical plausibility of one lane (issue 11 item 4): a turnstile passes about one
# person a second sustained; a burst of 20 covers a queue released at once.
LANE_RATE_PER_S = 1.0
LANE_BURST = 20
WINDOW_SLACK_S = 86400  # scans outside the event's window +- a day are implausible
CLOCK_SLACK_S = 600  # a gate clock this far off central's (or stepping back) is still a clock, not a forgery
DEVICE_BUCKET = "(device)"  # the rate is the device's own: one gate is one turnstile, whatever lane it names
PROOF_STEP_SLACK = 2    # a proof's rotation step must match the scan's time +- 2 steps
BAD_CODES_PER_MINUTE = 10
_I64 = (-(2**63), 2**63 - 1)


class CentralError(Exception):
    """An API-level refusal: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.extra = extra


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _int64(v):
    return v if type(v) is int and _I64[0] <= v <= _I64[1] else None


def _text(v):
    return v if isinstance(v, str) else None


def _ph(names) -> str:
    return ", ".join(f":{n}" for n in names)


def _check_cursor(cursor: int) -> None:
    if type(cursor) is not int or not 0 <= cursor <= _I64[1]:
        raise CentralError(422, "cursor must be an integer from 0 to 2^63-1 (the one the last page gave)")


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
    ``CentralStore(data_dir, db_url="postgresql://...")``: PostgreSQL (the
    directory then holds only the issuer keys)."""

    migrations = migrations  # the one list; other modules append their tables

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

    # the read/write API other modules (ops dashboard, reports) build on
    def reader(self, scratch: bool = False):
        """``with store.reader() as db: db.all(sql, params)``: a snapshot on its own
        connection that never blocks ingest (``scratch=True``: TEMP tables allowed)."""
        return self.db.reader(scratch)

    def writer(self):
        """``with store.writer() as db: db.run(sql, params)``: one write transaction."""
        return self.db.writer()

    @contextmanager
    def _tx(self):
        with self.db.writer() as db:
            yield db

    def _next(self, db: DB, name: str, n: int = 1) -> int:
        """Reserve n numbers of a feed counter; returns the last. The counter row
        stays locked until this transaction commits (commit-ordered cursors)."""
        return db.scalar("UPDATE counters SET value = value + :n WHERE name = :name RETURNING value",
                         {"n": n, "name": name})

    # ------------------------------------------------------------ events & keys

    def create_event(self, event: str, *, venue: str = "", starts_at: float | None = None,
                     ends_at: float | None = None) -> dict:
        if starts_at is not None and ends_at is not None and ends_at < starts_at:
            raise ConfigError("the event ends before it starts: check --starts/--ends")
        with self._tx() as db:
            if db.one("SELECT 1 FROM events WHERE event = :e", {"e": event}):
                raise ConfigError(f"event {event!r} already exists")
            db.run("INSERT INTO events (event, venue, starts_at, ends_at, created) VALUES (:e, :v, :s, :x, :t)",
                   {"e": event, "v": venue or "", "s": starts_at, "x": ends_at, "t": time.time()})
        key = self.rotate_key(event)
        return {"event": event, "venue": venue or "", "kid": key}

    def events(self, venue: str | None = None) -> list[str]:
        with self.reader() as db:
            if venue is None:
                return [r[0] for r in db.all("SELECT event FROM events ORDER BY created")]
            return [r[0] for r in db.all("SELECT event FROM events WHERE venue = :v ORDER BY created",
                                         {"v": venue})]

    def event_info(self, event: str) -> dict | None:
        with self.reader() as db:
            r = db.one("SELECT event, venue, starts_at, ends_at FROM events WHERE event = :e", {"e": event})
        return None if r is None else {"event": r[0], "venue": r[1], "starts_at": r[2], "ends_at": r[3]}

    def require_event(self, event: str | None) -> str:
        evs = self.events()
        if event is None:
            if len(evs) == 1:
                return evs[0]
            raise ConfigError("name the event with --event" + (f" (one of: {', '.join(evs)})" if evs else
                              "; create one first: gate central --data DIR event create E"))
        if event not in evs:
            raise ConfigError(f"no event {event!r}: create it with 'gate central event create {event}'")
        return event

    def rotate_key(self, event: str) -> str:
        key = Ed25519PrivateKey.generate()
        pub = gt1.raw_public(key)
        kid = gt1.kid_for(pub).hex()
        write_secret(self.dir / "keys" / f"issuer-{kid}.key", private_raw(key))
        with self._tx() as db:
            db.run("INSERT INTO issuer_keys (kid, event, pub, status, created) VALUES (:k, :e, :p, 'active', :t)",
                   {"k": kid, "e": event, "p": pub, "t": time.time()})
        return kid

    def signing_key(self, event: str) -> Ed25519PrivateKey:
        with self.reader() as db:
            row = db.one("SELECT kid FROM issuer_keys WHERE event = :e AND status = 'active'"
                         " ORDER BY created DESC, kid DESC LIMIT 1", {"e": event})
        if row is None:
            raise ConfigError(f"event {event!r} has no active issuer key: gate central keys rotate")
        path = self.dir / "keys" / f"issuer-{row[0]}.key"
        if not path.exists():
            raise ConfigError(f"issuer key file {path} is missing: issue from the --data directory "
                              "that created the event")
        return Ed25519PrivateKey.from_private_bytes(path.read_bytes())

    def keyring(self, event: str) -> dict:
        with self.reader() as db:
            rows = db.all("SELECT kid, pub, status FROM issuer_keys WHERE event = :e ORDER BY created", {"e": event})
        keys = [IssuerKey(bytes.fromhex(kid), bytes(pub), None, None, status).to_json() for kid, pub, status in rows]
        return {"event": event, "keys": keys}

    # ------------------------------------------------------------ tickets

    def _insert_tickets(self, db: DB, rows: list[dict], *, upsert: bool = False) -> None:
        if not rows:
            return
        first = self._next(db, "change", len(rows)) - len(rows) + 1
        cols = TICKET_FIELDS + ("holder_pub", "change_seq")
        for i, r in enumerate(rows):
            r["change_seq"] = first + i
            r.setdefault("holder_pub", None)
        if db.dialect == "postgresql" and not upsert and len(rows) > 100:
            with db.raw.cursor() as cur, cur.copy(f"COPY tickets ({', '.join(cols)}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row([r[c] for c in cols])
            return
        sql = f"INSERT INTO tickets ({', '.join(cols)}) VALUES ({_ph(cols)})"
        if upsert:
            sql += " ON CONFLICT (ticket_id) DO UPDATE SET " + ", ".join(
                f"{c} = excluded.{c}" for c in cols if c != "ticket_id")
        db.run(sql, rows)

    def issue(self, event: str, *, count: int, out: Path, tier: str = "GA", zone: str | None = None,
              entries: int = 1, face_template: bytes | None = None, rotating: bool = True) -> list[dict]:
        key = self.signing_key(event)
        out.mkdir(parents=True, exist_ok=True)
        made, rows = [], []
        for _ in range(count):
            tid = secrets.token_bytes(16)
            holder = Ed25519PrivateKey.generate() if rotating else None
            cred = gt1.issue(key, ticket_id=tid, event=event, tier=tier, zone=zone, entries=entries,
                             version=1, face=True if face_template else None,
                             holder_pub=gt1.raw_public(holder) if holder else None)
            w = Wallet(tid.hex(), event, cred, holder)
            path = out / f"{tid.hex()}.ticket.json"
            w.save(path)
            made.append({"ticket_id": tid.hex(), "file": str(path)})
            rows.append({"ticket_id": tid.hex(), "event": event, "tier": tier, "zone": zone, "version": 1,
                         "status": "valid", "entries": entries, "reentry": 0,
                         "face_required": int(bool(face_template)),
                         "face_template": None if face_template is None else base64.b64encode(face_template).decode(),
                         "holder": None, "holder_pub": gt1.raw_public(holder) if holder else None})
        with self._tx() as db:
            self._insert_tickets(db, rows)
        return made

    def add_tickets(self, records: list[dict], *, replace: bool = True) -> None:
        """Bulk load ticket records (docs/formats.md shape): benchmarks, migrations.
        ``replace=False``: all are new (PostgreSQL then loads them with COPY)."""
        rows = [{f: int(r[f]) if isinstance(r[f], bool) else r[f] for f in TICKET_FIELDS} for r in records]
        with self._tx() as db:
            self._insert_tickets(db, rows, upsert=replace)

    def _ticket_event(self, db: DB, ticket_id: str) -> str:
        row = db.one("SELECT event FROM tickets WHERE ticket_id = :t", {"t": ticket_id})
        if row is None:
            raise ConfigError(f"no ticket {ticket_id}")
        return row[0]

    def revoke(self, ticket_id: str, *, at: float | None = None) -> dict:
        with self._tx() as db:
            self._ticket_event(db, ticket_id)
            seq = self._next(db, "change")
            db.run("UPDATE tickets SET status = 'revoked', revoked_at = :at, change_seq = :s WHERE ticket_id = :t",
                   {"at": at or time.time(), "s": seq, "t": ticket_id})
        return {"ticket_id": ticket_id, "status": "revoked"}

    def reissue(self, ticket_id: str, out: Path) -> dict:
        """Version bump and a new holder key (transfer or lost phone); the old code stops working."""
        holder = Ed25519PrivateKey.generate()
        with self._tx() as db:
            event = self._ticket_event(db, ticket_id)
            version, entries, zone, tier = db.one(
                "SELECT version, entries, zone, tier FROM tickets WHERE ticket_id = :t", {"t": ticket_id})
            seq = self._next(db, "change")
            db.run("UPDATE tickets SET version = :v, change_seq = :s, face_template = NULL, holder_pub = :h"
                   " WHERE ticket_id = :t",
                   {"v": version + 1, "s": seq, "h": gt1.raw_public(holder), "t": ticket_id})
        cred = gt1.issue(self.signing_key(event), ticket_id=bytes.fromhex(ticket_id), event=event, tier=tier,
                         zone=zone, entries=entries, version=version + 1, holder_pub=gt1.raw_public(holder))
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{ticket_id}.v{version + 1}.ticket.json"
        Wallet(ticket_id, event, cred, holder).save(path)
        return {"ticket_id": ticket_id, "version": version + 1, "file": str(path)}

    def ticket_page(self, event: str, cursor: int, limit: int) -> tuple[list[dict], int, bool]:
        _check_cursor(cursor)
        with self.reader() as db:
            rows = db.all(
                f"SELECT {', '.join(TICKET_FIELDS)}, change_seq FROM tickets WHERE event = :e AND change_seq > :c"
                " ORDER BY change_seq LIMIT :n", {"e": event, "c": cursor, "n": limit + 1})
        more = len(rows) > limit
        rows = rows[:limit]
        items = []
        for r in rows:
            d = dict(zip(TICKET_FIELDS, r[:-1]))
            d["reentry"], d["face_required"] = bool(d["reentry"]), bool(d["face_required"])
            items.append(d)
        return items, (rows[-1][-1] if rows else cursor), more

    # ------------------------------------------------------------ devices

    def enrol_code(self, event: str) -> str:
        code = "-".join(secrets.token_hex(2).upper() for _ in range(4))
        with self._tx() as db:
            db.run("INSERT INTO enrol_codes (code_hash, event, created) VALUES (:h, :e, :t)",
                   {"h": _hash_token(code), "e": event, "t": time.time()})
        return code

    def register(self, code: str, device_id: str, pub: bytes, *, event: str | None = None,
                 client: str = "-") -> dict:
        """Enrol a device with a single-use code bound to its event. Never replaces a
        device row (a revoked device stays revoked). Wrong codes answer 403 and are
        counted per client; more than 10 in a minute answer 429."""
        if len(pub) != 32:
            raise CentralError(400, "public_key must be a raw 32-byte Ed25519 key (base64url)")
        if not device_id or len(device_id) > 128:
            raise CentralError(400, "device_id must be 1-128 characters")
        now = time.time()
        refusal = None
        with self._tx() as db:
            bad = db.scalar("SELECT count(*) FROM enrol_failures WHERE client = :c AND at > :since",
                            {"c": client, "since": now - 60})
            if bad >= BAD_CODES_PER_MINUTE:
                raise CentralError(429, "too many wrong enrolment codes from this address: wait a minute",
                                   retry_after=60)
            row = db.one("SELECT event, used_by FROM enrol_codes WHERE code_hash = :h", {"h": _hash_token(code)})
            if row is None:
                refusal = "unknown enrolment code"
            elif row[1] is not None:
                refusal = "enrolment code already used (codes are single-use): make a new one"
            elif event is not None and event != row[0]:
                refusal = "this enrolment code is for another event"
            elif db.one("SELECT 1 FROM devices WHERE device_id = :d", {"d": device_id}):
                refusal = f"device {device_id!r} is already enrolled: a new gate needs its own device id"
            if refusal is None:
                token = secrets.token_urlsafe(32)
                ev = row[0]
                venue = db.scalar("SELECT venue FROM events WHERE event = :e", {"e": ev}) or ""
                if db.run("UPDATE enrol_codes SET used_by = :d, used_at = :t WHERE code_hash = :h AND used_by IS NULL",
                          {"d": device_id, "t": now, "h": _hash_token(code)}) != 1:
                    refusal = "enrolment code already used (codes are single-use): make a new one"
                else:
                    db.run("INSERT INTO devices (device_id, event, venue, pub, token_hash, status, enrolled_at)"
                           " VALUES (:d, :e, :v, :p, :th, 'active', :t)",
                           {"d": device_id, "e": ev, "v": venue, "p": pub, "th": _hash_token(token), "t": now})
            if refusal is not None:
                db.run("INSERT INTO enrol_failures (client, at, why) VALUES (:c, :t, :w)",
                       {"c": client, "t": now, "w": refusal})
        if refusal is not None:
            raise CentralError(403, refusal)
        return {"token": token, "event": ev, "venue": venue, "device_id": device_id}

    def device_for_token(self, token: str, event: str | None = None) -> tuple[str, str, bytes]:
        """The device behind a token; with ``event``, also check it is the event the
        device is enrolled for (one device, one event: 403 on any other event's path,
        also another event of the same venue)."""
        with self.reader() as db:
            row = db.one("SELECT device_id, event, pub, status FROM devices WHERE token_hash = :h",
                         {"h": _hash_token(token)})
        if row is None or row[3] != "active":
            raise CentralError(401, "unknown or revoked device token")
        if event is not None and event != row[1]:
            raise CentralError(403, f"this device is enrolled for event {row[1]!r}, not {event!r}")
        return row[0], row[1], bytes(row[2])

    def devices(self, event: str) -> dict:
        """The event's devices with their public keys and status: the venue bus
        trust list (gate.bus.parse_trust reads it). ``quarantined`` says whether
        central holds the device's admissions back; the gates then hold its bus
        records back too."""
        with self.reader() as db:
            rows = db.all("SELECT device_id, pub, status, quarantined_at FROM devices WHERE event = :e"
                          " ORDER BY device_id", {"e": event})
        return {"event": event, "devices": [
            {"device_id": d, "public_key": bytes(p).hex(), "status": st, "quarantined": q is not None}
            for d, p, st, q in rows]}

    def revoke_device(self, device_id: str) -> None:
        with self._tx() as db:
            if db.run("UPDATE devices SET status = 'revoked' WHERE device_id = :d", {"d": device_id}) != 1:
                raise ConfigError(f"no device {device_id}")

    def release_device(self, device_id: str) -> None:
        """Lift a quarantine (ops looked at the evidence). Admissions stored while
        quarantined stay unpropagated; new ones flow again."""
        with self._tx() as db:
            if db.run("UPDATE devices SET quarantined_at = NULL, quarantine_reason = NULL WHERE device_id = :d",
                      {"d": device_id}) != 1:
                raise ConfigError(f"no device {device_id}")
            db.run("DELETE FROM lane_buckets WHERE device_id = :d", {"d": device_id})

    def device_status(self, device_id: str) -> dict | None:
        with self.reader() as db:
            r = db.one("SELECT device_id, event, venue, status, quarantined_at, quarantine_reason FROM devices"
                       " WHERE device_id = :d", {"d": device_id})
        return None if r is None else {"device_id": r[0], "event": r[1], "venue": r[2], "status": r[3],
                                       "quarantined": r[4] is not None, "quarantine_reason": r[5]}

    # ------------------------------------------------------------ scans

    def _problem(self, event: str, device_id: str, kind: str, detail: str) -> None:
        with self._tx() as db:
            db.run("INSERT INTO problems (event, device_id, kind, detail, at) VALUES (:e, :d, :k, :x, :t)",
                   {"e": event, "d": device_id, "k": kind, "x": detail, "t": time.time()})

    def stored_through(self, device_id: str) -> tuple[int, bytes]:
        with self.reader() as db:
            row = db.one("SELECT seq, hash FROM scans WHERE device_id = :d ORDER BY seq DESC LIMIT 1",
                         {"d": device_id})
        return (0, GENESIS) if row is None else (row[0], bytes(row[1]))

    def _proofs(self, recs: list[dict]) -> list[int | None]:
        """Per record: 1 = a holder proof that verifies against the ticket's holder
        key at the scan's time, 0 = a proof that does not, None = no proof (or no
        holder key known for that ticket)."""
        want = {r["ticket_id"] for r in recs if isinstance(r.get("proof"), bytes) and isinstance(r.get("ticket_id"), str)}
        if not want:
            return [None] * len(recs)
        keys = {}
        with self.reader() as db:
            wl = sorted(want)
            for i in range(0, len(wl), 500):
                part = wl[i:i + 500]
                ph = ", ".join(f":t{j}" for j in range(len(part)))
                for tid, hp in db.all(f"SELECT ticket_id, holder_pub FROM tickets WHERE ticket_id IN ({ph})",
                                      {f"t{j}": t for j, t in enumerate(part)}):
                    keys[tid] = None if hp is None else bytes(hp)
        out = []
        for r in recs:
            proof, step, csha, ts = r.get("proof"), r.get("step"), r.get("cred_sha"), r.get("ts_ms")
            if not isinstance(proof, bytes):
                out.append(None)
                continue
            hp = keys.get(r.get("ticket_id"))
            if hp is None:  # a ticket central has no holder key for (unlisted, imported): cannot tell
                out.append(None)
                continue
            ok = (type(step) is int and isinstance(csha, bytes) and type(ts) is int
                  and abs(step - ts // 1000 // gt1.STEP_SECONDS) <= PROOF_STEP_SLACK)
            if ok:
                try:
                    Ed25519PublicKey.from_public_bytes(hp).verify(proof, gt1.proof_message(csha, step))
                except (InvalidSignature, ValueError, OverflowError):
                    ok = False
            out.append(1 if ok else 0)
        return out

    def _judge(self, db: DB, event: str, device_id: str, recs: list[dict], proven: list,
               now: float) -> str | None:
        """Physical plausibility of a device's new records, on what the device
        cannot choose: one token bucket per device (1/s sustained, bursts of 20)
        whatever lane text it writes; admission times that only move forward
        (a clock step back of up to CLOCK_SLACK_S allowed), inside the event's
        window +- a day; and no holder proof that fails. (A gate may admit
        offline before it enrols, and a clock far off is flagged in the report
        as a wrong clock: neither is judged here.) Returns why it is
        implausible, or None."""
        win = db.one("SELECT starts_at, ends_at FROM events WHERE event = :e", {"e": event})
        lo = None if win is None or win[0] is None else (win[0] - WINDOW_SLACK_S) * 1000
        hi = None if win is None or win[1] is None else (win[1] + WINDOW_SLACK_S) * 1000
        row = db.one("SELECT tokens, last_ms FROM lane_buckets WHERE device_id = :d AND lane = :l",
                     {"d": device_id, "l": DEVICE_BUCKET})
        tokens, last = (float(LANE_BURST), None) if row is None else (float(row[0]), row[1])
        touched = False
        why = None
        for rec, pv in zip(recs, proven):
            if pv == 0 and why is None:
                why = f"record {rec.get('seq')}: the holder proof does not verify"
            if rec.get("decision") != "accept" or rec.get("kind") not in ("scan", "override"):
                continue
            ts = _int64(rec.get("ts_ms"))
            if ts is None:
                why = why or f"record {rec.get('seq')}: an admission without a time"
                continue
            if (lo is not None and ts < lo) or (hi is not None and ts > hi):
                why = why or f"record {rec.get('seq')}: an admission outside the event's window"
            if last is not None and ts < last - CLOCK_SLACK_S * 1000:
                why = why or f"record {rec.get('seq')}: admission times run backwards"
            if last is not None and ts > last:
                tokens = min(float(LANE_BURST), tokens + (ts - last) / 1000 * LANE_RATE_PER_S)
            last = ts if last is None else max(last, ts)
            tokens -= 1
            touched = True
            if tokens < 0 and why is None:
                why = (f"more admissions than a turnstile can pass (over {LANE_RATE_PER_S:g}/s sustained, "
                       f"bursts of {LANE_BURST}) at record {rec.get('seq')}")
        if touched:
            db.run("INSERT INTO lane_buckets (device_id, lane, tokens, last_ms) VALUES (:d, :l, :k, :m)"
                   " ON CONFLICT (device_id, lane) DO UPDATE SET tokens = excluded.tokens, last_ms = excluded.last_ms",
                   {"d": device_id, "l": DEVICE_BUCKET, "k": max(tokens, -1e9), "m": last})
        return why

    def store_scans(self, event: str, device_id: str, device_pub: bytes, batch: dict) -> dict:
        """Verify and store one upload batch; idempotent (the same batch through two
        API processes at once is stored once). Raises CentralError on tampering."""
        if batch.get("device_id") != device_id:
            self._problem(event, device_id, "wrong_device", f"batch names device {batch.get('device_id')!r}")
            raise CentralError(403, "batch device_id does not match the token's device")
        try:
            from_seq = batch["from_seq"]
            if type(from_seq) is not int or not 1 <= from_seq <= _I64[1] // 2:
                raise ValueError
            if not isinstance(batch["records"], list):
                raise TypeError
            records = [base64.b64decode(r, validate=True) for r in batch["records"]]
            head_hash = bytes.fromhex(batch["head_hash"])
            head_sig = base64.b64decode(batch["head_sig"])
        except (KeyError, TypeError, ValueError):
            raise CentralError(400, "batch needs from_seq (an integer from 1), records (base64 CBOR), "
                                    "head_hash (hex), head_sig") from None
        if not records:
            return {"stored_through": self.stored_through(device_id)[0]}
        last = from_seq + len(records) - 1
        try:
            Ed25519PublicKey.from_public_bytes(device_pub).verify(head_sig, head_message(device_id, last, head_hash))
        except (InvalidSignature, ValueError):
            self._problem(event, device_id, "bad_signature", f"head signature of seq {last} does not verify")
            raise CentralError(403, "chain head signature does not verify with this device's key") from None
        # where the batch starts: the stored hash of from_seq - 1 (never changes once stored)
        if from_seq == 1:
            prev = GENESIS
        else:
            with self.reader() as db:
                row = db.one("SELECT hash FROM scans WHERE device_id = :d AND seq = :s",
                             {"d": device_id, "s": from_seq - 1})
            if row is None:
                through = self.stored_through(device_id)[0]
                raise CentralError(409, f"gap: stored through {through}, batch starts at {from_seq}",
                                   stored_through=through)
            prev = bytes(row[0])
        recs, hashes, h = [], [], prev
        for i, data in enumerate(records):
            seq = from_seq + i
            try:
                rec = cbor2.loads(data)
            except Exception:
                rec = None
            if not isinstance(rec, dict) or rec.get("seq") != seq:
                self._problem(event, device_id, "broken_chain", f"record {seq} is out of order or unreadable")
                raise CentralError(422, f"record {seq} is out of order or unreadable")
            h = chain_hash(h, data)
            recs.append(rec)
            hashes.append(h)
        if h != head_hash:
            self._problem(event, device_id, "broken_chain", f"records {from_seq}-{last} do not hash to the signed head")
            raise CentralError(422, "records do not hash to the signed chain head (edited or reordered)")
        proven = self._proofs(recs)
        now = time.time()
        conflict = None
        with self._tx() as db:
            # one writer per device at a time (PostgreSQL: row lock; SQLite: the write lock)
            if db.dialect == "postgresql":
                db.one("SELECT 1 FROM devices WHERE device_id = :d FOR UPDATE", {"d": device_id})
            through = db.scalar("SELECT max(seq) FROM scans WHERE device_id = :d", {"d": device_id}) or 0
            if from_seq > through + 1:
                raise CentralError(409, f"gap: stored through {through}, batch starts at {from_seq}",
                                   stored_through=through)
            if from_seq <= through:  # overlap with what is stored: identical, or the chain has forked
                stored = dict(db.all("SELECT seq, hash FROM scans WHERE device_id = :d AND seq BETWEEN :a AND :b",
                                     {"d": device_id, "a": from_seq, "b": min(last, through)}))
                for i in range(min(last, through) - from_seq + 1):
                    if bytes(stored.get(from_seq + i, b"")) != hashes[i]:
                        conflict = from_seq + i
                        break
            start = max(0, through + 1 - from_seq)
            if conflict is None and start < len(records):
                new = range(start, len(records))
                why = self._judge(db, event, device_id, [recs[i] for i in new], [proven[i] for i in new], now)
                if why is not None:
                    db.run("UPDATE devices SET quarantined_at = :t, quarantine_reason = :w"
                           " WHERE device_id = :d AND quarantined_at IS NULL", {"t": now, "w": why, "d": device_id})
                    db.run("INSERT INTO problems (event, device_id, kind, detail, at) VALUES (:e, :d, 'implausible', :x, :t)",
                           {"e": event, "d": device_id, "x": why, "t": now})
                first_id = self._next(db, "scan", len(new)) - len(new) + 1
                rows = []
                for k, i in enumerate(new):
                    rec = recs[i]
                    rows.append((first_id + k, device_id, from_seq + i, event, _int64(rec.get("ts_ms")),
                                 _text(rec.get("kind")), _text(rec.get("mode")), _text(rec.get("decision")),
                                 _text(rec.get("reason")), _text(rec.get("ticket_id")), int(bool(rec.get("unlisted"))),
                                 int(bool(rec.get("consumes"))), _int64(rec.get("ref")), _text(rec.get("lane")),
                                 proven[i], records[i], hashes[i], now))
                self._insert_scans(db, rows)
            qrow = db.one("SELECT quarantined_at, quarantine_reason FROM devices WHERE device_id = :d", {"d": device_id})
        if conflict is not None:
            self._problem(event, device_id, "forked_chain", f"seq {conflict} differs from the stored record")
            raise CentralError(409, f"forked chain: record {conflict} differs from what was stored")
        out = {"stored_through": max(through, last)}
        if qrow is not None and qrow[0] is not None:
            out.update(quarantined=True, quarantine_reason=qrow[1])
        return out

    def _insert_scans(self, db: DB, rows: list[tuple]) -> None:
        if db.dialect == "postgresql":
            with db.raw.cursor() as cur:
                with cur.copy(f"COPY scans ({', '.join(SCAN_COLUMNS)}) FROM STDIN") as cp:
                    for r in rows:
                        cp.write_row(r)
        else:
            db.run(f"INSERT INTO scans ({', '.join(SCAN_COLUMNS)}) VALUES ({_ph(SCAN_COLUMNS)})",
                   [dict(zip(SCAN_COLUMNS, r)) for r in rows])

    def admissions(self, event: str, cursor: int, limit: int) -> tuple[list[dict], int, bool]:
        """Accepted scans and rollbacks of all gates, for cross-gate duplicate
        detection. A quarantined device's admissions are held back unless a holder
        proof backs them (``proven``)."""
        with self.reader() as db:
            rows = db.all(
                "SELECT s.id, s.device_id, s.seq, s.ticket_id, s.mode, s.consumes, s.ts_ms, s.kind, s.ref, s.proven, s.lane"
                " FROM scans s JOIN devices d ON d.device_id = s.device_id"
                " WHERE s.event = :e AND s.id > :c"
                " AND ((s.decision = 'accept' AND s.ticket_id IS NOT NULL) OR s.kind = 'rollback')"
                " AND (s.kind = 'rollback' OR d.quarantined_at IS NULL OR s.proven = 1)"
                " ORDER BY s.id LIMIT :n", {"e": event, "c": cursor, "n": limit + 1})
        more = len(rows) > limit
        rows = rows[:limit]
        items = [{"device_id": d, "seq": s, "ticket_id": t, "mode": m, "consumes": bool(cons), "ts_ms": ts,
                  "kind": k, "ref": ref, "proven": pv == 1, "lane": ln}
                 for _, d, s, t, m, cons, ts, k, ref, pv, ln in rows]
        return items, (rows[-1][0] if rows else cursor), more
