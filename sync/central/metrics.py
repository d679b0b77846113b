"""The central's Prometheus metrics (``/metrics``, text format, prometheus-client
on a registry of its own): requests by route *template* and status (never the
raw path: an event name or a made-up URL never becomes a label), scans ingested,
upload batch latency, and the database pool in use.

``/metrics`` on the API's own address needs ops credentials (basic auth with an
ops account, or the ops room's session); ``gate central serve --metrics-listen
IP:PORT`` also serves it, without credentials, on a separate address (a
monitoring network)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"  # no route answered (404s of scanners and typos: one label, not one per path)


class CentralMetrics:
    def __init__(self, store):
        self.store = store
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("central_http_requests", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("central_http_request_seconds", "Request handling time by route template",
                                 ["route"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.scans = Counter("central_scans_ingested", "Scan-log records received in accepted uploads",
                             registry=self.registry)
        self.batch = Histogram("central_upload_batch_seconds", "Time to verify and store one upload batch",
                               buckets=BATCH_BUCKETS, registry=self.registry)
        self.registry.register(self)

    def describe(self):
        return []

    def collect(self):
        db = getattr(self.store, "db", None)
        for name, engine in (("write", getattr(db, "engine", None)), ("read", getattr(db, "read_engine", None))):
            pool = getattr(engine, "pool", None)
            if pool is None or not hasattr(pool, "checkedout"):
                continue
            g = GaugeMetricFamily("central_db_pool_connections", "Database pool connections by state",
                                  labels=["pool", "state"])
            g.add_metric([name, "in_use"], float(pool.checkedout()))
            g.add_metric([name, "size"], float(pool.size()))
            yield g

    def batch_done(self, started: float, records: int) -> None:
        self.batch.observe(time.perf_counter() - started)
        self.scans.inc(records)

    def text(self) -> bytes:
        from prometheus_client import generate_latest
        return generate_latest(self.registry)

    def serve(self, host: str, port: int):
        """``--metrics-listen``: the same text on a separate address, no credentials."""
        from prometheus_client import start_http_server
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server


class CountRequests:
    """ASGI middleware: counts each HTTP request under its route's template."""

    def __init__(self, app, metrics: CentralMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", None)
            template = (scope.get("root_path", "") + template) if template else UNMATCHED
            method = scope.get("method", "GET")
            if method not in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"):
                method = "other"
            self.metrics.requests.labels(route=template, method=method, status=str(status["code"])).inc()
            self.metrics.latency.labels(route=template).observe(time.perf_counter() - started)
