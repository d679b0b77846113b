"""The composition root: the one place that turns configuration into a running
gate and lane (real or simulated hardware). The CLI (`gate run`, `gate tui`),
the staff UI, the demo and the tests all build lanes through :func:`build_lane`.

Who opens a gate: :func:`open_gate` (every command, the lane) and
:func:`init_gate` (``gate init``, the demo's provisioning — the only place
keys are created). A worker that needs its own connection (the sync loop, the
staff UI's reads) gets ``gate.reopen`` from here. Who wires: only this module
builds a :class:`Lane`, its :class:`LaneRunner`, the :class:`LinkMonitor`, the
sync loop and the venue bus service, and connects them (the lane's link,
append hooks and bus, the relay's fault hook, the sync loop's status headers).
The appliance's own parts are attached here too: the fire-alarm input's monitor,
the metrics endpoint (gate.app.metrics) and the service manager's notify socket
and watchdog (gate.app.service), fed by the decision loop's heartbeat.
``tests/test_architecture.py`` holds both rules.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from gate.appliance import Gate
from gate.bus import LinkState, WhenAlone, endpoints, link_state
from gate.errors import ConfigError
from gate.i18n import _
from gate.lane import DEFAULT_PULSE_MS, Lane, LaneFault


def open_gate(data: str | Path, *, now: float | None = None) -> Gate:
    """Open the gate set up in ``data``: its keys must be there and be this gate's
    (never created here: a missing or damaged key is a ConfigError naming the file),
    and the biometric retention deadline is enforced as of ``now`` (default: the
    system clock)."""
    return Gate.open(Path(data), now=time.time() if now is None else now)


def init_gate(data: str | Path, **settings) -> Gate:
    """Set up (or, for the same event, reconfigure) the gate in ``data``: ``gate init``
    and the demo's provisioning. The only place the device and data keys are created."""
    return Gate.init(Path(data), **settings)


def sync_loop(gate: Gate, central_url: str | None = None, **kw):
    """The sync engine with its clock for ``gate`` (``gate sync`` in the foreground,
    a running lane in the background): it works on its own connection (``gate.reopen``)."""
    from sync.loop import SyncLoop
    return SyncLoop.for_gate(gate, central_url, **kw)


class LinkMonitor:
    """The runner's link state: does central answer, how many venue-bus peers are
    there → ONLINE / VENUE / ALONE (``gate.bus.link_state``). The lane (its
    ``--when-alone`` policy), the sync loop's status headers and the UIs read it
    directly; :attr:`on_change` hooks hear ``(state, peers)`` at each change seen by
    :meth:`check` (the bus monitor's ticks, each sync pass, the UI's refresh).
    Calling the monitor returns the state now."""

    def __init__(self, *, central_ok: Callable[[], bool | None] = lambda: None):
        self.central_ok = central_ok  # the sync loop's view (or the demo's switch)
        self.bus = None  # the running venue bus service: its peer count
        self.on_change: list[Callable[..., None]] = []
        self._last: LinkState | None = None
        self._lock = threading.Lock()

    @property
    def peers(self) -> int:
        return self.bus.peers if self.bus is not None else 0

    def state(self) -> LinkState:
        return link_state(central_ok=self.central_ok(), peers=self.peers)

    __call__ = state

    def check(self) -> LinkState:
        """The state now; hooks are told when it differs from the last one seen."""
        with self._lock:
            st = self.state()
            hooks = list(self.on_change) if st != self._last else []
            self._last = st
        for fn in hooks:
            fn(st, self.peers)
        return st

    def subscribe(self, fn: Callable[..., None], **first) -> None:
        """Add a hook and call it once with the state now (``first``: extra fields)."""
        with self._lock:
            st = self._last = self.state()
            self.on_change.append(fn)
        fn(st, self.peers, **first)


@dataclass(frozen=True, kw_only=True, slots=True)
class LaneSpec:
    """Everything that picks a lane's parts: hardware specs (see
    ``hardware.registry``), decoder, timings and the central to sync with."""

    camera: str | None = None
    scanner: str | None = None
    relay: str = "sim"
    relay_exit: str | None = None  # unlock B: a second relay for exits (--relay-exit)
    sensor: str = "none"
    fire_input: str | None = None  # the fire-alarm contact (--fire-input): holds every relay released
    metrics_listen: tuple[str, int] | None = None  # (IP, PORT) for Prometheus /metrics (--metrics-listen)
    decoder: str = "zxing"
    face_camera: str | None = None
    face_liveness: bool = False
    pulse_ms: int = DEFAULT_PULSE_MS
    passage_timeout_s: float | None = None
    central: str | None = None
    max_frames: int | None = None
    # the venue bus (docs/bus.md): added to the endpoints set with 'gate init'
    bus_listen: tuple[str, ...] = ()
    bus_peers: tuple[str, ...] = ()
    bus_scout: bool = False
    when_alone: str = "admit"
    frame: tuple[int, int] = (640, 480)  # the lane camera's frame size (--frame WxH, up to 1280x960)
    wechat: bool = True  # the WeChat CNN fallback after the zxing passes (--no-wechat turns it off)

    @classmethod
    def from_args(cls, args) -> "LaneSpec":
        """From a parsed ``gate run``/``gate tui`` command line."""
        return cls(camera=args.camera, scanner=args.scanner, relay=args.relay, sensor=args.sensor,
                   relay_exit=getattr(args, "relay_exit", None), fire_input=getattr(args, "fire_input", None),
                   metrics_listen=getattr(args, "metrics_listen", None),
                   decoder=args.decoder, face_camera=args.face_camera, face_liveness=args.face_liveness,
                   pulse_ms=args.pulse_ms, passage_timeout_s=args.passage_timeout,
                   central=args.central, max_frames=args.max_frames,
                   bus_listen=tuple(getattr(args, "bus_listen", None) or ()),
                   bus_peers=tuple(getattr(args, "bus_peer", None) or ()),
                   bus_scout=getattr(args, "bus_scout", False), when_alone=getattr(args, "when_alone", "admit"),
                   frame=_frame(getattr(args, "frame", None)), wechat=not getattr(args, "no_wechat", False))


def _frame(spec: str | None) -> tuple[int, int]:
    from hardware.camera import frame_size
    return (640, 480) if spec is None else frame_size(spec)


class LaneRunner:
    """A composed lane with its input (camera or scanner), link monitor, background
    sync and venue bus. :meth:`run` feeds the lane until the source ends or
    :meth:`stop` is called."""

    def __init__(self, gate: Gate, lane: Lane, spec: LaneSpec, *, link: LinkMonitor, sync=None,
                 bus_endpoints: tuple[list[str], list[str]] = ([], [])):
        self.gate, self.lane, self.spec, self.sync, self.link = gate, lane, spec, sync, link
        self.bus = None  # the venue bus service once opened (open_bus)
        self.bus_endpoints = bus_endpoints  # (listen, peers): set with 'gate init' plus this run's
        self.pipeline = None  # the camera's QR pipeline once running (its failed-frame count)
        self._stop = threading.Event()
        from gate.app.service import Heartbeat
        self.heartbeat = Heartbeat()  # the decision loop's own: busy on a frame or code, idle between
        self.fire_monitor = None  # the fire-alarm input's watcher (FireMonitor), when --fire-input
        self.metrics = None  # gate.app.metrics.LaneMetrics, when --metrics-listen
        self.notifier = None  # gate.app.service.Notifier, when run under a service manager
        self.watchdog = None
        self.last_event = None  # for the service manager's STATUS line

    def run(self) -> None:
        import gc

        gc.freeze()  # the lane's long-lived objects stay out of every later collection
        if self.spec.scanner:
            self._run_scanner()
        elif self.spec.camera:
            self._run_camera()
        else:
            raise ConfigError(_("give --camera SPEC (opencv:0, video:FILE, images:DIR, synthetic) "
                                "or --scanner SPEC (stdin, serial:PORT)"))

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------ link and faults

    def status_headers(self) -> dict[str, str]:
        """What each sync pass tells central's ops room beyond the outbox: the link
        state and, while the lane is faulted, the fault (it is also in the scan log)."""
        h = {"X-Gate-Link": self.link.check().value}
        if (f := self.lane.fault) is not None:
            h["X-Gate-Fault"] = f.kind.value
        if self.lane.fire:
            h["X-Gate-Fire"] = "1"
        return h

    # ------------------------------------------------------------ service manager

    def stall_s(self) -> float:
        """The longest one code may keep the decision loop busy: the passage wait, a
        face capture, the pulse, and a margin; longer is a hung loop (the watchdog stops)."""
        from gate.app.service import STALL_MARGIN_S
        cfg = self.gate.config
        face = cfg.face_timeout_s if self.lane.face is not None else 0.0
        return cfg.passage_timeout_s + face + self.lane.pulse_ms / 1000 + STALL_MARGIN_S

    def status_line(self) -> str:
        """One line for systemd's STATUS=: the link, a fault or fire alarm, the last decision."""
        parts = [f"link {self.link.state().value}"]
        if self.lane.fire:
            parts.append("FIRE ALARM: every turnstile released")
        if (f := self.lane.fault) is not None:
            parts.append(f"FAULT {f.kind.value}")
        if self.lane.paused:
            parts.append("paused")
        ev = self.last_event
        if ev is not None:
            parts.append(f"last {ev.decision.reason.value} {ev.outcome} at {time.strftime('%H:%M:%S', time.localtime(ev.at))}")
        else:
            parts.append("no decision yet")
        return "; ".join(parts)

    def notify_ready(self, notifier=None) -> None:
        """Tell the service manager the lane can decide (READY=1) and, when it asks for
        a watchdog, ping it while the decision loop is alive. Nothing without
        ``$NOTIFY_SOCKET``."""
        from gate.app.service import Notifier, Watchdog, watchdog_interval

        n = self.notifier = notifier or Notifier()
        if not n.enabled:
            return
        self.lane.observers.append(self._remember)
        n.send("READY=1", f"STATUS={self.status_line()}", f"MAINPID={os.getpid()}")
        interval = watchdog_interval()
        if interval is not None:
            self.watchdog = Watchdog(n, self.heartbeat, interval_s=interval, stall_s=self.stall_s(),
                                     status=self.status_line).start()

    def _remember(self, ev) -> None:
        self.last_event = ev

    # ------------------------------------------------------------ venue bus

    def open_bus(self):
        """The venue bus service on this runner's endpoints, wired to the lane (append
        hook, status) and the link monitor (peers); not started (:meth:`start_bus`)."""
        from sync.bus_service import open_bus

        listen, peers = self.bus_endpoints
        svc = open_bus(self.gate, listen=listen, peers=peers, scout=self.spec.bus_scout,
                       central_ok=lambda: self.link.central_ok())
        svc.port_peers_configured = bool(peers)
        svc.on_state.append(lambda state, peers: self.link.check())
        self.lane.appended.append(svc.appended)
        self.lane.bus = self.link.bus = self.bus = svc
        return svc

    def start_bus(self, *, on_state: Callable | None = None, wait_peers_s: float | None = None) -> None:
        """Start the venue bus: wait (bounded, default 3 s when peers are configured)
        for a peer and catch up, so the first decision knows what other lanes admitted
        while this one was off. ``on_state(state, peers[, caught_up])`` hears the link
        state now and on change."""
        if wait_peers_s is None:
            wait_peers_s = 3.0 if self.bus.port_peers_configured else 0.0
        self.bus.start(wait_peers_s=wait_peers_s)
        if on_state is not None:
            self.link.subscribe(on_state, caught_up=self.bus.caught_up)
        else:
            self.link.check()

    def close_bus(self) -> None:
        """Stop the venue bus and detach it (the lane carries on; the link loses its peers)."""
        svc, self.bus = self.bus, None
        if svc is None:
            return
        self.lane.appended[:] = [fn for fn in self.lane.appended if fn != svc.appended]
        self.lane.bus = self.link.bus = None
        svc.close()
        self.link.check()

    def close(self) -> None:
        """Stop everything. The relay is opened last of all; a relay that cannot be
        opened raises (HardwareError) after the rest is closed: never silent."""
        self.stop()
        if self.notifier is not None:
            self.notifier.send("STOPPING=1", "STATUS=stopping: the relays are opened last")
        if self.watchdog is not None:
            self.watchdog.stop()
        try:
            if self.fire_monitor is not None:
                self.fire_monitor.stop()
            if self.metrics is not None:
                self.metrics.close()
            self.close_bus()
            if self.sync is not None:
                self.sync.stop()
        finally:
            try:
                errors = []
                for relay in self.lane.relays:
                    try:
                        relay.close()
                    except Exception as exc:
                        errors.append(exc)
                if errors:
                    raise errors[0]
            finally:
                self.lane.sensor.close()
                if self.notifier is not None:
                    self.notifier.close()

    def _run_camera(self) -> None:
        from hardware.qr import FramePipeline, make_decoder
        from hardware.registry import open_device

        from hardware.qr import LANE_RETRIES, lane_fallback

        camera = open_device("camera", self.spec.camera)
        if hasattr(camera, "set_frame"):
            camera.set_frame(*self.spec.frame)
        pipeline = self.pipeline = FramePipeline(make_decoder(self.spec.decoder),
                                                 fallback=lane_fallback(enabled=self.spec.wechat),
                                                 retries_per_frame=LANE_RETRIES)
        frames = 0
        try:
            while not self._stop.is_set() and (self.spec.max_frames is None or frames < self.spec.max_frames):
                self.heartbeat.busy()  # a camera read is the loop's work: it must not hang
                frame = camera.read()
                if frame is None:
                    break
                frames += 1
                for text in pipeline.process(frame.image, frame.index):
                    self.lane.submit(text, frame.captured_ns)
                self.heartbeat.idle()
        finally:
            self.heartbeat.idle()
            camera.close()
            pipeline.close()

    def _run_scanner(self) -> None:
        from hardware.registry import open_device

        scanner = open_device("scanner", self.spec.scanner)
        # a handheld read is deliberate: show every one (the cooldown hides camera re-reads only)
        self.lane.cooldown_s = 0.0
        try:
            while not self._stop.is_set():
                code = scanner.read_code()  # waiting for a holder is not a hung loop: idle
                if code is None:
                    break
                self.heartbeat.busy()
                self.lane.submit(code, time.monotonic_ns())
                self.heartbeat.idle()
        finally:
            self.heartbeat.idle()
            scanner.close()


LANE_PARTS = "lane.parts"  # the relay/sensor specs the lane last ran with (gate fault clear checks these)


def remember_parts(gate: Gate, spec: LaneSpec) -> None:
    """Note the lane's relay and sensor specs, so that ``gate fault clear`` checks
    the parts this lane really has (a convenience: a store that cannot take it now
    is the lane's business, not this note's)."""
    from gate.db import get_setting, put_setting, transaction
    from gate.lane import STORE_ERRORS
    parts = {"relay": spec.relay, "relay_exit": spec.relay_exit, "sensor": spec.sensor}
    try:
        if get_setting(gate.conn, LANE_PARTS) != parts:
            with transaction(gate.conn):
                put_setting(gate.conn, LANE_PARTS, parts)
    except STORE_ERRORS:
        pass


def build_lane(spec: LaneSpec, gate: Gate, *, clock=None, face=None, relay=None, sensor=None,
               start_sync: bool = True, central_ok: Callable[[], bool | None] | None = None) -> LaneRunner:
    """Compose a lane from ``spec``. ``clock``, ``face``, ``relay`` and ``sensor``
    replace what the spec would open (the demo's simulated time and photo
    camera; tests' drivers); ``central_ok`` replaces the sync loop as the link
    monitor's "central answers?" (the demo's network switch). Everything else
    comes from the spec: the sync loop (started), the venue bus (opened, not
    started: :meth:`LaneRunner.start_bus`), the link monitor."""
    from hardware.ports import SystemClock
    from hardware.registry import open_device

    listen, peers = endpoints(gate.conn, spec.bus_listen, spec.bus_peers)
    if spec.when_alone != "admit" and not (spec.central or central_ok or listen or peers or spec.bus_scout):
        # nothing to be alone from: the policy would never apply, and saying nothing would let an
        # operator believe this lane refuses what it admits
        raise ConfigError(_("--when-alone {policy} needs --central URL or a venue bus (--bus-listen, "
                            "--bus-peer, --bus-scout): this lane has neither, so the policy would never "
                            "apply").format(policy=spec.when_alone))
    if spec.passage_timeout_s is not None:
        gate.config = replace(gate.config, passage_timeout_s=spec.passage_timeout_s)
    if face is None and spec.face_camera:
        from hardware.face import FaceSource
        face = FaceSource.from_spec(spec.face_camera, liveness=spec.face_liveness)
    relay_exit = open_device("relay", spec.relay_exit) if spec.relay_exit else None
    lane = Lane(gate, relay=relay or open_device("relay", spec.relay),
                sensor=sensor or open_device("sensor", spec.sensor), relay_exit=relay_exit,
                clock=clock or SystemClock(), face=face, pulse_ms=spec.pulse_ms)
    for r in lane.relays:
        if hasattr(r, "on_fault"):  # a relay that cannot open again pauses the lane
            r.on_fault.append(lane.relay_fault)
    remember_parts(gate, spec)
    lane.when_alone = WhenAlone(spec.when_alone)
    sync = None
    if spec.central and start_sync:
        sync = sync_loop(gate, spec.central)
    if central_ok is None:
        central_ok = (lambda: sync.online) if sync is not None else (lambda: None)
    link = LinkMonitor(central_ok=central_ok)
    runner = LaneRunner(gate, lane, spec, link=link, sync=sync, bus_endpoints=(listen, peers))
    if spec.fire_input:  # before anything decides: a fire alarm in force at start holds the relays now
        runner.fire_monitor = FireMonitor(lane, open_device("input", spec.fire_input), spec=spec.fire_input)
        runner.fire_monitor.check()
        runner.fire_monitor.start()
    if spec.metrics_listen:
        attach_metrics(runner, spec.metrics_listen)
    if listen or peers or spec.bus_scout:
        runner.open_bus()
    if runner.bus is not None or sync is not None:
        lane.link = link  # the link state and --when-alone policy apply
    if sync is not None:
        sync.headers = runner.status_headers  # so central's ops room sees ONLINE / VENUE / ALONE
        sync.start()
    return runner


class FireMonitor:
    """Watches the fire-alarm contact and tells the lane when it changes
    (:meth:`gate.lane.Lane.fire_alarm`). An input that cannot be read counts as an
    alarm: a panel nobody can read releases the lane rather than lock people in."""

    POLL_S = 0.05

    def __init__(self, lane: Lane, contact, *, spec: str = ""):
        self.lane, self.contact, self.spec = lane, contact, spec
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gate-fire", daemon=True)

    def check(self) -> bool:
        try:
            active, detail = bool(self.contact.is_active()), f"fire input {self.spec}"
        except Exception as exc:
            active = True
            detail = f"fire input {self.spec} unreadable ({type(exc).__name__}: {exc}): treated as an alarm"
        if active != self.lane.fire:
            self.lane.fire_alarm(active, detail=detail)
        return active

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.POLL_S):
            try:
                self.check()
            except Exception:  # a failing hook or store must not end the watch (the lane shows faults)
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.contact.close()


def attach_metrics(runner: LaneRunner, listen: tuple[str, int]):
    """Count the lane's decisions, faults and fire alarms, and serve /metrics on ``listen``."""
    from gate.app.metrics import LaneMetrics

    m = LaneMetrics()
    m.runner = runner
    m.registry.register(m)
    runner.lane.observers.append(m.on_event)
    runner.lane.on_fault.append(m.on_fault)
    runner.lane.on_fire.append(m.on_fire)
    runner.metrics = m
    m.serve(*listen)
    return m


def lane_printer(json_events: bool, runner: LaneRunner | None = None) -> tuple[Callable, Callable]:
    """The observers ``gate run`` attaches: for decisions, one JSON object or one line
    each (with the link state when the lane tracks one); for faults, one JSON object
    ``{"fault": KIND, "detail", "at", "seq"}`` when one begins and ``{"fault": null,
    "cleared": KIND, "operator"}`` when a supervisor clears it, or a line on stderr."""
    import json
    import sys

    lane = runner.lane if runner is not None else None

    def as_json(ev) -> None:
        out = ev.to_json()
        if lane is not None and lane.link is not None:
            out["link"] = lane.link().value
        print(json.dumps(out, separators=(",", ":")), flush=True)

    def as_line(ev) -> None:  # for people: the verdict word in the process language, the code as is
        from gate.text import pad
        d = ev.decision
        ms = f" {ev.frame_ms:.1f} ms" if ev.frame_ms is not None else ""
        word = pad(_("ADMIT") if d.accepted else _("REFUSED"), 7)
        print(f"{time.strftime('%H:%M:%S')} {word} {d.reason.value:<16} "
              f"{d.ticket_id or '-'} {ev.outcome}{ms}", flush=True)

    def fault(f: LaneFault, cleared_by: str | None) -> None:
        if json_events:
            doc = f.to_json() if cleared_by is None else {"fault": None, "cleared": f.kind.value,
                                                          "operator": cleared_by}
            print(json.dumps(doc, separators=(",", ":")), flush=True)
        elif cleared_by is None:
            print(f"gate run: LANE FAULT ({f.kind.value}): {f.detail}; nothing is admitted until a "
                  "supervisor clears it (gate tui, p; or gate fault clear OPERATOR)", file=sys.stderr, flush=True)
        else:
            print(f"gate run: {f.kind.value} fault cleared by {cleared_by}", file=sys.stderr, flush=True)

    return (as_json if json_events else as_line), fault


def fire_printer(json_events: bool) -> Callable[[bool, str], None]:
    """What ``gate run`` prints when a fire alarm begins and ends: one JSON object
    ``{"fire": true|false, "detail"}``, or a line on stderr."""
    import json
    import sys

    def fire(active: bool, detail: str = "") -> None:
        if json_events:
            print(json.dumps({"fire": active, "detail": detail}, separators=(",", ":")), flush=True)
        elif active:
            print(_("gate run: FIRE ALARM: every turnstile is held released; no code is admitted until "
                    "the alarm ends"), file=sys.stderr, flush=True)
        else:
            print(_("gate run: fire alarm over: the turnstiles lock again"), file=sys.stderr, flush=True)

    return fire
