"""Events, their issuer keys, and the tickets central issues (sale, bulk load,
revocation, reissue). Issuer private keys are files (0600) under
``DIR/keys``; only the central has them. Every change to a ticket puts its
current record in the ticket feed again (a new ``change_seq``, :mod:`.feeds`).

Each function takes the :class:`~sync.central.store.CentralStore` first (the
store binds them as its methods).
"""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import gt1
from crypto.issuer import Wallet, private_raw
from crypto.keyring import IssuerKey
from crypto.sealed import write_secret
from gate.errors import ConfigError
from sync.central.db import DB
from sync.central.feeds import TICKET_FIELDS, reserve

# ------------------------------------------------------------------ events


EVENT_NAME_MAX = 64
_EVENT_NAME_BAD = set('"\'/\\<>`')


def check_event_name(event: str) -> None:
    """An event name goes into URLs, file names of exports and pages: 1-64 printable
    characters, no quotes, slashes, angle brackets or control characters (CR/LF)."""
    if not isinstance(event, str) or not event.strip() or len(event) > EVENT_NAME_MAX:
        raise ConfigError(f"an event name has 1 to {EVENT_NAME_MAX} characters: choose a shorter one")
    bad = sorted({c for c in event if c in _EVENT_NAME_BAD or not c.isprintable()})
    if bad or event != event.strip():
        raise ConfigError("an event name cannot hold quotes, slashes, angle brackets, control characters "
                          f"(line breaks, tabs) or leading/trailing spaces: {event!r} has "
                          f"{', '.join(repr(c) for c in bad) or 'spaces at an end'}; choose another name")


def create_event(store, event: str, *, venue: str = "", starts_at: float | None = None,
                 ends_at: float | None = None) -> dict:
    """A new event with its first issuer key."""
    check_event_name(event)
    if starts_at is not None and ends_at is not None and ends_at < starts_at:
        raise ConfigError("the event ends before it starts: check --starts/--ends")
    with store.writer() as db:
        if db.one("SELECT 1 FROM events WHERE event = :e", {"e": event}):
            raise ConfigError(f"event {event!r} already exists")
        db.run("INSERT INTO events (event, venue, starts_at, ends_at, created) VALUES (:e, :v, :s, :x, :t)",
               {"e": event, "v": venue or "", "s": starts_at, "x": ends_at, "t": time.time()})
    key = rotate_key(store, event)
    return {"event": event, "venue": venue or "", "kid": key}


def events(store, venue: str | None = None) -> list[str]:
    with store.reader() as db:
        if venue is None:
            return [r[0] for r in db.all("SELECT event FROM events ORDER BY created")]
        return [r[0] for r in db.all("SELECT event FROM events WHERE venue = :v ORDER BY created",
                                     {"v": venue})]


def event_info(store, event: str) -> dict | None:
    with store.reader() as db:
        r = db.one("SELECT event, venue, starts_at, ends_at FROM events WHERE event = :e", {"e": event})
    return None if r is None else {"event": r[0], "venue": r[1], "starts_at": r[2], "ends_at": r[3]}


def require_event(store, event: str | None) -> str:
    """The event a command names, or the only one; ConfigError saying what to do otherwise."""
    evs = events(store)
    if event is None:
        if len(evs) == 1:
            return evs[0]
        raise ConfigError("name the event with --event" + (f" (one of: {', '.join(evs)})" if evs else
                          "; create one first: gate central --data DIR event create E"))
    if event not in evs:
        raise ConfigError(f"no event {event!r}: create it with 'gate central event create {event}'")
    return event


# ------------------------------------------------------------------ issuer keys


def rotate_key(store, event: str) -> str:
    """A new active signing key for the event (older ones stay active); returns its kid."""
    key = Ed25519PrivateKey.generate()
    pub = gt1.raw_public(key)
    kid = gt1.kid_for(pub).hex()
    write_secret(store.dir / "keys" / f"issuer-{kid}.key", private_raw(key))
    with store.writer() as db:
        db.run("INSERT INTO issuer_keys (kid, event, pub, status, created) VALUES (:k, :e, :p, 'active', :t)",
               {"k": kid, "e": event, "p": pub, "t": time.time()})
    return kid


def signing_key(store, event: str) -> Ed25519PrivateKey:
    with store.reader() as db:
        row = db.one("SELECT kid FROM issuer_keys WHERE event = :e AND status = 'active'"
                     " ORDER BY created DESC, kid DESC LIMIT 1", {"e": event})
    if row is None:
        raise ConfigError(f"event {event!r} has no active issuer key: gate central keys rotate")
    path = store.dir / "keys" / f"issuer-{row[0]}.key"
    if not path.exists():
        raise ConfigError(f"issuer key file {path} is missing: issue from the --data directory "
                          "that created the event")
    return Ed25519PrivateKey.from_private_bytes(path.read_bytes())


def keyring(store, event: str) -> dict:
    """The event's public key ring (docs/formats.md)."""
    with store.reader() as db:
        rows = db.all("SELECT kid, pub, status FROM issuer_keys WHERE event = :e ORDER BY created", {"e": event})
    keys = [IssuerKey(bytes.fromhex(kid), bytes(pub), None, None, status).to_json() for kid, pub, status in rows]
    return {"event": event, "keys": keys}


# ------------------------------------------------------------------ tickets


def _placeholders(names) -> str:
    return ", ".join(f":{n}" for n in names)


def _insert_tickets(db: DB, rows: list[dict], *, upsert: bool = False) -> None:
    if not rows:
        return
    first = reserve(db, "change", len(rows)) - len(rows) + 1
    cols = TICKET_FIELDS + ("holder_pub", "change_seq")
    for i, r in enumerate(rows):
        r["change_seq"] = first + i
        r.setdefault("holder_pub", None)
    if db.dialect == "postgresql" and not upsert and len(rows) > 100:
        with db.raw.cursor() as cur, cur.copy(f"COPY tickets ({', '.join(cols)}) FROM STDIN") as cp:
            for r in rows:
                cp.write_row([r[c] for c in cols])
        return
    sql = f"INSERT INTO tickets ({', '.join(cols)}) VALUES ({_placeholders(cols)})"
    if upsert:
        sql += " ON CONFLICT (ticket_id) DO UPDATE SET " + ", ".join(
            f"{c} = excluded.{c}" for c in cols if c != "ticket_id")
    db.run(sql, rows)


def issue(store, event: str, *, count: int, out: Path, tier: str = "GA", zone: str | None = None,
          entries: int = 1, face_template: bytes | None = None, rotating: bool = True) -> list[dict]:
    """Sell ``count`` tickets: each wallet file (credential + holder key) goes to ``out``."""
    key = signing_key(store, event)
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
    with store.writer() as db:
        _insert_tickets(db, rows)
    return made


def add_tickets(store, records: list[dict], *, replace: bool = True) -> None:
    """Bulk load ticket records (docs/formats.md shape): benchmarks, migrations.
    ``replace=False``: all are new (PostgreSQL then loads them with COPY)."""
    rows = [{f: int(r[f]) if isinstance(r[f], bool) else r[f] for f in TICKET_FIELDS} for r in records]
    with store.writer() as db:
        _insert_tickets(db, rows, upsert=replace)


def _ticket_event(db: DB, ticket_id: str) -> str:
    row = db.one("SELECT event FROM tickets WHERE ticket_id = :t", {"t": ticket_id})
    if row is None:
        raise ConfigError(f"no ticket {ticket_id}")
    return row[0]


def revoke(store, ticket_id: str, *, at: float | None = None) -> dict:
    with store.writer() as db:
        _ticket_event(db, ticket_id)
        seq = reserve(db, "change")
        db.run("UPDATE tickets SET status = 'revoked', revoked_at = :at, change_seq = :s WHERE ticket_id = :t",
               {"at": at or time.time(), "s": seq, "t": ticket_id})
    return {"ticket_id": ticket_id, "status": "revoked"}


def reissue(store, ticket_id: str, out: Path) -> dict:
    """Version bump and a new holder key (transfer or lost phone); the old code stops working."""
    holder = Ed25519PrivateKey.generate()
    with store.writer() as db:
        event = _ticket_event(db, ticket_id)
        version, entries, zone, tier = db.one(
            "SELECT version, entries, zone, tier FROM tickets WHERE ticket_id = :t", {"t": ticket_id})
        seq = reserve(db, "change")
        db.run("UPDATE tickets SET version = :v, change_seq = :s, face_template = NULL, holder_pub = :h"
               " WHERE ticket_id = :t",
               {"v": version + 1, "s": seq, "h": gt1.raw_public(holder), "t": ticket_id})
    cred = gt1.issue(signing_key(store, event), ticket_id=bytes.fromhex(ticket_id), event=event, tier=tier,
                     zone=zone, entries=entries, version=version + 1, holder_pub=gt1.raw_public(holder))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{ticket_id}.v{version + 1}.ticket.json"
    Wallet(ticket_id, event, cred, holder).save(path)
    return {"ticket_id": ticket_id, "version": version + 1, "file": str(path)}
