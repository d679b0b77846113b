"""The composition root: the one place that turns configuration into a running
gate and lane (real or simulated hardware). The CLI (`gate run`, `gate tui`),
the staff UI, the demo and the tests all build lanes through :func:`build_lane`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from gate.appliance import Gate
from gate.errors import ConfigError
from gate.lane import DEFAULT_PULSE_MS, Lane


def open_gate(data: str | Path, *, now: float | None = None) -> Gate:
    """Open the gate in ``data`` as of ``now`` (default: the system clock)."""
    return Gate.open(Path(data), now=time.time() if now is None else now)


@dataclass(frozen=True, kw_only=True, slots=True)
class LaneSpec:
    """Everything that picks a lane's parts: hardware specs (see
    ``hardware.registry``), decoder, timings and the central to sync with."""

    camera: str | None = None
    scanner: str | None = None
    relay: str = "sim"
    sensor: str = "none"
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

    @classmethod
    def from_args(cls, args) -> "LaneSpec":
        """From a parsed ``gate run``/``gate tui`` command line."""
        return cls(camera=args.camera, scanner=args.scanner, relay=args.relay, sensor=args.sensor,
                   decoder=args.decoder, face_camera=args.face_camera, face_liveness=args.face_liveness,
                   pulse_ms=args.pulse_ms, passage_timeout_s=args.passage_timeout,
                   central=args.central, max_frames=args.max_frames,
                   bus_listen=tuple(getattr(args, "bus_listen", None) or ()),
                   bus_peers=tuple(getattr(args, "bus_peer", None) or ()),
                   bus_scout=getattr(args, "bus_scout", False), when_alone=getattr(args, "when_alone", "admit"))


class LaneRunner:
    """A composed lane with its input (camera or scanner) and background sync.
    :meth:`run` feeds the lane until the source ends or :meth:`stop` is called."""

    def __init__(self, gate: Gate, lane: Lane, spec: LaneSpec, sync=None, bus=None):
        self.gate, self.lane, self.spec, self.sync, self.bus = gate, lane, spec, sync, bus
        self.pipeline = None  # the camera's QR pipeline once running (its failed-frame count)
        self._stop = threading.Event()

    def run(self) -> None:
        import gc

        gc.freeze()  # the lane's long-lived objects stay out of every later collection
        if self.spec.scanner:
            self._run_scanner()
        elif self.spec.camera:
            self._run_camera()
        else:
            raise ConfigError("give --camera SPEC (opencv:0, video:FILE, images:DIR, synthetic) "
                              "or --scanner SPEC (stdin, serial:PORT)")

    def stop(self) -> None:
        self._stop.set()

    def start_bus(self, *, on_state: Callable | None = None, wait_peers_s: float = 3.0) -> None:
        """Start the venue bus: wait (bounded) for a configured peer and catch up, so
        the first decision knows what other lanes admitted while this one was off.
        ``on_state(state, peers[, caught_up])`` hears the link state now and on change."""
        if on_state is not None:
            self.bus.on_state.append(on_state)
        self.bus.start(wait_peers_s=wait_peers_s if self.bus.port_peers_configured else 0.0)
        if on_state is not None:
            on_state(self.bus.state(), self.bus.peers, self.bus.caught_up)

    def close(self) -> None:
        self.stop()
        if self.bus is not None:
            self.bus.close()
        if self.sync is not None:
            self.sync.stop()
        self.lane.relay.close()
        self.lane.sensor.close()

    def _run_camera(self) -> None:
        from hardware.qr import FramePipeline, make_decoder
        from hardware.registry import open_device

        camera = open_device("camera", self.spec.camera)
        pipeline = self.pipeline = FramePipeline(make_decoder(self.spec.decoder))
        frames = 0
        try:
            while not self._stop.is_set() and (self.spec.max_frames is None or frames < self.spec.max_frames):
                frame = camera.read()
                if frame is None:
                    break
                frames += 1
                for text in pipeline.process(frame.image, frame.index):
                    self.lane.submit(text, frame.captured_ns)
        finally:
            camera.close()

    def _run_scanner(self) -> None:
        from hardware.registry import open_device

        scanner = open_device("scanner", self.spec.scanner)
        # a handheld read is deliberate: show every one (the cooldown hides camera re-reads only)
        self.lane.cooldown_s = 0.0
        try:
            while not self._stop.is_set():
                code = scanner.read_code()
                if code is None:
                    break
                self.lane.submit(code, time.monotonic_ns())
        finally:
            scanner.close()


def build_lane(spec: LaneSpec, gate: Gate, *, clock=None, face=None, relay=None, sensor=None,
               start_sync: bool = True) -> LaneRunner:
    """Compose a lane from ``spec``. ``clock``, ``face``, ``relay`` and ``sensor``
    replace what the spec would open (the demo's simulated time and photo
    camera; tests' drivers); everything else comes from the spec."""
    from hardware.ports import SystemClock
    from hardware.registry import open_device

    if spec.passage_timeout_s is not None:
        gate.config = replace(gate.config, passage_timeout_s=spec.passage_timeout_s)
    if face is None and spec.face_camera:
        from hardware.face import FaceSource
        face = FaceSource.from_spec(spec.face_camera, liveness=spec.face_liveness)
    lane = Lane(gate, relay=relay or open_device("relay", spec.relay),
                sensor=sensor or open_device("sensor", spec.sensor),
                clock=clock or SystemClock(), face=face, pulse_ms=spec.pulse_ms)
    sync = None
    if spec.central and start_sync:
        from sync.loop import SyncLoop
        sync = SyncLoop.for_gate(gate, spec.central).start()
    runner = LaneRunner(gate, lane, spec, sync, _attach_bus(gate, lane, spec, sync))
    if sync is not None and lane.link is not None:
        sync.link = lambda: lane.link().value  # so central's ops room sees ONLINE / VENUE / ALONE
    return runner


def _attach_bus(gate: Gate, lane: Lane, spec: LaneSpec, sync):
    """The link state and --when-alone policy whenever a bus or a central is
    configured; the venue bus itself (not started) when endpoints are."""
    from gate import bus

    lane.when_alone = bus.WhenAlone(spec.when_alone)
    listen, peers = bus.endpoints(gate.conn, spec.bus_listen, spec.bus_peers)
    if not (listen or peers or spec.bus_scout):
        if sync is not None:
            lane.link = lambda: bus.link_state(central_ok=sync.online, peers=0)
        return None
    from sync.bus_service import open_bus
    svc = open_bus(gate, listen=listen, peers=peers, scout=spec.bus_scout,
                   central_ok=(lambda: sync.online) if sync is not None else (lambda: None))
    svc.port_peers_configured = bool(peers)
    lane.appended.append(svc.appended)
    lane.link, lane.bus = svc.state, svc
    return svc


def lane_printer(json_events: bool, lane: Lane | None = None) -> Callable:
    """The observer ``gate run`` attaches: one JSON object or one line per decision
    (with the link state when ``lane`` tracks one)."""
    import json

    def as_json(ev) -> None:
        out = ev.to_json()
        if lane is not None and lane.link is not None:
            out["link"] = lane.link().value
        print(json.dumps(out, separators=(",", ":")), flush=True)

    def as_line(ev) -> None:  # for people: the verdict word in the process language, the code as is
        from gate.i18n import _
        from gate.text import pad
        d = ev.decision
        ms = f" {ev.frame_ms:.1f} ms" if ev.frame_ms is not None else ""
        word = pad(_("ADMIT") if d.accepted else _("REFUSED"), 7)
        print(f"{time.strftime('%H:%M:%S')} {word} {d.reason.value:<16} "
              f"{d.ticket_id or '-'} {ev.outcome}{ms}", flush=True)

    return as_json if json_events else as_line
