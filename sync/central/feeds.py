"""What gates page through: the ticket feed, the admissions feed, and the
event's device list (the venue bus trust list), plus the feed counters.

Feed cursors (ticket ``change_seq``, scan ``id``) come from the ``counters``
table, incremented at the end of the writing transaction (:func:`reserve`):
the counter row stays locked until that transaction commits, so numbers are
handed out in commit order and a reader never sees a higher number before a
lower one commits.

Each function takes the :class:`~sync.central.store.CentralStore` first (the
store binds them as its methods).
"""

from __future__ import annotations

from sync.central.db import DB
from sync.central.errors import CentralError

# a ticket record as the feed serves it (docs/formats.md), in column order
TICKET_FIELDS = ("ticket_id", "event", "tier", "zone", "version", "status", "entries", "reentry",
                 "face_required", "face_template", "holder")
# the rows layout of the ticket feed (``?layout=rows``, docs/sync.md): the same record
# as one array per ticket in this column order; the event is the one in the path
TICKET_COLUMNS = tuple(f for f in TICKET_FIELDS if f != "event")
I64_MAX = 2 ** 63 - 1


def reserve(db: DB, counter: str, n: int = 1) -> int:
    """Reserve n numbers of a feed counter (``change`` or ``scan``); returns the
    last. Call it late in the writing transaction: the row stays locked until
    the commit (commit-ordered cursors)."""
    return db.scalar("UPDATE counters SET value = value + :n WHERE name = :name RETURNING value",
                     {"n": n, "name": counter})


def check_cursor(cursor: int) -> None:
    if type(cursor) is not int or not 0 <= cursor <= I64_MAX:
        raise CentralError(422, "cursor must be an integer from 0 to 2^63-1 (the one the last page gave)")


def _changed_tickets(store, event: str, cursor: int, limit: int, columns) -> tuple[list, int, bool]:
    """The event's ticket rows (``columns``) changed after ``cursor``, in change
    order: (rows, next cursor, more)."""
    check_cursor(cursor)
    with store.reader() as db:
        rows = db.all(
            f"SELECT {', '.join(columns)}, change_seq FROM tickets WHERE event = :e AND change_seq > :c"
            " ORDER BY change_seq LIMIT :n", {"e": event, "c": cursor, "n": limit + 1})
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1][-1] if rows else cursor), more


def ticket_page(store, event: str, cursor: int, limit: int) -> tuple[list[dict], int, bool]:
    """Ticket records changed after ``cursor``, in change order: (items, next cursor, more)."""
    rows, nxt, more = _changed_tickets(store, event, cursor, limit, TICKET_FIELDS)
    items = []
    for r in rows:
        d = dict(zip(TICKET_FIELDS, r[:-1]))
        d["reentry"], d["face_required"] = bool(d["reentry"]), bool(d["face_required"])
        items.append(d)
    return items, nxt, more


def ticket_rows(store, event: str, cursor: int, limit: int) -> tuple[list[list], int, bool]:
    """:func:`ticket_page` in the rows layout: each record an array in
    :data:`TICKET_COLUMNS` order (a first sync of a million tickets: a third of the
    JSON, and a quarter of the work to write and to read it)."""
    rows, nxt, more = _changed_tickets(store, event, cursor, limit, TICKET_COLUMNS)
    out = [[tid, tier, zone, version, status, entries, bool(reentry), bool(face), template, holder]
           for tid, tier, zone, version, status, entries, reentry, face, template, holder, _ in rows]
    return out, nxt, more


def admissions(store, event: str, cursor: int, limit: int) -> tuple[list[dict], int, bool]:
    """Accepted scans and rollbacks of all gates, for cross-gate duplicate
    detection. A quarantined device's admissions are held back unless a holder
    proof backs them (``proven``)."""
    with store.reader() as db:
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


def devices(store, event: str) -> dict:
    """The event's devices with their public keys and status: the venue bus
    trust list (gate.bus.parse_trust reads it). ``quarantined`` says whether
    central holds the device's admissions back; the gates then hold its bus
    records back too."""
    with store.reader() as db:
        rows = db.all("SELECT device_id, pub, status, quarantined_at FROM devices WHERE event = :e"
                      " ORDER BY device_id", {"e": event})
    return {"event": event, "devices": [
        {"device_id": d, "public_key": bytes(p).hex(), "status": st, "quarantined": q is not None}
        for d, p, st, q in rows]}
