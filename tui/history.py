"""Ticket lookup for staff: find a ticket by id or holder, and its history at
every gate — this gate's scan log (admissions, refusals, rollbacks, manual
decisions) and the admissions other gates reported (central's feed, the venue
bus). Reads only; the staff UI passes its own connection."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import cbor2


@dataclass(frozen=True, slots=True)
class Ticket:
    ticket_id: str
    status: str
    version: int
    tier: str
    zone: str | None
    holder: str | None
    admissions: int  # at this gate and others


@dataclass(frozen=True, slots=True)
class Use:
    ts_ms: int | None
    here: bool               # this gate's scan log
    lane: str | None         # the other gate's lane (None: here, or not reported)
    device: str | None       # the other gate's device id
    via: str | None          # central | bus (other gates)
    kind: str                # scan | override
    reason: str              # a reason code (other gates: ACCEPT)
    mode: str                # entry | exit
    accepted: bool
    voided: bool             # rolled back: nobody went through
    alone: bool              # admitted with neither central nor a bus peer
    operator: str | None = None


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def find(conn: sqlite3.Connection, query: str, *, limit: int = 8) -> list[Ticket]:
    """Tickets whose id starts with ``query`` or whose holder contains it."""
    q = query.strip()
    if not q:
        return []
    rows = conn.execute(
        "SELECT t.ticket_id, t.status, t.version, t.tier, t.zone, t.holder,"
        "       coalesce(u.admissions, 0) + coalesce(r.admissions, 0)"
        " FROM tickets t LEFT JOIN usage u ON u.ticket_id = t.ticket_id"
        " LEFT JOIN remote_usage r ON r.ticket_id = t.ticket_id"
        " WHERE t.ticket_id LIKE ? ESCAPE '\\' OR t.holder LIKE ? ESCAPE '\\'"
        " ORDER BY t.holder, t.ticket_id LIMIT ?",
        (_like(q.lower()) + "%", "%" + _like(q) + "%", limit)).fetchall()
    return [Ticket(tid, st, v, tier or "", zone, holder, int(adm or 0))
            for tid, st, v, tier, zone, holder, adm in rows]


def history(conn: sqlite3.Connection, ticket_id: str, *, limit: int = 40) -> list[Use]:
    """The ticket's uses, oldest first (the latest ``limit``)."""
    uses: list[Use] = []
    voided = set()
    local = conn.execute(
        "SELECT seq, ts_ms, kind, reason, accepted, record FROM scans WHERE ticket_id = ?"
        " ORDER BY seq DESC LIMIT ?", (ticket_id, limit)).fetchall()
    if local:
        seqs = [r[0] for r in local]
        marks = ",".join("?" * len(seqs))
        voided = {s for (s,) in conn.execute(f"SELECT seq FROM voided WHERE seq IN ({marks})", seqs)}
    for seq, ts_ms, kind, reason, accepted, blob in local:
        try:
            rec = cbor2.loads(blob)
        except Exception:  # a record we cannot read still shows as a row
            rec = {}
        if not isinstance(rec, dict):
            rec = {}
        uses.append(Use(ts_ms, True, None, None, None, kind, reason or "", str(rec.get("mode") or ""),
                        bool(accepted), seq in voided, bool(rec.get("alone")),
                        rec.get("operator") if isinstance(rec.get("operator"), str) else None))
    for device, ts_ms, mode, voided_flag, lane, via, alone in conn.execute(
            "SELECT device_id, ts_ms, mode, voided, lane, via, alone FROM remote_admissions"
            " WHERE ticket_id = ? ORDER BY ts_ms DESC LIMIT ?", (ticket_id, limit)):
        uses.append(Use(ts_ms, False, lane, device.split("#")[0], via, "scan", "ACCEPT", mode or "", True,
                        bool(voided_flag), bool(alone)))
    uses.sort(key=lambda u: (u.ts_ms is None, u.ts_ms or 0))
    return uses[-limit:]
