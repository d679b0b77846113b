"""The reconciliation report (DESIGN §6), built by the central from the scans
every gate uploaded: double admissions across gates (typically while offline),
admissions of tickets revoked before the scan, unlisted admissions, broken or
forked chains and refused uploads per device, sequence gaps, and counts per
gate / lane / hour. JSON, and a readable text form.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from datetime import datetime, timezone

from gate.scanlog import GENESIS, chain_hash


def build_report(store, event: str) -> dict:
    conn = store.conn
    tickets = {tid: (entries, reentry, status, revoked_at)
               for tid, entries, reentry, status, revoked_at in conn.execute(
                   "SELECT ticket_id, entries, reentry, status, revoked_at FROM tickets WHERE event = ?", (event,))}
    voided = {(d, ref) for d, ref in conn.execute(
        "SELECT device_id, ref FROM scans WHERE event = ? AND kind = 'rollback'", (event,))}
    per_ticket: dict[str, list[dict]] = defaultdict(list)
    per_gate: Counter = Counter()
    per_lane: Counter = Counter()
    per_hour: Counter = Counter()
    by_reason: Counter = Counter()
    revoked_admissions, unlisted = [], []
    for device, seq, tid, mode, consumes, ts_ms, lane, reason, decision, unl, kind in conn.execute(
            "SELECT device_id, seq, ticket_id, mode, consumes, ts_ms, lane, reason, decision, unlisted, kind"
            " FROM scans WHERE event = ? AND kind IN ('scan', 'override') ORDER BY ts_ms, device_id, seq",
            (event,)):
        by_reason[reason] += 1
        if decision != "accept" or (device, seq) in voided:
            continue
        hour = datetime.fromtimestamp((ts_ms or 0) / 1000, timezone.utc).strftime("%Y-%m-%d %H:00")
        per_gate[device] += 1
        per_lane[lane or "-"] += 1
        per_hour[hour] += 1
        if tid is None or mode != "entry":
            continue
        item = {"device_id": device, "seq": seq, "ts_ms": ts_ms, "lane": lane, "consumes": bool(consumes)}
        per_ticket[tid].append(item)
        info = tickets.get(tid)
        if info and info[2] == "revoked" and info[3] is not None and ts_ms is not None and ts_ms / 1000 >= info[3]:
            revoked_admissions.append({"ticket_id": tid, **item, "revoked_at": info[3]})
        if unl:
            unlisted.append({"ticket_id": tid, **item, "known_now": info is not None})
    over = []
    for tid, items in per_ticket.items():
        entries = tickets.get(tid, (1,))[0]
        used = sum(1 for i in items if i["consumes"])
        if entries and used > entries:
            over.append({"ticket_id": tid, "allowed": entries, "admitted": used,
                         "gates": sorted({i["device_id"] for i in items}), "admissions": items})
    devices = []
    for device_id, status in conn.execute("SELECT device_id, status FROM devices WHERE event = ?", (event,)):
        devices.append(_device_chain(conn, device_id, status))
    problems = [{"device_id": d, "kind": k, "detail": det, "at": at} for d, k, det, at in conn.execute(
        "SELECT device_id, kind, detail, at FROM problems WHERE event = ? ORDER BY id", (event,))]
    return {
        "event": event,
        "generated_at": time.time(),
        "scans": sum(by_reason.values()),
        "by_reason": dict(sorted(by_reason.items())),
        "double_admissions": sorted(over, key=lambda o: o["ticket_id"]),
        "revoked_admissions": revoked_admissions,
        "unlisted_admissions": unlisted,
        "devices": devices,
        "problems": problems,
        "per_gate": dict(sorted(per_gate.items())),
        "per_lane": dict(sorted(per_lane.items())),
        "per_hour": dict(sorted(per_hour.items())),
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
        return datetime.fromtimestamp((ms or 0) / 1000, timezone.utc).strftime("%H:%M:%S")

    lines = [f"Reconciliation report — event {rep['event']}",
             f"generated {datetime.fromtimestamp(rep['generated_at'], timezone.utc):%Y-%m-%d %H:%M UTC}",
             "", f"scans {rep['scans']}: " + ", ".join(f"{k} {v}" for k, v in rep["by_reason"].items())]
    lines += ["", f"DOUBLE ADMISSIONS ({len(rep['double_admissions'])})"]
    for o in rep["double_admissions"]:
        where = "; ".join(f"{a['device_id']}/{a['lane']} #{a['seq']} {ts(a['ts_ms'])}" for a in o["admissions"])
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
    lines += ["", "ADMITTED PER GATE: " + ", ".join(f"{k} {v}" for k, v in rep["per_gate"].items()),
              "ADMITTED PER LANE: " + ", ".join(f"{k} {v}" for k, v in rep["per_lane"].items()),
              "ADMITTED PER HOUR: " + ", ".join(f"{k} {v}" for k, v in rep["per_hour"].items())]
    return "\n".join(lines) + "\n"
