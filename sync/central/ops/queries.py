"""What the ops pages show, computed on central from the uploaded scans.

Portable SQL only (SQLite and PostgreSQL): ``:name`` parameters, no date
functions; times are bucketed with integer arithmetic on ``ts_ms``.
"""

from __future__ import annotations

AMBER_S = 120   # silence before a gate's row turns amber (while doors are open)
RED_S = 300     # ... and red
OPEN_WINDOW_S = 600  # doors count as open when any gate of the event scanned this recently
STALL_RECENT_S = 120  # a lane's current rate: the last 2 minutes ...
STALL_BASE_S = 600    # ... against its own 10 minutes before that
STALL_MIN_BASE = 1.0  # per minute: below this a lane is too quiet to call stalled
SHARED_LANES, SHARED_WINDOW_MS = 3, 60_000

# accepted scans that were not rolled back (the report's "admitted")
ADMITTED = """
    FROM scans s WHERE s.event = :e AND s.kind IN ('scan', 'override') AND s.decision = 'accept'
    AND NOT EXISTS (SELECT 1 FROM scans r WHERE r.kind = 'rollback' AND r.device_id = s.device_id
                    AND r.ref = s.seq)"""


def doors(db, event: str, now: float) -> dict:
    now_ms = int(now * 1000)
    since = now_ms - 3600_000
    adm = {r["mode"]: r["n"] for r in db.all(
        f"SELECT s.mode AS mode, count(*) AS n {ADMITTED} GROUP BY s.mode", {"e": event})}
    per_lane = {r["lane"]: r["n"] for r in db.all(
        f"SELECT coalesce(s.lane, '-') AS lane, count(*) AS n {ADMITTED} GROUP BY coalesce(s.lane, '-')"
        " ORDER BY 1", {"e": event})}
    refusals = {r["reason"] or "-": r["n"] for r in db.all(
        "SELECT reason, count(*) AS n FROM scans WHERE event = :e AND kind IN ('scan', 'override')"
        " AND decision <> 'accept' GROUP BY reason ORDER BY count(*) DESC, reason", {"e": event})}
    scans = db.one("SELECT count(*) AS n FROM scans WHERE event = :e AND kind IN ('scan', 'override')",
                   {"e": event})["n"]
    minutes = db.all(
        f"SELECT coalesce(s.lane, '-') AS lane, s.ts_ms / 60000 AS m, count(*) AS n {ADMITTED}"
        " AND s.ts_ms >= :since AND s.ts_ms <= :now GROUP BY coalesce(s.lane, '-'), s.ts_ms / 60000",
        {"e": event, "since": since, "now": now_ms})
    # the chart ends now, or at the newest admission when a gate's clock runs ahead (at most an hour)
    newest = db.one(f"SELECT max(s.ts_ms) AS t {ADMITTED} AND s.ts_ms <= :lim",
                    {"e": event, "lim": now_ms + 3600_000})["t"]
    end_ms = max(now_ms, newest or 0)
    if end_ms > now_ms:
        minutes += db.all(
            f"SELECT coalesce(s.lane, '-') AS lane, s.ts_ms / 60000 AS m, count(*) AS n {ADMITTED}"
            " AND s.ts_ms > :now AND s.ts_ms <= :end GROUP BY coalesce(s.lane, '-'), s.ts_ms / 60000",
            {"e": event, "now": now_ms, "end": end_ms})
    cap = db.one("SELECT capacity FROM ops_capacity WHERE event = :e", {"e": event})
    entries, exits = adm.get("entry", 0), adm.get("exit", 0)
    return {"event": event, "admitted": entries, "exits": exits, "inside": entries - exits,
            "capacity": cap["capacity"] if cap else None, "per_lane": per_lane, "refusals": refusals,
            "scans": scans, "minutes": minutes, "now_minute": end_ms // 60000, "ahead": end_ms > now_ms,
            "notable": notable(db, event, now)[:20]}


def double_admissions(db, event: str) -> list[dict]:
    over = db.all(
        f"""SELECT s.ticket_id AS ticket_id, sum(s.consumes) AS used, coalesce(t.entries, 1) AS allowed
            {ADMITTED.replace('FROM scans s', 'FROM scans s LEFT JOIN tickets t ON t.ticket_id = s.ticket_id')}
            AND s.mode = 'entry' AND s.ticket_id IS NOT NULL
            GROUP BY s.ticket_id, coalesce(t.entries, 1)
            HAVING coalesce(t.entries, 1) > 0 AND sum(s.consumes) > coalesce(t.entries, 1)""", {"e": event})
    out = []
    for o in over:
        adms = db.all(f"SELECT s.device_id AS device_id, s.lane AS lane, s.ts_ms AS ts_ms, s.consumes AS consumes"
                      f" {ADMITTED} AND s.mode = 'entry' AND s.ticket_id = :t ORDER BY s.ts_ms",
                      {"e": event, "t": o["ticket_id"]})
        used = 0
        for a in adms:
            used += a["consumes"]
            if used > o["allowed"]:  # the admission that went over
                out.append({**o, "at_ms": a["ts_ms"], "device_id": a["device_id"], "lane": a["lane"],
                            "admissions": adms})
                break
    return out


def quarantined(db, event: str) -> list[dict]:
    """Devices central quarantined (implausible uploads): their admissions are not propagated."""
    return db.all("SELECT device_id, status, quarantined_at, quarantine_reason FROM devices"
                  " WHERE event = :e AND quarantined_at IS NOT NULL ORDER BY quarantined_at", {"e": event})


def gates(db, event: str, now: float) -> list[dict]:
    now_ms = int(now * 1000)
    rows = db.all(
        """SELECT d.device_id AS device_id, d.status AS status, d.enrolled_at AS enrolled_at,
                  d.quarantined_at AS quarantined_at, d.quarantine_reason AS quarantine_reason,
                  g.last_contact AS last_contact, g.link AS link, g.outbox AS outbox,
                  g.clock_offset_ms AS clock_offset_ms, g.ledger_age_s AS ledger_age_s,
                  g.reported_at AS reported_at,
                  (SELECT max(s.received) FROM scans s WHERE s.device_id = d.device_id) AS last_upload,
                  (SELECT max(s.ts_ms) FROM scans s WHERE s.device_id = d.device_id) AS last_scan_ms,
                  (SELECT count(*) FROM scans s WHERE s.device_id = d.device_id) AS records,
                  (SELECT max(s.seq) FROM scans s WHERE s.device_id = d.device_id) AS max_seq,
                  (SELECT count(*) FROM problems p WHERE p.device_id = d.device_id) AS problems,
                  (SELECT s.lane FROM scans s WHERE s.device_id = d.device_id ORDER BY s.seq DESC LIMIT 1) AS lane
           FROM devices d LEFT JOIN ops_gate_status g ON g.device_id = d.device_id
           WHERE d.event = :e ORDER BY d.enrolled_at, d.device_id""", {"e": event})
    last_any = db.one("SELECT max(ts_ms) AS t FROM scans WHERE event = :e AND ts_ms <= :now",
                      {"e": event, "now": now_ms + 60_000})["t"]
    doors_open = last_any is not None and now_ms - last_any <= OPEN_WINDOW_S * 1000
    for g in rows:
        contact = max(x for x in (g["last_contact"], g["last_upload"], g["enrolled_at"]) if x is not None)
        g["last_contact"] = contact
        g["silent_s"] = max(0.0, now - contact)
        if g["problems"]:
            g["chain"] = "refused upload"
        elif g["records"] and g["max_seq"] != g["records"]:
            g["chain"] = f"gaps ({g['max_seq'] - g['records']} missing)"
        else:
            g["chain"] = "ok"
        g["quarantined"] = g["quarantined_at"] is not None
        if g["ledger_age_s"] is not None and g["reported_at"] is not None:
            g["ledger_age_s"] = g["ledger_age_s"] + max(0.0, now - g["reported_at"])
        if g["status"] != "active":
            g["state"] = "revoked"
        elif not doors_open:
            g["state"] = "idle"
        elif g["silent_s"] >= RED_S:
            g["state"] = "dark"
        elif g["silent_s"] >= AMBER_S:
            g["state"] = "silent"
        else:
            g["state"] = "ok"
    return rows


def lane_rates(db, event: str, now: float) -> dict[str, tuple[float, float]]:
    """Per lane: (admissions per minute over the last 2 min, over the 10 min before)."""
    now_ms = int(now * 1000)
    r0, b0 = now_ms - STALL_RECENT_S * 1000, now_ms - (STALL_RECENT_S + STALL_BASE_S) * 1000
    rows = db.all(
        "SELECT coalesce(lane, '-') AS lane, sum(CASE WHEN ts_ms >= :r0 THEN 1 ELSE 0 END) AS recent,"
        " sum(CASE WHEN ts_ms < :r0 THEN 1 ELSE 0 END) AS base FROM scans"
        " WHERE event = :e AND kind IN ('scan', 'override') AND decision = 'accept'"
        " AND ts_ms >= :b0 AND ts_ms <= :now GROUP BY coalesce(lane, '-')",
        {"e": event, "r0": r0, "b0": b0, "now": now_ms})
    return {r["lane"]: (r["recent"] * 60 / STALL_RECENT_S, r["base"] * 60 / STALL_BASE_S) for r in rows}


def shared_codes(db, event: str) -> list[dict]:
    """Tickets refused at SHARED_LANES different lanes within a minute (a code going round)."""
    cands = db.all(
        "SELECT ticket_id FROM scans WHERE event = :e AND kind = 'scan' AND decision <> 'accept'"
        " AND ticket_id IS NOT NULL GROUP BY ticket_id"
        " HAVING count(DISTINCT coalesce(lane, device_id)) >= :k", {"e": event, "k": SHARED_LANES})
    out = []
    for c in cands:
        refs = db.all("SELECT coalesce(lane, device_id) AS lane, ts_ms FROM scans WHERE event = :e"
                      " AND ticket_id = :t AND kind = 'scan' AND decision <> 'accept' AND ts_ms IS NOT NULL"
                      " ORDER BY ts_ms", {"e": event, "t": c["ticket_id"]})
        for i, r in enumerate(refs):
            window = [x for x in refs[i:] if x["ts_ms"] - r["ts_ms"] <= SHARED_WINDOW_MS]
            lanes = sorted({x["lane"] for x in window})
            if len(lanes) >= SHARED_LANES:
                out.append({"ticket_id": c["ticket_id"], "at_ms": window[-1]["ts_ms"], "lanes": lanes})
                break
    return out


def alerts(db, event: str, now: float) -> list[dict]:
    """Alerts, most severe first: each {level, kind, text, at}."""
    out = []
    rates = lane_rates(db, event, now)
    for lane, (recent, base) in sorted(rates.items()):
        others_flow = any(r > 0 for ln, (r, _) in rates.items() if ln != lane)
        if base >= STALL_MIN_BASE and recent < base * 0.5 and others_flow:
            out.append({"level": "warn", "kind": "lane stalled", "at": now,
                        "text": f"lane {lane}: {recent:.1f}/min in the last {STALL_RECENT_S // 60} min against "
                                f"{base:.1f}/min over the {STALL_BASE_S // 60} min before "
                                f"(−{100 - 100 * recent / base:.0f} %) while other lanes flow"})
    gs = gates(db, event, now)
    scanning = [g for g in gs if g["last_scan_ms"] and now * 1000 - g["last_scan_ms"] <= AMBER_S * 1000]
    for g in gs:
        if g["state"] in ("silent", "dark") and any(o["device_id"] != g["device_id"] for o in scanning):
            out.append({"level": "crit" if g["state"] == "dark" else "warn", "kind": "gate silent",
                        "at": g["last_contact"],
                        "text": f"gate {g['device_id']} (lane {g['lane'] or '—'}) silent for "
                                f"{int(g['silent_s'])} s while other gates scan"})
    for d in double_admissions(db, event):
        out.append({"level": "crit", "kind": "double admission", "at": d["at_ms"] / 1000,
                    "ticket_id": d["ticket_id"],
                    "text": f"ticket {d['ticket_id']} admitted {d['used']}× (allowed {d['allowed']}) at "
                            + ", ".join(sorted({f"{a['device_id']}/{a['lane']}" for a in d["admissions"]}))})
    for q in quarantined(db, event):
        out.append({"level": "crit", "kind": "device quarantined", "at": q["quarantined_at"],
                    "text": f"gate {q['device_id']} is quarantined ({q['quarantine_reason'] or 'implausible uploads'}):"
                            " its admissions are not propagated; release with 'gate central device release'"})
    for s in shared_codes(db, event):
        out.append({"level": "warn", "kind": "shared code", "at": s["at_ms"] / 1000, "ticket_id": s["ticket_id"],
                    "text": f"ticket {s['ticket_id']} refused at {len(s['lanes'])} lanes within a minute "
                            f"({', '.join(s['lanes'])}): a shared code going round?"})
    order = {"crit": 0, "warn": 1}
    out.sort(key=lambda a: (order[a["level"]], -(a["at"] or 0)))
    return out


def notable(db, event: str, now: float) -> list[dict]:
    """Double admissions, quarantined devices, gates gone dark, refused uploads; newest first."""
    out = []
    for d in double_admissions(db, event):
        out.append({"at": d["at_ms"] / 1000, "kind": "double admission",
                    "text": f"ticket {d['ticket_id'][:12]}… admitted {d['used']}× at {d['device_id']}/{d['lane']}"})
    for q in quarantined(db, event):
        out.append({"at": q["quarantined_at"], "kind": "quarantined device",
                    "text": f"gate {q['device_id']}: {q['quarantine_reason'] or 'implausible uploads'}"})
    for g in gates(db, event, now):
        if g["state"] == "dark":
            out.append({"at": g["last_contact"] + RED_S, "kind": "gate gone dark",
                        "text": f"gate {g['device_id']} (lane {g['lane'] or '—'}) silent {int(g['silent_s'])} s"})
    for p in db.all("SELECT device_id, kind, detail, at FROM problems WHERE event = :e ORDER BY id DESC LIMIT 20",
                    {"e": event}):
        out.append({"at": p["at"], "kind": "refused upload", "text": f"gate {p['device_id']}: {p['kind']}"})
    out.sort(key=lambda x: -(x["at"] or 0))
    return out


def find_tickets(db, event: str, q: str) -> list[dict]:
    q = q.strip()
    if not q:
        return []
    return db.all(
        "SELECT ticket_id, tier, zone, version, status, entries, holder, revoked_at FROM tickets"
        " WHERE event = :e AND (ticket_id = :q OR ticket_id LIKE :prefix OR lower(holder) LIKE :pat)"
        " ORDER BY ticket_id LIMIT 50",
        {"e": event, "q": q, "prefix": q.lower().replace("%", "").replace("_", "") + "%",
         "pat": "%" + q.lower().replace("%", "") + "%"})


def ticket_history(db, event: str, ticket_id: str) -> dict | None:
    t = db.one("SELECT ticket_id, tier, zone, version, status, entries, holder, revoked_at FROM tickets"
               " WHERE ticket_id = :t", {"t": ticket_id})
    rows = db.all(
        """SELECT s.ts_ms AS ts_ms, s.device_id AS device_id, s.lane AS lane, s.seq AS seq, s.kind AS kind,
                  s.mode AS mode, s.decision AS decision, s.reason AS reason, s.received AS received
           FROM scans s WHERE s.event = :e AND s.ticket_id = :t
           UNION ALL
           SELECT r.ts_ms, r.device_id, r.lane, r.seq, r.kind, r.mode, r.decision, r.reason, r.received
           FROM scans r JOIN scans s ON s.device_id = r.device_id AND r.ref = s.seq
           WHERE r.kind = 'rollback' AND s.event = :e AND s.ticket_id = :t
           ORDER BY 1, 2, 4""", {"e": event, "t": ticket_id})
    if t is None and not rows:
        return None
    hist = [{**r, "at": (r["ts_ms"] or 0) / 1000} for r in rows]
    if t and t["version"] > 1:  # the store keeps the current version, not when each reissue happened
        hist.append({"at": None, "kind": "reissue", "reason": f"now version {t['version']}"
                     f" ({t['version'] - 1} reissue{'s' if t['version'] > 2 else ''})"})
    if t and t["revoked_at"]:
        hist.append({"at": t["revoked_at"], "kind": "revocation", "reason": "revoked by central"})
    hist.sort(key=lambda h: (h["at"] is None, h["at"] or 0))
    return {"ticket": t, "history": hist}
