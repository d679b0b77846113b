"""Prometheus metrics of a running lane (``gate run --metrics-listen IP:PORT``,
text format at ``/metrics``), with prometheus-client on a registry of its own.

Counted as they happen (a lane observer, fault and fire hooks): decisions by
reason (labels: the Reason enum only), the frame→relay latency, faults by kind,
fire alarms. Read at scrape time (a collector on its own database connection,
never the lane's): failed frames, the link state, bus peers, the outbox, the
ledger's age, the clock offset to central, whether a fault or a fire alarm is in
force. Every label is bounded: reasons, fault kinds and link states are enums.
"""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from gate.bus import LinkState
from gate.decision import Reason
from gate.errors import ConfigError
from gate.lane import FaultKind

# frame (or scanner read) → relay command, seconds: the lane's budget is well under a second
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LaneMetrics:
    """The lane's metrics; :meth:`attach` hooks them to a runner (compose does it)."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter("gate_decisions", "Decisions by reason code", ["reason"], registry=self.registry)
        self.outcomes = Counter("gate_outcomes", "What the turnstile did after a decision", ["outcome"],
                                registry=self.registry)
        self.latency = Histogram("gate_frame_to_relay_seconds",
                                 "From the frame (or scanner read) to the relay command, per decision",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.faults = Counter("gate_faults", "Lane faults begun, by kind (relay, sensor, store)", ["kind"],
                              registry=self.registry)
        self.fires = Counter("gate_fire_alarms", "Fire alarms begun", registry=self.registry)
        for r in Reason:  # every series exists from the start (rate() needs a zero)
            self.decisions.labels(reason=r.value)
        for k in FaultKind:
            self.faults.labels(kind=k.value)
        self.runner = None
        self._read_gate = None
        self._read_lock = threading.Lock()
        self.server = None

    # hooks (from the lane's threads; prometheus-client's metrics are thread-safe)
    def on_event(self, ev) -> None:
        self.decisions.labels(reason=ev.decision.reason.value).inc()
        self.outcomes.labels(outcome=ev.outcome if ev.outcome in _OUTCOMES else "other").inc()
        if ev.frame_ms is not None:
            self.latency.observe(ev.frame_ms / 1000)

    def on_fault(self, fault, cleared_by) -> None:
        if cleared_by is None:
            self.faults.labels(kind=fault.kind.value).inc()

    def on_fire(self, active: bool, detail: str = "") -> None:
        if active:
            self.fires.inc()

    def describe(self):  # the scrape-time series are not known before a runner is attached
        return []

    # read at scrape time
    def collect(self):
        r = self.runner
        if r is None:
            return
        lane = r.lane
        p = r.pipeline
        yield _gauge("gate_failed_frames", "Camera frames the decoder failed on (the lane went on)",
                     p.errors if p is not None else 0)
        yield _gauge("gate_frames", "Camera frames read", p.frames if p is not None else 0)
        link = GaugeMetricFamily("gate_link_state", "The link state (1 for the state now)", labels=["state"])
        now = r.link.state()
        for st in LinkState:
            link.add_metric([st.value], 1.0 if st is now else 0.0)
        yield link
        yield _gauge("gate_bus_peers", "Venue-bus peers connected", r.link.peers)
        yield _gauge("gate_fault", "1 while a lane fault is in force (nothing is admitted)",
                     1 if lane.fault is not None else 0)
        yield _gauge("gate_fire_alarm", "1 while a fire alarm holds every relay released", 1 if lane.fire else 0)
        yield _gauge("gate_paused", "1 while staff paused the lane", 1 if lane.paused else 0)
        outbox, ledger_age = self._from_store()
        if outbox is not None:
            yield _gauge("gate_outbox_records", "Scan-log records not yet acknowledged by central", outbox)
        if ledger_age is not None:
            yield _gauge("gate_ledger_age_seconds", "Seconds since the ticket ledger was last updated", ledger_age)
        rep = getattr(r.sync, "last_report", None) if r.sync is not None else None
        off = getattr(rep, "clock_offset_s", None)
        if off is not None:
            yield _gauge("gate_clock_offset_seconds", "Central's clock minus this gate's, at the last sync", off)

    def _from_store(self) -> tuple[int | None, float | None]:
        from gate.db import get_setting
        from sync.client import outbox_length

        with self._read_lock:
            try:
                if self._read_gate is None:
                    self._read_gate = self.runner.gate.reopen()
                g = self._read_gate
                imported = get_setting(g.conn, "ledger_imported_at")
                age = max(0.0, time.time() - imported) if isinstance(imported, (int, float)) else None
                return outbox_length(g), age
            except Exception:  # a busy or failing store: those series are left out of this scrape
                return None, None

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Serve /metrics on ``host:port`` in a daemon thread; the (host, port) bound."""
        from prometheus_client import start_http_server

        try:
            self.server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"--metrics-listen {host}:{port}: cannot listen there ({exc.strerror or exc}): "
                              "choose a free port on an address of this box") from None
        return self.server.server_address[:2]

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        with self._read_lock:
            if self._read_gate is not None:
                self._read_gate.close()
                self._read_gate = None


_OUTCOMES = {"passed", "rolled_back", "rejected", "exit", "override", "unconfirmed"}


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))
