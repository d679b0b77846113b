"""The local ticket ledger and issuer key ring (docs/formats.md), on the device database.

Imports are one transaction: a killed import leaves the ledger as it was. A
re-import updates tickets in place but never lowers a ticket's version (a stale
file cannot resurrect codes from before a reissue).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import sqlite3
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from cryptography.exceptions import InvalidTag

from crypto.keyring import IssuerKey, KeyRing, parse_keyring
from crypto.sealed import seal, unseal
from gate.db import get_setting, put_setting, transaction
from gate.decision import NO_USAGE, Lookup, Mode, TicketRecord, Usage
from gate.errors import ImportFileError, LedgerError
from gate.i18n import N_, _
from gate.lines import bounded_lines

TEMPLATE_FLOATS = 128
TEMPLATE_BYTES = TEMPLATE_FLOATS * 8
_TEMPLATE = struct.Struct(f"<{TEMPLATE_FLOATS}d")
BATCH = 5000
MAX_LINE_BYTES = 64 * 1024  # a ticket with a face template is ~1.6 KB
INT64_MAX = 2 ** 63 - 1

class TicketRow(NamedTuple):
    """One row of the tickets table, as importers and sync write it (fields in
    the table's column order, so a TicketRow goes straight to executemany)."""

    ticket_id: str
    event: str
    tier: str = ""
    zone: str | None = None
    version: int = 1
    status: str = "valid"
    entries: int = 1
    reentry: int = 0
    face_required: int = 0
    face_template: bytes | None = None  # sealed under the device data key
    holder: str | None = None


_UPSERT = """
INSERT INTO tickets (ticket_id, event, tier, zone, version, status, entries, reentry,
                     face_required, face_template, holder)
VALUES (?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT(ticket_id) DO UPDATE SET
    event = excluded.event, tier = excluded.tier, zone = excluded.zone,
    status = excluded.status, entries = excluded.entries, reentry = excluded.reentry,
    face_required = excluded.face_required, holder = excluded.holder,
    face_template = CASE WHEN excluded.version > tickets.version THEN excluded.face_template
                         ELSE coalesce(excluded.face_template, tickets.face_template) END,
    version = excluded.version
WHERE excluded.version >= tickets.version
"""


# ------------------------------------------------------------------ keys


def bump_keys_version(conn: sqlite3.Connection) -> None:
    """Tell every other connection (a running lane's) that the trusted keys changed."""
    put_setting(conn, "keys.version", (get_setting(conn, "keys.version") or 0) + 1)


def trust_keyring(conn: sqlite3.Connection, doc: object, event: str) -> list[IssuerKey]:
    ring_event, keys = parse_keyring(doc)
    if ring_event != event:
        raise LedgerError(_("key ring is for event {ring}, this gate is for {event}").format(
            ring=repr(ring_event), event=repr(event)))
    with transaction(conn):
        bump_keys_version(conn)
        conn.executemany(
            "INSERT INTO keys (kid, event, alg, pub, nbf, exp, status) VALUES (?,?,?,?,?,?,?)"
            " ON CONFLICT(kid) DO UPDATE SET nbf=excluded.nbf, exp=excluded.exp,"
            " status=CASE WHEN keys.status='revoked' THEN 'revoked' ELSE excluded.status END",
            [(k.kid.hex(), event, "EdDSA", k.pub, k.nbf, k.exp, k.status) for k in keys],
        )
    return keys


def load_keyring(conn: sqlite3.Connection) -> KeyRing:
    return KeyRing([
        IssuerKey(bytes.fromhex(kid), pub, nbf, exp, status)
        for kid, pub, nbf, exp, status in conn.execute(
            "SELECT kid, pub, nbf, exp, status FROM keys")
    ])


# ------------------------------------------------------------------ tickets


def encode_template(values: Sequence[float]) -> bytes:
    return _TEMPLATE.pack(*values)


def decode_template(raw: bytes) -> tuple[float, ...]:
    return _TEMPLATE.unpack(raw)


def _text(obj: dict, name: str, *, optional: bool = False) -> str | None:
    v = obj.get(name)
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise ValueError(f"'{name}' must be a string")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"'{name}' is not valid Unicode (a lone surrogate escape)") from None
    return v


def _uint(obj: dict, name: str) -> int:
    v = obj.get(name)
    if type(v) is not int or v < 0:
        raise ValueError(f"'{name}' must be a non-negative integer")
    if v > INT64_MAX:
        raise ValueError(f"'{name}' is too large (at most {INT64_MAX})")
    return v


def _bool(obj: dict, name: str) -> bool:
    v = obj.get(name, False)
    if type(v) is not bool:
        raise ValueError(f"'{name}' must be true or false")
    return v


def upsert_tickets(conn: sqlite3.Connection, rows: Sequence[TicketRow]) -> None:
    """Insert or update tickets; a ticket's version never goes down (a stale
    row cannot bring back a code from before a reissue). Call inside a transaction."""
    conn.executemany(_UPSERT, rows)


def _plain(v) -> bool:
    """None or ASCII text: what nearly every optional text field of a ticket is."""
    return v is None or (type(v) is str and v.isascii())


def _common_row(tid, event: str, tier, zone, version, status, entries, reentry, face, template,
                holder) -> TicketRow | None:
    """The row of the common record (ASCII text, no face template), checked inline:
    a first sync validates a million of them. None for anything else, and for
    anything these checks do not accept: the field-by-field checks then give the
    same row, or name what is wrong."""
    if (type(tid) is str and 16 <= len(tid) <= 64 and not len(tid) % 2 and tid.isascii()
            and tid.isalnum() and tid == tid.lower() and (status == "valid" or status == "revoked")
            and type(version) is int and 1 <= version <= INT64_MAX
            and type(entries) is int and 0 <= entries <= INT64_MAX
            and type(reentry) is bool and type(face) is bool and template is None
            and _plain(tier) and _plain(zone) and _plain(holder)):
        try:
            bytes.fromhex(tid)
        except ValueError:
            return None
        return TicketRow(tid, event, tier or "", zone, version, "valid" if status == "valid" else "revoked",
                         entries, int(reentry), int(face), None, holder)
    return None


def ticket_row(obj: object, event: str, data_key: bytes, *, keep_template: bool = True) -> TicketRow:
    """Validate one ticket record (docs/formats.md) into a row for the tickets table.
    A face template is always checked; it is stored only when ``keep_template``
    (biometrics not switched off on this gate)."""
    if type(obj) is dict:
        get = obj.get
        ev = get("event")
        if ev == event and type(ev) is str:
            row = _common_row(get("ticket_id"), event, get("tier"), get("zone"), get("version"), get("status"),
                              get("entries"), get("reentry", False), get("face_required", False),
                              get("face_template"), get("holder"))
            if row is not None:
                return row
    return _ticket_row_checked(obj, event, data_key, keep_template=keep_template)


# the rows layout of central's ticket feed (docs/sync.md): a ticket record as an
# array in this order, its event the one the page is for
TICKET_COLUMNS = ("ticket_id", "tier", "zone", "version", "status", "entries", "reentry",
                  "face_required", "face_template", "holder")


def ticket_row_from_array(arr: object, event: str, data_key: bytes, *, keep_template: bool = True) -> TicketRow:
    """:func:`ticket_row` for one row of the rows layout (:data:`TICKET_COLUMNS`):
    the same checks and the same row; anything the inline checks do not accept
    is checked as the record it stands for, so the error names the field."""
    if type(arr) is list and len(arr) == 10:
        tid, tier, zone, version, status, entries, reentry, face, template, holder = arr
        row = _common_row(tid, event, tier, zone, version, status, entries, reentry, face, template, holder)
        if row is not None:
            return row
        return _ticket_row_checked({"event": event, **dict(zip(TICKET_COLUMNS, arr))}, event, data_key,
                                   keep_template=keep_template)
    raise ValueError(f"a ticket row must be an array of {len(TICKET_COLUMNS)} values "
                     f"({', '.join(TICKET_COLUMNS)})")


def _ticket_row_checked(obj: object, event: str, data_key: bytes, *, keep_template: bool) -> TicketRow:
    if not isinstance(obj, dict):
        raise ValueError("record must be a JSON object")
    tid = _text(obj, "ticket_id")
    if not 16 <= len(tid) <= 64 or len(tid) % 2 or tid != tid.lower() or not (tid.isascii() and tid.isalnum()):
        raise ValueError("'ticket_id' must be 8-32 bytes of lowercase hex")
    try:
        bytes.fromhex(tid)
    except ValueError:
        raise ValueError("'ticket_id' must be lowercase hex") from None
    if _text(obj, "event") != event:
        raise ValueError(f"ticket is for event {obj.get('event')!r}, this gate is for {event!r}")
    status = obj.get("status")
    if status not in ("valid", "revoked"):
        raise ValueError("'status' must be 'valid' or 'revoked'")
    version = _uint(obj, "version")
    if version < 1:
        raise ValueError("'version' must be at least 1")
    template = obj.get("face_template")
    sealed = None
    if template is not None:
        if not isinstance(template, str):
            raise ValueError("'face_template' must be base64 text or null")
        try:
            raw = base64.b64decode(template, validate=True)
        except binascii.Error:
            raise ValueError("'face_template' is not valid base64") from None
        if len(raw) != TEMPLATE_BYTES:
            raise ValueError(f"'face_template' must be {TEMPLATE_FLOATS} float64 ({TEMPLATE_BYTES} bytes)")
        if not all(map(math.isfinite, _TEMPLATE.unpack(raw))):
            raise ValueError("'face_template' holds NaN or infinite values: re-enrol the holder's face")
        if keep_template:
            sealed = seal(data_key, raw, tid.encode())
    return TicketRow(
        tid, event, _text(obj, "tier", optional=True) or "", _text(obj, "zone", optional=True),
        version, status, _uint(obj, "entries"), int(_bool(obj, "reentry")),
        int(_bool(obj, "face_required")), sealed, _text(obj, "holder", optional=True),
    )


@dataclass
class ImportResult:
    imported: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)
    skipped_bad: bool = False
    templates_refused: int = 0  # face templates not stored: biometrics are switched off


MAX_REPORTED_BAD = 50


def import_tickets(
    conn: sqlite3.Connection,
    path: Path,
    *,
    event: str,
    data_key: bytes,
    skip_bad: bool = False,
    now: float,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import a tickets JSON Lines file in one transaction.

    A bad line is reported with its line number; unless ``skip_bad``, any bad
    line means nothing is imported. ``progress`` receives bytes read so far.
    """
    result = ImportResult(skipped_bad=skip_bad)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise ImportFileError(_("cannot read {path}: {why}").format(path=path, why=exc.strerror)) from None
    with fh, transaction(conn):
        keep = biometrics_allowed(conn)  # read under the write lock: a wipe cannot slip in between
        batch: list[tuple] = []
        done_bytes = 0
        for lineno, line, too_long in bounded_lines(fh, MAX_LINE_BYTES):
            done_bytes += len(line) + 1
            if not too_long and not line.strip():
                continue
            try:
                if too_long:
                    raise ValueError(f"line longer than {MAX_LINE_BYTES} bytes (not a ticket record)")
                obj = json.loads(line)
                batch.append(ticket_row(obj, event, data_key, keep_template=keep))
                if not keep and isinstance(obj, dict) and obj.get("face_template") is not None:
                    result.templates_refused += 1
            except (ValueError, RecursionError) as exc:
                if isinstance(exc, RecursionError):
                    msg = "JSON nested too deeply (a ticket record is one flat object)"
                elif isinstance(exc, UnicodeDecodeError):
                    msg = f"not UTF-8 text (byte {exc.start + 1} of the line)"
                elif isinstance(exc, json.JSONDecodeError):
                    msg = f"not JSON ({exc.msg})"
                else:
                    msg = str(exc)
                result.bad.append((lineno, msg))
                if not skip_bad and len(result.bad) >= MAX_REPORTED_BAD:
                    break
                continue
            if len(batch) >= BATCH:
                upsert_tickets(conn, batch)
                result.imported += len(batch)
                batch.clear()
                if progress:
                    progress(done_bytes)
        if result.bad and not skip_bad:
            raise ImportFileError(_bad_lines_message(path, result.bad))
        if batch:
            upsert_tickets(conn, batch)
            result.imported += len(batch)
        if progress:
            progress(done_bytes)
        put_setting(conn, "ledger_imported_at", now)
    return result


def _bad_lines_message(path: Path, bad: list[tuple[int, str]]) -> str:
    shown = "\n".join(_("  line {n}: {problem}").format(n=n, problem=msg) for n, msg in bad[:20])
    more = "\n" + _("  ... and more") if len(bad) > 20 else ""
    return (_("{path}: {count} bad line(s), nothing imported:").format(path=path, count=len(bad))
            + f"\n{shown}{more}\n" + _("Fix the file, or re-run with --skip-bad to import the good lines only."))


def file_size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# ------------------------------------------------------------------ view


class SqliteLedgerView:
    """The decision core's read-only view of the ledger (gate.decision.LedgerView)."""

    def __init__(self, conn: sqlite3.Connection, data_key: bytes | None):
        self.conn = conn
        self.data_key = data_key

    # One statement for everything a decision reads (it is on the decision
    # path): the ticket row, this gate's usage, other gates' admissions (sync,
    # bus) and whether the step was already accepted here.
    _LOOKUP = """
        SELECT t.version, t.status, t.entries, t.reentry, t.zone, t.face_required, t.tier, t.holder,
               u.admissions, u.last_kind, u.last_ts_ms, r.admissions, r.last_kind, r.last_ts_ms, r.last_where,
               EXISTS (SELECT 1 FROM steps s WHERE s.ticket_id = ?1 AND s.step = ?2)
        FROM (SELECT 1) LEFT JOIN tickets t ON t.ticket_id = ?1 LEFT JOIN usage u ON u.ticket_id = ?1
             LEFT JOIN remote_usage r ON r.ticket_id = ?1"""

    def lookup(self, ticket_id: str, step: int | None) -> Lookup:
        (v, st, ent, rex, zone, fce, tier, holder, adm, kind, ts, r_adm, r_kind, r_ts, r_where,
         seen) = self.conn.execute(self._LOOKUP, (ticket_id, -1 if step is None else step)).fetchone()
        record = None if v is None else TicketRecord(ticket_id, v, st, ent, bool(rex), zone, bool(fce), tier, holder)
        admissions = (adm or 0) + (r_adm or 0)
        where = None
        if r_ts is not None and (ts is None or r_ts > ts):
            kind, ts = r_kind, r_ts
            if r_where:  # "lane<US>device" of the other gate (sync or venue bus)
                lane, _, device = r_where.partition("\x1f")
                device = device.split("#")[0]
                where = f"{lane} ({device})" if lane else device
        usage = NO_USAGE if kind is None and admissions == 0 else \
            Usage(admissions, Mode(kind) if kind else None, where, ts)
        return Lookup(record, usage, bool(seen))

    def ticket(self, ticket_id: str) -> TicketRecord | None:
        return self.lookup(ticket_id, None).record

    def usage(self, ticket_id: str) -> Usage:
        """This gate's accepted history, plus what other gates reported."""
        return self.lookup(ticket_id, None).usage

    def face_template(self, ticket_id: str) -> tuple[float, ...] | None:
        row = self.conn.execute(
            "SELECT face_template FROM tickets WHERE ticket_id = ?", (ticket_id,)).fetchone()
        if row is None or row[0] is None or self.data_key is None:
            return None
        try:
            return decode_template(unseal(self.data_key, row[0], ticket_id.encode()))
        except (InvalidTag, struct.error):
            return None  # a template we cannot open is no template


def enroll_face(conn: sqlite3.Connection, ticket_id: str, encoding: Sequence[float],
                data_key: bytes) -> None:
    """Store a holder's template (encrypted) and bind the ticket to that face."""
    if len(encoding) != TEMPLATE_FLOATS or not all(map(math.isfinite, encoding)):
        raise LedgerError(_("a face template is {n} finite numbers: take the photo again").format(n=TEMPLATE_FLOATS))
    blob = seal(data_key, encode_template(encoding), ticket_id.encode())
    with transaction(conn):
        if not biometrics_allowed(conn):
            raise LedgerError(_(BIOMETRICS_OFF_MESSAGE))
        cur = conn.execute("UPDATE tickets SET face_template = ?, face_required = 1 WHERE ticket_id = ?",
                           (blob, ticket_id))
        if cur.rowcount != 1:
            raise LedgerError(_("ticket {ticket} is not in the ledger: import or sync the tickets first").format(
            ticket=ticket_id))


BIOMETRICS_OFF = "biometrics.disabled"
BIOMETRICS_OFF_MESSAGE = N_("face templates are switched off on this gate (wiped or past the retention "
                            "deadline): run 'gate face enable --yes' to store them again")


def biometrics_allowed(conn: sqlite3.Connection) -> bool:
    """False after a wipe or the retention deadline, until an operator re-enables them."""
    return get_setting(conn, BIOMETRICS_OFF) is None


def disable_biometrics(conn: sqlite3.Connection, *, now: float, why: str) -> None:
    with transaction(conn):
        put_setting(conn, BIOMETRICS_OFF, {"since": now, "why": why})


def enable_biometrics(conn: sqlite3.Connection) -> bool:
    """Allow templates again; True when they were switched off."""
    with transaction(conn):
        return conn.execute("DELETE FROM settings WHERE key = ?", (BIOMETRICS_OFF,)).rowcount > 0


def strip_templates(rows: list[TicketRow]) -> list[TicketRow]:
    """Ticket rows without their face templates."""
    return [r._replace(face_template=None) for r in rows]


def wipe_biometrics(conn: sqlite3.Connection, *, now: float, why: str = "wipe") -> int:
    """Delete every face template, and scrub them from free pages and the WAL.
    From then on no template is stored (import, sync, enrolment) until an
    operator re-enables them (:func:`enable_biometrics`)."""
    conn.execute("PRAGMA secure_delete = ON")
    with transaction(conn):
        if biometrics_allowed(conn):
            put_setting(conn, BIOMETRICS_OFF, {"since": now, "why": why})
        n = conn.execute("UPDATE tickets SET face_template = NULL WHERE face_template IS NOT NULL").rowcount
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return n


def stats(conn: sqlite3.Connection) -> dict:
    q = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
    by_status = dict(conn.execute("SELECT status, count(*) FROM tickets GROUP BY status"))
    by_reason = dict(conn.execute(
        "SELECT reason, count(*) FROM scans WHERE kind = 'scan' GROUP BY reason"))
    imported = get_setting(conn, "ledger_imported_at")
    return {
        "tickets": q("SELECT count(*) FROM tickets"),
        "by_status": by_status,
        "face_templates": q("SELECT count(*) FROM tickets WHERE face_template IS NOT NULL"),
        "keys": q("SELECT count(*) FROM keys"),
        "keys_active": q("SELECT count(*) FROM keys WHERE status = 'active'"),
        "scans": q("SELECT count(*) FROM scans WHERE kind = 'scan'"),
        "scans_by_reason": by_reason,
        "tickets_used": q("SELECT count(*) FROM usage WHERE admissions > 0"),
        "ledger_imported_at": imported,
    }

