"""The venue bus, core side (docs/bus.md): gates on one venue network tell each
other about every record that changes a ticket's usage, so a ticket admitted at
one lane is refused at the next within milliseconds, with no server on site.

This module is the port and the pure parts: the :class:`BusPort` protocol an
adapter implements (``sync.bus_zenoh`` for Zenoh), building and verifying a bus
message, the trusted-device list, storing accepted peer records with the
admissions pulled from central (``remote_admissions``), catch-up answers, and
the link state. It never imports a network library and never reads a clock.

A bus message is CBOR ``["GT1-bus", device_id, seq, prev_hash, record, sig]``:
``record`` is the exact scan-log CBOR bytes (``gate.scanlog.encode_record``),
``prev_hash`` the chain hash before it, and ``sig`` the device's Ed25519
signature over ``scanlog.head_message(device_id, seq, chain_hash(prev_hash,
record))`` -- the same chain-head signature an upload to central carries.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable, Iterable, Protocol

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gate import scanlog
from gate.db import get_setting, put_setting, transaction
from gate.decision import Decision, Reason

TAG = "GT1-bus"
MAX_MESSAGE = 16 * 1024  # a scan record is ~300 bytes; anything this large is not one
USAGE_KINDS = (scanlog.SCAN, scanlog.OVERRIDE, scanlog.ROLLBACK)


class LinkState(StrEnum):
    ONLINE = "ONLINE"  # central answers
    VENUE = "VENUE"    # central gone, at least one peer on the bus
    ALONE = "ALONE"    # neither


class WhenAlone(StrEnum):
    ADMIT = "admit"                  # decide as usual; admissions flagged `alone`
    ROTATING_ONLY = "rotating-only"  # static codes (paper, screenshots) refused
    REFUSE = "refuse"                # every code refused until a peer or central is back


def link_state(*, central_ok: bool | None, peers: int) -> LinkState:
    if central_ok:
        return LinkState.ONLINE
    return LinkState.VENUE if peers > 0 else LinkState.ALONE


def apply_when_alone(d: Decision, policy: WhenAlone) -> Decision:
    """The lane's decision while ALONE (pure). Only accepts are changed."""
    if not d.accepted or policy is WhenAlone.ADMIT or d.reason is Reason.MANUAL_ADMIT:
        return d
    from dataclasses import replace
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


class BusPort(Protocol):
    """What the gate needs from a venue bus. Adapters: ``sync.bus_zenoh``."""

    def publish(self, device_id: str, seq: int, message: bytes) -> None:
        """Send one message to every peer now connected (best effort, never blocks long)."""

    def subscribe(self, handler: Callable[[bytes], None]) -> None:
        """Call ``handler(message)`` for every message a peer publishes."""

    def answer(self, handler: Callable[[dict[str, int]], Iterable[tuple[str, int, bytes]]]) -> None:
        """Serve catch-up queries: ``handler({device: after_seq})`` yields
        (device, seq, message) for records after those seqs (every device not named: all)."""

    def query(self, since: dict[str, int], timeout_s: float) -> list[bytes]:
        """Ask the peers for records after ``since`` (device -> seq); the messages answered."""

    def peers(self) -> int:
        """How many peers are connected now."""

    def close(self) -> None: ...


# ------------------------------------------------------------------ messages


@dataclass(frozen=True, slots=True)
class BusMessage:
    device_id: str
    seq: int
    prev: bytes
    record: bytes  # exact scan-log CBOR bytes
    sig: bytes

    def encode(self) -> bytes:
        return cbor2.dumps([TAG, self.device_id, self.seq, self.prev, self.record, self.sig])

    @property
    def hash(self) -> bytes:
        return scanlog.chain_hash(self.prev, self.record)


def sign_record(key: Ed25519PrivateKey, device_id: str, seq: int, prev: bytes, record: bytes) -> BusMessage:
    h = scanlog.chain_hash(prev, record)
    return BusMessage(device_id, seq, prev, record, key.sign(scanlog.head_message(device_id, seq, h)))


def message_for(conn: sqlite3.Connection, key: Ed25519PrivateKey, device_id: str, seq: int) -> BusMessage | None:
    """The signed bus message of one of this gate's own records (None: not a usage record)."""
    rows = conn.execute("SELECT seq, record, hash FROM scans WHERE seq IN (?, ?) ORDER BY seq",
                        (seq - 1, seq)).fetchall()
    if not rows or rows[-1][0] != seq:
        return None
    prev = rows[0][2] if len(rows) == 2 else scanlog.GENESIS
    data = rows[-1][1]
    if not carries_usage(cbor2.loads(data)):
        return None
    return sign_record(key, device_id, seq, prev, data)


class Ignored(ValueError):
    """A message refused by :func:`verify_message`; ``why`` is the counter it goes to."""

    def __init__(self, why: str, detail: str = ""):
        super().__init__(detail or why)
        self.why = why


def parse_message(data: bytes) -> BusMessage:
    if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_MESSAGE:
        raise Ignored("malformed", "not a bus message (size)")
    try:
        doc = cbor2.loads(bytes(data))
    except Exception:
        raise Ignored("malformed", "not CBOR") from None
    if cbor2.dumps(doc) != bytes(data):  # cbor2's loads ignores trailing bytes
        raise Ignored("malformed", "trailing or non-canonical bytes")
    if not (isinstance(doc, list) and len(doc) == 6 and doc[0] == TAG):
        raise Ignored("malformed", "not a GT1-bus message")
    _, dev, seq, prev, rec, sig = doc
    if not (isinstance(dev, str) and type(seq) is int and seq >= 1 and isinstance(prev, bytes)
            and len(prev) == 32 and isinstance(rec, bytes) and isinstance(sig, bytes)):
        raise Ignored("malformed", "bad field types")
    return BusMessage(dev, seq, prev, rec, sig)


# ------------------------------------------------------------------ trust


@dataclass(frozen=True, slots=True)
class TrustedDevice:
    device_id: str
    pub: bytes
    status: str = "active"


def parse_trust(doc: object, event: str) -> list[TrustedDevice]:
    """A device list: ``{"event": E, "devices": [{"device_id", "public_key" (hex or
    base64url, raw 32 bytes), "status"}]}`` -- what central's /devices answers,
    or a file for ``gate bus trust``."""
    import base64
    if not isinstance(doc, dict) or not isinstance(doc.get("devices"), list):
        raise ValueError("a device list is a JSON object with a 'devices' array")
    if doc.get("event") not in (None, event):
        raise ValueError(f"device list is for event {doc.get('event')!r}, this gate is for {event!r}")
    out = []
    for i, d in enumerate(doc["devices"]):
        if not isinstance(d, dict) or not isinstance(d.get("device_id"), str) or not d["device_id"]:
            raise ValueError(f"device {i}: needs a 'device_id' string")
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
        out.append(TrustedDevice(d["device_id"], pub, status))
    return out


def store_trust(conn: sqlite3.Connection, devices: list[TrustedDevice], source: str) -> int:
    """Add or update trusted devices; a revoked device stays revoked."""
    with transaction(conn):
        conn.executemany(
            "INSERT INTO bus_devices (device_id, pub, status, source) VALUES (?,?,?,?)"
            " ON CONFLICT(device_id) DO UPDATE SET pub = excluded.pub, source = excluded.source,"
            " status = CASE WHEN bus_devices.status = 'revoked' THEN 'revoked' ELSE excluded.status END",
            [(d.device_id, d.pub, d.status, source) for d in devices])
    return len(devices)


def trusted(conn: sqlite3.Connection) -> dict[str, TrustedDevice]:
    return {d: TrustedDevice(d, p, s) for d, p, s in conn.execute(
        "SELECT device_id, pub, status FROM bus_devices")}


# ------------------------------------------------------------------ receiving


COUNTERS = ("accepted", "duplicate", "forked", "restored", "unknown_device", "bad_signature", "wrong_event",
            "malformed", "not_usage")


@dataclass
class BusBook:
    """Receives peer messages into the gate's database (one connection, one thread).

    Dedup by (device, seq); a rollback voids its admission; a record whose
    (device, seq) is already stored with other bytes (a peer restored from an
    older backup) is kept as well, counted ``forked``: refusing a ticket both
    versions admitted is the safe side.
    """

    conn: sqlite3.Connection
    device_id: str
    event: str
    own_pub: bytes | None = None
    counts: dict = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    last_ignored: str = ""
    last_record: dict | None = None  # the last peer record stored
    errors: int = 0      # unexpected exceptions caught so a bus thread goes on
    last_error: str = ""
    _trust: dict | None = None
    _keys: dict = field(default_factory=dict)

    def reload_trust(self) -> None:
        self._trust = None
        self._keys.clear()

    def _key(self, device_id: str) -> Ed25519PublicKey | None:
        if self._trust is None:
            self._trust = trusted(self.conn)
        d = self._trust.get(device_id)
        if d is None:  # trust may have grown since (a sync, 'gate bus trust'): look again
            self._trust = trusted(self.conn)
            d = self._trust.get(device_id)
        if d is None or d.status != "active":
            return None
        k = self._keys.get(device_id)
        if k is None:
            k = self._keys[device_id] = Ed25519PublicKey.from_public_bytes(d.pub)
        return k

    def note_error(self, where: str, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{where}: {type(exc).__name__}: {exc}"

    def _ignore(self, why: str, detail: str) -> str:
        self.counts[why] += 1
        self.last_ignored = f"{why}: {detail}"
        return why

    def receive(self, data: bytes) -> str:
        """Verify and store one message; returns the counter it went to."""
        try:
            m = parse_message(data)
        except Ignored as exc:
            return self._ignore(exc.why, str(exc))
        if m.device_id == self.device_id:
            return self._own(m)
        stored = self.conn.execute("SELECT record FROM bus_records WHERE device_id = ? AND seq = ?",
                                   (m.device_id, m.seq)).fetchone()
        if stored is not None and (stored[0] == m.record or self.conn.execute(
                "SELECT 1 FROM bus_records WHERE device_id = ? AND seq = ?",
                (self._fork_name(m), m.seq)).fetchone()):
            self.counts["duplicate"] += 1
            return "duplicate"
        key = self._key(m.device_id)
        if key is None:
            return self._ignore("unknown_device", f"{m.device_id} is not a trusted device")
        try:
            key.verify(m.sig, scanlog.head_message(m.device_id, m.seq, m.hash))
        except InvalidSignature:
            return self._ignore("bad_signature", f"{m.device_id} #{m.seq}")
        try:
            rec = cbor2.loads(m.record)
        except Exception:
            return self._ignore("malformed", f"{m.device_id} #{m.seq}: record is not CBOR")
        if not isinstance(rec, dict) or rec.get("seq") != m.seq or rec.get("device") != m.device_id:
            return self._ignore("malformed", f"{m.device_id} #{m.seq}: record names another seq or device")
        if rec.get("event") != self.event:
            return self._ignore("wrong_event", f"{m.device_id} #{m.seq} is for {rec.get('event')!r}")
        if not carries_usage(rec):
            return self._ignore("not_usage", f"{m.device_id} #{m.seq}")
        forked = stored is not None
        self._store(m, rec, forked)
        self.last_record = rec
        self.counts["forked" if forked else "accepted"] += 1
        return "forked" if forked else "accepted"

    def _own(self, m: BusMessage) -> str:
        """Our own record echoed by a peer. Beyond our head it is one we lost (this
        gate was restored from an older backup): keep its admission, so we refuse
        what we admitted before the restore."""
        if m.seq <= scanlog.head(self.conn)[0] or self.own_pub is None:
            return "own"
        if self.conn.execute("SELECT 1 FROM bus_records WHERE device_id = ? AND seq = ?",
                             (self._fork_name(m), m.seq)).fetchone():
            return "own"
        try:
            Ed25519PublicKey.from_public_bytes(self.own_pub).verify(
                m.sig, scanlog.head_message(m.device_id, m.seq, m.hash))
            rec = cbor2.loads(m.record)
        except Exception:
            return self._ignore("bad_signature", f"{m.device_id} #{m.seq} (our own id)")
        if not isinstance(rec, dict) or rec.get("event") != self.event or not carries_usage(rec):
            return "own"
        self._store(m, rec, True)
        self.counts["restored"] += 1
        return "restored"

    @staticmethod
    def _fork_name(m: BusMessage) -> str:
        return f"{m.device_id}#{hashlib.sha256(m.record).hexdigest()[:8]}"

    def _store(self, m: BusMessage, rec: dict, forked: bool) -> None:
        # a fork is kept under a distinct name, so it counts as its own admission
        dev = self._fork_name(m) if forked else m.device_id
        with transaction(self.conn):
            self.conn.execute("INSERT OR IGNORE INTO bus_records (device_id, seq, record, prev, sig)"
                              " VALUES (?,?,?,?,?)", (dev, m.seq, m.record, m.prev, m.sig))
            if rec["kind"] == scanlog.ROLLBACK:
                if type(rec.get("ref")) is int:
                    self.conn.execute("UPDATE remote_admissions SET voided = 1 WHERE device_id = ? AND seq = ?",
                                      (dev, rec["ref"]))
                    self.conn.execute("INSERT OR IGNORE INTO bus_voids VALUES (?, ?)", (dev, rec["ref"]))
                return
            mode = rec.get("mode") if rec.get("mode") in ("entry", "exit") else "entry"
            voided = self.conn.execute("SELECT 1 FROM bus_voids WHERE device_id = ? AND ref = ?",
                                       (dev, m.seq)).fetchone() is not None
            self.conn.execute(
                "INSERT OR IGNORE INTO remote_admissions (device_id, seq, ticket_id, mode, consumes, ts_ms,"
                " voided, lane, via, alone) VALUES (?,?,?,?,?,?,?,?,'bus',?)",
                (dev, m.seq, rec["ticket_id"], mode, int(bool(rec.get("consumes"))), rec.get("ts_ms"),
                 int(voided), rec.get("lane"), int(bool(rec.get("alone")))))

    # ------------------------------------------------------------ catch-up

    def since(self) -> dict[str, int]:
        """What to ask the peers for: each known device's "caught up through" seq
        (advanced only by catch-up answers, see :meth:`receive_catch_up`; never by
        live messages, whose seqs are not contiguous and may have gaps), and our
        own head (a gate restored from an older backup learns what it lost)."""
        out = dict(self.conn.execute("SELECT device_id, seq FROM bus_caught_up"))
        for (dev,) in self.conn.execute(
                "SELECT DISTINCT device_id FROM bus_records WHERE instr(device_id, '#') = 0"):
            out.setdefault(dev, 0)
        for dev in trusted(self.conn):
            out.setdefault(dev, 0)
        out[self.device_id] = scanlog.head(self.conn)[0]
        return out

    def receive_catch_up(self, messages: Iterable[bytes]) -> int:
        """Store a catch-up answer; returns records learnt. Each responder answers,
        per device, every record it holds after ``since()[D]`` in seq order (a
        prefix of that when cut short), so the highest verified seq of D in the
        answer is a point we are caught up through: advance it (never lower)."""
        n, top = 0, {}
        for data in messages:
            try:
                got = self.receive(data)
            except Exception as exc:  # one bad record must not lose the rest of the answer
                self.note_error("catch-up", exc)
                continue
            if got in ("accepted", "forked", "restored"):
                n += 1
            if got in ("accepted", "forked", "duplicate"):  # verified, or the bytes we hold
                m = parse_message(data)
                top[m.device_id] = max(top.get(m.device_id, 0), m.seq)
        top.pop(self.device_id, None)
        if top:
            with transaction(self.conn):
                self.conn.executemany(
                    "INSERT INTO bus_caught_up (device_id, seq) VALUES (?, ?) ON CONFLICT(device_id)"
                    " DO UPDATE SET seq = max(bus_caught_up.seq, excluded.seq)", list(top.items()))
        return n


def answer_since(conn: sqlite3.Connection, key: Ed25519PrivateKey, device_id: str,
                 since: dict[str, int], *, limit: int = 5000) -> Iterable[tuple[str, int, bytes]]:
    """Catch-up answer: our own usage records after ``since[device_id]`` (signed
    now) and the peer records we hold after ``since[D]`` (as received; every
    device not named: all of them)."""
    n = 0
    after = since.get(device_id, 0)
    row = conn.execute("SELECT hash FROM scans WHERE seq = ?", (after,)).fetchone()
    prev = row[0] if row else scanlog.GENESIS
    for seq, data, h in conn.execute("SELECT seq, record, hash FROM scans WHERE seq > ? ORDER BY seq", (after,)):
        if carries_usage(cbor2.loads(data)):
            yield device_id, seq, sign_record(key, device_id, seq, prev, data).encode()
            n += 1
            if n >= limit:
                return
        prev = h
    devices = [d for (d,) in conn.execute("SELECT DISTINCT device_id FROM bus_records ORDER BY device_id")]
    for dev in devices:
        real = dev.split("#", 1)[0]
        if real == device_id:
            continue
        floor = 0 if "#" in dev else since.get(real, 0)  # forks: always all of them
        for seq, data, prev_h, sig in conn.execute(
                "SELECT seq, record, prev, sig FROM bus_records WHERE device_id = ? AND seq > ? ORDER BY seq",
                (dev, floor)):
            yield real, seq, BusMessage(real, seq, prev_h, data, sig).encode()
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
        "trusted_devices": conn.execute("SELECT count(*) FROM bus_devices WHERE status = 'active'").fetchone()[0],
        "peer_records": conn.execute("SELECT count(*) FROM bus_records").fetchone()[0],
        "admissions_from_bus": conn.execute(
            "SELECT count(*) FROM remote_admissions WHERE via = 'bus'").fetchone()[0],
    }
