"""A fault-injecting HTTP proxy on 127.0.0.1 for sync tests: between the gate
and the real central it can be down, answer 500, stall past the client's
timeout, reset mid-body, send malformed JSON, truncate a page, or forward a
request and lose the answer (so the client repeats it)."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
import urllib3

MODES = ("pass", "down", "500", "slow", "reset", "garbage", "deep", "truncate", "drop_ack")


class FaultyProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream
        self.mode = "pass"
        self.only_path: str | None = None  # apply the fault only to paths containing this
        self.stall_s = 2.5  # "slow": how long to hold a request (longer than the client's read timeout)
        self.hits: dict[str, int] = {}
        self.requests: list[tuple[str, str, str]] = []  # (method, path without the query, mode) in arrival order
        # requests forwarded on a connection the upstream accepted, which then died with no answer
        # (the upstream process was killed while it held them): proof that a fault hit one in flight
        self.lost: list[tuple[str, str]] = []
        self.forwarding = 0  # requests handed to the upstream and not answered yet
        count = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                mode = proxy.mode if (proxy.only_path is None or proxy.only_path in self.path) else "pass"
                proxy.hits[mode] = proxy.hits.get(mode, 0) + 1
                proxy.requests.append((self.command, self.path.partition("?")[0], mode))
                if mode == "down":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if mode == "500":
                    return self._send(500, b'{"error":"injected"}')
                if mode == "slow":
                    time.sleep(proxy.stall_s)
                    return self._send(503, b"{}")
                if mode == "garbage":
                    return self._send(200, b'{"items": [ {"ticket_id": ')
                if mode == "deep":  # JSON nested deeper than any parser's recursion goes
                    return self._send(200, b"[" * 200_000)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                with count:
                    proxy.forwarding += 1
                try:
                    up = requests.request(self.command, proxy.upstream + self.path, data=body, headers=headers,
                                          timeout=30)
                except requests.ConnectionError as exc:
                    if isinstance(exc.args[0] if exc.args else None, urllib3.exceptions.ProtocolError):
                        proxy.lost.append((self.command, self.path.partition("?")[0]))
                    self.connection.shutdown(socket.SHUT_RDWR)  # the gate sees what it would have seen
                    return
                finally:
                    with count:
                        proxy.forwarding -= 1
                if mode == "drop_ack":
                    return self._send(502, b'{"error":"bad gateway"}')
                if mode == "reset":
                    self.send_response(up.status_code)
                    self.send_header("Content-Length", str(len(up.content)))
                    self.end_headers()
                    self.wfile.write(up.content[: len(up.content) // 2])
                    self.wfile.flush()
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.rfile.close()  # the last other reference to the socket: close() now really resets it
                    self.connection.close()
                    self.close_connection = True
                    return
                if mode == "truncate":
                    return self._send(up.status_code, up.content[: max(1, len(up.content) * 2 // 3)])
                self._send(up.status_code, up.content)

            def _send(self, status, data):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
