"""The ops room's web side. ``mount(app, store)`` adds the pages, their static files, the gate-status
recorder (last contact, link state, outbox depth, clock offset and ledger age
as gates report them in ``X-Gate-*`` headers), and returns ``require_ops``,
the check the report API uses: an ops session cookie, or HTTP Basic auth with
an ops account for scripts. Device tokens get 401.
"""

from __future__ import annotations

import base64
import csv
import hmac
import io
import secrets
import time
from importlib import resources
from urllib.parse import parse_qs, quote

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from sync.central.ops import accounts, queries, views
from sync.central.ops.db import OpsDB
from sync.central.reconcile import build_report
from sync.central.store import CentralError

SESSION_COOKIE, CSRF_COOKIE = "ops_session", "ops_csrf"
LINK_STATES = ("ONLINE", "VENUE", "ALONE")
STATIC = {"ops.css": "text/css", "ops.js": "text/javascript"}
MAX_FORM = 8192


class _Redirect(Exception):
    def __init__(self, url: str):
        self.url = url


def _int_header(headers: dict, name: bytes, lo: int, hi: int) -> int | None:
    try:
        v = int(float(headers[name].decode()))
    except (KeyError, ValueError, UnicodeDecodeError, OverflowError):
        return None
    return v if lo <= v <= hi else None


class GateStatusRecorder:
    """ASGI middleware: after a device request that passed auth, remember when
    the gate was last heard from and what it reported about itself."""

    def __init__(self, app, db: OpsDB, store):
        self.app, self.db, self.store = app, db, store
        self.devices: dict[str, str] = {}   # token hash -> device id
        self.last: dict[str, tuple] = {}    # device id -> (time written, reported values)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/events/"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"")
        if not auth.startswith(b"Bearer "):
            return await self.app(scope, receive, send)

        async def _send(msg):
            # recorded before the answer leaves, so a gate that got its answer is on the page
            if msg["type"] == "http.response.start" and msg["status"] < 400:
                try:
                    await anyio.to_thread.run_sync(self.record, auth[7:].strip().decode("latin-1"), headers)
                except Exception:  # the ops view must never cost a gate its sync
                    pass
            await send(msg)

        await self.app(scope, receive, _send)

    def record(self, token: str, headers: dict) -> None:
        th = accounts.token_hash(token)
        device = self.devices.get(th)
        if device is None:
            with self.db.reader() as r:
                row = r.one("SELECT device_id FROM devices WHERE token_hash = :t", {"t": th})
            if row is None:
                return
            device = self.devices[th] = row["device_id"]
        link = headers.get(b"x-gate-link", b"").decode("latin-1").strip().upper() or None
        vals = (link if link in LINK_STATES else None,
                _int_header(headers, b"x-gate-outbox", 0, 10 ** 12),
                _int_header(headers, b"x-gate-clock-offset-ms", -10 ** 12, 10 ** 12),
                _int_header(headers, b"x-gate-ledger-age-s", 0, 10 ** 12))
        now = time.time()
        prev = self.last.get(device)
        if prev and now - prev[0] < 1.0 and prev[1] == vals:
            return
        self.last[device] = (now, vals)
        p = {"d": device, "now": now, "link": vals[0], "ob": vals[1], "off": vals[2], "age": vals[3]}
        with self.db.writer() as w:
            if w.one("SELECT device_id FROM ops_gate_status WHERE device_id = :d", p) is None:
                w.run("INSERT INTO ops_gate_status (device_id, last_contact) VALUES (:d, :now)", p)
            w.run("UPDATE ops_gate_status SET last_contact = :now WHERE device_id = :d", p)
            if any(v is not None for v in vals):  # a gate that reports nothing keeps its last report
                w.run("UPDATE ops_gate_status SET link = :link, outbox = :ob, clock_offset_ms = :off,"
                      " ledger_age_s = :age, reported_at = :now WHERE device_id = :d", p)


def mount(app: FastAPI, store, *, clock=time.time):
    """Add the ops room to ``app``; return ``require_ops(request) -> user`` for other routes."""
    db = OpsDB(store)
    live = queries.Live()  # whole-event aggregates, refreshed from the new rows only
    app.add_middleware(GateStatusRecorder, db=db, store=store)

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

    def csrf_of(request: Request) -> tuple[str, bool]:
        tok = request.cookies.get(CSRF_COOKIE)
        if tok and 20 <= len(tok) <= 100:
            return tok, False
        return secrets.token_urlsafe(24), True

    def html(request: Request, body: str, status: int = 200, csrf: tuple[str, bool] | None = None) -> Response:
        resp = HTMLResponse(body, status_code=status,
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                     "Content-Security-Policy": "default-src 'self'; style-src 'self';"
                                                                " img-src 'self' data:; frame-ancestors 'none'"})
        if csrf and csrf[1]:
            set_cookie(resp, request, CSRF_COOKIE, csrf[0])
        return resp

    def basic_user(request: Request) -> dict | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Basic "):
            return None
        try:
            name, _, pw = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise CentralError(401, "malformed basic credentials") from None
        if "\x00" in name or "\x00" in pw:  # PostgreSQL cannot compare text with NUL
            raise CentralError(401, "malformed basic credentials (NUL character)")
        try:
            role = accounts.check(db, name, pw, now=clock())
        except accounts.AuthError as exc:
            raise CentralError(401, str(exc)) from None
        return {"name": name, "role": role}

    def user_of(request: Request) -> dict | None:
        """The ops user of this request, or None; raises 401 for any other credentials."""
        tok = request.cookies.get(SESSION_COOKIE)
        if tok and "\x00" not in tok:
            u = accounts.session_user(db, tok, now=clock())
            if u:
                return u
        auth = request.headers.get("authorization", "")
        if auth.startswith("Basic "):
            return basic_user(request)
        if auth:
            raise CentralError(401, "this needs ops credentials (a session, or basic auth with an ops "
                                    "account); device tokens cannot read it")
        return None

    def require_ops(request: Request) -> dict:
        u = user_of(request)
        if u is None:
            raise CentralError(401, "this needs ops credentials: log in at /ops, or use basic auth with an "
                                    "account made by 'gate central ops add NAME'")
        return u

    def page_user(request: Request) -> dict:
        u = user_of(request)
        if u is None:
            raise _Redirect("/ops/login?next=" + quote(request.url.path + (
                "?" + request.url.query if request.url.query else "")))
        return u

    @app.exception_handler(_Redirect)
    def _redirect(request: Request, exc: _Redirect):
        return RedirectResponse(exc.url, status_code=303)

    async def form(request: Request) -> dict[str, str]:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise CentralError(413, "form too large")
        try:
            f = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            raise CentralError(400, "form is not UTF-8") from None
        if any("\x00" in k or "\x00" in v for k, v in f.items()):
            raise CentralError(400, "form field contains a NUL character")
        return f

    def check_csrf(request: Request, f: dict) -> None:
        tok = request.cookies.get(CSRF_COOKIE, "")
        if not tok or not hmac.compare_digest(tok.encode(), f.get("csrf", "").encode()):
            raise CentralError(403, "CSRF token missing or wrong: reload the page and try again")

    def need_event(event: str) -> str:
        if event not in store.events():
            raise CentralError(404, f"no event {event!r}")
        return event

    def shell(request, user, event, title, body, active, csrf):
        return html(request, views.page(title, body, user=user, event=event, events=store.events(),
                                        active=active, csrf=csrf[0]), csrf=csrf)

    # ------------------------------------------------------------ login

    @app.get("/ops/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in STATIC:
            raise CentralError(404, "no such file")
        data = resources.files("sync.central.ops").joinpath("static", name).read_bytes()
        return Response(data, media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})

    def safe_next(nxt: str) -> str:
        return nxt if nxt.startswith("/ops") and not nxt.startswith("//") and "\\" not in nxt else "/ops"

    @app.get("/ops/login", include_in_schema=False)
    def login_page(request: Request):
        csrf = csrf_of(request)
        return html(request, views.login(None, csrf[0], safe_next(request.query_params.get("next", "/ops"))),
                    csrf=csrf)

    @app.post("/ops/login", include_in_schema=False)
    async def login(request: Request):
        f = await form(request)
        csrf = csrf_of(request)
        nxt = safe_next(f.get("next", "/ops"))
        try:
            check_csrf(request, f)
        except CentralError as exc:
            return html(request, views.login(str(exc), csrf[0], nxt), 403, csrf=csrf)
        name, pw = f.get("name", ""), f.get("password", "")
        try:
            await anyio.to_thread.run_sync(lambda: accounts.check(db, name, pw, now=clock()))
        except accounts.AuthError as exc:
            return html(request, views.login(str(exc), csrf[0], nxt), 401, csrf=csrf)
        token = accounts.open_session(db, name, now=clock())
        resp = RedirectResponse(nxt, status_code=303)
        set_cookie(resp, request, SESSION_COOKIE, token, max_age=accounts.SESSION_S)
        set_cookie(resp, request, CSRF_COOKIE, secrets.token_urlsafe(24))  # a fresh one per session
        return resp

    @app.post("/ops/logout", include_in_schema=False)
    async def logout(request: Request):
        f = await form(request)
        check_csrf(request, f)
        tok = request.cookies.get(SESSION_COOKIE)
        if tok:
            accounts.close_session(db, tok)
        resp = RedirectResponse("/ops/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    # ------------------------------------------------------------ pages

    @app.get("/ops", include_in_schema=False)
    def home(request: Request):
        user = page_user(request)
        evs = store.events()
        ev = request.query_params.get("event")
        if ev in evs:
            return RedirectResponse(f"/ops/e/{quote(ev)}/doors", status_code=303)
        if evs:
            return RedirectResponse(f"/ops/e/{quote(evs[-1])}/doors", status_code=303)
        return shell(request, user, None, "No events yet",
                     "<p>Create one: <code>gate central --data DIR event create E</code></p>", "", csrf_of(request))

    def live_or_page(request, user, event, title, active, live_html, extra=""):
        if request.query_params.get("part") == "live":
            return HTMLResponse(live_html, headers={"Cache-Control": "no-store"})
        url = f"/ops/e/{quote(event)}/{active}?part=live"
        return shell(request, user, event, title, views.live(live_html, url) + extra, active, csrf_of(request))

    @app.get("/ops/e/{event}/doors", include_in_schema=False)
    def doors(event: str, request: Request):
        user = page_user(request)
        need_event(event)
        now = clock()
        with db.reader() as r:
            st = live.state(r, event, now)
            gs = queries.gates(r, event, now)
            d = queries.doors(r, st, now, gs)
            al = queries.alerts(r, st, now, gs)
        csrf = csrf_of(request)
        if request.query_params.get("part") == "live":
            return HTMLResponse(views.doors_live(d, al), headers={"Cache-Control": "no-store"})
        return shell(request, user, event, f"Doors — {event}",
                     views.doors(d, al, admin=user["role"] == "admin", csrf=csrf[0],
                                 live_url=f"/ops/e/{quote(event)}/doors?part=live"), "doors", csrf)

    @app.post("/ops/e/{event}/capacity", include_in_schema=False)
    async def capacity(event: str, request: Request):
        user = page_user(request)
        need_event(event)
        f = await form(request)
        check_csrf(request, f)
        if user["role"] != "admin":
            raise CentralError(403, "setting the capacity needs an admin ops account")
        try:
            cap = int(f.get("capacity", ""))
            if not 1 <= cap <= 10 ** 7:
                raise ValueError
        except ValueError:
            raise CentralError(400, "capacity must be a whole number from 1 to 10000000") from None
        with db.writer() as w:
            w.run("DELETE FROM ops_capacity WHERE event = :e", {"e": event})
            w.run("INSERT INTO ops_capacity (event, capacity) VALUES (:e, :c)", {"e": event, "c": cap})
        return RedirectResponse(f"/ops/e/{quote(event)}/doors", status_code=303)

    @app.get("/ops/e/{event}/gates", include_in_schema=False)
    def gates(event: str, request: Request):
        user = page_user(request)
        need_event(event)
        with db.reader() as r:
            rows = queries.gates(r, event, clock())
        note = (f"<p class=muted>A row turns amber (▲) after {queries.AMBER_S // 60} min without contact while "
                f"doors are open, red (✖) after {queries.RED_S // 60} min. Link, outbox, clock offset and ledger "
                "age are what the gate reported at its last sync (— when it did not).</p>")
        return live_or_page(request, user, event, f"Gates — {event}", "gates", views.gates_live(rows), note)

    @app.get("/ops/e/{event}/alerts", include_in_schema=False)
    def alerts(event: str, request: Request):
        user = page_user(request)
        need_event(event)
        now = clock()
        with db.reader() as r:
            al = queries.alerts(r, live.state(r, event, now), now)
        return live_or_page(request, user, event, f"Alerts — {event}", "alerts", views.alerts_live(al, event))

    @app.get("/ops/e/{event}/ticket", include_in_schema=False)
    def ticket(event: str, request: Request):
        user = page_user(request)
        need_event(event)
        q = request.query_params.get("q", "").strip()[:200]
        found, hist = [], None
        if q:
            with db.reader() as r:
                found = queries.find_tickets(r, event, q)
                tid = found[0]["ticket_id"] if len(found) == 1 else q
                hist = queries.ticket_history(r, event, tid)
        csrf = csrf_of(request)
        return shell(request, user, event, f"Ticket — {event}", views.ticket(event, q, found, hist, csrf[0]),
                     "ticket", csrf)

    def report(event: str) -> dict:
        return build_report(store, event)  # its own snapshot (store.reader): never blocks ingest

    @app.get("/ops/e/{event}/reconciliation", include_in_schema=False)
    def reconciliation(event: str, request: Request):
        user = page_user(request)
        need_event(event)
        return shell(request, user, event, f"Reconciliation — {event}",
                     views.reconciliation(report(event), event), "reconciliation", csrf_of(request))

    @app.get("/ops/e/{event}/reconciliation.csv", include_in_schema=False)
    def reconciliation_csv(event: str, request: Request):
        page_user(request)
        need_event(event)
        section = request.query_params.get("section", "")
        if section not in dict(views.SECTIONS):
            raise CentralError(400, f"section must be one of {', '.join(k for k, _ in views.SECTIONS)}")
        cols, rows = views.section_rows(report(event), section)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(cols)
        # a cell starting with = + - @ would run as a formula in a spreadsheet: quote it
        w.writerows([[f"'{c}" if isinstance(c, str) and c[:1] in ("=", "+", "-", "@") else c for c in r]
                     for r in rows])
        return Response(buf.getvalue(), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{event}-{section}.csv"', "Cache-Control": "no-store"})

    api_error = app.exception_handlers.get(CentralError)

    @app.exception_handler(CentralError)
    def _central_error(request: Request, exc: CentralError):
        if not request.url.path.startswith("/ops") or exc.status == 401:
            return api_error(request, exc) if api_error else JSONResponse({"error": str(exc)}, status_code=exc.status)
        return HTMLResponse(f"<!doctype html><meta charset=utf-8><link rel=stylesheet href=/ops/static/ops.css>"
                            f"<main><p class='msg crit'>✖ {views.e(exc)}</p><p><a href=/ops>back</a></p></main>",
                            status_code=exc.status)

    return require_ops


def demo_login(store, base_url: str) -> str:
    """An admin account with a fresh random password for ``gate demo``; returns the line to print."""
    pw = secrets.token_urlsafe(9)
    accounts.add(OpsDB(store), "demo", pw, "admin", now=time.time())
    return f"ops room {base_url}/ops  login demo / {pw}  (live while the story runs)"
