"""The reference central server: the sync protocol of docs/sync.md over HTTP+JSON (FastAPI), backed by
:class:`sync.central.store.CentralStore`. ``/openapi.json`` documents it: bodies and parameters
are the pydantic models of :mod:`sync.central.models`.

Request bodies are read by the routes themselves, after the device is authenticated, under the
size and depth limits of :mod:`sync.central.limits`; FastAPI validates only the query, path and
headers (a malformed one answers ``{"error": ...}`` with 400, or 422 when out of range)."""

from __future__ import annotations

import base64
import json
import time
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyCookie, HTTPBearer
from fastapi.security.http import HTTPBase
from starlette.concurrency import run_in_threadpool

from sync.central import feeds
from sync.central.limits import BodyLimits, guarded_protocol, int64, parse_json
from sync.central.models import (AdmissionPage, BusCredentialAnswer, BusCredentialRequest, DeviceListAnswer,
                                 EnrolAnswer, EnrolRequest, ErrorAnswer, GateHeaders, KeyRingAnswer, PageQuery, ReportQuery, TicketPage, TicketPageQuery, TimeAnswer,
                                 UploadAnswer, UploadBatch, body_doc, query_refusal, validate)
from sync.central.reconcile import build_report, render_text
from sync.central.store import CentralError, CentralStore, Unavailable

MAX_PAGE = 5000
DEFAULT_PAGE = 1000

_ENROL_MESSAGES = {
    "device_id:string_too_short": "device_id must be 1-128 characters",
    "device_id:string_too_long": "device_id must be 1-128 characters",
    "event": "event must be a string (the gate's event) or absent",
    **{f: "body needs enrolment_code, device_id, public_key (base64url)"
       for f in ("enrolment_code", "device_id", "public_key")},
}


def _json(obj, status: int = 200) -> Response:
    return Response(json.dumps(obj, separators=(",", ":")), status_code=status,
                    media_type="application/json")


GZIP_MIN_BYTES = 64 * 1024  # smaller answers go as they are: compressing them costs more than it saves


def _json_page(obj, request: Request) -> Response:
    """A feed page, gzip-compressed (level 1) when the client accepts gzip and the
    page is large (docs/sync.md): a 5000-ticket page of ~1 MB goes as ~120 KB. A
    client that sends no ``Accept-Encoding: gzip`` gets the JSON as it is."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    if len(body) < GZIP_MIN_BYTES or not _accepts_gzip(request.headers.get("accept-encoding", "")):
        return Response(body, media_type="application/json")
    import gzip
    return Response(gzip.compress(body, compresslevel=1, mtime=0), media_type="application/json",
                    headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})


def _accepts_gzip(header: str) -> bool:
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


def _errors(*statuses: int) -> dict:
    return {s: {"model": ErrorAnswer} for s in statuses}


def create_app(store: CentralStore) -> FastAPI:
    app = FastAPI(title="Gate central (reference)", version="1",
                  description="Sync protocol of docs/sync.md: devices, key rings, ticket deltas, scans, "
                              "admissions and reconciliation.",
                  # any request: NUL in the path/query/headers, a malformed or out-of-range parameter,
                  # a body over the limit or too slow, a busy database
                  responses=_errors(400, 408, 413, 422, 503))
    app.add_middleware(BodyLimits)  # body size limits and deadline (limits.py)

    @app.exception_handler(CentralError)
    def _central_error(request: Request, exc: CentralError):
        headers = {"Retry-After": str(exc.extra["retry_after"])} if "retry_after" in exc.extra else None
        return JSONResponse({"error": str(exc), **exc.extra}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    def _bad_request(request: Request, exc: RequestValidationError):
        return _central_error(request, query_refusal(list(exc.errors())))

    @app.exception_handler(Unavailable)
    def _unavailable(request: Request, exc: Unavailable):
        # pool exhausted or database connection lost: a bounded wait happened; the gate retries
        return JSONResponse({"error": f"central is busy or its database is unreachable ({exc}): retry",
                             "retry_after": exc.retry_after}, status_code=503,
                            headers={"Retry-After": str(exc.retry_after)})

    from sync.central.ops import mount as mount_ops  # the ops room under /ops; ops credentials for reports
    require_ops = mount_ops(app, store)
    from sync.central.wallet import mount as mount_wallet  # the holder's wallet under /wallet (docs/wallet.md)
    mount_wallet(app, store)

    # documentation only: the routes check the token themselves (device() below, ops' require_ops)
    bearer = HTTPBearer(auto_error=False, scheme_name="device token",
                        description="the device's token from POST /v1/devices")
    ops_basic = HTTPBase(scheme="basic", auto_error=False, scheme_name="ops account",
                         description="an ops account (gate central ops add)")
    ops_cookie = APIKeyCookie(name="ops_session", auto_error=False, scheme_name="ops session",
                              description="the session cookie of the /ops pages")

    def gate_headers(headers: Annotated[GateHeaders, Header()]) -> None:
        """The X-Gate-* headers, for the OpenAPI description (the ops room's middleware reads them)."""

    as_device = [Security(bearer), Depends(gate_headers)]

    def device(request: Request, event: str | None = None) -> tuple[str, str, bytes]:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise CentralError(401, "missing bearer token")
        return store.device_for_token(auth[7:].strip(), event)

    def page_args(q: PageQuery) -> tuple[int, int]:
        cursor = int64(q.cursor, "cursor")
        limit = DEFAULT_PAGE if q.limit is None else min(MAX_PAGE, max(1, q.limit))
        return cursor, limit

    @app.post("/v1/devices", status_code=201, openapi_extra=body_doc(EnrolRequest),
              responses={201: {"model": EnrolAnswer}, **_errors(400, 403, 413, 422, 429)})
    async def register(request: Request):
        """Register a device with a one-time enrolment code; answers its token."""
        body = validate(EnrolRequest, parse_json(await request.body()), _ENROL_MESSAGES)
        try:
            pub = base64.urlsafe_b64decode(body.public_key + "=" * (-len(body.public_key) % 4))
        except ValueError:
            raise CentralError(400, "body needs enrolment_code, device_id, public_key (base64url)") from None
        client = request.client.host if request.client else "-"
        return _json(await run_in_threadpool(store.register, body.enrolment_code, body.device_id, pub,
                                             event=body.event, client=client), 201)

    @app.get("/v1/time", responses={200: {"model": TimeAnswer}})
    def server_time():
        """Central's clock, for the gate's clock check."""
        return _json({"time": time.time()})

    @app.get("/v1/events/{event}/keyring", dependencies=as_device,
             responses={200: {"model": KeyRingAnswer}, **_errors(401, 403)})
    def keyring(event: str, request: Request):
        """The event's issuer key ring (docs/formats.md)."""
        device(request, event)
        return _json(store.keyring(event))

    def paged(request: Request, event: str, q: PageQuery, fetch) -> Response:
        device(request, event)
        cursor, limit = page_args(q)
        items, nxt, more = fetch(event, cursor, limit)
        return _json_page({"items": items, "cursor": str(nxt), "more": more}, request)

    @app.get("/v1/events/{event}/tickets", dependencies=as_device,
             responses={200: {"model": TicketPage}, **_errors(400, 401, 403, 422)})
    def tickets(event: str, request: Request, q: Annotated[TicketPageQuery, Query()]):
        """Ticket records changed since the cursor, in change order (``layout=rows``:
        one array per record, in the order of ``columns``)."""
        if q.layout != "rows":
            return paged(request, event, q, store.ticket_page)
        device(request, event)
        cursor, limit = page_args(q)
        rows, nxt, more = store.ticket_rows(event, cursor, limit)
        return _json_page({"columns": list(feeds.TICKET_COLUMNS), "rows": rows, "cursor": str(nxt), "more": more},
                          request)

    @app.post("/v1/events/{event}/scans", dependencies=as_device, openapi_extra=body_doc(UploadBatch),
              responses={200: {"model": UploadAnswer}, **_errors(400, 401, 403, 409, 413, 422)})
    async def scans(event: str, request: Request):
        """Upload a run of the device's scan log with its signed chain head (idempotent)."""
        device_id, _, pub = await run_in_threadpool(device, request, event)  # never wait for a DB on the loop
        doc = parse_json(await request.body())
        started = time.perf_counter()
        # off the event loop: while one upload waits for the database, others are parsed
        answer = await run_in_threadpool(store.store_scans, event, device_id, pub, doc)
        records = doc.get("records") if isinstance(doc, dict) else None
        app.state.metrics.batch_done(started, len(records) if isinstance(records, list) else 0)
        return _json(answer)

    @app.get("/v1/events/{event}/admissions", dependencies=as_device,
             responses={200: {"model": AdmissionPage}, **_errors(400, 401, 403, 422)})
    def admissions(event: str, request: Request, q: Annotated[PageQuery, Query()]):
        """Admissions (and rollbacks) recorded by all gates of the event, in arrival order."""
        return paged(request, event, q, store.admissions)

    @app.get("/v1/events/{event}/devices", dependencies=as_device,
             responses={200: {"model": DeviceListAnswer}, **_errors(401, 403)})
    def devices(event: str, request: Request):
        """The event's devices, public keys and status: the gates' venue bus trust list."""
        device(request, event)
        return _json(store.devices(event))

    from sync.central.bus_ca import BusCA  # venue-bus certificates (docs/bus.md, "Transport")
    bus_ca = BusCA(store)

    @app.post("/v1/events/{event}/bus-credential", dependencies=as_device,
              openapi_extra=body_doc(BusCredentialRequest),
              responses={200: {"model": BusCredentialAnswer}, **_errors(400, 401, 403, 413, 422)})
    async def bus_credential(event: str, request: Request):
        """A venue-bus TLS certificate from the event's CA for this device's bus key."""
        device_id, _, _ = await run_in_threadpool(device, request, event)
        body = parse_json(await request.body())
        return _json(await run_in_threadpool(bus_ca.issue, event, device_id, body))

    @app.get("/v1/events/{event}/reconciliation", dependencies=[Security(ops_basic), Security(ops_cookie)],
             responses={200: {"description": "the report (docs/sync.md); text/plain with format=text"},
                        **_errors(401)})
    def reconciliation(event: str, request: Request, q: Annotated[ReportQuery, Query()]):
        """The reconciliation report; ops credentials only."""
        require_ops(request)
        rep = build_report(store, event)
        if q.format == "text":
            return PlainTextResponse(render_text(rep))
        return _json(rep)

    from sync.central.metrics import CentralMetrics, CountRequests  # /metrics (ops credentials)
    metrics = app.state.metrics = CentralMetrics(store)
    app.add_middleware(CountRequests, metrics=metrics)

    @app.get("/metrics", dependencies=[Security(ops_basic), Security(ops_cookie)],
             responses={200: {"description": "Prometheus text format"}, **_errors(401)})
    def prometheus(request: Request):
        """Prometheus metrics (text format); ops credentials only."""
        require_ops(request)
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


class ServerThread:
    """Run the app with uvicorn in a background thread (tests, demo)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import socket
        import threading

        import uvicorn

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()
        # proxy_headers=False: never take the client address from X-Forwarded-For (the per-address
        # enrolment limit would be bypassed by a made-up header), as in 'gate central serve'
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                    http=guarded_protocol(), proxy_headers=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()
