"""The reconciliation report (docs/sync.md), built by the central from the scans
every gate uploaded: double admissions across gates (typically while offline),
admissions of tickets revoked before the scan, unlisted admissions, broken or
forked chains and refused uploads per device, sequence gaps, records stamped
by a wrong clock, and counts per gate / lane / hour. JSON, and a readable text
form that renders whatever a gate's clock said.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import cbor2

from gate.scanlog import GENESIS, chain_hash

DAY_MS = 86_400_000
SANE_MS = (946_684_800_000, 4_102_444_800_000)  # 2000-01-01 .. 2100-01-01 UTC


def fmt_ms(ms, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A record's timestamp for people; any value a gate's clock (or a hostile
    device) wrote renders, out-of-range ones as the raw number with a '?'."""
    if type(ms) is int and SANE_MS[0] <= ms < SANE_MS[1]:
        return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime(fmt)
    return f"?{ms}"


def _clock_wrong(conn, event: str) -> list[dict]:
    """Per device, the records whose timestamp cannot be true: before the event
    existed at central (minus a day), after central received them (plus a day),
    outside 2000-2100, or not an integer. They stay stored as facts."""
    row = conn.execute("SELECT created FROM events WHERE event = ?", (event,)).fetchone()
    lo = max(SANE_MS[0], int(((row[0] if row else 0) or 0) * 1000) - DAY_MS)
    out = []
    for d, n, s0, s1, t0, t1 in conn.execute(
            """SELECT device_id, count(*), min(seq), max(seq), min(ts_ms), max(ts_ms) FROM scans
               WHERE event = ? AND ts_ms IS NOT NULL AND (typeof(ts_ms) != 'integer' OR ts_ms < ?
                     OR ts_ms > min(?, CAST(received * 1000 AS INTEGER) + ?))
               GROUP BY device_id ORDER BY device_id""", (event, lo, SANE_MS[1], DAY_MS)):
        out.append({"device_id": d, "records": n, "first_seq": s0, "last_seq": s1,
                    "earliest_ts_ms": t0, "latest_ts_ms": t1})
    return out


def _admitted_table(conn, event: str) -> None:
    """One pass over the scans: the admitted (accepted, not rolled back) ones, in a
    compact temp table without the record blobs, for all the aggregates below."""
    conn.execute("DROP TABLE IF EXISTS temp.adm")
    conn.execute("""
        CREATE TEMP TABLE adm AS
        SELECT s.device_id, s.seq, s.ticket_id, s.mode, s.consumes, s.ts_ms, s.lane, s.unlisted
        FROM scans s WHERE s.event = ? AND s.kind IN ('scan', 'override') AND s.decision = 'accept'
        AND NOT EXISTS (SELECT 1 FROM scans r WHERE r.kind = 'rollback' AND r.device_id = s.device_id
                        AND r.ref = s.seq)""", (event,))
    conn.execute("CREATE INDEX temp.adm_ticket ON adm(ticket_id)")


def build_report(store, event: str) -> dict:
    """Aggregations run in SQLite, so memory stays flat however many scans there are."""
    conn = store.conn
    with store.lock:
        return _build(conn, event)


def _build(conn, event: str) -> dict:
    by_reason = dict(conn.execute(
        "SELECT reason, count(*) FROM scans WHERE event = ? AND kind IN ('scan', 'override')"
        " GROUP BY reason ORDER BY reason", (event,)))
    _admitted_table(conn, event)
    per_gate = dict(conn.execute("SELECT device_id, count(*) FROM adm GROUP BY 1 ORDER BY 1"))
    per_lane = dict(conn.execute("SELECT coalesce(lane, '-'), count(*) FROM adm GROUP BY 1 ORDER BY 1"))
    per_hour: dict[str, int] = {}
    for h, n in conn.execute("SELECT coalesce(ts_ms, 0) / 3600000, count(*) FROM adm GROUP BY 1 ORDER BY 1"):
        key = fmt_ms(h * 3_600_000 if type(h) is int else h, "%Y-%m-%d %H:00")
        key = "clock wrong" if key.startswith("?") else key
        per_hour[key] = per_hour.get(key, 0) + n
    entry = "FROM adm a WHERE a.mode = 'entry' AND a.ticket_id IS NOT NULL"
    over, by_ticket = [], {}
    for tid, used, allowed in conn.execute(
            """SELECT a.ticket_id, sum(a.consumes), coalesce(t.entries, 1)
                FROM adm a LEFT JOIN tickets t ON t.ticket_id = a.ticket_id
                WHERE a.mode = 'entry' AND a.ticket_id IS NOT NULL
                GROUP BY a.ticket_id HAVING coalesce(t.entries, 1) > 0 AND sum(a.consumes) > coalesce(t.entries, 1)
                ORDER BY a.ticket_id"""):
        by_ticket[tid] = {"ticket_id": tid, "allowed": allowed, "admitted": used, "gates": [], "admissions": []}
        over.append(by_ticket[tid])
    if over:  # the admissions behind them, in one pass
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS _over (ticket_id TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM _over")
        conn.executemany("INSERT INTO _over VALUES (?)", [(t,) for t in by_ticket])
        for tid, d, sq, ts, ln, c in conn.execute(
                f"SELECT a.ticket_id, a.device_id, a.seq, a.ts_ms, a.lane, a.consumes {entry}"
                " AND a.ticket_id IN (SELECT ticket_id FROM _over) ORDER BY a.ticket_id, a.ts_ms"):
            by_ticket[tid]["admissions"].append(
                {"device_id": d, "seq": sq, "ts_ms": ts, "lane": ln, "consumes": bool(c)})
        for o in over:
            o["gates"] = sorted({a["device_id"] for a in o["admissions"]})
            for a in o["admissions"]:  # admitted with neither central nor a venue bus peer (gate.bus)
                row = conn.execute("SELECT record FROM scans WHERE device_id = ? AND seq = ?",
                                   (a["device_id"], a["seq"])).fetchone()
                a["alone"] = bool(row and cbor2.loads(row[0]).get("alone"))
    revoked_admissions = [
        {"ticket_id": tid, "device_id": d, "seq": sq, "ts_ms": ts, "lane": ln, "revoked_at": rat}
        for tid, d, sq, ts, ln, rat in conn.execute(
            f"""SELECT a.ticket_id, a.device_id, a.seq, a.ts_ms, a.lane, t.revoked_at
                {entry.replace('FROM adm a', 'FROM adm a JOIN tickets t ON t.ticket_id = a.ticket_id')}
                AND t.status = 'revoked' AND t.revoked_at IS NOT NULL AND a.ts_ms >= t.revoked_at * 1000
                ORDER BY a.ts_ms""")]
    unlisted = [
        {"ticket_id": tid, "device_id": d, "seq": sq, "ts_ms": ts, "lane": ln, "known_now": bool(known)}
        for tid, d, sq, ts, ln, known in conn.execute(
            f"""SELECT a.ticket_id, a.device_id, a.seq, a.ts_ms, a.lane,
                       EXISTS (SELECT 1 FROM tickets t WHERE t.ticket_id = a.ticket_id)
                {entry} AND a.unlisted = 1 ORDER BY a.ts_ms""")]
    devices = [_device_chain(conn, device_id, status) for device_id, status in conn.execute(
        "SELECT device_id, status FROM devices WHERE event = ? ORDER BY enrolled_at", (event,))]
    problems = [{"device_id": d, "kind": k, "detail": det, "at": at} for d, k, det, at in conn.execute(
        "SELECT device_id, kind, detail, at FROM problems WHERE event = ? ORDER BY id", (event,))]
    return {
        "event": event,
        "generated_at": time.time(),
        "scans": sum(by_reason.values()),
        "by_reason": by_reason,
        "double_admissions": over,
        "revoked_admissions": revoked_admissions,
        "unlisted_admissions": unlisted,
        "devices": devices,
        "problems": problems,
        "clock_wrong": _clock_wrong(conn, event),
        "per_gate": per_gate,
        "per_lane": per_lane,
        "per_hour": per_hour,
    }


def _device_chain(conn, device_id: str, status: str) -> dict:
    prev, expected, gaps, broken, n = GENESIS, 1, [], None, 0
    for seq, data, h in conn.execute("SELECT seq, record, hash FROM scans WHERE device_id = ? ORDER BY seq",
                                     (device_id,)):
        if seq != expected:
            gaps.append([expected, seq - 1])
            prev = None
        if prev is not None and broken is None and chain_hash(prev, data) != h:
            broken = seq
        prev, expected, n = h, seq + 1, n + 1
    return {"device_id": device_id, "status": status, "records": n, "stored_through": expected - 1,
            "gaps": gaps, "chain_ok": broken is None and not gaps, "broken_at": broken}


def render_text(rep: dict) -> str:
    def ts(ms):
        return fmt_ms(ms, "%H:%M:%S")

    lines = [f"Reconciliation report — event {rep['event']}",
             f"generated {datetime.fromtimestamp(rep['generated_at'], timezone.utc):%Y-%m-%d %H:%M UTC}",
             "", f"scans {rep['scans']}: " + ", ".join(f"{k} {v}" for k, v in rep["by_reason"].items())]
    lines += ["", f"DOUBLE ADMISSIONS ({len(rep['double_admissions'])})"]
    for o in rep["double_admissions"]:
        where = "; ".join(f"{a['device_id']}/{a['lane']} #{a['seq']} {ts(a['ts_ms'])}"
                          + (" ALONE" if a.get("alone") else "") for a in o["admissions"])
        lines.append(f"  {o['ticket_id']}  allowed {o['allowed']}, admitted {o['admitted']}: {where}")
    lines += ["", f"ADMISSIONS OF REVOKED TICKETS ({len(rep['revoked_admissions'])})"]
    for a in rep["revoked_admissions"]:
        lines.append(f"  {a['ticket_id']}  {a['device_id']} #{a['seq']} {ts(a['ts_ms'])}")
    lines += ["", f"UNLISTED ADMISSIONS ({len(rep['unlisted_admissions'])})"]
    for a in rep["unlisted_admissions"]:
        lines.append(f"  {a['ticket_id']}  {a['device_id']} #{a['seq']}"
                     f"  {'sold, now in ledger' if a['known_now'] else 'NOT KNOWN TO CENTRAL'}")
    lines += ["", "DEVICES"]
    lines.append(f"  {'device':<16}{'status':<9}{'records':>8}  chain")
    for d in rep["devices"]:
        state = "ok" if d["chain_ok"] else (f"gaps {d['gaps']}" if d["gaps"] else f"broken at {d['broken_at']}")
        lines.append(f"  {d['device_id']:<16}{d['status']:<9}{d['records']:>8}  {state}")
    lines += ["", f"REFUSED UPLOADS / TAMPERING ({len(rep['problems'])})"]
    for p in rep["problems"]:
        lines.append(f"  {p['device_id']}: {p['kind']} — {p['detail']}")
    clock = rep.get("clock_wrong", [])
    lines += ["", f"CLOCK WRONG ({len(clock)})"]
    for c in clock:
        lines.append(f"  clock wrong on gate {c['device_id']}: {c['records']} record(s), seq {c['first_seq']}-"
                     f"{c['last_seq']}, stamped {fmt_ms(c['earliest_ts_ms'])} .. {fmt_ms(c['latest_ts_ms'])}"
                     " (kept as recorded; times in this report are the gate's)")
    lines += ["", "ADMITTED PER GATE: " + ", ".join(f"{k} {v}" for k, v in rep["per_gate"].items()),
              "ADMITTED PER LANE: " + ", ".join(f"{k} {v}" for k, v in rep["per_lane"].items()),
              "ADMITTED PER HOUR: " + ", ".join(f"{k} {v}" for k, v in rep["per_hour"].items())]
    return "\n".join(lines) + "\n"
