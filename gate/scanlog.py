"""The append-only, hash-chained scan log (docs/scanlog.md).

``hash_n = SHA-256(hash_{n-1} || CBOR(record_n))``, ``hash_0`` = 32 zero bytes.
Records are CBOR maps with text keys and integer/text/bool/null values only
(no floats), encoded canonically, so any implementation re-hashing a record
gets the same bytes.

Every record is committed (synchronous=FULL) together with the derived usage
tables in one transaction, before the caller drives any relay.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from dataclasses import dataclass
from typing import Iterator

import cbor2

from gate.db import transaction
from gate.decision import Decision
from gate.errors import LogError

GENESIS = bytes(32)

# record kinds
SCAN = "scan"          # a decision (accepted or not)
ROLLBACK = "rollback"  # an accepted entry whose passage never happened (ref = scan seq)
PASSED = "passed"      # the passage sensor saw the holder go through (ref = scan seq)
OVERRIDE = "override"  # a manual admit / deny by staff (operator named)
CONTROL = "control"    # a staff command that changes what the lane lets through:
                       # action "mode" (mode = the new mode), "pause", "resume",
                       # "pin_lockout" (until_ms), "biometrics" (enabled); operator named.
                       # Also the lane's faults (gate.lane): "relay_fault", "sensor_fault",
                       # "store_fault" (detail), and "fault_cleared" (faults, operator)


def encode_record(record: dict) -> bytes:
    return cbor2.dumps(record, canonical=True)


def chain_hash(prev: bytes, record_bytes: bytes) -> bytes:
    return hashlib.sha256(prev + record_bytes).digest()


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    record: dict
    hash: bytes


def head_message(device_id: str, seq: int, head_hash: bytes) -> bytes:
    """What a device signs over its chain head (an upload, a bus record): docs/sync.md."""
    return cbor2.dumps(["GT1-chain-head", device_id, seq, head_hash])


def head(conn: sqlite3.Connection) -> tuple[int, bytes]:
    row = conn.execute("SELECT seq, hash FROM scans ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, GENESIS) if row is None else (row[0], row[1])


def scan_record(d: Decision, *, ts_ms: int, device: str, lane: str, event: str,
                qr_sha: bytes | None, operator: str | None = None, kind: str = SCAN) -> dict:
    rec = {
        "kind": kind, "ts_ms": ts_ms, "device": device, "lane": lane, "event": event,
        "mode": d.mode.value, "decision": "accept" if d.accepted else "reject",
        "reason": d.reason.value, "ticket_id": d.ticket_id, "step": d.step,
        "version": d.version, "unlisted": d.unlisted, "consumes": d.consumes_entry,
        "face_e4": (round(d.face_distance * 10000)
                    if d.face_distance is not None and math.isfinite(d.face_distance) else None),
        "qr_sha": qr_sha,
    }
    if operator is not None:
        rec["operator"] = operator
    return rec


def holder_proof(qr: str) -> dict:
    """An accepted rotating code's holder proof, for its record: central re-checks
    it against the ticket's holder key (optional fields ``cred_sha``, ``proof``).
    The scan path uses :func:`proof_fields` with what the decision already parsed."""
    from crypto import gt1
    try:
        p = gt1.parse_qr(qr)
    except gt1.Malformed:
        return {}
    if p.proof is None:
        return {}
    return proof_fields(p.credential, p.proof)


def proof_fields(credential: bytes, proof: bytes) -> dict:
    """The record fields of a holder proof: ``cred_sha`` (SHA-256 of the credential), ``proof``."""
    return {"cred_sha": hashlib.sha256(credential).digest(), "proof": proof}


def append(conn: sqlite3.Connection, record: dict) -> Entry:
    """Append one record and apply its effect on the usage tables, atomically."""
    with transaction(conn):
        seq, prev = head(conn)
        seq += 1
        record = {**record, "seq": seq}
        data = encode_record(record)
        h = chain_hash(prev, data)
        accepted = record.get("decision") == "accept" and record["kind"] in (SCAN, OVERRIDE)
        conn.execute(
            "INSERT INTO scans (seq, ts_ms, kind, ticket_id, reason, accepted, record, hash)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (seq, record["ts_ms"], record["kind"], record.get("ticket_id"),
             record.get("reason"), int(accepted), data, h),
        )
        if accepted and record.get("ticket_id"):
            _apply_accept(conn, record)
        elif record["kind"] == ROLLBACK:
            _apply_rollback(conn, record)
    return Entry(seq, record, h)


def _apply_accept(conn: sqlite3.Connection, rec: dict) -> None:
    tid = rec["ticket_id"]
    conn.execute(
        "INSERT INTO usage (ticket_id, admissions, last_kind, last_ts_ms) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(ticket_id) DO UPDATE SET admissions = admissions + excluded.admissions,"
        " last_kind = excluded.last_kind, last_ts_ms = excluded.last_ts_ms",
        (tid, 1 if rec.get("consumes") else 0, rec["mode"], rec.get("ts_ms")),
    )
    if rec.get("step") is not None:
        conn.execute("INSERT OR IGNORE INTO steps VALUES (?, ?)", (tid, rec["step"]))


def _apply_rollback(conn: sqlite3.Connection, rec: dict) -> None:
    ref = rec.get("ref")
    row = conn.execute(
        "SELECT ticket_id, accepted FROM scans WHERE seq = ?", (ref,)).fetchone()
    if row is None or not row[1] or row[0] is None:
        raise LogError(f"rollback refers to seq {ref}, which is not an accepted scan")
    if conn.execute("SELECT 1 FROM voided WHERE seq = ?", (ref,)).fetchone():
        raise LogError(f"scan {ref} was already rolled back")
    conn.execute("INSERT INTO voided VALUES (?, ?)", (ref, rec["seq"]))
    rebuild_usage(conn, row[0])


def rebuild_usage(conn: sqlite3.Connection, ticket_id: str) -> None:
    """Recompute one ticket's usage and accepted steps from the log itself."""
    admissions, last_kind, last_ts, steps = 0, None, None, set()
    for (data,) in conn.execute(
        "SELECT record FROM scans WHERE ticket_id = ? AND accepted = 1"
        " AND seq NOT IN (SELECT seq FROM voided) ORDER BY seq", (ticket_id,)):
        rec = cbor2.loads(data)
        admissions += 1 if rec.get("consumes") else 0
        last_kind, last_ts = rec["mode"], rec.get("ts_ms")
        if rec.get("step") is not None:
            steps.add(rec["step"])
    conn.execute("DELETE FROM usage WHERE ticket_id = ?", (ticket_id,))
    conn.execute("DELETE FROM steps WHERE ticket_id = ?", (ticket_id,))
    if last_kind is not None:
        conn.execute("INSERT INTO usage (ticket_id, admissions, last_kind, last_ts_ms) VALUES (?, ?, ?, ?)",
                     (ticket_id, admissions, last_kind, last_ts))
    conn.executemany("INSERT INTO steps VALUES (?, ?)", [(ticket_id, s) for s in steps])


def entries(conn: sqlite3.Connection, *, after: int = 0, limit: int | None = None) -> Iterator[Entry]:
    sql = "SELECT seq, record, hash FROM scans WHERE seq > ? ORDER BY seq"
    args: tuple = (after,)
    if limit is not None:
        sql += " LIMIT ?"
        args += (limit,)
    for seq, data, h in conn.execute(sql, args):
        yield Entry(seq, cbor2.loads(data), h)


class ChainBreak(LogError):
    """A link of a hash chain that does not hold. ``seq`` is the first record
    that is wrong, ``kind`` what is wrong with it (one of :data:`BREAKS`)."""

    def __init__(self, seq: int, kind: str, message: str):
        super().__init__(message)
        self.seq = seq
        self.kind = kind


GAP = "gap"                # a seq is missing (or repeated) where the next one was due
UNREADABLE = "unreadable"  # the record is not a CBOR map
WRONG_SEQ = "wrong_seq"    # the record's own "seq" is not its position (reordered, or edited)
MISMATCH = "mismatch"      # the stored hash is not SHA-256(previous hash || record bytes)
BREAKS = (GAP, UNREADABLE, WRONG_SEQ, MISMATCH)


def decode_logged(data: bytes) -> dict:
    """A logged record's CBOR bytes to its map; ValueError when they are not one."""
    try:
        rec = cbor2.loads(data)
    except Exception as exc:  # noqa: BLE001 - any decoder failure (incl. deep nesting) is "unreadable"
        raise ValueError(f"not CBOR ({type(exc).__name__})") from None
    if not isinstance(rec, dict):
        raise ValueError("not a CBOR map")
    return rec


class ChainVerifier:
    """The one place the chain rule is checked (docs/scanlog.md), record by
    record, for everyone who checks a chain: ``gate log verify`` (a gate's whole
    log, with its stored hashes), central's upload check (a batch, from the
    stored hash before it; no stored hashes, the result is compared with the
    signed head) and ``gate central report --verify-chains`` (each device's
    stored records again).

    ``v = ChainVerifier(prev=GENESIS, next_seq=1)``, then :meth:`add` each
    record in order. A record is a link when its seq is the next one, its bytes
    are a CBOR map whose ``seq`` is that position, and (when a stored hash is
    given) the stored hash is ``SHA-256(prev || bytes)``. The first link that
    does not hold raises :class:`ChainBreak`; ``head_seq``/``head_hash`` then
    still name the last good link.
    """

    __slots__ = ("head_seq", "head_hash", "count")

    def __init__(self, *, prev: bytes = GENESIS, next_seq: int = 1):
        self.head_seq = next_seq - 1
        self.head_hash = prev
        self.count = 0

    @property
    def next_seq(self) -> int:
        return self.head_seq + 1

    def add(self, seq: int, data: bytes, *, stored_hash: bytes | None = None,
            record: dict | None = None) -> tuple[dict, bytes]:
        """Check one record; returns (its map, its chain hash). ``record``: the
        map the caller already decoded from these very bytes (an upload is
        decoded once, for its field checks), else it is decoded here."""
        if seq != self.next_seq:
            raise ChainBreak(self.next_seq, GAP, f"sequence gap: expected {self.next_seq}, found {seq}")
        if record is None:
            try:
                record = decode_logged(data)
            except ValueError as exc:
                raise ChainBreak(seq, UNREADABLE, f"record {seq} is unreadable ({exc})") from None
        if record.get("seq") != seq:
            raise ChainBreak(seq, WRONG_SEQ, f"record {seq} carries seq {record.get('seq')!r} (out of order)")
        h = chain_hash(self.head_hash, data)
        if stored_hash is not None and h != stored_hash:
            raise ChainBreak(seq, MISMATCH, f"hash mismatch at record {seq} (edited)")
        self.head_seq, self.head_hash = seq, h
        self.count += 1
        return record, h


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    records: int
    head_seq: int
    head_hash: bytes
    problem: str = ""
    broken_at: int | None = None  # the first record that is wrong
    kind: str | None = None       # what is wrong with it (ChainBreak.kind)


def verify_chain(conn: sqlite3.Connection) -> ChainReport:
    """Re-hash the whole log; report the first broken link, gap or edited record."""
    v = ChainVerifier()
    try:
        for seq, data, h in conn.execute("SELECT seq, record, hash FROM scans ORDER BY seq"):
            v.add(seq, data, stored_hash=h)
    except ChainBreak as exc:
        return ChainReport(False, v.count, v.head_seq, v.head_hash, str(exc), exc.seq, exc.kind)
    return ChainReport(True, v.count, v.head_seq, v.head_hash)
