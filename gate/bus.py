"""The venue bus, core side (docs/bus.md): gates on one venue network tell each
other about every record that changes a ticket's usage, so a ticket admitted at
one lane is refused at the next within milliseconds, with no server on site.

This module is the port and the pure parts: the :class:`BusPort` protocol an
adapter implements (``sync.bus_zenoh`` for Zenoh), building and verifying the
three kinds of bus traffic (records, catch-up queries, liveness), the
trusted-device list (with central's quarantine and revocation), storing
accepted peer records with the admissions pulled from central
(``remote_admissions``), the per-device chain that says how far this gate is
caught up, catch-up answers, and the link state. It never imports a network
library and never reads a clock; randomness (nonces) is passed in.

A record message is CBOR ``["GT1-bus/2", device, seq, hash, pu_seq, pu_hash,
record, sig]``: ``hash`` is the chain hash of scan-log record ``seq``,
``(pu_seq, pu_hash)`` the seq and chain hash of the device's previous usage
record (``(0, GENESIS)`` for its first), ``record`` the canonical CBOR of the
record's bus fields (:data:`BUS_FIELDS`: never a presented code, so a pretix
secret stays on its gate; the ticket id is already its digest), and ``sig`` the
device's Ed25519 signature over ``CBOR(["GT1-bus-record", device, seq, hash,
pu_seq, pu_hash, record])``. The ``pu`` links make each device's usage records a
chain a receiver can check for gaps whoever relays them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Callable, Iterable, Protocol

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gate import scanlog
from gate.db import get_setting, put_setting, transaction
from gate.decision import Decision, Reason

TAG = "GT1-bus/2"
REC_TAG = "GT1-bus-record"
QUERY_TAG = "GT1-bus-query"        # a signed catch-up query
LIVE_Q_TAG = "GT1-bus-live?"       # a signed liveness challenge
LIVE_TAG = "GT1-bus-live"          # a signed liveness answer
MAX_MESSAGE = 4096  # a bus record message is ~350 bytes; anything this large is not one
MAX_QUERY = 64 * 1024  # a catch-up query names every device once
MAX_ID = 128
INT_MAX = 2**63 - 1  # SQLite INTEGER; CBOR allows up to 2^64-1 and more as bignums
NONCE_LEN = 16
USAGE_KINDS = (scanlog.SCAN, scanlog.OVERRIDE, scanlog.ROLLBACK)
# what of a scan-log record travels on the bus; never "code" (a pretix secret), "qr_sha",
# "proof", "cred_sha", face or operator fields
BUS_FIELDS = ("kind", "seq", "device", "event", "lane", "ts_ms", "mode", "decision", "reason",
              "ticket_id", "consumes", "ref", "alone")
# the scans rows that carry usage (carries_usage, in SQL): for the previous-usage link
USAGE_SQL = "(kind = 'rollback' OR (accepted = 1 AND ticket_id IS NOT NULL AND ticket_id <> ''))"


class LinkState(StrEnum):
    ONLINE = "ONLINE"  # central answers
    VENUE = "VENUE"    # central gone, at least one live trusted peer on the bus
    ALONE = "ALONE"    # neither


class WhenAlone(StrEnum):
    ADMIT = "admit"                  # decide as usual; admissions flagged `alone`
    ROTATING_ONLY = "rotating-only"  # static codes (paper, screenshots) refused
    REFUSE = "refuse"                # every code refused until a peer or central is back


def link_state(*, central_ok: bool | None, peers: int) -> LinkState:
    """``peers``: trusted devices that proved they are alive (a fresh signed
    liveness answer), never merely transport sessions."""
    if central_ok:
        return LinkState.ONLINE
    return LinkState.VENUE if peers > 0 else LinkState.ALONE


def apply_when_alone(d: Decision, policy: WhenAlone) -> Decision:
    """The lane's decision while ALONE (pure). Only accepts are changed."""
    if not d.accepted or policy is WhenAlone.ADMIT or d.reason is Reason.MANUAL_ADMIT:
        return d
    if policy is WhenAlone.ROTATING_ONLY:
        if d.step is not None:
            return d
        return replace(d, reason=Reason.PROOF_REQUIRED, consumes_entry=False,
                       detail="lane is alone (no central, no peer): rotating codes only")
    return replace(d, reason=Reason.LANE_ALONE, consumes_entry=False,
                   detail="lane is alone (no central, no peer): admissions paused by policy")


def carries_usage(record: dict) -> bool:
    """Does this record change a ticket's usage (what travels on the bus)?"""
    kind = record.get("kind")
    if kind == scanlog.ROLLBACK:
        return True
    return kind in (scanlog.SCAN, scanlog.OVERRIDE) and record.get("decision") == "accept" \
        and bool(record.get("ticket_id"))


# ------------------------------------------------------------------ the port


class Inbound(Protocol):
    """A query a peer sent: its payload, a way to answer it, and to finish it."""

    payload: bytes

    def reply(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class BusPort(Protocol):
    """What the gate needs from a venue bus. Adapter: ``sync.bus_zenoh``.

    Handlers are called on the adapter's network threads: they must only queue."""

    def publish(self, device_id: str, seq: int, message: bytes) -> None:
        """Send one record message to every peer now connected (best effort, never blocks long)."""

    def subscribe(self, handler: Callable[[bytes], None]) -> None:
        """Call ``handler(message)`` for every record message a peer publishes."""

    def answer(self, kind: str, handler: Callable[[Inbound], None]) -> None:
        """Serve queries of ``kind`` ("sync": catch-up, "live": liveness)."""

    def query(self, kind: str, payload: bytes, *, timeout_s: float,
              on_reply: Callable[[str, bytes], None], on_done: Callable[[], None]) -> None:
        """Ask every peer; ``on_reply(replier, data)`` per answer (``replier`` names the
        answering session, not a device: anyone can claim a device), then ``on_done()``."""

    def sessions(self) -> int:
        """Transport sessions open now (not peers: a session proves nothing)."""

    def close(self) -> None: ...


# ------------------------------------------------------------------ messages


class Ignored(ValueError):
    """A message refused by this module; ``why`` is the counter it goes to."""

    def __init__(self, why: str, detail: str = ""):
        super().__init__(detail or why)
        self.why = why


def _strict_cbor(data: object, limit: int):
    if not isinstance(data, (bytes, bytearray)) or len(data) > limit:
        raise Ignored("malformed", "not a bus message (size)")
    try:
        doc = cbor2.loads(bytes(data))
    except Exception:
        raise Ignored("malformed", "not CBOR") from None
    try:
        again = cbor2.dumps(doc, canonical=True)
    except Exception:
        raise Ignored("malformed", "not canonical CBOR") from None
    if again != bytes(data):  # cbor2's loads ignores trailing bytes; keys may repeat or be unordered
        raise Ignored("malformed", "trailing or non-canonical bytes")
    return doc


def _uint(v, lo: int = 1) -> bool:
    return type(v) is int and lo <= v <= INT_MAX


def _ident(v) -> bool:
    return isinstance(v, str) and 0 < len(v) <= MAX_ID and v.isprintable() and "#" not in v


def _text(v, n: int = MAX_ID) -> bool:
    return isinstance(v, str) and len(v) <= n and v.isprintable()


def _hash32(v) -> bool:
    return isinstance(v, bytes) and len(v) == 32


@dataclass(frozen=True, slots=True)
class BusMessage:
    device_id: str
    seq: int
    hash: bytes      # chain hash of the scan-log record `seq`
    pu_seq: int      # the device's previous usage record (0: none)
    pu_hash: bytes
    record: bytes    # canonical CBOR of the bus fields
    sig: bytes

    def signed(self) -> bytes:
        return cbor2.dumps([REC_TAG, self.device_id, self.seq, self.hash, self.pu_seq, self.pu_hash,
                            self.record], canonical=True)

    def encode(self) -> bytes:
        return cbor2.dumps([TAG, self.device_id, self.seq, self.hash, self.pu_seq, self.pu_hash,
                            self.record, self.sig], canonical=True)


def bus_record(record: dict) -> bytes:
    """The bus fields of a scan-log record (never a presented code), canonical CBOR."""
    return scanlog.encode_record({k: record[k] for k in BUS_FIELDS if k in record})


def sign_record(key: Ed25519PrivateKey, device_id: str, seq: int, h: bytes, pu_seq: int, pu_hash: bytes,
                record: dict) -> BusMessage:
    data = bus_record(record)
    m = BusMessage(device_id, seq, h, pu_seq, pu_hash, data, b"")
    return replace(m, sig=key.sign(m.signed()))


def previous_usage(conn: sqlite3.Connection, seq: int) -> tuple[int, bytes]:
    """The seq and chain hash of this gate's last usage record before ``seq``."""
    row = conn.execute(f"SELECT seq, hash FROM scans WHERE seq < ? AND {USAGE_SQL} ORDER BY seq DESC LIMIT 1",
                       (seq,)).fetchone()
    return (0, scanlog.GENESIS) if row is None else (row[0], row[1])


def message_for(conn: sqlite3.Connection, key: Ed25519PrivateKey, device_id: str, seq: int) -> BusMessage | None:
    """The signed bus message of one of this gate's own records (None: not a usage record)."""
    row = conn.execute("SELECT record, hash FROM scans WHERE seq = ?", (seq,)).fetchone()
    if row is None:
        return None
    rec = cbor2.loads(row[0])
    if not carries_usage(rec):
        return None
    pu_seq, pu_hash = previous_usage(conn, seq)
    return sign_record(key, device_id, seq, row[1], pu_seq, pu_hash, rec)


def peek_device(data: bytes) -> str | None:
    """The device a record message claims, read from its first bytes without
    decoding it (for queueing on the network thread); None when not that shape."""
    head = b"\x88\x69" + TAG.encode()  # array(8), text(9) "GT1-bus/2"
    if not isinstance(data, (bytes, bytearray)) or not data.startswith(head):
        return None
    i = len(head)
    if i >= len(data):
        return None
    b = data[i]
    if 0x60 <= b <= 0x77:
        n, i = b - 0x60, i + 1
    elif b == 0x78 and i + 1 < len(data):
        n, i = data[i + 1], i + 2
    else:
        return None
    try:
        return bytes(data[i:i + n]).decode()
    except UnicodeDecodeError:
        return None


def parse_message(data: bytes) -> BusMessage:
    """A record message, every field checked (``Ignored("malformed")`` otherwise)."""
    doc = _strict_cbor(data, MAX_MESSAGE)
    if not (isinstance(doc, list) and len(doc) == 8 and doc[0] == TAG):
        raise Ignored("malformed", "not a GT1-bus/2 record message")
    _, dev, seq, h, pu_seq, pu_hash, rec, sig = doc
    if not _ident(dev):
        raise Ignored("malformed", "device id is not 1-128 printable characters")
    if not _uint(seq):
        raise Ignored("malformed", f"{dev}: seq is not an integer from 1 to 2^63-1")
    if not (_uint(pu_seq, 0) and pu_seq < seq):
        raise Ignored("malformed", f"{dev} #{seq}: previous usage seq out of range")
    if not (_hash32(h) and _hash32(pu_hash) and (pu_seq or pu_hash == scanlog.GENESIS)):
        raise Ignored("malformed", f"{dev} #{seq}: chain hashes are not 32 bytes")
    if not (isinstance(rec, bytes) and isinstance(sig, bytes) and len(sig) == 64):
        raise Ignored("malformed", f"{dev} #{seq}: bad record or signature field")
    return BusMessage(dev, seq, h, pu_seq, pu_hash, rec, sig)


def parse_bus_record(m: BusMessage) -> dict:
    """The record's bus fields, each of the type and range it must have. A record
    that fails any check is malformed, whoever signed it."""
    # the bytes are signed by the device: decoded, not re-encoded (the message around them is strict)
    try:
        rec = cbor2.loads(m.record)
    except Exception:
        raise Ignored("malformed", f"{m.device_id} #{m.seq}: record is not CBOR") from None
    where = f"{m.device_id} #{m.seq}"
    if not isinstance(rec, dict) or not all(isinstance(k, str) for k in rec) or set(rec) - set(BUS_FIELDS):
        raise Ignored("malformed", f"{where}: record is not a map of the bus fields")
    if rec.get("seq") != m.seq or type(rec.get("seq")) is not int or rec.get("device") != m.device_id:
        raise Ignored("malformed", f"{where}: record names another seq or device")
    if not _uint(rec.get("ts_ms"), 0):
        raise Ignored("malformed", f"{where}: ts_ms is not an integer of milliseconds")
    if not (_text(rec.get("event")) and rec["event"] and (rec.get("lane") is None or _text(rec.get("lane")))):
        raise Ignored("malformed", f"{where}: event or lane is not text")
    if rec.get("reason") is not None and not _text(rec.get("reason"), 64):
        raise Ignored("malformed", f"{where}: reason is not text")
    for k in ("consumes", "alone"):
        if rec.get(k) is not None and type(rec[k]) is not bool:
            raise Ignored("malformed", f"{where}: {k} is not true/false")
    kind = rec.get("kind")
    if kind == scanlog.ROLLBACK:
        if not (_uint(rec.get("ref")) and rec["ref"] < m.seq):
            raise Ignored("malformed", f"{where}: rollback ref is not an earlier seq")
    elif kind in (scanlog.SCAN, scanlog.OVERRIDE):
        if rec.get("decision") not in ("accept", "reject"):
            raise Ignored("malformed", f"{where}: decision is not accept/reject")
        if rec.get("decision") == "accept":
            if not (_text(rec.get("ticket_id")) and rec["ticket_id"]):
                raise Ignored("malformed", f"{where}: ticket_id is not text")
            if rec.get("mode") not in ("entry", "exit"):
                raise Ignored("malformed", f"{where}: mode is not entry/exit")
    elif not _text(kind, 32):
        raise Ignored("malformed", f"{where}: kind is not text")
    return rec


# ------------------------------------------------------------------ queries and liveness


def make_query(key: Ed25519PrivateKey, event: str, asker: str, nonce: bytes, since: dict[str, int]) -> bytes:
    """A signed catch-up query: ``[tag, event, asker, nonce, since, sig]``."""
    body = [QUERY_TAG, event, asker, nonce, since]
    return cbor2.dumps([*body, key.sign(cbor2.dumps(body, canonical=True))], canonical=True)


@dataclass(frozen=True, slots=True)
class Query:
    asker: str
    nonce: bytes
    since: dict
    signed: bytes
    sig: bytes


def parse_query(data: bytes, event: str) -> Query:
    doc = _strict_cbor(data, MAX_QUERY)
    if not (isinstance(doc, list) and len(doc) == 6 and doc[0] == QUERY_TAG):
        raise Ignored("malformed", "not a catch-up query")
    _, ev, asker, nonce, since, sig = doc
    if ev != event:
        raise Ignored("wrong_event", f"query for {ev!r}")
    if not (_ident(asker) and isinstance(nonce, bytes) and len(nonce) == NONCE_LEN
            and isinstance(sig, bytes) and len(sig) == 64 and isinstance(since, dict)
            and all(_ident(k) and _uint(v, 0) for k, v in since.items())):
        raise Ignored("malformed", "bad catch-up query fields")
    return Query(asker, nonce, since, cbor2.dumps(doc[:5], canonical=True), sig)


def make_live_query(key: Ed25519PrivateKey, event: str, asker: str, nonce: bytes) -> bytes:
    body = [LIVE_Q_TAG, event, asker, nonce]
    return cbor2.dumps([*body, key.sign(cbor2.dumps(body, canonical=True))], canonical=True)


def parse_live_query(data: bytes, event: str) -> Query:
    doc = _strict_cbor(data, 512)
    if not (isinstance(doc, list) and len(doc) == 5 and doc[0] == LIVE_Q_TAG):
        raise Ignored("malformed", "not a liveness query")
    _, ev, asker, nonce, sig = doc
    if ev != event:
        raise Ignored("wrong_event", f"liveness query for {ev!r}")
    if not (_ident(asker) and isinstance(nonce, bytes) and len(nonce) == NONCE_LEN
            and isinstance(sig, bytes) and len(sig) == 64):
        raise Ignored("malformed", "bad liveness query fields")
    return Query(asker, nonce, {}, cbor2.dumps(doc[:4], canonical=True), sig)


def make_live_answer(key: Ed25519PrivateKey, event: str, responder: str, asker: str, nonce: bytes) -> bytes:
    body = [LIVE_TAG, event, responder, asker, nonce]
    return cbor2.dumps([*body, key.sign(cbor2.dumps(body, canonical=True))], canonical=True)


def parse_live_answer(data: bytes, event: str, asker: str, nonce: bytes) -> tuple[str, bytes, bytes]:
    """(responder, signed bytes, sig) of an answer to OUR challenge ``nonce``."""
    doc = _strict_cbor(data, 512)
    if not (isinstance(doc, list) and len(doc) == 6 and doc[0] == LIVE_TAG):
        raise Ignored("malformed", "not a liveness answer")
    _, ev, responder, to, n, sig = doc
    if ev != event or to != asker or n != nonce:
        raise Ignored("stale", "answers another challenge")
    if not (_ident(responder) and isinstance(sig, bytes) and len(sig) == 64):
        raise Ignored("malformed", "bad liveness answer fields")
    return responder, cbor2.dumps(doc[:5], canonical=True), sig


# ------------------------------------------------------------------ trust


@dataclass(frozen=True, slots=True)
class TrustedDevice:
    device_id: str
    pub: bytes
    status: str = "active"
    quarantined: bool = False

    @property
    def counts(self) -> bool:
        """May its liveness and admissions count (active and not quarantined)?"""
        return self.status == "active" and not self.quarantined


def parse_trust(doc: object, event: str) -> list[TrustedDevice]:
    """A device list: ``{"event": E, "devices": [{"device_id", "public_key" (hex or
    base64url, raw 32 bytes), "status", "quarantined"}]}`` -- what central's
    /devices answers, or a file for ``gate bus trust``."""
    import base64
    if not isinstance(doc, dict) or not isinstance(doc.get("devices"), list):
        raise ValueError("a device list is a JSON object with a 'devices' array")
    if doc.get("event") not in (None, event):
        raise ValueError(f"device list is for event {doc.get('event')!r}, this gate is for {event!r}")
    out = []
    for i, d in enumerate(doc["devices"]):
        if not isinstance(d, dict) or not _ident(d.get("device_id")):
            raise ValueError(f"device {i}: needs a 'device_id' (1-128 printable characters, no '#')")
        raw = d.get("public_key")
        pub = None
        if isinstance(raw, str):
            try:
                pub = bytes.fromhex(raw) if len(raw) == 64 else \
                    base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
            except ValueError:
                pub = None
        if pub is None or len(pub) != 32:
            raise ValueError(f"device {d['device_id']}: 'public_key' must be a raw 32-byte Ed25519 key "
                             "(64 hex digits or base64url)")
        status = d.get("status", "active")
        if status not in ("active", "revoked"):
            raise ValueError(f"device {d['device_id']}: 'status' must be 'active' or 'revoked'")
        q = d.get("quarantined", False)
        if type(q) is not bool:
            raise ValueError(f"device {d['device_id']}: 'quarantined' must be true or false")
        out.append(TrustedDevice(d["device_id"], pub, status, q))
    return out


def _fork_range(device_id: str) -> tuple[str, str]:
    """The primary-key range of a device's fork names (``device#hash8``)."""
    return device_id + "#", device_id + "$"


def store_trust(conn: sqlite3.Connection, devices: list[TrustedDevice], source: str) -> int:
    """Add or update trusted devices; a revoked device stays revoked. Revoking a
    device voids what it published on the bus (its peer records and the
    admissions they brought; what central itself sends is central's call).
    A quarantined device's bus admissions are held back, like central holds
    them: kept as evidence, not counted, also when the quarantine is lifted."""
    with transaction(conn):
        conn.executemany(
            "INSERT INTO bus_devices (device_id, pub, status, source, quarantined) VALUES (?,?,?,?,?)"
            " ON CONFLICT(device_id) DO UPDATE SET pub = excluded.pub, source = excluded.source,"
            " status = CASE WHEN bus_devices.status = 'revoked' THEN 'revoked' ELSE excluded.status END,"
            " quarantined = excluded.quarantined",
            [(d.device_id, d.pub, d.status, source, int(d.quarantined)) for d in devices])
        for dev, status, q in conn.execute(
                "SELECT device_id, status, quarantined FROM bus_devices WHERE status = 'revoked' OR quarantined = 1"
                ).fetchall():
            lo, hi = _fork_range(dev)
            where = "(device_id = ? OR (device_id >= ? AND device_id < ?))"
            conn.execute(f"DELETE FROM remote_admissions WHERE via = 'bus' AND {where}", (dev, lo, hi))
            if status == "revoked":
                conn.execute(f"DELETE FROM bus_records WHERE {where}", (dev, lo, hi))
            else:
                conn.execute(f"UPDATE bus_records SET held = 1 WHERE held = 0 AND {where}", (dev, lo, hi))
        put_setting(conn, "bus.trust_version", (get_setting(conn, "bus.trust_version", 0) or 0) + 1)
    return len(devices)


def trust_version(conn: sqlite3.Connection) -> str:
    """Bumped by every :func:`store_trust`: a running bus reloads its trust list on
    change (compared as stored: this is read once per record stored)."""
    row = conn.execute("SELECT value FROM settings WHERE key = 'bus.trust_version'").fetchone()
    return row[0] if row else ""


def trusted(conn: sqlite3.Connection) -> dict[str, TrustedDevice]:
    return {d: TrustedDevice(d, p, s, bool(q)) for d, p, s, q in conn.execute(
        "SELECT device_id, pub, status, quarantined FROM bus_devices")}


class Trust:
    """The trust list in memory, with each key object made once."""

    def __init__(self, devices: dict[str, TrustedDevice]):
        self.devices = devices
        self._keys: dict[str, Ed25519PublicKey] = {}

    def get(self, device_id: str) -> TrustedDevice | None:
        return self.devices.get(device_id)

    def key(self, device_id: str) -> Ed25519PublicKey | None:
        d = self.devices.get(device_id)
        if d is None:
            return None
        k = self._keys.get(device_id)
        if k is None:
            k = self._keys[device_id] = Ed25519PublicKey.from_public_bytes(d.pub)
        return k

    def verify(self, device_id: str, sig: bytes, signed: bytes) -> bool:
        k = self.key(device_id)
        if k is None:
            return False
        try:
            k.verify(sig, signed)
            return True
        except InvalidSignature:
            return False


# ------------------------------------------------------------------ receiving


COUNTERS = ("accepted", "duplicate", "forked", "restored", "held", "unknown_device", "revoked",
            "bad_signature", "wrong_event", "malformed", "not_usage")


@dataclass
class BusBook:
    """Receives peer messages into the gate's database (one connection, one thread).

    Dedup by (device, seq); a rollback voids its admission; a record whose
    (device, seq) is already stored with another hash (a peer restored from an
    older backup) is kept as well, counted ``forked``: refusing a ticket both
    versions admitted is the safe side. A quarantined device's records are
    stored ``held`` (no admission counted). Each device's records are linked by
    their previous-usage field: only a record linked back to the device's first
    one (through records all held here) moves "caught up through" (:meth:`since`).
    """

    conn: sqlite3.Connection
    device_id: str
    event: str
    own_pub: bytes | None = None
    counts: dict = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    last_ignored: str = ""
    last_record: dict | None = None  # the last peer record stored (admission counted)
    last_gap: bool = False  # the last record stored does not link back yet: a record before it is missing
    errors: int = 0      # unexpected exceptions caught so a bus thread goes on
    last_error: str = ""
    _trust: Trust | None = None
    _trust_v: str | None = None

    @property
    def trust(self) -> Trust:
        if self._trust is None:
            self._trust_v = trust_version(self.conn)
            self._trust = Trust(trusted(self.conn))
        return self._trust

    def reload_trust(self) -> None:
        self._trust = None

    def note_error(self, where: str, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{where}: {type(exc).__name__}: {exc}"

    def _ignore(self, why: str, detail: str) -> str:
        self.counts[why] += 1
        self.last_ignored = f"{why}: {detail}"
        return why

    def receive(self, data: bytes) -> str:
        """Verify and store one record message; returns the counter it went to."""
        try:
            m = parse_message(data)
            rec = parse_bus_record(m)
        except Ignored as exc:
            return self._ignore(exc.why, str(exc))
        if m.device_id == self.device_id:
            return self._own(m, rec)
        for _ in range(3):
            got = self._receive(m, rec)
            if got != "stale":
                return got
            self.reload_trust()  # the trust list changed while we checked: check again
        return self._ignore("revoked", f"{m.device_id}: its trust keeps changing")

    def _receive(self, m: BusMessage, rec: dict) -> str:
        dev = self.trust.get(m.device_id)  # in memory: a flood from unknown keys never reaches the database
        if dev is None:
            return self._ignore("unknown_device", f"{m.device_id} is not a trusted device")
        if dev.status != "active":
            return self._ignore("revoked", f"{m.device_id} is revoked")
        stored = self.conn.execute(
            "SELECT hash, pu_seq, pu_hash, record FROM bus_records WHERE device_id = ? AND seq = ?",
            (m.device_id, m.seq)).fetchone()
        if stored is not None and (stored == (m.hash, m.pu_seq, m.pu_hash, m.record) or self.conn.execute(
                "SELECT 1 FROM bus_records WHERE device_id = ? AND seq = ?",
                (self._fork_name(m), m.seq)).fetchone()):
            self.counts["duplicate"] += 1
            return "duplicate"
        if not self.trust.verify(m.device_id, m.sig, m.signed()):
            return self._ignore("bad_signature", f"{m.device_id} #{m.seq}")
        if rec["event"] != self.event:
            return self._ignore("wrong_event", f"{m.device_id} #{m.seq} is for {rec['event']!r}")
        if not carries_usage(rec):
            return self._ignore("not_usage", f"{m.device_id} #{m.seq}")
        forked = stored is not None
        held = dev.quarantined and rec["kind"] != scanlog.ROLLBACK
        if not self._store(m, rec, forked=forked, held=held):
            return "stale"
        if held:
            self.counts["held"] += 1
            self.last_ignored = f"held: {m.device_id} is quarantined by central"
            return "held"
        self.last_record = rec
        self.counts["forked" if forked else "accepted"] += 1
        return "forked" if forked else "accepted"

    def _own(self, m: BusMessage, rec: dict) -> str:
        """Our own record echoed by a peer. Beyond our head it is one we lost (this
        gate was restored from an older backup): keep its admission, so we refuse
        what we admitted before the restore."""
        if m.seq <= scanlog.head(self.conn)[0] or self.own_pub is None:
            return "own"
        if self.conn.execute("SELECT 1 FROM bus_records WHERE device_id = ? AND seq = ?",
                             (self._fork_name(m), m.seq)).fetchone():
            return "own"
        try:
            Ed25519PublicKey.from_public_bytes(self.own_pub).verify(m.sig, m.signed())
        except InvalidSignature:
            return self._ignore("bad_signature", f"{m.device_id} #{m.seq} (our own id)")
        if rec["event"] != self.event or not carries_usage(rec):
            return "own"
        self._store(m, rec, forked=True, held=False)
        self.counts["restored"] += 1
        return "restored"

    @staticmethod
    def _fork_name(m: BusMessage) -> str:
        return f"{m.device_id}#{m.hash.hex()[:8]}"

    def _store(self, m: BusMessage, rec: dict, *, forked: bool, held: bool) -> bool:
        """Store under the write lock; False (nothing stored) when the trust list
        changed since it was read: a record of a device revoked or quarantined a
        moment ago must not slip past store_trust's void and hold."""
        # a fork is kept under a distinct name, so it counts as its own admission
        dev = self._fork_name(m) if forked else m.device_id
        with transaction(self.conn):
            if m.device_id != self.device_id and trust_version(self.conn) != self._trust_v:
                return False
            linked = m.device_id != self.device_id and self._links(m)
            self.last_gap = m.device_id != self.device_id and not linked
            self.conn.execute(
                "INSERT OR IGNORE INTO bus_records (device_id, seq, origin, hash, pu_seq, pu_hash, record, sig,"
                " linked, held) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (dev, m.seq, m.device_id, m.hash, m.pu_seq, m.pu_hash, m.record, m.sig, int(linked), int(held)))
            if linked:
                self._link_waiting(m)
            if rec["kind"] == scanlog.ROLLBACK:
                self.conn.execute("UPDATE remote_admissions SET voided = 1 WHERE device_id = ? AND seq = ?",
                                  (dev, rec["ref"]))
                self.conn.execute("INSERT OR IGNORE INTO bus_voids VALUES (?, ?)", (dev, rec["ref"]))
                return True
            if held:
                return True
            voided = self.conn.execute("SELECT 1 FROM bus_voids WHERE device_id = ? AND ref = ?",
                                       (dev, m.seq)).fetchone() is not None
            self.conn.execute(
                "INSERT OR IGNORE INTO remote_admissions (device_id, seq, ticket_id, mode, consumes, ts_ms,"
                " voided, lane, via, alone) VALUES (?,?,?,?,?,?,?,?,'bus',?)",
                (dev, m.seq, rec["ticket_id"], rec["mode"], int(bool(rec.get("consumes"))), rec["ts_ms"],
                 int(voided), rec.get("lane"), int(bool(rec.get("alone")))))
        return True

    def _links(self, m: BusMessage) -> bool:
        """Does the record link back: its previous usage record is linked here (or
        it is the device's first)?"""
        if m.pu_seq == 0:
            return m.pu_hash == scanlog.GENESIS
        return self.conn.execute(
            "SELECT 1 FROM bus_records WHERE origin = ? AND seq = ? AND hash = ? AND linked = 1",
            (m.device_id, m.pu_seq, m.pu_hash)).fetchone() is not None

    def _link_waiting(self, m: BusMessage) -> None:
        """A record just linked: link every stored record that was waiting on it, and on."""
        c = self.conn
        frontier = [(m.seq, m.hash)]
        while frontier:
            s, h = frontier.pop()
            for dev, seq, hh in c.execute(
                    "SELECT device_id, seq, hash FROM bus_records WHERE origin = ? AND pu_seq = ? AND pu_hash = ?"
                    " AND linked = 0", (m.device_id, s, h)).fetchall():
                c.execute("UPDATE bus_records SET linked = 1 WHERE device_id = ? AND seq = ?", (dev, seq))
                frontier.append((seq, hh))

    # ------------------------------------------------------------ catch-up

    def since(self) -> dict[str, int]:
        """What to ask the peers for: for each trusted or known device, the seq it is
        caught up through -- its highest record linked back, record by record, to its
        first (so a record a peer left out is asked for again, whoever answered) --
        and our own head (a gate restored from an older backup learns what it lost)."""
        out = dict(self.conn.execute(
            "SELECT origin, max(seq) FROM bus_records WHERE linked = 1 GROUP BY origin"))
        for dev in self.trust.devices:
            out.setdefault(dev, 0)
        out[self.device_id] = scanlog.head(self.conn)[0]
        return out


def answer_since(conn: sqlite3.Connection, key: Ed25519PrivateKey, device_id: str,
                 since: dict[str, int], *, limit: int = 2000,
                 signed: dict | None = None) -> Iterable[tuple[str, int, bytes]]:
    """Catch-up answer: our own usage records after ``since[device_id]`` (signed
    now, or taken from ``signed``: seq -> message, the publisher's cache) and the
    peer records we hold after ``since[D]`` (as received; every device not
    named: all of them), in seq order per device, at most ``limit``."""
    n = 0
    after = since.get(device_id, 0)
    pu = previous_usage(conn, after + 1)
    for seq, data, h in conn.execute(f"SELECT seq, record, hash FROM scans WHERE seq > ? AND {USAGE_SQL}"
                                     " ORDER BY seq", (after,)):
        msg = None if signed is None else signed.get(seq)
        if msg is None:
            msg = sign_record(key, device_id, seq, h, pu[0], pu[1], cbor2.loads(data)).encode()
            if signed is not None:
                signed[seq] = msg
        yield device_id, seq, msg
        pu = (seq, h)
        n += 1
        if n >= limit:
            return
    origins = [d for (d,) in conn.execute("SELECT DISTINCT origin FROM bus_records ORDER BY origin")]
    for origin in origins:
        if origin == device_id:
            continue
        floor = since.get(origin, 0)
        for dev, seq, h, pu_seq, pu_hash, data, sig in conn.execute(
                "SELECT device_id, seq, hash, pu_seq, pu_hash, record, sig FROM bus_records"
                " WHERE origin = ? AND (seq > ? OR device_id <> origin) ORDER BY seq", (origin, floor)):
            yield origin, seq, BusMessage(origin, seq, h, pu_seq, pu_hash, data, sig).encode()
            n += 1
            if n >= limit:
                return


# ------------------------------------------------------------------ status


def save_status(conn: sqlite3.Connection, status: dict) -> None:
    with transaction(conn):
        put_setting(conn, "bus.status", status)


def load_status(conn: sqlite3.Connection) -> dict | None:
    return get_setting(conn, "bus.status")


def settings(conn: sqlite3.Connection) -> dict:
    """The bus endpoints set once with ``gate init`` (``gate run`` flags add to them)."""
    return get_setting(conn, "bus", {}) or {}


def endpoints(conn: sqlite3.Connection, listen=(), peers=()) -> tuple[list[str], list[str]]:
    """The endpoints set with 'gate init' plus the ones given to this run."""
    saved = settings(conn)
    return (list(dict.fromkeys([*(saved.get("listen") or []), *listen])),
            list(dict.fromkeys([*(saved.get("peers") or []), *peers])))


def save_settings(conn: sqlite3.Connection, listen: list[str], peers: list[str]) -> None:
    with transaction(conn):
        put_setting(conn, "bus", {"listen": listen, "peers": peers})


def stored_counts(conn: sqlite3.Connection) -> dict:
    return {
        "trusted_devices": conn.execute(
            "SELECT count(*) FROM bus_devices WHERE status = 'active' AND quarantined = 0").fetchone()[0],
        "quarantined_devices": conn.execute(
            "SELECT count(*) FROM bus_devices WHERE status = 'active' AND quarantined = 1").fetchone()[0],
        "peer_records": conn.execute("SELECT count(*) FROM bus_records").fetchone()[0],
        "held_records": conn.execute("SELECT count(*) FROM bus_records WHERE held = 1").fetchone()[0],
        "admissions_from_bus": conn.execute(
            "SELECT count(*) FROM remote_admissions WHERE via = 'bus'").fetchone()[0],
    }
