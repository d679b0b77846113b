"""Scan uploads: decoded once, judged, stored as facts (docs/sync.md, "POST
/v1/events/{e}/scans").

An upload is refused only when it is not authentic or not intact; what its
records say is never a reason (an admission that happened is a fact). The
steps, in order:

1. :func:`decode_upload`: the body's shape (:class:`~.models.UploadBatch`),
   each record's base64 and CBOR, decoded **once**, and the fields the store
   keeps in typed columns (text, 64-bit integers). A malformed upload is 400 /
   422 and is recorded as a ``malformed_upload`` problem.
2. :func:`store_upload`: the batch names the token's device (403), its head
   signature verifies with the device key (403), it starts at most one past
   what is stored (409 gap), its records chain from the stored hash before it
   to the signed head (422; the chain rule is :class:`gate.scanlog.ChainVerifier`),
   an overlap with stored records is identical (409 fork otherwise); then the
   new records are judged for physical plausibility (:func:`judge`) and stored.

A device whose uploads are physically implausible (faster than a turnstile,
outside the event, a holder proof that fails) is quarantined: everything is
stored as evidence, but its admissions are not propagated to other gates
unless a holder proof backs them.

Each function taking ``store`` takes the
:class:`~sync.central.store.CentralStore` first (the store binds the public
ones as its methods).
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from crypto import gt1
from gate.scanlog import GENESIS, ChainBreak, ChainVerifier, decode_logged, head_message
from sync.central.db import DB
from sync.central.errors import CentralError
from sync.central.feeds import reserve
from sync.central.limits import INT64, MAX_RECORDS

INT64_MIN, INT64_MAX = INT64

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

# what the store keeps in typed columns (and the admissions feed serves as JSON)
TEXT_FIELDS = ("kind", "mode", "decision", "reason", "ticket_id", "lane")
INT_FIELDS = ("ts_ms", "ref", "seq")


@dataclass(frozen=True, slots=True)
class Upload:
    """One upload, decoded once: ``raw[i]`` are the exact CBOR bytes of record
    ``from_seq + i`` (what was hashed), ``records[i]`` their map."""
    device_id: str
    from_seq: int
    raw: list[bytes]
    records: list[dict]
    head_hash: str  # as sent: parsed (hex) only once the device is known to be the token's
    head_sig: str

    @property
    def last_seq(self) -> int:
        return self.from_seq + len(self.raw) - 1


_MESSAGES = {
    "from_seq": (400, "from_seq must be an integer from 1"),
    "records": "records must be a non-empty list of base64 CBOR records",
    "records:too_long": f"at most {MAX_RECORDS} records per upload",
    "records[]": lambda e, doc: f"record {doc['from_seq'] + e['loc'][1]} must be base64 text",
    "head_hash": "head_hash must be a string",
    "head_sig": "head_sig must be a string",
    "device_id": "device_id must be a string",
}


def decode_upload(doc: object) -> Upload:
    """An upload body (parsed JSON) checked and decoded, or CentralError: 400
    when it is malformed, 422 when a record's values cannot be held (a
    record's kind/mode/decision/reason/ticket_id/lane in text columns,
    ts_ms/ref/seq in 64-bit integer columns), naming the record."""
    from sync.central.models import UploadBatch, validate  # pydantic: loaded by the server, not by every CLI command
    batch = validate(UploadBatch, doc, _MESSAGES)
    raw, records = [], []
    for i, text in enumerate(batch.records):
        seq = batch.from_seq + i
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise CentralError(400, f"record {seq} is not base64") from None
        try:
            rec = decode_logged(data)
        except ValueError as exc:
            raise CentralError(422, f"record {seq} is not readable CBOR ({exc})") from None
        for name in TEXT_FIELDS:
            v = rec.get(name)
            if v is not None and not isinstance(v, str):
                raise CentralError(422, f"record {seq}: {name} must be text")
            if v is not None and "\x00" in v:
                raise CentralError(422, f"record {seq}: {name} contains a NUL character")
        for name in INT_FIELDS:
            v = rec.get(name)
            if v is not None and (type(v) is not int or not INT64_MIN < v < INT64_MAX):
                raise CentralError(422, f"record {seq}: {name} must be a 64-bit integer")
        raw.append(data)
        records.append(rec)
    return Upload(batch.device_id, batch.from_seq, raw, records, batch.head_hash, batch.head_sig)


def store_scans(store, event: str, device_id: str, device_pub: bytes, doc: object) -> dict:
    """Decode, verify and store one upload body; idempotent (the same batch
    through two API processes at once is stored once). Raises CentralError on a
    malformed upload (recorded as a problem) and on tampering."""
    try:
        upload = decode_upload(doc)
    except CentralError as exc:  # kept for the report, like any refused upload
        record_problem(store, event, device_id, "malformed_upload", str(exc))
        raise
    return store_upload(store, event, device_id, device_pub, upload)


def record_problem(store, event: str, device_id: str, kind: str, detail: str) -> None:
    """A refused upload, for the reconciliation report (its own transaction)."""
    with store.writer() as db:
        db.run("INSERT INTO problems (event, device_id, kind, detail, at) VALUES (:e, :d, :k, :x, :t)",
               {"e": event, "d": device_id, "k": kind, "x": detail, "t": time.time()})


def stored_through(store, device_id: str) -> tuple[int, bytes]:
    """The device's highest stored seq and its chain hash ((0, GENESIS) when none)."""
    with store.reader() as db:
        row = db.one("SELECT seq, hash FROM scans WHERE device_id = :d ORDER BY seq DESC LIMIT 1",
                     {"d": device_id})
    return (0, GENESIS) if row is None else (row[0], bytes(row[1]))


def _int64(v):
    return v if type(v) is int and INT64_MIN <= v <= INT64_MAX else None


def _text(v):
    return v if isinstance(v, str) else None


def store_upload(store, event: str, device_id: str, device_pub: bytes, up: Upload) -> dict:
    """Verify and store a decoded upload (steps 2-6 of docs/sync.md)."""
    if up.device_id != device_id:
        record_problem(store, event, device_id, "wrong_device", f"batch names device {up.device_id!r}")
        raise CentralError(403, "batch device_id does not match the token's device")
    try:
        head_hash = bytes.fromhex(up.head_hash)
        head_sig = base64.b64decode(up.head_sig)
    except (TypeError, ValueError):
        raise CentralError(400, "batch needs from_seq (an integer from 1), records (base64 CBOR), "
                                "head_hash (hex), head_sig") from None
    from_seq, last = up.from_seq, up.last_seq
    try:
        Ed25519PublicKey.from_public_bytes(device_pub).verify(head_sig, head_message(device_id, last, head_hash))
    except (InvalidSignature, ValueError):
        record_problem(store, event, device_id, "bad_signature", f"head signature of seq {last} does not verify")
        raise CentralError(403, "chain head signature does not verify with this device's key") from None
    # where the batch starts: the stored hash of from_seq - 1 (never changes once stored)
    if from_seq == 1:
        prev = GENESIS
    else:
        with store.reader() as db:
            row = db.one("SELECT hash FROM scans WHERE device_id = :d AND seq = :s",
                         {"d": device_id, "s": from_seq - 1})
        if row is None:
            through = stored_through(store, device_id)[0]
            raise CentralError(409, f"gap: stored through {through}, batch starts at {from_seq}",
                               stored_through=through)
        prev = bytes(row[0])
    chain, hashes = ChainVerifier(prev=prev, next_seq=from_seq), []
    try:
        for i, (data, rec) in enumerate(zip(up.raw, up.records)):
            hashes.append(chain.add(from_seq + i, data, record=rec)[1])
    except ChainBreak as exc:
        record_problem(store, event, device_id, "broken_chain", f"record {exc.seq} is out of order or unreadable")
        raise CentralError(422, f"record {exc.seq} is out of order or unreadable") from None
    if chain.head_hash != head_hash:
        record_problem(store, event, device_id, "broken_chain",
                       f"records {from_seq}-{last} do not hash to the signed head")
        raise CentralError(422, "records do not hash to the signed chain head (edited or reordered)")
    proven = proofs(store, up.records)
    now = time.time()
    conflict = None
    with store.writer() as db:
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
        if conflict is None and start < len(up.raw):
            new = range(start, len(up.raw))
            why = judge(db, event, device_id, [up.records[i] for i in new], [proven[i] for i in new])
            if why is not None:
                db.run("UPDATE devices SET quarantined_at = :t, quarantine_reason = :w"
                       " WHERE device_id = :d AND quarantined_at IS NULL", {"t": now, "w": why, "d": device_id})
                db.run("INSERT INTO problems (event, device_id, kind, detail, at) VALUES (:e, :d, 'implausible', :x, :t)",
                       {"e": event, "d": device_id, "x": why, "t": now})
            first_id = reserve(db, "scan", len(new)) - len(new) + 1
            rows = []
            for k, i in enumerate(new):
                rec = up.records[i]
                rows.append((first_id + k, device_id, from_seq + i, event, _int64(rec.get("ts_ms")),
                             _text(rec.get("kind")), _text(rec.get("mode")), _text(rec.get("decision")),
                             _text(rec.get("reason")), _text(rec.get("ticket_id")), int(bool(rec.get("unlisted"))),
                             int(bool(rec.get("consumes"))), _int64(rec.get("ref")), _text(rec.get("lane")),
                             proven[i], up.raw[i], hashes[i], now))
            _insert_scans(db, rows)
        qrow = db.one("SELECT quarantined_at, quarantine_reason FROM devices WHERE device_id = :d", {"d": device_id})
    if conflict is not None:
        record_problem(store, event, device_id, "forked_chain", f"seq {conflict} differs from the stored record")
        raise CentralError(409, f"forked chain: record {conflict} differs from what was stored")
    out = {"stored_through": max(through, last)}
    if qrow is not None and qrow[0] is not None:
        out.update(quarantined=True, quarantine_reason=qrow[1])
    return out


def _insert_scans(db: DB, rows: list[tuple]) -> None:
    if db.dialect == "postgresql":
        with db.raw.cursor() as cur:
            with cur.copy(f"COPY scans ({', '.join(SCAN_COLUMNS)}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
    else:
        db.run(f"INSERT INTO scans ({', '.join(SCAN_COLUMNS)}) VALUES ({', '.join(':' + c for c in SCAN_COLUMNS)})",
               [dict(zip(SCAN_COLUMNS, r)) for r in rows])


def proofs(store, recs: list[dict]) -> list[int | None]:
    """Per record: 1 = a holder proof that verifies against the ticket's holder
    key at the scan's time, 0 = a proof that does not, None = no proof (or no
    holder key known for that ticket)."""
    want = {r["ticket_id"] for r in recs if isinstance(r.get("proof"), bytes) and isinstance(r.get("ticket_id"), str)}
    if not want:
        return [None] * len(recs)
    keys = {}
    with store.reader() as db:
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


def judge(db: DB, event: str, device_id: str, recs: list[dict], proven: list) -> str | None:
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
