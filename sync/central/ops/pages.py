"""The ops room's pages: one ``APIRouter`` under ``/ops``. Every endpoint is a
plain ``def`` (FastAPI runs it in the threadpool: database work and scrypt stay
off the event loop); who may do what comes from the dependencies in
:mod:`.auth`; the HTML comes from Jinja2 templates (:mod:`.render`)."""

from __future__ import annotations

import csv
import io
from importlib import resources
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gate.i18n import SUPPORTED, choose, translations
from sync.central.ops import accounts, queries, views
from sync.central.ops.auth import (LANG_COOKIE, LOGIN_CSRF_COOKIE, SESSION_COOKIE, User, admin_posted,
                                   check_password, form, lang, login_csrf, page_user, posted, room)
from sync.central.ops.render import render
from sync.central.ops.throttle import Busy, Throttled
from sync.central.reconcile import build_report
from sync.central.store import CentralError

router = APIRouter(prefix="/ops", include_in_schema=False)
STATIC = {"ops.css": "text/css", "ops.js": "text/javascript"}
NO_STORE = {"Cache-Control": "no-store"}


def secure(request: Request) -> bool:
    # uvicorn runs with proxy_headers=False (X-Forwarded-For must not pick the client address), so
    # a TLS-terminating proxy on this host is recognised here: X-Forwarded-Proto from loopback only
    if request.url.scheme == "https":
        return True
    peer = request.client.host if request.client else ""
    return peer in ("127.0.0.1", "::1") and \
        request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower() == "https"


def set_cookie(resp: Response, request: Request, name: str, value: str, max_age: int | None = None):
    resp.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                    secure=secure(request))


def html(lg: str, template: str, status: int = 200, **ctx) -> HTMLResponse:
    return HTMLResponse(render(lg, template, **ctx), status_code=status, headers=NO_STORE)


def need_event(rm, event: str) -> str:
    if event not in rm.store.events():
        raise CentralError(404, f"no event {event!r}")
    return event


def shell(request: Request, rm, user: User, lg: str, event: str | None, active: str, **ctx) -> dict:
    """What every page's frame needs (nav, event picker, language switch, CSRF for its forms)."""
    here = request.url.path + ("?" + request.url.query if request.url.query else "")
    return {"user": user, "event": event, "events": rm.store.events(), "active": active, "csrf": user.csrf,
            "here": here, "langs": SUPPORTED, "q": quote, **ctx}


def live_url(event: str, slug: str) -> str:
    return f"/ops/e/{quote(event, safe='')}/{slug}?part=live"


# ------------------------------------------------------------------ static, language, login


@router.get("/static/{name}")
def static(name: str):
    if name not in STATIC:
        raise CentralError(404, "no such file")
    data = resources.files("sync.central.ops").joinpath("static", name).read_bytes()
    return Response(data, media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})


def safe_next(nxt: str) -> str:
    return nxt if nxt.startswith("/ops") and not nxt.startswith("//") and "\\" not in nxt else "/ops"


@router.get("/lang")
def switch_language(request: Request, to: str = "en", next: str = "/ops"):  # noqa: A002
    """The language switch: remembered in a cookie (a preference, not a change of state: no CSRF)."""
    resp = RedirectResponse(safe_next(next), status_code=303)
    set_cookie(resp, request, LANG_COOKIE, choose(to), max_age=365 * 86400)
    return resp


@router.get("/login")
def login_page(request: Request, lg: str = Depends(lang)):
    tok, new = login_csrf(request)
    resp = html(lg, "login.html", error=None, csrf=tok, next=safe_next(request.query_params.get("next", "/ops")),
                here=request.url.path, langs=SUPPORTED)
    if new:
        set_cookie(resp, request, LOGIN_CSRF_COOKIE, tok)
    return resp


@router.post("/login")
def login(request: Request, f: dict = Depends(form), lg: str = Depends(lang), rm=Depends(room)):
    tok, new = login_csrf(request)
    nxt = safe_next(f.get("next", "/ops"))
    _ = translations(lg, "ops").gettext

    def again(msg: str, status: int, headers: dict | None = None):
        resp = html(lg, "login.html", status, error=msg, csrf=tok, next=nxt, here="/ops/login", langs=SUPPORTED)
        resp.headers.update(headers or {})
        if new:
            set_cookie(resp, request, LOGIN_CSRF_COOKIE, tok)
        return resp

    sent = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not sent or not accounts.hmac.compare_digest(sent.encode(), f.get("csrf", "").encode()):
        return again(_("The form was too old: try again."), 403)
    name, pw = f.get("name", "")[:200], f.get("password", "")[:1024]
    try:
        check_password(rm, request, name, pw)
    except accounts.AuthError:
        return again(_("Wrong name or password."), 401)
    except Throttled as exc:
        return again(_("Too many tries from this computer: wait {s} s and try again.").format(s=exc.retry_after),
                     429, {"Retry-After": str(exc.retry_after)})
    except Busy:
        return again(_("The server is busy: try again in a few seconds."), 503, {"Retry-After": "2"})
    token = accounts.open_session(rm.db, name, now=rm.clock())
    resp = RedirectResponse(nxt, status_code=303)
    set_cookie(resp, request, SESSION_COOKIE, token, max_age=accounts.SESSION_S)
    set_cookie(resp, request, LOGIN_CSRF_COOKIE, "", max_age=0)
    return resp


@router.post("/logout")
def logout(request: Request, p: tuple = Depends(posted), rm=Depends(room)):
    user, _f = p
    accounts.close_session(rm.db, user.session)
    resp = RedirectResponse("/ops/login", status_code=303)
    set_cookie(resp, request, SESSION_COOKIE, "", max_age=0)
    return resp


# ------------------------------------------------------------------ pages


@router.get("")
def home(request: Request, user: User = Depends(page_user), lg: str = Depends(lang), rm=Depends(room)):
    evs = rm.store.events()
    ev = request.query_params.get("event")
    if ev in evs:
        return RedirectResponse(f"/ops/e/{quote(ev, safe='')}/doors", status_code=303)
    if evs:
        return RedirectResponse(f"/ops/e/{quote(evs[-1], safe='')}/doors", status_code=303)
    return html(lg, "empty.html", **shell(request, rm, user, lg, None, ""))


def _doors_data(rm, event: str):
    now = rm.clock()
    with rm.db.reader() as r:
        st = rm.live.state(r, event, now)
        gs = queries.gates(r, event, now)
        d = queries.doors(r, st, now, gs)
        al = queries.alerts(r, st, now, gs)
    al = rm.book.sync(rm.db, event, al, now)
    return d, al, now


@router.get("/e/{event}/doors")
def doors(event: str, request: Request, user: User = Depends(page_user), lg: str = Depends(lang),
          rm=Depends(room)):
    need_event(rm, event)
    d, al, now = _doors_data(rm, event)
    ctx = {"d": d, "alerts": al, "chart": views.chart(d), "now": now}
    if request.query_params.get("part") == "live":
        return html(lg, "_doors_live.html", event=event, q=quote, **ctx)
    return html(lg, "doors.html", live=live_url(event, "doors"), **ctx, **shell(request, rm, user, lg, event, "doors"))


@router.post("/e/{event}/capacity")
def capacity(event: str, p: tuple = Depends(admin_posted), rm=Depends(room)):
    _user, f = p
    need_event(rm, event)
    try:
        cap = int(f.get("capacity", ""))
        if not 1 <= cap <= 10 ** 7:
            raise ValueError
    except ValueError:
        raise CentralError(400, "capacity must be a whole number from 1 to 10000000") from None
    with rm.db.writer() as w:
        w.run("DELETE FROM ops_capacity WHERE event = :e", {"e": event})
        w.run("INSERT INTO ops_capacity (event, capacity) VALUES (:e, :c)", {"e": event, "c": cap})
    return RedirectResponse(f"/ops/e/{quote(event, safe='')}/doors", status_code=303)


@router.get("/e/{event}/gates")
def gates(event: str, request: Request, user: User = Depends(page_user), lg: str = Depends(lang),
          rm=Depends(room)):
    need_event(rm, event)
    with rm.db.reader() as r:
        rows = queries.gates(r, event, rm.clock())
    ctx = {"rows": rows, "amber_min": queries.AMBER_S // 60, "red_min": queries.RED_S // 60}
    if request.query_params.get("part") == "live":
        return html(lg, "_gates_live.html", **ctx)
    return html(lg, "gates.html", live=live_url(event, "gates"), **ctx, **shell(request, rm, user, lg, event, "gates"))


@router.get("/e/{event}/alerts")
def alerts(event: str, request: Request, user: User = Depends(page_user), lg: str = Depends(lang),
           rm=Depends(room)):
    need_event(rm, event)
    _d, al, now = _doors_data(rm, event)
    with rm.db.reader() as r:
        past = queries.alert_history(r, event)
    ctx = {"alerts": al, "history": past, "now": now, "event": event, "q": quote, "user": user, "csrf": user.csrf}
    if request.query_params.get("part") == "live":
        return html(lg, "_alerts_live.html", **ctx)
    ctx.pop("event"), ctx.pop("q"), ctx.pop("user"), ctx.pop("csrf")
    return html(lg, "alerts.html", live=live_url(event, "alerts"), **ctx,
                **shell(request, rm, user, lg, event, "alerts"))


@router.post("/e/{event}/alerts/ack")
def acknowledge(event: str, p: tuple = Depends(admin_posted), rm=Depends(room)):
    user, f = p
    need_event(rm, event)
    key, note = f.get("key", "")[:300], f.get("note", "").strip()[:500]
    if not queries.acknowledge(rm.db, event, key, by=user.name, note=note, now=rm.clock()):
        raise CentralError(409, "that alert is no longer open: reload the page")
    return RedirectResponse(f"/ops/e/{quote(event, safe='')}/alerts", status_code=303)


@router.get("/e/{event}/ticket")
def ticket(event: str, request: Request, user: User = Depends(page_user), lg: str = Depends(lang),
           rm=Depends(room)):
    need_event(rm, event)
    q = request.query_params.get("q", "").strip()[:200]
    found, hist, rows = [], None, []
    if q:
        with rm.db.reader() as r:
            found = queries.find_tickets(r, event, q)
            tid = found[0]["ticket_id"] if len(found) == 1 else q
            hist = queries.ticket_history(r, event, tid)
            names = queries.names(r)
        if hist:
            rows = views.history_rows(hist, names, translations(lg, "ops").gettext, lg)
    return html(lg, "ticket.html", query=q, found=found, hist=hist, rows=rows,
                **shell(request, rm, user, lg, event, "ticket"))


def _report(rm, event: str, lg: str):
    rep = build_report(rm.store, event)  # its own snapshot (store.reader): never blocks ingest
    with rm.db.reader() as r:
        names = queries.names(r)
    return rep, views.report_sections(rep, names, translations(lg, "ops").gettext, lg)


@router.get("/e/{event}/reconciliation")
def reconciliation(event: str, request: Request, user: User = Depends(page_user), lg: str = Depends(lang),
                   rm=Depends(room)):
    need_event(rm, event)
    rep, sections = _report(rm, event, lg)
    return html(lg, "reconciliation.html", rep=rep, sections=sections,
                **shell(request, rm, user, lg, event, "reconciliation"))


@router.get("/e/{event}/reconciliation.csv")
def reconciliation_csv(event: str, request: Request, user: User = Depends(page_user), lg: str = Depends(lang),
                       rm=Depends(room)):
    need_event(rm, event)
    section = request.query_params.get("section", "")
    keys = [k for k, _t, _c in views.SECTIONS]
    if section not in keys:
        raise CentralError(400, f"section must be one of {', '.join(keys)}")
    _rep, sections = _report(rm, event, lg)
    sec = next(s for s in sections if s["key"] == section)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([views.csv_cell(c) for c in sec["cols"]])
    w.writerows([[views.csv_cell(c) for c in r] for r in sec["rows"]])
    # event names are checked when made (no quotes, slashes, line breaks): safe in the header
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{quote(event, safe="")}-{section}.csv"', **NO_STORE})
