"""Server-rendered HTML for the ops room (f-strings, every value escaped)."""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from urllib.parse import quote

LINE_STYLES = [("#1f6feb", ""), ("#d9480f", "6 3"), ("#2b8a3e", "2 3"), ("#862e9c", "8 3 2 3"),
               ("#495057", "1 2"), ("#c2255c", "10 4")]
STATE_TEXT = {"ok": ("ok", "●", "in contact"), "silent": ("warn", "▲", "silent"),
              "dark": ("crit", "✖", "dark"), "idle": ("idle", "○", "doors closed"),
              "revoked": ("idle", "⊘", "revoked")}


def e(x) -> str:
    return escape("" if x is None else str(x))


def hms(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M:%S")


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def offset(ms: int | None) -> str:
    """Central time minus the gate's: positive means the gate's clock is behind."""
    if ms is None:
        return "—"
    if abs(ms) < 50:
        return "0.0 s"
    text = f"{abs(ms) / 1000:.1f} s {'behind' if ms > 0 else 'ahead'}"
    return f"<b>▲ {text}</b>" if abs(ms) > 2000 else text


def page(title: str, body: str, *, user: dict | None, event: str | None, events: list[str], active: str,
         csrf: str) -> str:
    nav = ""
    if user:
        links = "".join(
            f'<a href="/ops/e/{quote(event)}/{slug}"{" aria-current=page" if slug == active else ""}>{name}</a>'
            for slug, name in (("doors", "Doors"), ("gates", "Gates"), ("alerts", "Alerts"),
                               ("ticket", "Ticket"), ("reconciliation", "Reconciliation"))) if event else ""
        picker = "".join(f'<option{" selected" if ev == event else ""} value="{e(ev)}">{e(ev)}</option>'
                         for ev in events)
        nav = f"""<nav><span class=brand>Ops room</span>{links}
<form class=evpick method=get action="/ops"><label>event <select name=event>{picker}</select></label><input type=hidden name=csrf value="{e(csrf)}"><noscript><button>go</button></noscript></form>
<form class=logout method=post action="/ops/logout"><input type=hidden name=csrf value="{e(csrf)}"><span>{e(user['name'])} ({e(user['role'])})</span> <button>Log out</button></form></nav>"""
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<title>{e(title)} · ops room</title><link rel=stylesheet href="/ops/static/ops.css"><link rel=icon href="data:,">
<script src="/ops/static/ops.js" defer></script></head>
<body>{nav}<main><h1>{e(title)}</h1>{body}</main></body></html>"""


def login(error: str | None, csrf: str, nxt: str) -> str:
    err = f'<p class="msg crit" role=alert>✖ {e(error)}</p>' if error else ""
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1"><title>Log in · ops room</title>
<link rel=stylesheet href="/ops/static/ops.css"><link rel=icon href="data:,"></head><body><main class=login><h1>Ops room</h1>{err}
<form method=post action="/ops/login"><input type=hidden name=csrf value="{e(csrf)}">
<input type=hidden name=next value="{e(nxt)}">
<label>Name <input name=name autocomplete=username required autofocus></label>
<label>Password <input name=password type=password autocomplete=current-password required></label>
<button>Log in</button></form></main></body></html>"""


def gauge(inside: int, capacity: int | None) -> str:
    if not capacity:
        return f'<p class=big><span data-k=inside>{inside}</span> inside <small>(no capacity set)</small></p>'
    frac = max(0.0, min(1.0, inside / capacity))
    level = "crit" if frac >= 0.95 else "warn" if frac >= 0.8 else "ok"
    word = {"crit": "✖ full", "warn": "▲ filling", "ok": "● room"}[level]
    return f"""<svg class=gauge viewBox="0 0 300 44" role=img aria-label="{inside} inside of capacity {capacity}">
<rect x=0 y=4 width=300 height=22 rx=4 class=track></rect>
<rect x=0 y=4 width="{300 * frac:.1f}" height=22 rx=4 class="fill {level}"></rect>
<line x1="{300 * 0.8:.0f}" x2="{300 * 0.8:.0f}" y1=0 y2=30 class=mark></line>
<text x=0 y=42>0</text><text x=300 y=42 text-anchor=end>{capacity}</text></svg>
<p class=big><span data-k=inside>{inside}</span> / {capacity} inside · {100 * frac:.0f} % <span class="tag {level}">{word}</span></p>"""


def chart(minutes: list[dict], now_minute: int, ahead: bool = False) -> str:
    """Admissions per minute per lane, last 60 minutes, as inline SVG (one polyline per lane)."""
    lanes = sorted({m["lane"] for m in minutes})
    if not lanes:
        return '<p class=muted>No admissions in the last hour.</p>'
    w, h, left, bottom, top = 900, 220, 36, 24, 10
    series = {ln: [0] * 60 for ln in lanes}
    for m in minutes:
        i = 59 - (now_minute - m["m"])
        if 0 <= i < 60:
            series[m["lane"]][i] += m["n"]
    ymax = max(4, max(max(s) for s in series.values()))
    ymax = ((ymax + 3) // 4) * 4
    pw, ph = w - left - 80, h - bottom - top

    def xy(i, v):
        return left + pw * i / 59, top + ph * (1 - v / ymax)

    parts = [f'<svg class=chart viewBox="0 0 {w} {h}" role=img aria-label="admissions per minute per lane, last hour">']
    for k in range(5):
        y = top + ph * k / 4
        parts.append(f'<line class=grid x1={left} x2={left + pw} y1="{y:.1f}" y2="{y:.1f}"></line>'
                     f'<text x={left - 4} y="{y + 4:.1f}" text-anchor=end>{ymax * (4 - k) // 4}</text>')
    end = datetime.fromtimestamp(now_minute * 60, timezone.utc).strftime("%H:%M")
    for i, label in ((0, "−60 min"), (30, "−30"), (59, f"{end}" if ahead else f"now {end}")):
        anchor = "end" if i == 59 else "start" if i == 0 else "middle"
        parts.append(f'<text x="{xy(i, 0)[0]:.1f}" y={h - 6} text-anchor={anchor}>{label}</text>')
    for n, ln in enumerate(lanes):
        colour, dash = LINE_STYLES[n % len(LINE_STYLES)]
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in enumerate(series[ln])))
        lx, ly = xy(59, series[ln][59])
        parts.append(f'<polyline fill=none stroke="{colour}" stroke-width=2 stroke-dasharray="{dash}" points="{pts}">'
                     f'<title>lane {e(ln)}</title></polyline>'
                     f'<text x="{lx + 6:.1f}" y="{ly + 4 + 12 * (n % 2) * (n > 0):.1f}" fill="{colour}">{e(ln)}</text>')
    parts.append("</svg>")
    legend = "".join(
        f'<li><svg width=28 height=10><line x1=0 x2=28 y1=5 y2=5 stroke="{LINE_STYLES[n % 6][0]}" stroke-width=2 '
        f'stroke-dasharray="{LINE_STYLES[n % 6][1]}"></line></svg> {e(ln)}: {sum(series[ln])} in the hour, '
        f'{series[ln][-1]} this minute</li>' for n, ln in enumerate(lanes))
    note = ("<li>▲ a gate's clock runs ahead of central's: the chart ends at its newest admission</li>"
            if ahead else "")
    return "".join(parts) + f"<ul class=legend>{legend}{note}</ul>"


def table(headers: list[str], rows: list[list], *, cls: str = "", row_cls: list[str] | None = None,
          empty: str = "none") -> str:
    if not rows:
        return f"<p class=muted>{e(empty)}</p>"
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join(
        f"<tr class='{row_cls[i] if row_cls else ''}'>" + "".join(f"<td data-label='{e(h)}'><span>{c}</span></td>"
                                                               for h, c in zip(headers, r)) + "</tr>"
        for i, r in enumerate(rows))
    return f"<div class=scroll><table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def doors_live(d: dict, alerts: list[dict]) -> str:
    banner = ""
    if alerts:
        a = alerts[0]
        banner = (f'<p class="msg {a["level"]}" role=status>{"✖" if a["level"] == "crit" else "▲"} '
                  f'{len(alerts)} alert{"s" if len(alerts) != 1 else ""} — <b>{e(a["kind"])}</b>: {e(a["text"])} '
                  f'<a href="/ops/e/{quote(d["event"])}/alerts">see all</a></p>')
    lanes = table(["Lane", "Admitted"], [[e(k), f"<b data-lane='{e(k)}'>{v}</b>"] for k, v in d["per_lane"].items()],
                  empty="no admissions yet")
    refusals = table(["Reason", "Refused"], [[e(k), f"<b data-reason='{e(k)}'>{v}</b>"] for k, v in d["refusals"].items()],
                     empty="no refusals")
    notable = table(["Time (UTC)", "What", "Detail"],
                    [[hms(n["at"]), f"<b>{e(n['kind'])}</b>", e(n["text"])] for n in d["notable"]],
                    empty="nothing notable")
    return f"""{banner}<section class=cards>
<div class=card><h2>Admitted</h2><p class=big data-k=admitted>{d['admitted']}</p><p class=muted>{d['scans']} scans, {d['exits']} exit{'' if d['exits'] == 1 else 's'}</p></div>
<div class="card wide"><h2>Inside now</h2>{gauge(d['inside'], d['capacity'])}</div></section>
<section><h2>Admissions per minute per lane (last hour, UTC)</h2>{chart(d['minutes'], d['now_minute'], d['ahead'])}</section>
<section class=cols><div><h2>Admitted per lane</h2>{lanes}</div><div><h2>Refusals by reason</h2>{refusals}</div></section>
<section><h2>Last {len(d['notable'])} notable events</h2>{notable}</section>"""


def doors(d: dict, alerts: list[dict], *, admin: bool, csrf: str, live_url: str) -> str:
    cap = ""
    if admin:
        cap = f"""<form class=inline method=post action="/ops/e/{quote(d['event'])}/capacity">
<input type=hidden name=csrf value="{e(csrf)}"><label>Capacity <input name=capacity type=number min=1
value="{e(d['capacity'] or '')}" required></label> <button>Set</button></form>"""
    return f'<div id=live data-live="{e(live_url)}">{doors_live(d, alerts)}</div>{cap}'


def gates_live(rows: list[dict]) -> str:
    out, cls = [], []
    for g in rows:
        level, icon, word = STATE_TEXT[g["state"]]
        off = g["clock_offset_ms"]
        out.append([
            f"<b>{e(g['device_id'])}</b>", e(g["lane"] or "—"), e(g["link"] or "—"),
            f"{hms(g['last_contact'])} <small>({ago(g['silent_s'])} ago)</small>",
            f'<span class="tag {level}">{icon} {word}</span>',
            e("—" if g["outbox"] is None else g["outbox"]),
            offset(off),
            e(g["chain"]) if g["chain"] == "ok" else f"<b>▲ {e(g['chain'])}</b>",
            ago(g["ledger_age_s"]),
            f"<b>✖ yes</b> <small>{e(g['quarantine_reason'] or '')}</small>" if g["quarantined"] else "no"])
        if g["quarantined"]:
            level = "crit"
        cls.append(level)
    return table(["Gate", "Lane", "Link", "Last contact (UTC)", "State", "Outbox", "Clock offset", "Chain",
                  "Ledger age", "Quarantined"], out, cls="gates", row_cls=cls, empty="no gates enrolled")


def alerts_live(alerts: list[dict], event: str) -> str:
    if not alerts:
        return '<p class="msg ok" role=status>● No alerts.</p>'

    def detail(a):
        if not a.get("ticket_id"):
            return e(a["text"])
        return (e(a["text"]) + f' <a href="/ops/e/{quote(event)}/ticket?q={quote(a["ticket_id"])}">'
                'ticket history</a>')

    rows = [[f'<span class="tag {a["level"]}">{"✖ critical" if a["level"] == "crit" else "▲ warning"}</span>',
             f"<b>{e(a['kind'])}</b>", hms(a["at"]), detail(a)] for a in alerts]
    return table(["Level", "Alert", "Time (UTC)", "Detail"], rows, cls="alerts",
                 row_cls=[a["level"] for a in alerts])


def live(inner: str, url: str) -> str:
    return f'<div id=live data-live="{e(url)}">{inner}</div>'


def ticket(event: str, q: str, found: list[dict], hist: dict | None, csrf: str) -> str:
    form = f"""<form method=get class=search action="/ops/e/{quote(event)}/ticket">
<input type=hidden name=csrf value="{e(csrf)}"><label>Ticket id or holder <input name=q value="{e(q)}" required></label>
<button>Search</button></form>"""
    body = form
    if q and not hist:
        if len(found) > 1:
            body += table(["Ticket", "Holder", "Tier", "Status", "Version"],
                          [[f'<a href="/ops/e/{quote(event)}/ticket?q={quote(t["ticket_id"])}">{e(t["ticket_id"])}</a>',
                            e(t["holder"] or "—"), e(t["tier"]), e(t["status"]), e(t["version"])] for t in found])
        else:
            body += f"<p class=muted>No ticket matches {e(q)!s}.</p>"
    if hist:
        t = hist["ticket"]
        if t:
            body += (f"<p><b>{e(t['ticket_id'])}</b> · holder {e(t['holder'] or '—')} · tier {e(t['tier'])}"
                     f" · {e(t['entries'])} entr{'y' if t['entries'] == 1 else 'ies'} · version {e(t['version'])}"
                     f" · status <b>{e(t['status'])}</b></p>")
        rows = []
        for h in hist["history"]:
            what = h["kind"]
            if what in ("scan", "override"):
                what = f"{h['kind']} {h.get('mode') or ''}" + (f" · v{h['version']}" if h.get("version") else "")
            verdict = h.get("decision") or ""
            icon = "● admitted" if verdict == "accept" else "✖ refused" if verdict == "reject" else ""
            if h["kind"] == "rollback":
                icon = "↩ admission voided (no passage)"
            rows.append([hms(h["at"]) if h["at"] else "—", e(h.get("device_id") or "central"),
                         e(h.get("lane") or "—"), e(what), f"{icon} {e(h.get('reason') or '')}",
                         e(h.get("seq") or "")])
        body += "<h2>History (time order)</h2>" + table(
            ["Time (UTC)", "Gate", "Lane", "What", "Result", "Seq"], rows, cls="history", empty="no scans yet")
    return body


SECTIONS = [("double_admissions", "Double admissions"), ("revoked_admissions", "Admissions of revoked tickets"),
            ("unlisted_admissions", "Unlisted admissions"), ("devices", "Devices"),
            ("quarantined", "Quarantined devices"), ("problems", "Refused uploads / tampering"), ("by_reason", "Scans by reason"),
            ("per_gate", "Admitted per gate"), ("per_lane", "Admitted per lane"), ("per_hour", "Admitted per hour")]


def section_rows(rep: dict, key: str) -> tuple[list[str], list[list]]:
    """One report section as a flat table (the page and the CSV export share it)."""
    v = rep[key]
    if isinstance(v, dict):
        return ["key", "count"], [[k, n] for k, n in v.items()]
    if key == "double_admissions":
        return (["ticket_id", "allowed", "admitted", "gates", "admissions"],
                [[o["ticket_id"], o["allowed"], o["admitted"], " ".join(o["gates"]),
                  "; ".join(f"{a['device_id']}/{a['lane']} #{a['seq']} {hms((a['ts_ms'] or 0) / 1000)}"
                            for a in o["admissions"])] for o in v])
    if not v:
        return ["(empty)"], []
    cols = list(v[0].keys())
    return cols, [[(" ".join(map(str, r[c])) if isinstance(r[c], list) else r[c]) for c in cols] for r in v]


def reconciliation(rep: dict, event: str) -> str:
    body = [f"<p>Generated {hms(rep['generated_at'])} UTC · {rep['scans']} scans.</p>"]
    for key, title in SECTIONS:
        if key not in rep:
            continue
        cols, rows = section_rows(rep, key)
        n = len(rows)
        body.append(f"""<section><h2>{e(title)} ({n}) <a class=csv download href="/ops/e/{quote(event)}/reconciliation.csv?section={key}">CSV</a></h2>
{table([e(c) for c in cols], [[e(c) for c in r] for r in rows])}</section>""")
    return "".join(body)
