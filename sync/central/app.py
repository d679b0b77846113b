"""The reference central server: the sync protocol of docs/sync.md over HTTP+JSON (FastAPI), backed by
:class:`sync.central.store.CentralStore`. ``/openapi.json`` documents it."""

from __future__ import annotations

import base64
import json
import time

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from sync.central.limits import BodyLimits, check_batch, guarded_protocol, int64, parse_json
from sync.central.store import CentralError, CentralStore, Unavailable
from sync.central.reconcile import build_report, render_text

MAX_PAGE = 5000


def _json(obj, status: int = 200) -> Response:
    return Response(json.dumps(obj, separators=(",", ":")), status_code=status,
                    media_type="application/json")


def create_app(store: CentralStore) -> FastAPI:
    app = FastAPI(title="Gate central (reference)", version="1",
                  description="Sync protocol of docs/sync.md: devices, key rings, ticket deltas, scans, "
                              "admissions and reconciliation.")
    app.add_middleware(BodyLimits)  # body size limits and deadline (limits.py)

    @app.exception_handler(CentralError)
    def _central_error(request: Request, exc: CentralError):
        headers = {"Retry-After": str(exc.extra["retry_after"])} if "retry_after" in exc.extra else None
        return JSONResponse({"error": str(exc), **exc.extra}, status_code=exc.status, headers=headers)

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

    def device(request: Request, event: str | None = None) -> tuple[str, str, bytes]:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise CentralError(401, "missing bearer token")
        return store.device_for_token(auth[7:].strip(), event)

    def page_args(request: Request, default: int = 1000) -> tuple[int, int]:
        try:
            cursor = int64(request.query_params.get("cursor"), "cursor")
            limit = min(MAX_PAGE, max(1, int64(request.query_params.get("limit"), "limit", default)))
        except ValueError:
            raise CentralError(400, "cursor and limit must be integers") from None
        return cursor, limit

    @app.post("/v1/devices")
    async def register(request: Request):
        body = parse_json(await request.body())
        try:
            pub = base64.urlsafe_b64decode(body["public_key"] + "=" * (-len(body["public_key"]) % 4))
            code, device_id = str(body["enrolment_code"]), str(body["device_id"])
            event = body.get("event")
            if event is not None and not isinstance(event, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CentralError(400, "body needs enrolment_code, device_id, public_key (base64url)") from None
        client = request.client.host if request.client else "-"
        return _json(await run_in_threadpool(store.register, code, device_id, pub, event=event, client=client), 201)

    @app.get("/v1/time")
    def server_time():
        return _json({"time": time.time()})

    @app.get("/v1/events/{event}/keyring")
    def keyring(event: str, request: Request):
        device(request, event)
        return _json(store.keyring(event))

    def paged(request: Request, event: str, fetch) -> Response:
        device(request, event)
        cursor, limit = page_args(request)
        items, nxt, more = fetch(event, cursor, limit)
        return _json({"items": items, "cursor": str(nxt), "more": more})

    @app.get("/v1/events/{event}/tickets")
    def tickets(event: str, request: Request):
        return paged(request, event, store.ticket_page)

    @app.post("/v1/events/{event}/scans")
    async def scans(event: str, request: Request):
        device_id, _, pub = await run_in_threadpool(device, request, event)  # never wait for a DB on the loop
        batch = parse_json(await request.body())
        try:
            check_batch(batch)
        except CentralError as exc:  # kept for the report, like any refused upload
            await run_in_threadpool(store._problem, event, device_id, "malformed_upload", str(exc))
            raise
        # off the event loop: while one upload waits for the database, others are parsed
        return _json(await run_in_threadpool(store.store_scans, event, device_id, pub, batch))

    @app.get("/v1/events/{event}/admissions")
    def admissions(event: str, request: Request):
        return paged(request, event, store.admissions)

    @app.get("/v1/events/{event}/devices")
    def devices(event: str, request: Request):
        """The event's devices, public keys and status: the gates' venue bus trust list."""
        device(request, event)
        return _json(store.devices(event))

    @app.get("/v1/events/{event}/reconciliation")
    def reconciliation(event: str, request: Request):
        require_ops(request)
        rep = build_report(store, event)
        if request.query_params.get("format") == "text":
            return PlainTextResponse(render_text(rep))
        return _json(rep)

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
