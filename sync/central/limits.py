"""Resource limits at the central's edge: nothing a client sends, or fails to
send, may make the server hold more than a few MB or a connection forever.

- :class:`BodyLimits`, a pure ASGI middleware: refuses a body whose
  Content-Length is over the route's limit before reading any of it (413),
  counts bytes as the route reads them, after it authenticated (chunked
  bodies: 413 as soon as the limit is passed, the rest is never read), and
  gives the whole body a deadline (408).
- :func:`guarded_protocol`: uvicorn's HTTP protocol with a deadline and a size
  cap on the request head (slowloris, header bombs), also after keep-alive.
- :func:`parse_json`: JSON with depth and array-length limits (422).

(An upload's fields and records are checked, decoded once, by
:func:`sync.central.ingest.decode_upload`.)
"""

from __future__ import annotations

import asyncio
import json

from sync.central.errors import CentralError

# An upload batch is sync.client.UPLOAD_BATCH (2,000) records of ~280 bytes CBOR,
# measured 0.75 MB as base64 JSON: 8 MiB leaves a margin of about 11x.
UPLOAD_LIMIT = 8 * 1024 * 1024
BODY_LIMIT = 64 * 1024          # every other endpoint: an enrolment is ~200 bytes
MAX_RECORDS = 10_000            # records per upload (5x the gate's batch, sync.client.UPLOAD_BATCH)
MAX_DEPTH = 8                   # JSON nesting (an upload batch is 2 deep)
MAX_ITEMS = 20_000              # elements of any one JSON array or object
HEADER_TIMEOUT_S = 10.0         # the request head must arrive within this
BODY_TIMEOUT_S = 30.0           # and the body within this
MAX_HEADER_BYTES = 64 * 1024
INT64 = (-(2 ** 63), 2 ** 63 - 1)


def limit_for(method: str, path: str) -> int:
    if method == "POST" and path.startswith("/v1/events/") and path.endswith("/scans"):
        return UPLOAD_LIMIT
    return BODY_LIMIT


def _nul_in_head(scope) -> str | None:
    """Which part of the request head carries a NUL character (raw or %00), if any:
    path parameters such as the event, the query, or a header (X-Gate-*, ...)."""
    if "\x00" in scope["path"] or b"\x00" in scope.get("raw_path", b"") or b"%00" in scope.get("raw_path", b""):
        return "the path"
    q = scope.get("query_string", b"")
    if b"\x00" in q or b"%00" in q:
        return "the query string"
    for name, value in scope["headers"]:
        if b"\x00" in name or b"\x00" in value:
            return f"header {name.decode('latin-1')!r}"
    return None


async def _answer(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimits:
    """Count the body as the app reads it, under a size limit and a deadline.
    Nothing is buffered here: a route authenticates first and reads the body
    after, so an anonymous client cannot make the server hold even one limit's
    worth. Going over raises CentralError (413 / 408), which the app answers;
    the unread rest is never read (uvicorn then closes the connection)."""

    def __init__(self, app, *, body_timeout_s: float | None = None):
        self.app = app
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        nul = _nul_in_head(scope)
        if nul:  # PostgreSQL cannot hold NUL in text: refused here, never a 500 from the database
            return await _answer(send, 400, f"{nul} contains a NUL character")
        limit = limit_for(scope["method"], scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await _answer(send, 400, "Content-Length is not a number")
                if declared > limit:
                    return await _answer(send, 413, f"request body over {limit} bytes")
        timeout = self.body_timeout_s if self.body_timeout_s is not None else BODY_TIMEOUT_S
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        total, complete = 0, False

        async def counted():
            nonlocal total, complete
            if complete:  # body done: later calls wait for the disconnect, no deadline
                return await receive()
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise CentralError(408, f"request body not received within {timeout:g} s") from None
            if msg["type"] == "http.request":
                total += len(msg.get("body", b""))
                if total > limit:
                    raise CentralError(413, f"request body over {limit} bytes")
                complete = not msg.get("more_body", False)
            return msg

        return await self.app(scope, counted, send)


def guarded_protocol(header_timeout_s: float = HEADER_TIMEOUT_S, max_header_bytes: int = MAX_HEADER_BYTES):
    """uvicorn's HTTP protocol class (httptools, else h11) with a deadline and a
    size cap on every request head: a client that trickles its headers, or sends
    megabytes of them, is disconnected. uvicorn itself only times out idle
    keep-alive connections."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # pragma: no cover - httptools is a dependency
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    class GuardedProtocol(Base):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._head_timer = None
            self._arm()

        def _arm(self):
            """A new request head is due: start its clock and byte count."""
            self._head_bytes = 0
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_late)

        def _awaiting_head(self) -> bool:
            # no request in progress (a pipelined one that is being answered counts as in progress)
            return self.cycle is None or self.cycle.response_complete

        def _head_late(self):
            self._head_timer = None
            if self._awaiting_head() and not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._awaiting_head():
                self._head_bytes += len(data)
            super().data_received(data)
            if self._awaiting_head() and self._head_bytes > max_header_bytes \
                    and not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                     b"content-length: 0\r\nconnection: close\r\n\r\n")
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc):
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

    return GuardedProtocol


# ------------------------------------------------------------------ JSON


def parse_json(raw: bytes, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS):
    """JSON text to a value, or CentralError: 400 when it is not JSON, 422 when it
    nests deeper than ``max_depth`` or holds an array/object over ``max_items``."""
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise CentralError(422, f"JSON nested more than {max_depth} deep") from None
    except ValueError:  # includes invalid UTF-8
        raise CentralError(400, "body is not JSON (UTF-8)") from None
    stack = [(doc, 1)]
    while stack:
        obj, depth = stack.pop()
        if isinstance(obj, dict):
            items = [*obj.keys(), *obj.values()]
        elif isinstance(obj, list):
            items = obj
        else:
            if isinstance(obj, str) and "\x00" in obj:
                raise CentralError(422, "JSON text contains a NUL character (\\u0000), which central cannot store")
            if isinstance(obj, str):
                try:
                    obj.encode("utf-8")
                except UnicodeEncodeError:  # a lone surrogate (\\ud800): no database stores it
                    raise CentralError(422, "JSON text contains a lone surrogate (\\ud800-\\udfff), which is "
                                            "not a character: fix the sender's text encoding") from None
            continue
        if depth > max_depth:
            raise CentralError(422, f"JSON nested more than {max_depth} deep")
        if len(obj) > max_items:
            raise CentralError(422, f"JSON array or object with more than {max_items} elements")
        stack.extend((v, depth + 1) for v in items)
    return doc


def int64(text: str | None, name: str, default: int = 0) -> int:
    """A query parameter as an integer the database can hold (else 422)."""
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise CentralError(400, f"{name} must be an integer") from None
    if not INT64[0] < value < INT64[1]:
        raise CentralError(422, f"{name} is out of range")
    return value
