"""What the ops pages show, computed on central from the uploaded scans.

Portable SQL only (SQLite and PostgreSQL): ``:name`` parameters, no date
functions; times are bucketed with integer arithmetic on ``ts_ms``.
"""

from __future__ import annotations

import threading

import cbor2

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


BUCKET_MS = 10_000       # admissions are kept per lane in 10-second buckets ...
KEEP_MS = 2 * 3600_000   # ... for the last two hours (the chart shows one)
FULL_RELOAD_ROWS = 50_000  # more new rows than this: recompute in SQL instead of row by row


def _in(name: str, values: list) -> tuple[str, dict]:
    """A portable ``IN (:name0, :name1, ...)`` list and its parameters."""
    params = {f"{name}{i}": v for i, v in enumerate(values)}
    return "(" + ", ".join(":" + k for k in params) + ")", params


class EventState:
    """The whole-event aggregates behind Doors and Alerts, kept up to date
    incrementally: central's scan ids are commit-ordered, so each refresh reads
    only the rows after the last one seen (in the same snapshot as everything
    else on the page). A fresh state is computed once in SQL."""

    def __init__(self, event: str):
        self.event = event
        self.last_id = -1
        self.modes: dict[str, int] = {}
        self.lanes: dict[str, int] = {}
        self.refusals: dict[str, int] = {}
        self.scans = 0
        self.buckets: dict[tuple[str, int], int] = {}
        self.over: dict[str, dict] = {}    # double admissions by ticket
        self.shared: dict[str, dict] = {}  # tickets refused at 3 lanes within a minute

    def snapshot(self) -> "EventState":
        """A copy for one viewer, taken under Live's lock: the views iterate it while
        another viewer's refresh mutates the shared state."""
        c = EventState(self.event)
        c.last_id, c.scans = self.last_id, self.scans
        c.modes, c.lanes, c.refusals = dict(self.modes), dict(self.lanes), dict(self.refusals)
        c.buckets, c.over, c.shared = dict(self.buckets), dict(self.over), dict(self.shared)
        return c

    def _add(self, d: dict, k, n: int) -> None:
        d[k] = d.get(k, 0) + n
        if d[k] == 0:
            del d[k]

    def full(self, db, now_ms: int) -> None:
        e = {"e": self.event}
        top = db.one("SELECT max(id) AS m FROM scans WHERE event = :e", e)["m"]
        self.last_id = top or 0
        self.modes = {r["mode"]: r["n"] for r in db.all(
            f"SELECT s.mode AS mode, count(*) AS n {ADMITTED} GROUP BY s.mode", e)}
        self.lanes = {r["lane"]: r["n"] for r in db.all(
            f"SELECT coalesce(s.lane, '-') AS lane, count(*) AS n {ADMITTED} GROUP BY coalesce(s.lane, '-')", e)}
        self.refusals = {r["reason"] or "-": r["n"] for r in db.all(
            "SELECT reason, count(*) AS n FROM scans WHERE event = :e AND kind IN ('scan', 'override')"
            " AND decision <> 'accept' GROUP BY reason", e)}
        self.scans = db.one("SELECT count(*) AS n FROM scans WHERE event = :e AND kind IN ('scan', 'override')",
                            e)["n"]
        self.buckets = {(r["lane"], r["b"]): r["n"] for r in db.all(
            f"SELECT coalesce(s.lane, '-') AS lane, s.ts_ms / {BUCKET_MS} AS b, count(*) AS n {ADMITTED}"
            f" AND s.ts_ms >= :since AND s.mode = 'entry' GROUP BY coalesce(s.lane, '-'), s.ts_ms / {BUCKET_MS}",
            {**e, "since": now_ms - KEEP_MS})}
        self.over = {d["ticket_id"]: d for d in _double_admissions(db, self.event, None)}
        self.shared = {d["ticket_id"]: d for d in _shared_codes(db, self.event, None)}

    def refresh(self, db, now_ms: int) -> None:
        if self.last_id < 0:
            return self.full(db, now_ms)
        new = db.all(
            "SELECT id, device_id, seq, ts_ms, kind, mode, decision, reason, ticket_id, ref, lane FROM scans"
            " WHERE event = :e AND id > :last ORDER BY id LIMIT :lim",
            {"e": self.event, "last": self.last_id, "lim": FULL_RELOAD_ROWS + 1})
        if len(new) > FULL_RELOAD_ROWS:
            return self.full(db, now_ms)
        admitted_tickets, refused_tickets = set(), set()
        for r in new:
            self.last_id = r["id"]
            if r["kind"] in ("scan", "override"):
                self.scans += 1
                if r["decision"] == "accept":
                    self._count(r, +1, now_ms)
                    if r["ticket_id"] and r["mode"] == "entry":
                        admitted_tickets.add(r["ticket_id"])
                else:
                    self._add(self.refusals, r["reason"] or "-", 1)
                    if r["ticket_id"] and r["kind"] == "scan":
                        refused_tickets.add(r["ticket_id"])
            elif r["kind"] == "rollback" and r["ref"] is not None:
                undone = db.one(
                    "SELECT s.kind AS kind, s.mode AS mode, s.decision AS decision, s.lane AS lane, s.ts_ms AS ts_ms,"
                    " s.ticket_id AS ticket_id,"
                    " (SELECT count(*) FROM scans r WHERE r.kind = 'rollback' AND r.device_id = s.device_id"
                    "  AND r.ref = s.seq AND r.id < :id) AS before"
                    " FROM scans s WHERE s.device_id = :d AND s.seq = :ref",
                    {"d": r["device_id"], "ref": r["ref"], "id": r["id"]})
                if undone and undone["kind"] in ("scan", "override") and undone["decision"] == "accept" \
                        and not undone["before"]:
                    self._count(undone, -1, now_ms)
                    if undone["ticket_id"] and undone["mode"] == "entry":
                        admitted_tickets.add(undone["ticket_id"])
        for tickets in _chunks(sorted(admitted_tickets)):
            found = {d["ticket_id"]: d for d in _double_admissions(db, self.event, tickets)}
            for t in tickets:
                if t in found:
                    self.over[t] = found[t]
                else:
                    self.over.pop(t, None)
        for tickets in _chunks(sorted(refused_tickets)):
            for d in _shared_codes(db, self.event, tickets):
                self.shared[d["ticket_id"]] = d
        low = (now_ms - KEEP_MS) // BUCKET_MS
        for k in [k for k in self.buckets if k[1] < low]:
            del self.buckets[k]

    def _count(self, r: dict, n: int, now_ms: int) -> None:
        self._add(self.modes, r["mode"], n)
        self._add(self.lanes, r["lane"] or "-", n)
        if r["mode"] == "entry" and r["ts_ms"] is not None and r["ts_ms"] >= now_ms - KEEP_MS:
            self._add(self.buckets, (r["lane"] or "-", r["ts_ms"] // BUCKET_MS), n)


def _chunks(items: list, n: int = 500):
    for i in range(0, len(items), n):
        yield items[i:i + n]


class Live:
    """One EventState per event, shared by every viewer of this server."""

    def __init__(self):
        self.states: dict[str, EventState] = {}
        self.lock = threading.Lock()

    def state(self, db, event: str, now: float) -> EventState:
        """A private snapshot of the event's state, refreshed to ``now`` (never the shared object:
        doors()/alerts() iterate it outside the lock while other viewers refresh)."""
        with self.lock:  # one refresh at a time; viewers polling together share it
            st = self.states.get(event)
            if st is None:
                st = self.states[event] = EventState(event)
            try:
                st.refresh(db, int(now * 1000))
            except BaseException:
                del self.states[event]  # half-applied: start again from SQL next time
                raise
            return st.snapshot()


def doors(db, st: EventState, now: float, gs: list[dict] | None = None) -> dict:
    now_ms = int(now * 1000)
    lo = (now_ms - 3600_000) // BUCKET_MS
    # the chart ends now, or at the newest admission when a gate's clock runs ahead (at most an hour)
    newest = max((b for (_, b), n in st.buckets.items() if n > 0 and b * BUCKET_MS <= now_ms + 3600_000),
                 default=0) * BUCKET_MS
    end_ms = max(now_ms, newest)
    minutes: dict[tuple[str, int], int] = {}
    for (lane, b), n in st.buckets.items():
        if lo <= b and b * BUCKET_MS <= end_ms:
            k = (lane, b * BUCKET_MS // 60000)
            minutes[k] = minutes.get(k, 0) + n
    cap = db.one("SELECT capacity FROM ops_capacity WHERE event = :e", {"e": st.event})
    entries, exits = st.modes.get("entry", 0), st.modes.get("exit", 0)
    return {"event": st.event, "admitted": entries, "exits": exits, "inside": entries - exits,
            "capacity": cap["capacity"] if cap else None, "per_lane": dict(sorted(st.lanes.items())),
            "refusals": dict(sorted(st.refusals.items(), key=lambda kv: (-kv[1], kv[0]))),
            "scans": st.scans, "minutes": [{"lane": ln, "m": m, "n": n} for (ln, m), n in minutes.items()],
            "now_minute": end_ms // 60000, "ahead": end_ms > now_ms,
            "notable": notable(db, st, now, gs)[:20]}


def _double_admissions(db, event: str, tickets: list[str] | None) -> list[dict]:
    """Over-admitted tickets (all of them, or among ``tickets``) with their admissions."""
    where, params = "", {"e": event}
    if tickets is not None:
        lst, p = _in("t", tickets)
        where, params = f" AND s.ticket_id IN {lst}", {**params, **p}
    over = db.all(
        f"""SELECT s.ticket_id AS ticket_id, sum(s.consumes) AS used, coalesce(t.entries, 1) AS allowed
            {ADMITTED.replace('FROM scans s', 'FROM scans s LEFT JOIN tickets t ON t.ticket_id = s.ticket_id')}
            AND s.mode = 'entry' AND s.ticket_id IS NOT NULL{where}
            GROUP BY s.ticket_id, coalesce(t.entries, 1)
            HAVING coalesce(t.entries, 1) > 0 AND sum(s.consumes) > coalesce(t.entries, 1)""", params)
    out = []
    for o in over:
        adms = db.all(f"SELECT s.device_id AS device_id, s.lane AS lane, s.ts_ms AS ts_ms, s.consumes AS consumes"
                      f" {ADMITTED} AND s.mode = 'entry' AND s.ticket_id = :t ORDER BY s.ts_ms",
                      {"e": event, "t": o["ticket_id"]})
        used = 0
        for a in adms:
            used += a["consumes"]
            if used > o["allowed"]:  # the admission that went over
                out.append({**o, "used": int(o["used"]), "at_ms": a["ts_ms"], "device_id": a["device_id"],
                            "lane": a["lane"], "admissions": adms})
                break
    return out


def quarantined(db, event: str) -> list[dict]:
    """Devices central quarantined (implausible uploads): their admissions are not propagated."""
    return db.all("SELECT device_id, status, quarantined_at, quarantine_reason FROM devices"
                  " WHERE event = :e AND quarantined_at IS NOT NULL ORDER BY quarantined_at", {"e": event})


def gates(db, event: str, now: float) -> list[dict]:
    """One row per device; each lookup is an index seek on (device_id, seq), whatever the scan count.
    Chains stored at central have no gaps (an upload that would leave one is refused), so the
    chain state is whether uploads of this device were refused (edited, forked, wrong key)."""
    now_ms = int(now * 1000)
    last = "(SELECT s.{col} FROM scans s WHERE s.device_id = d.device_id ORDER BY s.seq DESC LIMIT 1)"
    rows = db.all(
        f"""SELECT d.device_id AS device_id, d.status AS status, d.enrolled_at AS enrolled_at,
                  d.quarantined_at AS quarantined_at, d.quarantine_reason AS quarantine_reason,
                  g.last_contact AS last_contact, g.link AS link, g.outbox AS outbox,
                  g.clock_offset_ms AS clock_offset_ms, g.ledger_age_s AS ledger_age_s,
                  g.reported_at AS reported_at,
                  {last.format(col="received")} AS last_upload, {last.format(col="ts_ms")} AS last_scan_ms,
                  {last.format(col="lane")} AS lane, {last.format(col="seq")} AS records,
                  (SELECT count(*) FROM problems p WHERE p.device_id = d.device_id) AS problems
           FROM devices d LEFT JOIN ops_gate_status g ON g.device_id = d.device_id
           WHERE d.event = :e ORDER BY d.enrolled_at, d.device_id""", {"e": event})
    doors_open = any(g["last_scan_ms"] is not None and abs(now_ms - g["last_scan_ms"]) <= OPEN_WINDOW_S * 1000
                     for g in rows)
    for g in rows:
        contact = max(x for x in (g["last_contact"], g["last_upload"], g["enrolled_at"]) if x is not None)
        g["last_contact"] = contact
        g["silent_s"] = max(0.0, now - contact)
        g["chain"] = f"refused upload ({g['problems']})" if g["problems"] else "ok"
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


def lane_rates(st: EventState, now: float) -> dict[str, tuple[float, float]]:
    """Per lane: (admissions per minute over the last 2 min, over the 10 min before)."""
    now_b = int(now * 1000) // BUCKET_MS
    r0 = now_b - STALL_RECENT_S * 1000 // BUCKET_MS
    b0 = r0 - STALL_BASE_S * 1000 // BUCKET_MS
    rates: dict[str, list[int]] = {}
    for (lane, b), n in st.buckets.items():
        if b0 <= b <= now_b:
            rates.setdefault(lane, [0, 0])[0 if b >= r0 else 1] += n
    return {ln: (r * 60 / STALL_RECENT_S, base * 60 / STALL_BASE_S) for ln, (r, base) in rates.items()}


def _shared_codes(db, event: str, tickets: list[str] | None) -> list[dict]:
    """Tickets (all, or among ``tickets``) refused at SHARED_LANES lanes within a minute (a code going round)."""
    where, params = "", {"e": event, "k": SHARED_LANES}
    if tickets is not None:
        lst, p = _in("t", tickets)
        where, params = f" AND ticket_id IN {lst}", {**params, **p}
    cands = db.all(
        "SELECT ticket_id FROM scans WHERE event = :e AND kind = 'scan' AND decision <> 'accept'"
        f" AND ticket_id IS NOT NULL{where} GROUP BY ticket_id"
        " HAVING count(DISTINCT coalesce(lane, device_id)) >= :k", params)
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


def alerts(db, st: EventState, now: float, gs: list[dict] | None = None) -> list[dict]:
    """Alerts, most severe first: each {level, kind, text, at}."""
    out = []
    rates = lane_rates(st, now)
    for lane, (recent, base) in sorted(rates.items()):
        others_flow = any(r > 0 for ln, (r, _) in rates.items() if ln != lane)
        if base >= STALL_MIN_BASE and recent < base * 0.5 and others_flow:
            out.append({"level": "warn", "kind": "lane stalled", "at": now,
                        "text": f"lane {lane}: {recent:.1f}/min in the last {STALL_RECENT_S // 60} min against "
                                f"{base:.1f}/min over the {STALL_BASE_S // 60} min before "
                                f"(−{100 - 100 * recent / base:.0f} %) while other lanes flow"})
    gs = gates(db, st.event, now) if gs is None else gs
    scanning = [g for g in gs if g["last_scan_ms"] and abs(now * 1000 - g["last_scan_ms"]) <= AMBER_S * 1000]
    for g in gs:
        if g["state"] in ("silent", "dark") and any(o["device_id"] != g["device_id"] for o in scanning):
            out.append({"level": "crit" if g["state"] == "dark" else "warn", "kind": "gate silent",
                        "at": g["last_contact"],
                        "text": f"gate {g['device_id']} (lane {g['lane'] or '—'}) silent for "
                                f"{int(g['silent_s'])} s while other gates scan"})
    for d in st.over.values():
        out.append({"level": "crit", "kind": "double admission", "at": d["at_ms"] / 1000,
                    "ticket_id": d["ticket_id"],
                    "text": f"ticket {d['ticket_id']} admitted {d['used']}× (allowed {d['allowed']}) at "
                            + ", ".join(sorted({f"{a['device_id']}/{a['lane']}" for a in d["admissions"]}))})
    for q in quarantined(db, st.event):
        out.append({"level": "crit", "kind": "device quarantined", "at": q["quarantined_at"],
                    "text": f"gate {q['device_id']} is quarantined ({q['quarantine_reason'] or 'implausible uploads'}):"
                            " its admissions are not propagated; release with 'gate central device release'"})
    for s in st.shared.values():
        out.append({"level": "warn", "kind": "shared code", "at": s["at_ms"] / 1000, "ticket_id": s["ticket_id"],
                    "text": f"ticket {s['ticket_id']} refused at {len(s['lanes'])} lanes within a minute "
                            f"({', '.join(s['lanes'])}): a shared code going round?"})
    order = {"crit": 0, "warn": 1}
    out.sort(key=lambda a: (order[a["level"]], -(a["at"] or 0)))
    return out


def notable(db, st: EventState, now: float, gs: list[dict] | None = None) -> list[dict]:
    """Double admissions, quarantined devices, gates gone dark, refused uploads; newest first."""
    out = []
    for d in st.over.values():
        out.append({"at": d["at_ms"] / 1000, "kind": "double admission",
                    "text": f"ticket {d['ticket_id'][:12]}… admitted {d['used']}× at {d['device_id']}/{d['lane']}"})
    for q in quarantined(db, st.event):
        out.append({"at": q["quarantined_at"], "kind": "quarantined device",
                    "text": f"gate {q['device_id']}: {q['quarantine_reason'] or 'implausible uploads'}"})
    for g in gates(db, st.event, now) if gs is None else gs:
        if g["state"] == "dark":
            out.append({"at": g["last_contact"] + RED_S, "kind": "gate gone dark",
                        "text": f"gate {g['device_id']} (lane {g['lane'] or '—'}) silent {int(g['silent_s'])} s"})
    for p in db.all("SELECT device_id, kind, detail, at FROM problems WHERE event = :e ORDER BY id DESC LIMIT 20",
                    {"e": st.event}):
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


def _version(record) -> int | None:
    """The credential version the holder showed, from the stored record (reissues bump it)."""
    try:
        v = cbor2.loads(bytes(record)).get("version")
    except Exception:
        return None
    return v if isinstance(v, int) else None


def ticket_history(db, event: str, ticket_id: str) -> dict | None:
    t = db.one("SELECT ticket_id, tier, zone, version, status, entries, holder, revoked_at FROM tickets"
               " WHERE ticket_id = :t AND event = :e", {"t": ticket_id, "e": event})
    rows = db.all(
        """SELECT s.ts_ms AS ts_ms, s.device_id AS device_id, s.lane AS lane, s.seq AS seq, s.kind AS kind,
                  s.mode AS mode, s.decision AS decision, s.reason AS reason, s.received AS received,
                  s.record AS record
           FROM scans s WHERE s.event = :e AND s.ticket_id = :t
           UNION ALL
           SELECT r.ts_ms, r.device_id, r.lane, r.seq, r.kind, r.mode, r.decision, r.reason, r.received, r.record
           FROM scans r JOIN scans s ON s.device_id = r.device_id AND r.ref = s.seq
           WHERE r.kind = 'rollback' AND s.event = :e AND s.ticket_id = :t
           ORDER BY 1, 2, 4""", {"e": event, "t": ticket_id})
    if t is None and not rows:
        return None
    hist = [{**r, "at": (r["ts_ms"] or 0) / 1000, "version": _version(r.pop("record"))} for r in rows]
    if t and t["version"] > 1:  # the store keeps the current version, not when each reissue happened
        hist.append({"at": None, "kind": "reissue", "reason": f"now version {t['version']}"
                     f" ({t['version'] - 1} reissue{'s' if t['version'] > 2 else ''}; central keeps no time for it)"})
    if t and t["revoked_at"]:
        hist.append({"at": t["revoked_at"], "kind": "revocation", "reason": "revoked by central"})
    hist.sort(key=lambda h: (h["at"] is None, h["at"] or 0))
    return {"ticket": t, "history": hist}
