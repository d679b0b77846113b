"""What the ops pages show, computed on central from the uploaded scans.

Portable SQL only (SQLite and PostgreSQL): ``:name`` parameters, no date
functions; times are bucketed with integer arithmetic on ``ts_ms``.
"""

from __future__ import annotations

import threading

import cbor2

from sync.central.reconcile import ACCEPTED, ADMISSION, NO_LANE, REFUSAL, is_decision, over_admitted

AMBER_S = 120   # silence before a gate's row turns amber (while doors are open)
RED_S = 300     # ... and red
OPEN_WINDOW_S = 600  # doors count as open when any gate of the event scanned this recently
STALL_RECENT_S = 120  # a lane's current rate: the last 2 minutes ...
STALL_BASE_S = 600    # ... against its own 10 minutes before that
STALL_MIN_BASE = 2.0  # per minute: below this a lane is too quiet to call stalled (late at night) ...
STALL_MIN_MISSING = 4  # ... and at least this many admissions short of its own pace
REFUSE_RECENT_S = 300   # a lane's refusal share: the last 5 minutes ...
REFUSE_BASE_S = 1800    # ... against its own 30 minutes before, and against the other lanes now
REFUSE_MIN_DECISIONS = 8  # fewer decisions than this in the window: too few to judge
REFUSE_MIN_SHARE = 0.5    # a lane refusing at least half ...
REFUSE_FACTOR = 2.0       # ... and twice its own and the venue's share
MAX_LANES_SHOWN = 24    # lanes named on a page (the busiest); the rest are counted, not rendered
MAX_LANE_CHARS = 40     # a lane name is cut to this many characters
MAX_LANE_ALERTS = 10    # lane alerts of one kind at once (the worst)
CHART_LANES = 8         # lines on the chart (the busiest lanes of the hour)
SHARED_LANES, SHARED_WINDOW_MS = 3, 60_000

# the report's definitions (sync/central/reconcile.py): accepted and not rolled back
ACCEPTED_FROM = f" FROM scans s WHERE s.event = :e AND {ACCEPTED}"
ADMITTED = f" FROM scans s WHERE s.event = :e AND {ADMISSION}"


BUCKET_MS = 10_000       # admissions are kept per lane in 10-second buckets ...
KEEP_MS = 2 * 3600_000   # ... for the last two hours (the chart shows one)
NOTABLE_KEEP = 40
NOTABLE_REASONS = ("BAD_SIGNATURE", "BAD_PROOF")  # forged or copied codes
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
        self.lanes: dict[str, int] = {}          # admissions per lane
        self.lane_refused: dict[str, int] = {}   # refusals per lane
        self.refusals: dict[str, int] = {}       # refusals per reason
        self.scans = 0
        self.buckets: dict[tuple[str, int], int] = {}   # admissions per (lane, 10 s)
        self.rbuckets: dict[tuple[str, int], int] = {}  # refusals per (lane, 10 s)
        self.notable_ids: list[int] = []   # the newest notable records (manual, control, forged), by id
        self.over: dict[str, dict] = {}    # double admissions by ticket
        self.shared: dict[str, dict] = {}  # tickets refused at 3 lanes within a minute

    def snapshot(self) -> "EventState":
        """A copy for one viewer, taken under Live's lock: the views iterate it while
        another viewer's refresh mutates the shared state."""
        c = EventState(self.event)
        c.last_id, c.scans = self.last_id, self.scans
        c.modes, c.lanes, c.refusals = dict(self.modes), dict(self.lanes), dict(self.refusals)
        c.lane_refused, c.rbuckets = dict(self.lane_refused), dict(self.rbuckets)
        c.notable_ids = list(self.notable_ids)
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
            f"SELECT s.mode AS mode, count(*) AS n {ACCEPTED_FROM} GROUP BY s.mode", e)}
        self.lanes = {r["lane"]: r["n"] for r in db.all(
            f"SELECT coalesce(s.lane, '{NO_LANE}') AS lane, count(*) AS n {ADMITTED}"
            f" GROUP BY coalesce(s.lane, '{NO_LANE}')", e)}
        self.refusals, self.lane_refused = {}, {}
        for r in db.all(f"SELECT s.reason AS reason, coalesce(s.lane, '{NO_LANE}') AS lane, count(*) AS n"
                        f" FROM scans s WHERE s.event = :e AND {REFUSAL} GROUP BY s.reason, coalesce(s.lane, '{NO_LANE}')", e):
            self._add(self.refusals, r["reason"] or "-", r["n"])
            self._add(self.lane_refused, r["lane"], r["n"])
        self.scans = db.one("SELECT count(*) AS n FROM scans WHERE event = :e AND kind IN ('scan', 'override')",
                            e)["n"]
        self.buckets = {(r["lane"], r["b"]): r["n"] for r in db.all(
            f"SELECT coalesce(s.lane, '{NO_LANE}') AS lane, s.ts_ms / {BUCKET_MS} AS b, count(*) AS n {ADMITTED}"
            f" AND s.ts_ms >= :since GROUP BY coalesce(s.lane, '{NO_LANE}'), s.ts_ms / {BUCKET_MS}",
            {**e, "since": now_ms - KEEP_MS})}
        self.rbuckets = {(r["lane"], r["b"]): r["n"] for r in db.all(
            f"SELECT coalesce(s.lane, '{NO_LANE}') AS lane, s.ts_ms / {BUCKET_MS} AS b, count(*) AS n"
            f" FROM scans s WHERE s.event = :e AND {REFUSAL}"
            f" AND s.ts_ms >= :since GROUP BY coalesce(s.lane, '{NO_LANE}'), s.ts_ms / {BUCKET_MS}",
            {**e, "since": now_ms - KEEP_MS})}
        rl, rp = _in("r", list(NOTABLE_REASONS))
        self.notable_ids = sorted(r["id"] for r in db.all(
            "SELECT id FROM scans WHERE event = :e AND (kind IN ('override', 'control')"
            f" OR (kind = 'scan' AND reason IN {rl})) ORDER BY id DESC LIMIT :n", {**e, **rp, "n": NOTABLE_KEEP}))
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
            if r["kind"] in ("override", "control") or r["kind"] == "scan" and r["reason"] in NOTABLE_REASONS:
                self.notable_ids.append(r["id"])
                del self.notable_ids[:-NOTABLE_KEEP]
            if is_decision(r["kind"]):
                self.scans += 1
                if r["decision"] == "accept":
                    self._count(r, +1, now_ms)
                    if r["ticket_id"] and r["mode"] == "entry":
                        admitted_tickets.add(r["ticket_id"])
                else:
                    lane = r["lane"] or NO_LANE
                    self._add(self.refusals, r["reason"] or "-", 1)
                    self._add(self.lane_refused, lane, 1)
                    if r["ts_ms"] is not None and r["ts_ms"] >= now_ms - KEEP_MS:
                        self._add(self.rbuckets, (lane, r["ts_ms"] // BUCKET_MS), 1)
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
        for bk in (self.buckets, self.rbuckets):
            for k in [k for k in bk if k[1] < low]:
                del bk[k]

    def _count(self, r: dict, n: int, now_ms: int) -> None:
        """An accepted decision (+1) or its rollback (-1): exits count as exits, never as admissions."""
        self._add(self.modes, r["mode"], n)
        if r["mode"] != "entry":
            return
        self._add(self.lanes, r["lane"] or NO_LANE, n)
        if r["ts_ms"] is not None and r["ts_ms"] >= now_ms - KEEP_MS:
            self._add(self.buckets, (r["lane"] or NO_LANE, r["ts_ms"] // BUCKET_MS), n)


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


def lane_label(lane: str) -> str:
    """A lane name as a page may show it: at most MAX_LANE_CHARS characters."""
    return lane if len(lane) <= MAX_LANE_CHARS else lane[:MAX_LANE_CHARS - 1] + "…"


def bounded_lanes(admitted: dict[str, int], refused: dict[str, int]) -> tuple[list[dict], dict]:
    """The lane table: the MAX_LANES_SHOWN busiest lanes by name; the rest counted, not named
    (a device may write any number of lane names: the page stays small)."""
    names = sorted(set(admitted) | set(refused), key=lambda ln: (-(admitted.get(ln, 0) + refused.get(ln, 0)), ln))
    shown, rest = names[:MAX_LANES_SHOWN], names[MAX_LANES_SHOWN:]
    rows = []
    for ln in sorted(shown):
        a, r = admitted.get(ln, 0), refused.get(ln, 0)
        rows.append({"lane": ln, "label": lane_label(ln), "admitted": a, "refused": r,
                     "share": r / (a + r) if a + r else 0.0})
    more = {"lanes": len(rest), "admitted": sum(admitted.get(ln, 0) for ln in rest),
            "refused": sum(refused.get(ln, 0) for ln in rest)}
    return rows, more


def doors(db, st: EventState, now: float, gs: list[dict] | None = None) -> dict:
    """Everything Doors shows. Every number comes from ``st`` (the report's definitions,
    sync/central/reconcile.py): the cards, the lane table and the chart agree."""
    now_ms = int(now * 1000)
    lo = (now_ms - 3600_000) // BUCKET_MS
    # the chart ends now, or at the newest admission when a gate's clock runs ahead (at most an hour)
    newest = max((b for (_, b), n in st.buckets.items() if n > 0 and b * BUCKET_MS <= now_ms + 3600_000),
                 default=0) * BUCKET_MS
    end_ms = max(now_ms, newest)
    minutes: dict[tuple[str, int], int] = {}
    hour: dict[str, int] = {}
    for (lane, b), n in st.buckets.items():
        if lo <= b and b * BUCKET_MS <= end_ms:
            k = (lane, b * BUCKET_MS // 60000)
            if end_ms // 60000 - k[1] < 60:
                minutes[k] = minutes.get(k, 0) + n
                hour[lane] = hour.get(lane, 0) + n
    cap = db.one("SELECT capacity FROM ops_capacity WHERE event = :e", {"e": st.event})
    entries, exits = st.modes.get("entry", 0), st.modes.get("exit", 0)
    rows, more = bounded_lanes(st.lanes, st.lane_refused)
    for r in rows:
        r["hour"] = hour.get(r["lane"], 0)
    more["hour"] = sum(n for ln, n in hour.items() if ln not in {r["lane"] for r in rows})
    chart_lanes = sorted(sorted(hour, key=lambda ln: (-hour[ln], ln))[:CHART_LANES])
    return {"event": st.event, "admitted": entries, "exits": exits, "inside": entries - exits,
            "refused": sum(st.lane_refused.values()),
            "capacity": cap["capacity"] if cap else None, "lanes": rows, "more_lanes": more,
            "per_lane": dict(sorted(st.lanes.items())),
            "refusals": dict(sorted(st.refusals.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_LANES_SHOWN]),
            "more_reasons": sum(n for _, n in sorted(st.refusals.items(), key=lambda kv: (-kv[1], kv[0]))[MAX_LANES_SHOWN:]),
            "scans": st.scans, "hour": sum(hour.values()),
            "minutes": [{"lane": ln, "m": m, "n": n} for (ln, m), n in minutes.items() if ln in chart_lanes],
            "chart_lanes": chart_lanes, "chart_more": max(0, len(hour) - len(chart_lanes)),
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
            HAVING {over_admitted("sum(s.consumes)")}""", params)
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


def names(db, event: str | None = None) -> dict[str, str]:
    """Gate names (``gate central device name``) by device id."""
    return {r["device_id"]: r["name"] for r in db.all("SELECT device_id, name FROM ops_gate_names")}


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
                  g.reported_at AS reported_at, n.name AS name,
                  {last.format(col="received")} AS last_upload, {last.format(col="ts_ms")} AS last_scan_ms,
                  {last.format(col="lane")} AS lane, {last.format(col="seq")} AS records,
                  (SELECT count(*) FROM problems p WHERE p.device_id = d.device_id) AS problems
           FROM devices d LEFT JOIN ops_gate_status g ON g.device_id = d.device_id
           LEFT JOIN ops_gate_names n ON n.device_id = d.device_id
           WHERE d.event = :e ORDER BY d.enrolled_at, d.device_id""", {"e": event})
    doors_open = any(g["last_scan_ms"] is not None and abs(now_ms - g["last_scan_ms"]) <= OPEN_WINDOW_S * 1000
                     for g in rows)
    for g in rows:
        contact = max(x for x in (g["last_contact"], g["last_upload"], g["enrolled_at"]) if x is not None)
        g["last_contact"] = contact
        g["label"] = g["name"] or g["device_id"]
        g["silent_s"] = max(0.0, now - contact)
        g["chain"] = f"refused upload ({g['problems']})" if g["problems"] else "ok"
        g["quarantined"] = g["quarantined_at"] is not None
        # what the gate reported is only as good as its last contact: a silent gate's link is unknown
        g["link_stale"] = g["link"] is not None and g["silent_s"] >= AMBER_S
        if g["ledger_age_s"] is not None and g["reported_at"] is not None:
            g["ledger_age_s"] = g["ledger_age_s"] + max(0.0, now - g["reported_at"])
        g["last_admission_ms"] = None
        if g["status"] != "active":  # only then: a revoked gate whose admissions keep arriving
            g["last_admission_ms"] = db.one(f"SELECT max(s.ts_ms) AS m FROM scans s WHERE s.device_id = :d"
                                            f" AND s.ts_ms >= :since AND {ADMISSION}",
                                            {"d": g["device_id"], "since": now_ms - OPEN_WINDOW_S * 1000})["m"]
        recent_adm = g["last_admission_ms"] is not None and abs(now_ms - g["last_admission_ms"]) <= OPEN_WINDOW_S * 1000
        if g["status"] != "active":
            g["state"] = "revoked_admitting" if recent_adm else "revoked"
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


def stalled(st: EventState, now: float) -> list[dict]:
    """Lanes admitting at under half their own pace of the 10 minutes before while other lanes flow.
    Quiet lanes are left alone (late at night a lane with a person every few minutes is not
    stalled): the lane's own pace must be at least STALL_MIN_BASE a minute and it must be
    STALL_MIN_MISSING admissions short. ``since``: its last admission, or when the slow spell began."""
    rates = lane_rates(st, now)
    out = []
    now_b = int(now * 1000) // BUCKET_MS
    r0 = now_b - STALL_RECENT_S * 1000 // BUCKET_MS
    for lane, (recent, base) in sorted(rates.items()):
        others_flow = any(r > 0 for ln, (r, _) in rates.items() if ln != lane)
        missing = (base - recent) * STALL_RECENT_S / 60
        if base >= STALL_MIN_BASE and recent < base * 0.5 and missing >= STALL_MIN_MISSING and others_flow:
            last = max((b for (ln, b), n in st.buckets.items() if ln == lane and n > 0 and b <= now_b), default=None)
            since = (last + 1) * BUCKET_MS / 1000 if last is not None and last < r0 or recent == 0 and last \
                else r0 * BUCKET_MS / 1000
            out.append({"lane": lane, "recent": recent, "base": base, "since": since})
    out.sort(key=lambda r: r["recent"] - r["base"])
    return out[:MAX_LANE_ALERTS]  # the worst; a device inventing lanes cannot flood the alerts


def _window(bk: dict, lane: str | None, lo: int, hi: int) -> int:
    return sum(n for (ln, b), n in bk.items() if lo <= b < hi and (lane is None or ln == lane))


def refusing(st: EventState, now: float) -> list[dict]:
    """Lanes refusing far more than usual: over the last REFUSE_RECENT_S, at least
    REFUSE_MIN_DECISIONS decisions, a refusal share of at least REFUSE_MIN_SHARE, and at
    least REFUSE_FACTOR times both the lane's own share of the REFUSE_BASE_S before and
    the other lanes' share now (a wrong-day crowd refused everywhere is not one lane's fault)."""
    now_b = int(now * 1000) // BUCKET_MS + 1
    r0 = now_b - REFUSE_RECENT_S * 1000 // BUCKET_MS
    b0 = r0 - REFUSE_BASE_S * 1000 // BUCKET_MS
    lanes = {ln for (ln, b) in st.rbuckets if b >= r0}
    out = []
    for lane in sorted(lanes):
        ref, adm = _window(st.rbuckets, lane, r0, now_b), _window(st.buckets, lane, r0, now_b)
        if ref + adm < REFUSE_MIN_DECISIONS:
            continue
        share = ref / (ref + adm)
        oref = _window(st.rbuckets, None, r0, now_b) - ref
        oadm = _window(st.buckets, None, r0, now_b) - adm
        venue = oref / (oref + oadm) if oref + oadm else 0.0
        bref, badm = _window(st.rbuckets, lane, b0, r0), _window(st.buckets, lane, b0, r0)
        own = bref / (bref + badm) if bref + badm >= REFUSE_MIN_DECISIONS else 0.0
        if share >= REFUSE_MIN_SHARE and share >= REFUSE_FACTOR * venue and share >= REFUSE_FACTOR * own:
            first = min(b for (ln, b), n in st.rbuckets.items() if ln == lane and b >= r0 and n > 0)
            out.append({"lane": lane, "refused": ref, "admitted": adm, "share": share, "venue": venue, "own": own,
                        "since": first * BUCKET_MS / 1000})
    out.sort(key=lambda r: (-r["share"], -r["refused"]))
    return out[:MAX_LANE_ALERTS]  # the worst; a device inventing lanes cannot flood the alerts


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
    """Open alerts, most severe first: each {key, level, kind, at, params, ticket_id?}. ``kind`` is a
    stable code (views.ALERT_WORDS says it in words); ``at`` is when the condition began;
    ``key`` identifies the same alert from one refresh to the next (acknowledgements keep to it)."""
    out = []
    gs = gates(db, st.event, now) if gs is None else gs
    label = {g["device_id"]: g["label"] for g in gs}
    for r in refusing(st, now):
        out.append({"key": f"lane_refusing:{lane_label(r['lane'])}", "kind": "lane_refusing", "at": r["since"],
                    "level": "crit" if r["share"] >= 0.9 else "warn", "lane": r["lane"],
                    "params": {"lane": lane_label(r["lane"]), "refused": r["refused"],
                               "decisions": r["refused"] + r["admitted"], "share": round(100 * r["share"]),
                               "venue": round(100 * r["venue"]), "minutes": REFUSE_RECENT_S // 60}})
    for r in stalled(st, now):
        out.append({"key": f"lane_stalled:{lane_label(r['lane'])}", "kind": "lane_stalled", "level": "warn", "at": r["since"],
                    "lane": r["lane"],
                    "params": {"lane": lane_label(r["lane"]), "recent": f"{r['recent']:.1f}", "base": f"{r['base']:.1f}",
                               "minutes": STALL_RECENT_S // 60, "base_minutes": STALL_BASE_S // 60}})
    scanning = [g for g in gs if g["last_scan_ms"] and abs(now * 1000 - g["last_scan_ms"]) <= AMBER_S * 1000]
    for g in gs:
        if g["state"] in ("silent", "dark") and any(o["device_id"] != g["device_id"] for o in scanning):
            out.append({"key": f"gate_silent:{g['device_id']}", "kind": "gate_silent", "at": g["last_contact"],
                        "level": "crit" if g["state"] == "dark" else "warn",
                        "params": {"gate": g["label"], "lane": lane_label(g["lane"] or "—"),
                                   "seconds": int(g["silent_s"])}})
        if g["state"] == "revoked_admitting":
            out.append({"key": f"revoked_admitting:{g['device_id']}", "kind": "revoked_admitting", "level": "crit",
                        "at": g["last_admission_ms"] / 1000, "params": {"gate": g["label"]}})
    for d in st.over.values():
        where = ", ".join(sorted({f"{label.get(a['device_id'], a['device_id'])}/{lane_label(a['lane'] or '—')}"
                                  for a in d["admissions"]}))
        out.append({"key": f"double_admission:{d['ticket_id']}", "kind": "double_admission", "level": "crit",
                    "at": d["at_ms"] / 1000, "ticket_id": d["ticket_id"],
                    "params": {"ticket": d["ticket_id"], "used": d["used"], "allowed": d["allowed"], "where": where}})
    for q in quarantined(db, st.event):
        out.append({"key": f"device_quarantined:{q['device_id']}", "kind": "device_quarantined", "level": "crit",
                    "at": q["quarantined_at"],
                    "params": {"gate": label.get(q["device_id"], q["device_id"]),
                               "why": q["quarantine_reason"] or "implausible uploads"}})
    for s_ in st.shared.values():
        out.append({"key": f"shared_code:{s_['ticket_id']}", "kind": "shared_code", "level": "warn",
                    "at": s_["at_ms"] / 1000, "ticket_id": s_["ticket_id"],
                    "params": {"ticket": s_["ticket_id"], "n": len(s_["lanes"]),
                               "lanes": ", ".join(lane_label(x) for x in s_["lanes"])}})
    order = {"crit": 0, "warn": 1}
    out.sort(key=lambda a: (order[a["level"]], -(a["at"] or 0)))
    return out


class AlertBook:
    """Alerts as records (table ops_alerts): when each began, when it ended, who acknowledged it
    with what note. Written only when the set of open alerts changes, so viewers polling every
    second cost no writes."""

    def __init__(self):
        self.seen: dict[str, frozenset] = {}
        self.lock = threading.Lock()

    def sync(self, db, event: str, current: list[dict], now: float) -> list[dict]:
        """Record ``current`` (opening new ones, closing gone ones); return it with each alert's
        record (started, acked_by, acked_at, note)."""
        keys = frozenset(a["key"] for a in current)
        with self.lock:
            if self.seen.get(event) != keys:
                with db.writer() as w:
                    open_ = {r["alert_key"]: r for r in w.all(
                        "SELECT alert_key, started FROM ops_alerts WHERE event = :e AND ended IS NULL", {"e": event})}
                    for a in current:
                        if a["key"] not in open_:
                            w.run("INSERT INTO ops_alerts (event, alert_key, level, kind, subject, started, last_seen)"
                                  " VALUES (:e, :k, :l, :kind, :s, :t, :now)",
                                  {"e": event, "k": a["key"], "l": a["level"], "kind": a["kind"],
                                   "s": a["key"].partition(":")[2][:200], "t": min(a["at"] or now, now), "now": now})
                    for k in set(open_) - keys:
                        w.run("UPDATE ops_alerts SET ended = :now, last_seen = :now WHERE event = :e"
                              " AND alert_key = :k AND ended IS NULL", {"e": event, "k": k, "now": now})
                self.seen[event] = keys
        with db.reader() as r:
            rec = {x["alert_key"]: x for x in r.all(
                "SELECT alert_key, started, acked_by, acked_at, note FROM ops_alerts WHERE event = :e AND ended IS NULL",
                {"e": event})}
        for a in current:
            x = rec.get(a["key"], {})
            a["started"] = x.get("started", a["at"])
            a["acked_by"], a["acked_at"], a["note"] = x.get("acked_by"), x.get("acked_at"), x.get("note")
        return current

    def forget(self, event: str) -> None:
        with self.lock:
            self.seen.pop(event, None)


def acknowledge(db, event: str, key: str, *, by: str, note: str, now: float) -> bool:
    with db.writer() as w:
        return w.run("UPDATE ops_alerts SET acked_by = :b, acked_at = :t, note = :n WHERE event = :e"
                     " AND alert_key = :k AND ended IS NULL", {"e": event, "k": key, "b": by, "t": now, "n": note}) > 0


def alert_history(db, event: str, limit: int = 200) -> list[dict]:
    return db.all("SELECT alert_key, level, kind, subject, started, ended, acked_by, acked_at, note FROM ops_alerts"
                  " WHERE event = :e ORDER BY started DESC LIMIT :n", {"e": event, "n": limit})


NOTABLE_CONTROL = ("mode", "pause", "resume", "pin_lockout", "biometrics", "relay_fault", "sensor_fault",
                   "store_fault", "fault_cleared", "fire_alarm", "fire_alarm_end")


def _record(blob) -> dict:
    try:
        rec = cbor2.loads(bytes(blob))
    except Exception:
        return {}
    return rec if isinstance(rec, dict) else {}


def notable(db, st: EventState, now: float, gs: list[dict] | None = None) -> list[dict]:
    """Double admissions, manual decisions (with the operator), forged and copied codes,
    admissions of cancelled tickets, staff commands (mode, pause, resume), relay/sensor faults
    and fire alarms from the gates, quarantined devices, gates gone dark, refused uploads;
    newest first. Each {at, kind, params}; views.NOTABLE_WORDS says it in words."""
    out = []
    gs = gates(db, st.event, now) if gs is None else gs
    label = {g["device_id"]: g["label"] for g in gs}
    for d in st.over.values():
        out.append({"at": d["at_ms"] / 1000, "kind": "double_admission", "ticket_id": d["ticket_id"],
                    "params": {"ticket": d["ticket_id"][:12], "used": d["used"],
                               "gate": label.get(d["device_id"], d["device_id"]), "lane": lane_label(d["lane"] or "—")}})
    e = {"e": st.event}
    ids, ip = _in("i", st.notable_ids or [-1])
    for r in db.all(
            "SELECT s.device_id AS device_id, s.lane AS lane, s.ts_ms AS ts_ms, s.kind AS kind, s.decision AS decision,"
            " s.reason AS reason, s.ticket_id AS ticket_id, s.record AS record FROM scans s"
            f" WHERE s.id IN {ids}", ip):
        rec = _record(r["record"])
        p = {"gate": label.get(r["device_id"], r["device_id"]), "lane": lane_label(r["lane"] or "—"),
             "operator": str(rec.get("operator") or "?")[:40], "reason": r["reason"] or ""}
        at = (r["ts_ms"] or 0) / 1000
        if r["kind"] == "override":
            out.append({"at": at, "kind": "manual_admit" if r["decision"] == "accept" else "manual_deny",
                        "ticket_id": r["ticket_id"], "params": p})
        elif r["kind"] == "control":
            action = str(rec.get("action") or "")
            if action in NOTABLE_CONTROL:
                p["mode"] = str(rec.get("mode") or "")
                out.append({"at": at, "kind": "control_" + action, "params": p})
        else:
            out.append({"at": at, "kind": "forged" if r["reason"] == "BAD_SIGNATURE" else "copied",
                        "ticket_id": r["ticket_id"], "params": p})
    for a in db.all(
            f"SELECT s.device_id AS device_id, s.lane AS lane, s.ts_ms AS ts_ms, s.ticket_id AS ticket_id"
            f" {ADMITTED} AND s.ticket_id IN (SELECT t.ticket_id FROM tickets t WHERE t.event = :e AND"
            " t.status = 'revoked' AND t.revoked_at IS NOT NULL) AND s.ts_ms >= 1000 * (SELECT t.revoked_at"
            " FROM tickets t WHERE t.ticket_id = s.ticket_id) ORDER BY s.ts_ms DESC LIMIT 20", e):
        out.append({"at": (a["ts_ms"] or 0) / 1000, "kind": "cancelled_admitted", "ticket_id": a["ticket_id"],
                    "params": {"gate": label.get(a["device_id"], a["device_id"]), "lane": lane_label(a["lane"] or "—"),
                               "ticket": a["ticket_id"][:12]}})
    for q in quarantined(db, st.event):
        out.append({"at": q["quarantined_at"], "kind": "quarantined",
                    "params": {"gate": label.get(q["device_id"], q["device_id"]),
                               "why": q["quarantine_reason"] or "implausible uploads"}})
    for g in gs:
        if g["state"] == "dark":
            out.append({"at": g["last_contact"] + RED_S, "kind": "gate_dark",
                        "params": {"gate": g["label"], "lane": lane_label(g["lane"] or "—"),
                                   "seconds": int(g["silent_s"])}})
    for p in db.all("SELECT device_id, kind, detail, at FROM problems WHERE event = :e ORDER BY id DESC LIMIT 20", e):
        out.append({"at": p["at"], "kind": "refused_upload",
                    "params": {"gate": label.get(p["device_id"], p["device_id"]), "what": p["kind"]}})
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
    hist = []
    for r in rows:
        rec = _record(r.pop("record"))
        op = rec.get("operator")
        hist.append({**r, "at": (r["ts_ms"] or 0) / 1000, "operator": str(op)[:60] if op else None})
    if t and t["version"] > 1:  # the store keeps the current version, not when each reissue happened
        hist.append({"at": None, "kind": "reissue", "n": t["version"] - 1})
    if t and t["revoked_at"]:
        hist.append({"at": t["revoked_at"], "kind": "revocation", "reason": "revoked by central"})
    hist.sort(key=lambda h: (h["at"] is None, h["at"] or 0))
    return {"ticket": t, "history": hist}
