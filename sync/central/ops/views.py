"""What each ops page shows, as data for its template (templates/*.html): the
chart's geometry, the reconciliation report as readable sections (the page
and its CSV export share them), a ticket's history in words. No HTML here."""

from __future__ import annotations

from datetime import datetime, timezone

from gate.i18n import N_
from gate.words import reason_words
from sync.central.ops.queries import lane_label
from sync.central.ops.words import PROBLEM_WORDS
from sync.central.reconcile import fmt_ms

# line colours: each at least 4.5:1 against white (tests/test_ops_security.py checks), and a dash
# pattern each, so lanes are told apart without colour
LINE_STYLES = [("#1c5fd1", ""), ("#b8400b", "6 3"), ("#22743a", "2 3"), ("#7b2a91", "8 3 2 3"),
               ("#495057", "1 2"), ("#b01f53", "10 4"), ("#0b6e75", "4 2"), ("#6b5300", "12 3")]
CHART_W, CHART_H = 600, 100


def chart(d: dict) -> dict | None:
    """Admissions per minute per lane, the last 60 minutes: a plot box scaled to the page width
    (preserveAspectRatio none, strokes not scaled) with the axis labels in HTML (readable on a phone)."""
    lanes = d["chart_lanes"]
    if not lanes:
        return None
    series = {ln: [0] * 60 for ln in lanes}
    for m in d["minutes"]:
        i = 59 - (d["now_minute"] - m["m"])
        if 0 <= i < 60 and m["lane"] in series:
            series[m["lane"]][i] += m["n"]
    ymax = max(4, max(max(s) for s in series.values()))
    ymax = ((ymax + 3) // 4) * 4
    lines = []
    for n, ln in enumerate(lanes):
        colour, dash = LINE_STYLES[n % len(LINE_STYLES)]
        pts = " ".join(f"{CHART_W * i / 59:.1f},{CHART_H * (1 - v / ymax):.1f}" for i, v in enumerate(series[ln]))
        lines.append({"lane": ln, "label": lane_label(ln), "colour": colour, "dash": dash, "points": pts,
                      "hour": sum(series[ln]), "minute": series[ln][-1]})
    end = datetime.fromtimestamp(d["now_minute"] * 60, timezone.utc).strftime("%H:%M")
    return {"w": CHART_W, "h": CHART_H, "lines": lines, "yticks": [ymax * (4 - k) // 4 for k in range(5)],
            "grid": [CHART_H * k / 4 for k in range(5)], "end": end, "ahead": d["ahead"],
            "more": d["chart_more"], "total": sum(x["hour"] for x in lines)}


def _t(ms) -> str:
    v = fmt_ms(ms, "%Y-%m-%d %H:%M:%S")
    return v if not v.startswith("?") else N_("clock wrong")


def _ts(ts) -> str:
    if ts is None:
        return "—"
    try:
        return datetime.fromtimestamp(float(ts), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "?"


YES, NO = N_("yes"), N_("no")

# key, title, column headers (all marked for the ops domain, translated where shown)
SECTIONS: list[tuple[str, str, tuple[str, ...]]] = [
    ("double_admissions", N_("Double admissions"), (N_("Ticket"), N_("Allowed"), N_("Admitted"), N_("Where and when"))),
    ("revoked_admissions", N_("Admissions of cancelled tickets"),
     (N_("Ticket"), N_("Gate"), N_("Lane"), N_("Admitted at (UTC)"), N_("Cancelled at (UTC)"))),
    ("unlisted_admissions", N_("Admissions of tickets the gate did not know"),
     (N_("Ticket"), N_("Gate"), N_("Lane"), N_("Admitted at (UTC)"), N_("Known to central now"))),
    ("devices", N_("Gates"), (N_("Gate"), N_("Status"), N_("Records"), N_("Chain complete"), N_("Missing records"),
                              N_("Quarantined"))),
    ("problems", N_("Refused uploads and tampering"), (N_("Gate"), N_("What"), N_("Detail"), N_("When (UTC)"))),
    ("clock_wrong", N_("Gates with a wrong clock"), (N_("Gate"), N_("Records"), N_("Earliest stamp"),
                                                     N_("Latest stamp"))),
    ("by_reason", N_("Decisions by result"), (N_("Result"), N_("Decisions"))),
    ("per_gate", N_("Admitted per gate"), (N_("Gate"), N_("Admitted"))),
    ("per_lane", N_("Per lane"), (N_("Lane"), N_("Admitted"), N_("Refused"))),
    ("per_hour", N_("Admitted per hour"), (N_("Hour (UTC)"), N_("Admitted"))),
]
STATUS_WORDS = {"active": N_("active"), "revoked": N_("revoked")}


def report_sections(rep: dict, names: dict[str, str], gettext, lang: str) -> list[dict]:
    """The report as titled tables of text cells, in ``lang`` (the page and the CSVs)."""
    _ = gettext
    g = lambda d: names.get(d, d)  # noqa: E731
    yes = lambda v: _(YES) if v else _(NO)  # noqa: E731
    rows: dict[str, list[list]] = {
        "double_admissions": [[o["ticket_id"], o["allowed"], o["admitted"], "; ".join(
            f"{g(a['device_id'])} / {a['lane'] or '—'} {_t(a['ts_ms'])}" for a in o["admissions"])]
            for o in rep["double_admissions"]],
        "revoked_admissions": [[a["ticket_id"], g(a["device_id"]), a["lane"] or "—", _(_t(a["ts_ms"])),
                                _ts(a["revoked_at"])] for a in rep["revoked_admissions"]],
        "unlisted_admissions": [[a["ticket_id"], g(a["device_id"]), a["lane"] or "—", _(_t(a["ts_ms"])),
                                 yes(a["known_now"])] for a in rep["unlisted_admissions"]],
        "devices": [[g(d["device_id"]), _(STATUS_WORDS.get(d["status"], d["status"])), d["records"],
                     yes(d["chain_ok"]), ", ".join(f"{a}–{b}" for a, b in d["gaps"]) or "—", yes(d["quarantined"])]
                    for d in rep["devices"]],
        "problems": [[g(p["device_id"]), _(PROBLEM_WORDS[p["kind"]]) if p["kind"] in PROBLEM_WORDS else p["kind"],
                      p["detail"], _ts(p["at"])] for p in rep["problems"]],
        "clock_wrong": [[g(c["device_id"]), c["records"], fmt_ms(c["earliest_ts_ms"]), fmt_ms(c["latest_ts_ms"])]
                        for c in rep.get("clock_wrong", [])],
        "by_reason": [[reason_words(k or "ERROR", lang).headline if k else "—", n] for k, n in rep["by_reason"].items()],
        "per_gate": [[g(k), n] for k, n in rep["per_gate"].items()],
        "per_lane": [[k, rep["per_lane"].get(k, 0), rep.get("refused_per_lane", {}).get(k, 0)]
                     for k in sorted(set(rep["per_lane"]) | set(rep.get("refused_per_lane", {})))],
        "per_hour": [[_(k) if k == "clock wrong" else k, n] for k, n in rep["per_hour"].items()],
    }
    return [{"key": k, "title": _(title), "cols": [_(c) for c in cols], "rows": rows[k]}
            for k, title, cols in SECTIONS]


# A spreadsheet runs a cell that starts with one of these as a formula (or DDE): prefix a quote
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n", "|", "＝", "＋", "－", "＠")


def csv_cell(v):
    if isinstance(v, str) and v.startswith(FORMULA_TRIGGERS):
        return "'" + v
    return v


WHAT_WORDS = {
    ("scan", "entry"): N_("Entry scan"), ("scan", "exit"): N_("Exit scan"),
    ("override", "entry"): N_("Manual decision by {operator}"), ("override", "exit"): N_("Manual decision by {operator}"),
    "rollback": N_("Admission voided: nobody went through"), "passed": N_("Went through"),
    "reissue": N_("Ticket reissued {n} times (central keeps no time for it)"),
    "revocation": N_("Cancelled by central"),
}


def history_rows(hist: dict, names: dict[str, str], gettext, lang: str) -> list[dict]:
    """A ticket's history in words: no codes, no record numbers, no credential versions."""
    _ = gettext
    out = []
    for h in hist["history"]:
        kind = h["kind"]
        if kind in ("scan", "override"):
            what = _(WHAT_WORDS.get((kind, h.get("mode") or "entry"), WHAT_WORDS[("scan", "entry")])).format(
                operator=h.get("operator") or _("staff"))
            w = reason_words(h.get("reason") or ("ACCEPT" if h.get("decision") == "accept" else "ERROR"), lang)
            result, style = f"{w.icon} {w.headline}", w.style
        elif kind == "reissue":
            what, result, style = _(WHAT_WORDS["reissue"]).format(n=h.get("n", 1)), "", "idle"
        elif kind in WHAT_WORDS:
            what, result, style = _(WHAT_WORDS[kind]), "", "caution" if kind != "passed" else "accept"
        else:
            what, result, style = kind, "", "idle"
        out.append({"at": h["at"], "gate": names.get(h.get("device_id"), h.get("device_id")) or _("central"),
                    "lane": h.get("lane") or "—", "what": what, "result": result, "style": style})
    return out
