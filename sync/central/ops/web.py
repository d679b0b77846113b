"""The ops room's web side. ``mount(app, store)`` puts the room's state on
``app.state.ops_room``, includes the pages' router (:mod:`.pages`), adds the
gate-status recorder (last contact, link state, outbox depth, clock offset and
ledger age as gates report them in ``X-Gate-*`` headers) and the security
headers of every ``/ops`` response (pages, live fragments, redirects, errors),
and returns ``require_ops``, the check the report API uses: an ops session
cookie, or HTTP Basic auth with an ops account for scripts (throttled before
any scrypt). Device tokens get 401.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Callable

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from sync.central.ops import accounts, auth, queries
from sync.central.ops.db import OpsDB
from sync.central.ops.render import render
from sync.central.ops.throttle import Throttle
from sync.central.store import CentralError

LINK_STATES = ("ONLINE", "VENUE", "ALONE")
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"media-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin")]


@dataclass
class OpsRoom:
    """What the pages share: the store, the ops tables, the live aggregates, the alert records,
    the login throttle and the clock."""
    store: object
    db: OpsDB
    clock: Callable[[], float] = time.time
    live: queries.Live = field(default_factory=queries.Live)
    book: queries.AlertBook = field(default_factory=queries.AlertBook)
    throttle: Throttle = field(default_factory=Throttle)


class SecurityHeaders:
    """ASGI middleware: the CSP and frame headers on every /ops response, whatever produced it
    (a page, a live fragment, a redirect, an error handler, a 404 from routing)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/ops"):
            return await self.app(scope, receive, send)

        async def _send(msg):
            if msg["type"] == "http.response.start":
                have = {k.lower() for k, _ in msg.get("headers", [])}
                msg["headers"] = [*msg.get("headers", []), *((k, v) for k, v in SECURITY_HEADERS if k not in have)]
            await send(msg)

        await self.app(scope, receive, _send)


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
    from sync.central.ops.pages import router

    rm = app.state.ops_room = OpsRoom(store, OpsDB(store), clock)
    app.add_middleware(GateStatusRecorder, db=rm.db, store=store)
    app.add_middleware(SecurityHeaders)
    app.include_router(router)

    @app.exception_handler(auth.Redirect)
    def _redirect(request: Request, exc: auth.Redirect):
        return RedirectResponse(exc.url, status_code=303)

    api_error = app.exception_handlers.get(CentralError)

    @app.exception_handler(CentralError)
    def _central_error(request: Request, exc: CentralError):
        if not request.url.path.startswith("/ops") or exc.status == 401:
            return api_error(request, exc) if api_error else JSONResponse({"error": str(exc)}, status_code=exc.status)
        lg = auth.lang(request)
        return HTMLResponse(render(lg, "error.html", message=str(exc), status=exc.status), status_code=exc.status,
                            headers={"Cache-Control": "no-store"})

    def require_ops(request: Request) -> dict:
        u = auth.api_user(request)
        return {"name": u.name, "role": u.role}

    return require_ops


def demo_login(store, base_url: str) -> str:
    """An admin account with a fresh random password for ``gate demo``; returns the line to print."""
    pw = secrets.token_urlsafe(9)
    accounts.add(OpsDB(store), "demo", pw, "admin", now=time.time())
    return f"ops room {base_url}/ops  login demo / {pw}  (live while the story runs)"
