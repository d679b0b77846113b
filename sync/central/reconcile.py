"""The reconciliation report (docs/sync.md), built by the central from the scans
every gate uploaded: double admissions across gates (typically while offline),
admissions of tickets revoked before the scan, unlisted admissions, broken or
forked chains and refused uploads per device, sequence gaps, records stamped
by a wrong clock, quarantined devices, and counts per gate / lane / hour. JSON,
and a readable text form that renders whatever a gate's clock said.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

import cbor2

from gate.scanlog import ChainBreak, ChainVerifier
from gate.text import pad

DAY_MS = 86_400_000
SANE_MS = (946_684_800_000, 4_102_444_800_000)  # 2000-01-01 .. 2100-01-01 UTC


def fmt_ms(ms, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A record's timestamp for people; any value a gate's clock (or a hostile
    device) wrote renders, out-of-range ones as the raw number with a '?'."""
    if type(ms) is int and SANE_MS[0] <= ms < SANE_MS[1]:
        return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime(fmt)
    return f"?{ms}"


def _clock_wrong_sql(db, event: str) -> tuple[str, dict]:
    """The records whose timestamp cannot be true: before the event existed at
    central (minus a day), after central received them (plus a day), outside
    2000-2100, or not an integer. They stay stored as facts. (A condition on
    ``s``, a row of scans, and its parameters.)"""
    created = db.scalar("SELECT created FROM events WHERE event = :e", {"e": event})
    lo = max(SANE_MS[0], int((created or 0) * 1000) - DAY_MS)
    least, notint = ("min", "typeof(s.ts_ms) != 'integer' OR ") if db.dialect == "sqlite" else ("LEAST", "")
    return (f"(s.ts_ms IS NOT NULL AND ({notint}s.ts_ms < :lo"
            f" OR s.ts_ms > {least}(:hi, CAST(s.received * 1000 AS BIGINT) + :day)))",
            {"lo": lo, "hi": SANE_MS[1], "day": DAY_MS})


def _clock_wrong(db) -> list[dict]:
    """Per device, the records of ``dec`` (:func:`_decisions_table`) whose timestamp cannot be true."""
    return [{"device_id": d, "records": n, "first_seq": s0, "last_seq": s1, "earliest_ts_ms": t0, "latest_ts_ms": t1}
            for d, n, s0, s1, t0, t1 in db.all(
                "SELECT device_id, count(*), min(seq), max(seq), min(ts_ms), max(ts_ms) FROM dec"
                " WHERE wrong GROUP BY device_id ORDER BY device_id")]


# ------------------------------------------------------------------ the one definition of each number
#
# Shared by this report, the ops room's cards, lane table, chart and alerts
# (sync/central/ops/queries.py), and their tests (issues 18 and 22):
#
# - a *decision* is a scan or a manual override (kind 'scan' / 'override');
# - an *admission* is an accepted decision in mode 'entry' that no rollback record
#   of the same device voids (the holder never went through). Exits are not
#   admissions; rolled-back admissions are not admissions;
# - an *exit* is the same in mode 'exit'; *inside* = admissions - exits;
# - a *refusal* is a decision that was not accepted (rollbacks do not touch it);
# - a *double admission* is a ticket whose admissions consume more entries than it
#   allows (entries 0: unlimited);
# - per lane, per gate and per minute/hour split the same rows by ``lane`` (NULL: "-"),
#   ``device_id`` and ``ts_ms`` (the gate's clock).
DECISION = "s.kind IN ('scan', 'override')"
NOT_ROLLED_BACK = ("NOT EXISTS (SELECT 1 FROM scans r WHERE r.kind = 'rollback' AND r.device_id = s.device_id"
                   " AND r.ref = s.seq)")
ACCEPTED = f"{DECISION} AND s.decision = 'accept' AND {NOT_ROLLED_BACK}"   # admissions and exits
ADMISSION = f"{ACCEPTED} AND s.mode = 'entry'"
REFUSAL = f"{DECISION} AND s.decision <> 'accept'"
# a ticket is over-admitted when its admissions consume more entries than it allows (``t``: its
# tickets row, absent for an unlisted ticket: one entry; entries 0: unlimited)
ALLOWED = "coalesce(t.entries, 1)"


def over_admitted(used: str) -> str:
    """The double-admission rule on ``used`` (the sum of the admissions' ``consumes``)."""
    return f"{ALLOWED} > 0 AND {used} > {ALLOWED}"
NO_LANE = "-"


def is_decision(kind) -> bool:
    return kind in ("scan", "override")


def counts(db, event: str) -> dict:
    """The headline numbers of an event, by the definitions above, in one snapshot."""
    e = {"e": event}
    modes = {m: n for m, n in db.all(f"SELECT s.mode, count(*) FROM scans s WHERE s.event = :e AND {ACCEPTED}"
                                     " GROUP BY s.mode", e)}
    refused = db.all(f"SELECT coalesce(s.lane, '{NO_LANE}'), count(*) FROM scans s WHERE s.event = :e AND {REFUSAL}"
                     f" GROUP BY coalesce(s.lane, '{NO_LANE}') ORDER BY 1", e)
    admitted, exits = modes.get("entry", 0), modes.get("exit", 0)
    return {"admitted": admitted, "exits": exits, "inside": admitted - exits,
            "refused": sum(n for _, n in refused), "refused_per_lane": {ln: n for ln, n in refused}}


def _decisions_table(db, event: str) -> None:
    """The one pass over the event's scans: every decision (scan or override) and
    every record stamped by a wrong clock, in a compact temp table ``dec`` without
    the record blobs, for the aggregates below. ``isdec``: a decision (DECISION);
    ``acc``: accepted and not rolled back (an admission or an exit, by ACCEPTED);
    ``refused``: not accepted (REFUSAL; NULL for a record without a decision, as
    there); ``wrong``: the clock-wrong condition. Before, the counts per reason and
    the clock check made a pass each of their own over the whole table."""
    wrong, params = _clock_wrong_sql(db, event)
    body = f"""SELECT s.device_id, s.seq, s.ticket_id, s.mode, s.consumes, s.ts_ms, s.lane, s.unlisted,
               s.reason, {DECISION} AS isdec, {REFUSAL} AS refused, {ACCEPTED} AS acc, {wrong} AS wrong
        FROM scans s WHERE s.event = :e AND ({DECISION} OR {wrong})"""
    params = {"e": event, **params}
    if db.dialect == "postgresql":  # hash joins and aggregates in memory; no index needed
        db.run("SET LOCAL work_mem = '256MB'")
        db.run("DROP TABLE IF EXISTS pg_temp.dec")
        db.run("DROP TABLE IF EXISTS pg_temp._over")
        db.run("CREATE TEMP TABLE dec ON COMMIT DROP AS " + body, params)
        db.run('CREATE TEMP TABLE _over (ticket_id TEXT COLLATE "C" PRIMARY KEY) ON COMMIT DROP')
    else:
        db.run("DROP TABLE IF EXISTS temp.dec")
        db.run("DROP TABLE IF EXISTS temp._over")
        db.run("CREATE TEMP TABLE dec AS " + body, params)
        db.run("CREATE TEMP TABLE _over (ticket_id TEXT PRIMARY KEY)")


def build_report(store, event: str, *, verify_chains: bool = False) -> dict:
    """Aggregations run in the database, so memory stays flat however many scans
    there are. It reads one snapshot on its own connection (``store.reader``):
    uploads go on while it runs, on SQLite and PostgreSQL alike."""
    with store.reader(scratch=True) as db:
        return _build(db, event, verify_chains)


def build_venue_report(store, venue: str) -> dict:
    """Per-event summaries of every event of one venue, from one snapshot."""
    with store.reader(scratch=True) as db:
        events = [r[0] for r in db.all("SELECT event FROM events WHERE venue = :v ORDER BY created", {"v": venue})]
        out = []
        for ev in events:
            rep = _build(db, ev, False)
            out.append({"event": ev, "scans": rep["scans"], "admitted": sum(rep["per_gate"].values()),
                        "double_admissions": len(rep["double_admissions"]),
                        "revoked_admissions": len(rep["revoked_admissions"]),
                        "unlisted_admissions": len(rep["unlisted_admissions"]),
                        "quarantined": [d["device_id"] for d in rep["devices"] if d["quarantined"]],
                        "problems": len(rep["problems"])})
    return {"venue": venue, "generated_at": time.time(), "events": out,
            "scans": sum(e["scans"] for e in out), "admitted": sum(e["admitted"] for e in out)}


def _build(db, event: str, verify_chains: bool) -> dict:
    _decisions_table(db, event)
    # per reason, the refusals per lane (counts()) and the admissions and exits, in one pass over dec
    by_reason: dict = {}
    refused_per_lane: dict[str, int] = {}
    modes: dict = {}
    for reason, lane, refused, mode, n in db.all(
            f"""SELECT reason, coalesce(lane, '{NO_LANE}'), refused, CASE WHEN acc THEN mode END, count(*)
                FROM dec WHERE isdec GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"""):
        by_reason[reason] = by_reason.get(reason, 0) + n
        if refused:
            refused_per_lane[lane] = refused_per_lane.get(lane, 0) + n
        if mode is not None:
            modes[mode] = modes.get(mode, 0) + n
    refused_per_lane = dict(sorted(refused_per_lane.items()))
    admitted, exits = modes.get("entry", 0), modes.get("exit", 0)
    num = {"admitted": admitted, "exits": exits, "inside": admitted - exits,
           "refused": sum(refused_per_lane.values()), "refused_per_lane": refused_per_lane}
    if db.dialect == "postgresql":  # the three counts in one pass
        per_gate, per_lane, hours = {}, {}, {}
        for g, ln, h, n, which in db.all(
                """SELECT device_id, coalesce(lane, '-'), coalesce(ts_ms, 0) / 3600000, count(*),
                          GROUPING(device_id, coalesce(lane, '-'), coalesce(ts_ms, 0) / 3600000)
                   FROM dec WHERE acc AND mode = 'entry' GROUP BY GROUPING SETS ((device_id), (coalesce(lane, '-')),
                                                   (coalesce(ts_ms, 0) / 3600000))"""):
            if which == 3:
                per_gate[g] = n
            elif which == 5:
                per_lane[ln] = n
            else:
                hours[h] = n
        per_gate, per_lane = dict(sorted(per_gate.items())), dict(sorted(per_lane.items()))
        hours = sorted(hours.items())
    else:
        per_gate = {d: n for d, n in db.all("SELECT device_id, count(*) FROM dec WHERE acc AND mode = 'entry' GROUP BY 1 ORDER BY 1")}
        per_lane = {ln: n for ln, n in db.all("SELECT coalesce(lane, '-'), count(*) FROM dec WHERE acc AND mode = 'entry' GROUP BY 1 ORDER BY 1")}
        hours = db.all("SELECT coalesce(ts_ms, 0) / 3600000, count(*) FROM dec WHERE acc AND mode = 'entry' GROUP BY 1 ORDER BY 1")
    per_hour: dict[str, int] = {}
    for h, n in hours:
        key = fmt_ms(h * 3_600_000 if type(h) is int else h, "%Y-%m-%d %H:00")
        key = "clock wrong" if key.startswith("?") else key
        per_hour[key] = per_hour.get(key, 0) + n
    entry = "FROM dec a WHERE a.acc AND a.mode = 'entry' AND a.ticket_id IS NOT NULL"
    over, by_ticket = [], {}
    # aggregate first, then look up the few candidates (used > 1: entries 0 means unlimited)
    for tid, used, allowed in db.all(
            f"""SELECT x.ticket_id, x.used, {ALLOWED} FROM
                (SELECT a.ticket_id, sum(a.consumes) AS used FROM dec a
                 WHERE a.acc AND a.mode = 'entry' AND a.ticket_id IS NOT NULL
                 GROUP BY a.ticket_id HAVING sum(a.consumes) > 1) x
                LEFT JOIN tickets t ON t.ticket_id = x.ticket_id
                WHERE {over_admitted("x.used")}
                ORDER BY x.ticket_id"""):
        by_ticket[tid] = {"ticket_id": tid, "allowed": allowed, "admitted": used, "gates": [], "admissions": []}
        over.append(by_ticket[tid])
    if over:  # the admissions behind them, in one pass
        db.run("INSERT INTO _over (ticket_id) VALUES (:t)", [{"t": t} for t in by_ticket])
        for tid, d, sq, ts, ln, c in db.all(
                f"SELECT a.ticket_id, a.device_id, a.seq, a.ts_ms, a.lane, a.consumes {entry}"
                " AND a.ticket_id IN (SELECT ticket_id FROM _over) ORDER BY a.ticket_id, a.ts_ms"):
            by_ticket[tid]["admissions"].append(
                {"device_id": d, "seq": sq, "ts_ms": ts, "lane": ln, "consumes": bool(c)})
        by_device: dict[str, list[dict]] = {}
        for o in over:
            o["gates"] = sorted({a["device_id"] for a in o["admissions"]})
            for a in o["admissions"]:
                by_device.setdefault(a["device_id"], []).append(a)
        _mark_alone(db, by_device)
    # the few revoked tickets first (materialized: dec is a temp table without statistics, and
    # a planner guessing few rows there looked every admission up in tickets, 3 s), then one
    # hash join over the admissions
    revoked_admissions = [
        {"ticket_id": tid, "device_id": d, "seq": sq, "ts_ms": ts, "lane": ln, "revoked_at": rat}
        for tid, d, sq, ts, ln, rat in db.all(
            f"""WITH t AS MATERIALIZED (SELECT ticket_id, revoked_at FROM tickets
                                        WHERE status = 'revoked' AND revoked_at IS NOT NULL)
                SELECT a.ticket_id, a.device_id, a.seq, a.ts_ms, a.lane, t.revoked_at
                {entry.replace('FROM dec a', 'FROM dec a JOIN t ON t.ticket_id = a.ticket_id')}
                AND a.ts_ms >= t.revoked_at * 1000
                ORDER BY a.ts_ms""")]
    unlisted = [
        {"ticket_id": tid, "device_id": d, "seq": sq, "ts_ms": ts, "lane": ln, "known_now": bool(known)}
        for tid, d, sq, ts, ln, known in db.all(
            f"""SELECT a.ticket_id, a.device_id, a.seq, a.ts_ms, a.lane,
                       EXISTS (SELECT 1 FROM tickets t WHERE t.ticket_id = a.ticket_id)
                {entry} AND a.unlisted = 1 ORDER BY a.ts_ms""")]
    devices = _devices(db, event, verify_chains)
    problems = [{"device_id": d, "kind": k, "detail": det, "at": at} for d, k, det, at in db.all(
        "SELECT device_id, kind, detail, at FROM problems WHERE event = :e ORDER BY id", {"e": event})]
    return {
        **num,
        "event": event,
        "venue": db.scalar("SELECT venue FROM events WHERE event = :e", {"e": event}) or "",
        "generated_at": time.time(),
        "scans": sum(by_reason.values()),
        "by_reason": by_reason,
        "double_admissions": over,
        "revoked_admissions": revoked_admissions,
        "unlisted_admissions": unlisted,
        "devices": devices,
        "quarantined": [{"device_id": d["device_id"], "reason": d["quarantine_reason"]}
                        for d in devices if d["quarantined"]],
        "problems": problems,
        "clock_wrong": _clock_wrong(db),
        "per_gate": per_gate,
        "per_lane": per_lane,
        "per_hour": per_hour,
    }


def _mark_alone(db, by_device: dict[str, list[dict]], chunk: int = 500) -> None:
    """Set ``alone`` on each admission: admitted with neither central nor a venue bus
    peer (gate.bus), as its record says. One indexed lookup per device and up to
    ``chunk`` admissions, not one per admission (a thousand double admissions were
    two thousand round trips to PostgreSQL)."""
    for device_id, adms in by_device.items():
        for k in range(0, len(adms), chunk):
            part = adms[k:k + chunk]
            names = ", ".join(f":s{i}" for i in range(len(part)))
            found = {seq: bool(cbor2.loads(bytes(record)).get("alone")) for seq, record in db.all(
                f"SELECT seq, record FROM scans WHERE device_id = :d AND seq IN ({names})",
                {"d": device_id, **{f"s{i}": a["seq"] for i, a in enumerate(part)}})}
            for a in part:
                a["alone"] = found.get(a["seq"], False)


def _devices(db, event: str, verify_chains: bool) -> list[dict]:
    """Each device of the event (or of its venue): chain state from counts (every
    record was chain-checked against a signed head when it was stored); with
    ``verify_chains`` the stored records are re-hashed as well."""
    devs = db.all(
        """SELECT d.device_id, d.status, d.quarantined_at, d.quarantine_reason FROM devices d
           WHERE d.event = :e OR (d.venue <> '' AND d.venue = (SELECT venue FROM events WHERE event = :e))
           ORDER BY d.enrolled_at, d.device_id""", {"e": event})
    stats = {d: (n, lo, hi) for d, n, lo, hi in db.all(
        """SELECT s.device_id, count(*), min(s.seq), max(s.seq) FROM scans s
           WHERE s.device_id IN (SELECT d.device_id FROM devices d WHERE d.event = :e
                 OR (d.venue <> '' AND d.venue = (SELECT venue FROM events WHERE event = :e)))
           GROUP BY s.device_id""", {"e": event})}
    out = []
    for device_id, status, qat, qwhy in devs:
        n, lo, hi = stats.get(device_id, (0, None, None))
        gaps, broken = [], None
        if n and (lo != 1 or hi != n):  # seqs are unique: only then is there a gap to find
            expected = 1
            for (seq,) in db.all("SELECT seq FROM scans WHERE device_id = :d ORDER BY seq", {"d": device_id}):
                if seq != expected:
                    gaps.append([expected, seq - 1])
                expected = seq + 1
        if verify_chains and n:
            broken = _rehash(db, device_id)
        out.append({"device_id": device_id, "status": status, "records": n, "stored_through": hi or 0,
                    "gaps": gaps, "chain_ok": broken is None and not gaps, "broken_at": broken,
                    "quarantined": qat is not None, "quarantine_reason": qwhy})
    return out


def _rehash(db, device_id: str) -> int | None:
    """The first stored record of the device whose chain link does not hold
    (:class:`gate.scanlog.ChainVerifier`, the rule ``gate log verify`` and the
    upload check use), or None. Gaps are reported on their own: the record
    after a gap starts a new run (its link to a missing record cannot be checked)."""
    chain = ChainVerifier()
    for seq, data, h in db.all("SELECT seq, record, hash FROM scans WHERE device_id = :d ORDER BY seq",
                               {"d": device_id}):
        if seq != chain.next_seq:
            chain = ChainVerifier(prev=bytes(h), next_seq=seq + 1)
            continue
        try:
            chain.add(seq, bytes(data), stored_hash=bytes(h))
        except ChainBreak as exc:
            return exc.seq
    return None


def _same(text: str) -> str:
    return text


def _counts(counts: dict, *, none: str = "") -> str:
    """": A 3, B 1" after a heading, or ``none`` when there is nothing to count."""
    return (": " + ", ".join(f"{k} {v}" for k, v in counts.items())) if counts else none


def render_text(rep: dict, *, _: Callable[[str], str] = _same) -> str:
    """The report for people, as text. ``_`` translates its words (the CLI and the demo
    pass gate.i18n's, in the operator's language); the HTTP API keeps the default:
    English, whatever the server's language."""
    def ts(ms):
        return fmt_ms(ms, "%H:%M:%S")

    generated = f"{datetime.fromtimestamp(rep['generated_at'], timezone.utc):%Y-%m-%d %H:%M UTC}"
    lines = [_("Reconciliation report — event {event}").format(event=rep["event"]),
             _("generated {when}").format(when=generated),
             "", _("scans {n}").format(n=rep["scans"]) + _counts(rep["by_reason"])]
    lines += ["", _("DOUBLE ADMISSIONS ({n})").format(n=len(rep["double_admissions"]))]
    for o in rep["double_admissions"]:
        where = "; ".join(f"{a['device_id']}/{a['lane']} #{a['seq']} {ts(a['ts_ms'])}"
                          + (" ALONE" if a.get("alone") else "") for a in o["admissions"])
        lines.append(f"  {o['ticket_id']}  " + _("allowed {allowed}, admitted {admitted}").format(
            allowed=o["allowed"], admitted=o["admitted"]) + f": {where}")
    lines += ["", _("ADMISSIONS OF REVOKED TICKETS ({n})").format(n=len(rep["revoked_admissions"]))]
    for a in rep["revoked_admissions"]:
        lines.append(f"  {a['ticket_id']}  {a['device_id']} #{a['seq']} {ts(a['ts_ms'])}")
    lines += ["", _("UNLISTED ADMISSIONS ({n})").format(n=len(rep["unlisted_admissions"]))]
    for a in rep["unlisted_admissions"]:
        lines.append(f"  {a['ticket_id']}  {a['device_id']} #{a['seq']}  "
                     + (_("sold, now in ledger") if a["known_now"] else _("NOT KNOWN TO CENTRAL")))
    lines += ["", _("DEVICES")]
    lines.append("  " + pad(_("device"), 16) + pad(_("status"), 12) + pad(_("records"), 8, right=True)
                 + "  " + _("chain"))
    for d in rep["devices"]:
        state = _("ok") if d["chain_ok"] else (_("gaps {gaps}").format(gaps=d["gaps"]) if d["gaps"]
                                               else _("broken at {seq}").format(seq=d["broken_at"]))
        st = "quarantined" if d.get("quarantined") and d["status"] == "active" else d["status"]
        lines.append(f"  {d['device_id']:<16}{st:<12}{d['records']:>8}  {state}")
    quarantined = rep.get("quarantined", [])
    lines += ["", _("QUARANTINED DEVICES ({n}): admissions held back from other gates").format(n=len(quarantined))]
    for q in quarantined:
        lines.append(f"  {q['device_id']}: {q['reason']}")
    lines += ["", _("REFUSED UPLOADS / TAMPERING ({n})").format(n=len(rep["problems"]))]
    for p in rep["problems"]:
        lines.append(f"  {p['device_id']}: {p['kind']} — {p['detail']}")
    clock = rep.get("clock_wrong", [])
    lines += ["", _("CLOCK WRONG ({n})").format(n=len(clock))]
    for c in clock:
        lines.append("  " + _("clock wrong on gate {device}: {n} record(s), seq {first}-{last}, stamped {earliest} .. "
                              "{latest} (kept as recorded; times in this report are the gate's)").format(
            device=c["device_id"], n=c["records"], first=c["first_seq"], last=c["last_seq"],
            earliest=fmt_ms(c["earliest_ts_ms"]), latest=fmt_ms(c["latest_ts_ms"])))
    lines += ["", _("ADMITTED PER GATE") + _counts(rep["per_gate"], none=" -"),
              _("ADMITTED PER LANE") + _counts(rep["per_lane"], none=" -"),
              _("ADMITTED PER HOUR") + _counts(rep["per_hour"], none=" -")]
    return "\n".join(lines) + "\n"


def render_venue_text(rep: dict) -> str:
    lines = [f"Venue report — {rep['venue']}",
             f"generated {datetime.fromtimestamp(rep['generated_at'], timezone.utc):%Y-%m-%d %H:%M UTC}",
             f"scans {rep['scans']}, admitted {rep['admitted']}", "",
             f"  {'event':<20}{'scans':>9}{'admitted':>10}{'double':>8}{'revoked':>9}{'unlisted':>10}  quarantined"]
    for e in rep["events"]:
        lines.append(f"  {e['event']:<20}{e['scans']:>9}{e['admitted']:>10}{e['double_admissions']:>8}"
                     f"{e['revoked_admissions']:>9}{e['unlisted_admissions']:>10}  {', '.join(e['quarantined']) or '-'}")
    return "\n".join(lines) + "\n"
