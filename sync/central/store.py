"""The reference central's storage (SQLite): events, issuer keys, tickets with a
change feed, devices, and scans stored as facts with their hash chains.

Issuer private keys are files (0600) under ``DIR/keys``; only the central has
them. Scans are never refused for what they say (an entry that happened is a
fact); an upload is refused only when it is not authentic or not intact.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
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
from gate.db import transaction
from gate.errors import ConfigError
from gate.scanlog import GENESIS, chain_hash, head_message

SCHEMA = """
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
"""

TICKET_FIELDS = ("ticket_id", "event", "tier", "zone", "version", "status", "entries", "reentry",
                 "face_required", "face_template", "holder")


class CentralError(Exception):
    """An API-level refusal: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.extra = extra


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CentralStore:
    def __init__(self, data_dir: Path):
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.conn = sqlite3.connect(self.dir / "central.db", isolation_level=None,
                                    check_same_thread=False, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        self.lock = threading.RLock()

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _tx(self):
        """One write transaction, serialised with the other server threads."""
        with self.lock, transaction(self.conn):
            yield self.conn

    def _next(self, conn, name: str, n: int = 1) -> int:
        conn.execute("INSERT INTO counters VALUES (?, 0) ON CONFLICT(name) DO NOTHING", (name,))
        conn.execute("UPDATE counters SET value = value + ? WHERE name = ?", (n, name))
        return conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]

    # ------------------------------------------------------------ events & keys

    def create_event(self, event: str) -> dict:
        with self._tx() as c:
            if c.execute("SELECT 1 FROM events WHERE event = ?", (event,)).fetchone():
                raise ConfigError(f"event {event!r} already exists")
            c.execute("INSERT INTO events VALUES (?, ?)", (event, time.time()))
        key = self.rotate_key(event)
        return {"event": event, "kid": key}

    def events(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT event FROM events ORDER BY created")]

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
        with self._tx() as c:
            c.execute("INSERT INTO issuer_keys VALUES (?, ?, ?, 'active', ?)", (kid, event, pub, time.time()))
        return kid

    def signing_key(self, event: str) -> Ed25519PrivateKey:
        row = self.conn.execute("SELECT kid FROM issuer_keys WHERE event = ? AND status = 'active'"
                                " ORDER BY created DESC, rowid DESC LIMIT 1", (event,)).fetchone()
        if row is None:
            raise ConfigError(f"event {event!r} has no active issuer key: gate central keys rotate")
        return Ed25519PrivateKey.from_private_bytes((self.dir / "keys" / f"issuer-{row[0]}.key").read_bytes())

    def keyring(self, event: str) -> dict:
        keys = [IssuerKey(bytes.fromhex(kid), pub, None, None, status).to_json()
                for kid, pub, status in self.conn.execute(
                    "SELECT kid, pub, status FROM issuer_keys WHERE event = ? ORDER BY created", (event,))]
        return {"event": event, "keys": keys}

    # ------------------------------------------------------------ tickets

    def issue(self, event: str, *, count: int, out: Path, tier: str = "GA", zone: str | None = None,
              entries: int = 1, face_template: bytes | None = None, rotating: bool = True) -> list[dict]:
        import base64

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
            rows.append((tid.hex(), event, tier, zone, 1, "valid", entries, 0, int(bool(face_template)),
                         None if face_template is None else base64.b64encode(face_template).decode(), None))
        with self._tx() as c:
            first = self._next(c, "change", len(rows)) - len(rows) + 1
            c.executemany(f"INSERT INTO tickets ({', '.join(TICKET_FIELDS)}, change_seq)"
                          " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                          [r + (first + i,) for i, r in enumerate(rows)])
        return made

    def add_tickets(self, records: list[dict]) -> None:
        """Bulk load ticket records (docs/formats.md shape): benchmarks, migrations."""
        with self._tx() as c:
            first = self._next(c, "change", len(records)) - len(records) + 1
            c.executemany(
                f"INSERT OR REPLACE INTO tickets ({', '.join(TICKET_FIELDS)}, change_seq)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [tuple(int(r[f]) if isinstance(r[f], bool) else r[f] for f in TICKET_FIELDS) + (first + i,)
                 for i, r in enumerate(records)])

    def _ticket_event(self, c, ticket_id: str) -> str:
        row = c.execute("SELECT event FROM tickets WHERE ticket_id = ?", (ticket_id,)).fetchone()
        if row is None:
            raise ConfigError(f"no ticket {ticket_id}")
        return row[0]

    def revoke(self, ticket_id: str, *, at: float | None = None) -> dict:
        with self._tx() as c:
            self._ticket_event(c, ticket_id)
            seq = self._next(c, "change")
            c.execute("UPDATE tickets SET status = 'revoked', revoked_at = ?, change_seq = ? WHERE ticket_id = ?",
                      (at or time.time(), seq, ticket_id))
        return {"ticket_id": ticket_id, "status": "revoked"}

    def reissue(self, ticket_id: str, out: Path) -> dict:
        """Version bump and a new holder key (transfer or lost phone); the old code stops working."""
        with self._tx() as c:
            event = self._ticket_event(c, ticket_id)
            version, entries, zone, tier = c.execute(
                "SELECT version, entries, zone, tier FROM tickets WHERE ticket_id = ?", (ticket_id,)).fetchone()
            seq = self._next(c, "change")
            c.execute("UPDATE tickets SET version = ?, change_seq = ?, face_template = NULL WHERE ticket_id = ?",
                      (version + 1, seq, ticket_id))
        holder = Ed25519PrivateKey.generate()
        cred = gt1.issue(self.signing_key(event), ticket_id=bytes.fromhex(ticket_id), event=event, tier=tier,
                         zone=zone, entries=entries, version=version + 1, holder_pub=gt1.raw_public(holder))
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{ticket_id}.v{version + 1}.ticket.json"
        Wallet(ticket_id, event, cred, holder).save(path)
        return {"ticket_id": ticket_id, "version": version + 1, "file": str(path)}

    def ticket_page(self, event: str, cursor: int, limit: int) -> tuple[list[dict], int, bool]:
        rows = self.conn.execute(
            f"SELECT {', '.join(TICKET_FIELDS)}, change_seq FROM tickets WHERE event = ? AND change_seq > ?"
            " ORDER BY change_seq LIMIT ?", (event, cursor, limit + 1)).fetchall()
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
        with self._tx() as c:
            c.execute("INSERT INTO enrol_codes VALUES (?, ?, ?, NULL)", (_hash_token(code), event, time.time()))
        return code

    def register(self, code: str, device_id: str, pub: bytes) -> dict:
        if len(pub) != 32:
            raise CentralError(400, "public_key must be a raw 32-byte Ed25519 key (base64url)")
        with self._tx() as c:
            row = c.execute("SELECT event, used_by FROM enrol_codes WHERE code_hash = ?",
                            (_hash_token(code),)).fetchone()
            if row is None:
                raise CentralError(403, "unknown enrolment code")
            event, used_by = row
            if used_by is not None and used_by != device_id:
                raise CentralError(403, "enrolment code already used by another device")
            token = secrets.token_urlsafe(32)
            c.execute("UPDATE enrol_codes SET used_by = ? WHERE code_hash = ?", (device_id, _hash_token(code)))
            c.execute("INSERT OR REPLACE INTO devices VALUES (?, ?, ?, ?, 'active', ?)",
                      (device_id, event, pub, _hash_token(token), time.time()))
        return {"token": token, "event": event, "device_id": device_id}

    def device_for_token(self, token: str) -> tuple[str, str, bytes]:
        row = self.conn.execute("SELECT device_id, event, pub, status FROM devices WHERE token_hash = ?",
                                (_hash_token(token),)).fetchone()
        if row is None or row[3] != "active":
            raise CentralError(401, "unknown or revoked device token")
        return row[0], row[1], row[2]

    def devices(self, event: str) -> dict:
        """The event's devices with their public keys and status: the venue bus
        trust list (gate.bus.parse_trust reads it)."""
        rows = self.conn.execute("SELECT device_id, pub, status FROM devices WHERE event = ? ORDER BY device_id",
                                 (event,)).fetchall()
        return {"event": event, "devices": [{"device_id": d, "public_key": bytes(p).hex(), "status": st}
                                            for d, p, st in rows]}

    def revoke_device(self, device_id: str) -> None:
        with self._tx() as c:
            if c.execute("UPDATE devices SET status = 'revoked' WHERE device_id = ?", (device_id,)).rowcount != 1:
                raise ConfigError(f"no device {device_id}")

    # ------------------------------------------------------------ scans

    def _problem(self, event: str, device_id: str, kind: str, detail: str) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO problems (event, device_id, kind, detail, at) VALUES (?,?,?,?,?)",
                      (event, device_id, kind, detail, time.time()))

    def stored_through(self, device_id: str) -> tuple[int, bytes]:
        row = self.conn.execute("SELECT seq, hash FROM scans WHERE device_id = ? ORDER BY seq DESC LIMIT 1",
                                (device_id,)).fetchone()
        return (0, GENESIS) if row is None else (row[0], row[1])

    def store_scans(self, event: str, device_id: str, device_pub: bytes, batch: dict) -> dict:
        """Verify and store one upload batch; idempotent. Raises CentralError on tampering."""
        import base64

        if batch.get("device_id") != device_id:
            self._problem(event, device_id, "wrong_device", f"batch names device {batch.get('device_id')!r}")
            raise CentralError(403, "batch device_id does not match the token's device")
        try:
            from_seq = int(batch["from_seq"])
            records = [base64.b64decode(r) for r in batch["records"]]
            head_hash = bytes.fromhex(batch["head_hash"])
            head_sig = base64.b64decode(batch["head_sig"])
        except (KeyError, TypeError, ValueError):
            raise CentralError(400, "batch needs from_seq, records (base64 CBOR), head_hash (hex), head_sig") from None
        if from_seq < 1:
            raise CentralError(400, "from_seq starts at 1")
        last = from_seq + len(records) - 1
        try:
            Ed25519PublicKey.from_public_bytes(device_pub).verify(head_sig, head_message(device_id, last, head_hash))
        except (InvalidSignature, ValueError):
            self._problem(event, device_id, "bad_signature", f"head signature of seq {last} does not verify")
            raise CentralError(403, "chain head signature does not verify with this device's key") from None
        with self.lock:
            through, prev = self.stored_through(device_id)
            if from_seq > through + 1:
                raise CentralError(409, f"gap: stored through {through}, batch starts at {from_seq}",
                                   stored_through=through)
            if from_seq > 1 and from_seq <= through:
                row = self.conn.execute("SELECT hash FROM scans WHERE device_id = ? AND seq = ?",
                                        (device_id, from_seq - 1)).fetchone()
                prev = row[0]
            elif from_seq == 1:
                prev = GENESIS
            rows, h = [], prev
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
                rows.append((device_id, seq, rec, data, h))
            if h != head_hash:
                self._problem(event, device_id, "broken_chain",
                              f"records {from_seq}-{last} do not hash to the signed head")
                raise CentralError(422, "records do not hash to the signed chain head (edited or reordered)")
            # overlap with what is stored: must be identical, or the chain has forked
            for device, seq, rec, data, h in rows:
                if seq > through:
                    break
                stored = self.conn.execute("SELECT hash FROM scans WHERE device_id = ? AND seq = ?",
                                           (device, seq)).fetchone()[0]
                if stored != h:
                    self._problem(event, device_id, "forked_chain", f"seq {seq} differs from the stored record")
                    raise CentralError(409, f"forked chain: record {seq} differs from what was stored")
            new = [r for r in rows if r[1] > through]
            now = time.time()
            with self._tx() as c:
                c.executemany(
                    "INSERT INTO scans (device_id, seq, event, ts_ms, kind, mode, decision, reason, ticket_id,"
                    " unlisted, consumes, ref, lane, record, hash, received) VALUES"
                    " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [(device, seq, event, rec.get("ts_ms"), rec.get("kind"), rec.get("mode"),
                      rec.get("decision"), rec.get("reason"), rec.get("ticket_id"), int(bool(rec.get("unlisted"))),
                      int(bool(rec.get("consumes"))), rec.get("ref"), rec.get("lane"), data, h, now)
                     for device, seq, rec, data, h in new])
        return {"stored_through": max(through, last)}

    def admissions(self, event: str, cursor: int, limit: int) -> tuple[list[dict], int, bool]:
        """Accepted scans and rollbacks of all gates, for cross-gate duplicate detection."""
        rows = self.conn.execute(
            "SELECT id, device_id, seq, ticket_id, mode, consumes, ts_ms, kind, ref, lane FROM scans"
            " WHERE event = ? AND id > ? AND ((decision = 'accept' AND ticket_id IS NOT NULL) OR kind = 'rollback')"
            " ORDER BY id LIMIT ?", (event, cursor, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        items = [{"device_id": d, "seq": s, "ticket_id": t, "mode": m, "consumes": bool(cons), "ts_ms": ts,
                  "kind": k, "ref": ref, "lane": ln} for _, d, s, t, m, cons, ts, k, ref, ln in rows]
        return items, (rows[-1][0] if rows else cursor), more
