"""``gate run`` (the lane loop) and ``gate doctor`` (pre-doors checks)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from gate.errors import ConfigError, GateError


def build_lane(gate, args, *, clock=None):
    """Compose a lane from CLI/config specs (the one place hardware is chosen)."""
    from gate.lane import Lane
    from hardware.ports import SystemClock
    from hardware.relay import open_relay
    from hardware.sensor import open_sensor

    face = None
    if getattr(args, "face_camera", None):
        from hardware.face import FaceSource
        face = FaceSource.from_spec(args.face_camera, liveness=getattr(args, "face_liveness", False))
    return Lane(gate, relay=open_relay(args.relay), sensor=open_sensor(args.sensor),
                clock=clock or SystemClock(), face=face, pulse_ms=args.pulse_ms)


def _human(ev) -> None:
    d = ev.decision
    who = d.ticket_id or "-"
    ms = f" {ev.frame_ms:.1f} ms" if ev.frame_ms is not None else ""
    print(f"{time.strftime('%H:%M:%S')} {'ADMIT ' if d.accepted else 'REJECT'} {d.reason.value:<16} "
          f"{who} {ev.outcome}{ms}", flush=True)


def cmd_run(args) -> int:
    from gate.app.compose import open_gate

    gate = open_gate(args.data)
    if args.passage_timeout is not None:
        from dataclasses import replace
        gate.config = replace(gate.config, passage_timeout_s=args.passage_timeout)
    lane = build_lane(gate, args)
    if args.tui:
        from tui.app import run_tui
        return run_tui(gate, lane, args)
    sync = _start_sync(gate, args)
    busvc = _start_bus(gate, lane, args, sync)
    lane.observers.append(_link_printer(lane) if args.json_events else _human)
    try:
        if args.scanner:
            _run_scanner(lane, args)
        else:
            _run_camera(lane, args)
    except KeyboardInterrupt:
        pass
    finally:
        if busvc:
            busvc.close()
        if sync:
            sync.stop()
        lane.relay.close()
        lane.sensor.close()
    return 0


def _start_sync(gate, args):
    if not getattr(args, "central", None):
        return None
    from sync.loop import SyncLoop
    loop = SyncLoop.for_gate(gate, args.central)
    loop.start()
    return loop


def bus_endpoints(gate, args) -> tuple[list[str], list[str]]:
    """--bus-listen / --bus-peer given to this run, added to the ones set with 'gate init'."""
    from gate import bus
    saved = bus.settings(gate.conn)
    listen = list(dict.fromkeys((saved.get("listen") or []) + (getattr(args, "bus_listen", None) or [])))
    peers = list(dict.fromkeys((saved.get("peers") or []) + (getattr(args, "bus_peer", None) or [])))
    return listen, peers


def _start_bus(gate, lane, args, sync):
    """The venue bus (docs/bus.md), when endpoints are configured; also the link
    state and the --when-alone policy whenever a bus or a central is."""
    from gate.bus import WhenAlone, link_state
    lane.when_alone = WhenAlone(getattr(args, "when_alone", None) or "admit")
    listen, peers = bus_endpoints(gate, args)
    central_ok = (lambda: sync.online) if sync else (lambda: None)
    if not (listen or peers or getattr(args, "bus_scout", False)):
        if sync:
            lane.link = lambda: link_state(central_ok=sync.online, peers=0)
        return None
    from sync.bus_service import open_bus
    svc = open_bus(gate, listen=listen, peers=peers, scout=args.bus_scout, central_ok=central_ok)
    lane.appended.append(svc.appended)
    lane.link = svc.state
    lane.bus = svc
    if args.json_events:
        svc.on_state.append(lambda st, n: print(json.dumps({"link": st.value, "peers": n}), flush=True))
    svc.start(wait_peers_s=3.0 if peers else 0.0)
    if args.json_events:
        print(json.dumps({"link": svc.state().value, "peers": svc._peers, "caught_up": svc.caught_up}),
              flush=True)
    return svc


def _link_printer(lane):
    def emit(ev) -> None:
        out = ev.to_json()
        if lane.link is not None:
            out["link"] = lane.link().value
        print(json.dumps(out, separators=(",", ":")), flush=True)
    return emit


def _run_camera(lane, args) -> None:
    from hardware.camera import open_camera
    from hardware.qr import FramePipeline, make_decoder

    if not args.camera:
        raise ConfigError("give --camera SPEC (opencv:0, video:FILE, images:DIR, synthetic) or --scanner SPEC")
    camera = open_camera(args.camera)
    pipeline = FramePipeline(make_decoder(args.decoder))
    frames = 0
    try:
        while args.max_frames is None or frames < args.max_frames:
            frame = camera.read()
            if frame is None:
                break
            frames += 1
            for text in pipeline.process(frame.image, frame.index):
                lane.submit(text, frame.captured_ns)
    finally:
        camera.close()


def _run_scanner(lane, args) -> None:
    from hardware.scanner import open_scanner

    scanner = open_scanner(args.scanner)
    # a handheld read is deliberate: show every one (the cooldown hides camera re-reads only)
    lane.cooldown_s = 0.0
    try:
        while True:
            code = scanner.read_code()
            if code is None:
                break
            lane.submit(code, time.monotonic_ns())
    finally:
        scanner.close()


# ------------------------------------------------------------------ doctor


def cmd_doctor(args) -> int:
    from gate import ledger
    from gate.app.compose import open_gate

    results: list[tuple[str, str, str]] = []

    def check(name: str, fn) -> None:
        try:
            status, msg = fn()
        except GateError as exc:
            status, msg = "FAIL", str(exc)
        except Exception as exc:  # doctor reports, it does not crash
            status, msg = "FAIL", f"{type(exc).__name__}: {exc}"
        results.append((status, name, msg))

    gate = open_gate(args.data)

    def camera():
        if not args.camera:
            return "SKIP", "no --camera given"
        from hardware.camera import open_camera
        cam = open_camera(args.camera)
        try:
            frame = cam.read()
        finally:
            cam.close()
        if frame is None:
            return "FAIL", f"{args.camera} gave no frame: check the camera and its cable"
        h, w = frame.image.shape[:2]
        return "OK", f"{args.camera} gives {w}x{h} frames"

    def relay():
        from hardware.relay import open_relay
        r = open_relay(args.relay)
        r.close()
        return ("WARN" if args.relay.startswith("sim") else "OK"), f"{args.relay} opened" + (
            " (simulated: the turnstile will not move)" if args.relay.startswith("sim") else "")

    def sensor():
        from hardware.sensor import open_sensor
        s = open_sensor(args.sensor)
        s.close()
        if not getattr(s, "present", False):
            return "WARN", "no passage sensor: admissions cannot be rolled back when nobody passes"
        return "OK", f"{args.sensor} opened"

    def clock():
        now = time.time()
        if now < 1_767_225_600:  # 2026-01-01
            return "FAIL", "the system clock is in the past: set the time (rotating codes depend on it)"
        synced = None
        if shutil.which("timedatectl"):
            out = os.popen("timedatectl show -p NTPSynchronized --value 2>/dev/null").read().strip()
            synced = out == "yes" if out else None
        if synced is False:
            return "WARN", "clock not NTP-synchronised: rotating codes allow only +/-15 s of drift"
        return "OK", time.strftime("%Y-%m-%d %H:%M:%S %Z")

    def keys():
        active = [k for k in gate.keys if k.usable(time.time())]
        if not active:
            return "FAIL", f"no usable issuer key: run 'gate --data {args.data} keys trust RING.json'"
        return "OK", f"{len(active)} usable issuer key(s)"

    def ledger_fresh():
        st = ledger.stats(gate.conn)
        if st["tickets"] == 0:
            return "WARN", "the ledger is empty: every ticket will be admitted as unlisted (or refused with --require-listed)"
        age_h = (time.time() - (st["ledger_imported_at"] or 0)) / 3600
        if age_h > 24:
            return "WARN", f"{st['tickets']} tickets, last update {age_h:.0f} h ago: sync before doors open"
        return "OK", f"{st['tickets']} tickets, updated {age_h * 60:.0f} min ago"

    def disk():
        free = shutil.disk_usage(args.data).free / 1e6
        if free < 200:
            return "FAIL", f"only {free:.0f} MB free on the data disk: free space"
        return "OK", f"{free:,.0f} MB free"

    def link():
        return doctor_link(gate, args)

    for name, fn in [("camera", camera), ("relay", relay), ("sensor", sensor), ("clock", clock),
                     ("keys", keys), ("ledger", ledger_fresh), ("disk", disk), ("link", link)]:
        check(name, fn)
    for status, name, msg in results:
        print(f"{status:<5}{name:<8}{msg}")
    return 1 if any(s == "FAIL" for s, _, _ in results) else 0


def doctor_link(gate, args) -> tuple[str, str]:
    """The link state as the lane would see it now: central answers? bus peers reachable?"""
    from gate import bus
    try:
        from sync.client import client_for
        client_for(gate).time()
        central_ok = True
    except Exception:  # not enrolled, or central unreachable
        central_ok = False
    listen, peers = bus_endpoints(gate, args)
    n = 0
    if peers:
        from sync.bus_zenoh import ZenohBus
        port = ZenohBus(gate.policy.event, peers=peers)
        try:
            deadline = time.monotonic() + 2.0
            while port.peers() < len(peers) and time.monotonic() < deadline:
                time.sleep(0.05)
            n = port.peers()
        finally:
            port.close()
    state = bus.link_state(central_ok=central_ok, peers=n)
    trusted = bus.stored_counts(gate.conn)["trusted_devices"]
    msg = f"{state.value}: central {'answers' if central_ok else 'unreachable or not enrolled'}, " \
          f"{n}/{len(peers)} bus peer(s) reachable, {trusted} trusted device(s)"
    if not (listen or peers):
        msg += "; no venue bus configured (gate init --bus-listen/--bus-peer)"
    if state is bus.LinkState.ALONE or (peers and n < len(peers)):
        return "WARN", msg
    if (listen or peers) and trusted == 0:
        return "WARN", msg + ": sync with central or 'gate bus trust FILE' first"
    return "OK", msg


def _hardware_args(p) -> None:
    p.add_argument("--camera", metavar="SPEC", help="opencv:N | video:FILE | images:DIR | synthetic")
    p.add_argument("--relay", default="sim", metavar="SPEC",
                   help="sim[:FILE] | gpio:CHIP:LINE | serial:PORT | hid[:N] (default: sim)")
    p.add_argument("--sensor", default="none", metavar="SPEC",
                   help="none | sim | sim:never | sim:P | gpio:CHIP:LINE (default: none)")


def cmd_tui(args) -> int:
    args.tui = True
    return cmd_run(args)


def _lane_args(p) -> None:
    _hardware_args(p)
    p.add_argument("--scanner", metavar="SPEC", help="handheld scanner instead of a camera: stdin | serial:PORT")
    p.add_argument("--decoder", choices=["zxing", "pyzbar"], default="zxing", help="QR decoder (default: zxing)")
    p.add_argument("--json-events", action="store_true", help="print one JSON object per decision")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N camera frames")
    p.add_argument("--pulse-ms", type=int, default=200, help="relay pulse length in ms (default 200)")
    p.add_argument("--passage-timeout", type=float, metavar="S",
                   help="seconds to wait for a passage before rolling back (default 5)")
    p.add_argument("--face-camera", metavar="SPEC", help="camera for face capture on face-bound tickets")
    p.add_argument("--face-liveness", action="store_true",
                   help="also require head movement across face frames (see README: what it does not stop)")
    p.add_argument("--central", metavar="URL", help="sync with this central server in the background")
    p.add_argument("--bus-listen", action="append", metavar="tcp/IP:PORT",
                   help="venue bus: accept peer gates here (repeatable; added to 'gate init' ones)")
    p.add_argument("--bus-peer", action="append", metavar="tcp/IP:PORT",
                   help="venue bus: connect to this peer gate (repeatable; added to 'gate init' ones)")
    p.add_argument("--bus-scout", action="store_true",
                   help="venue bus: also discover peers by multicast (off by default)")
    p.add_argument("--when-alone", choices=["admit", "rotating-only", "refuse"], default="admit",
                   help="with neither central nor a bus peer: admit (flagged 'alone', default), "
                        "rotating codes only, or refuse")


def register(sub) -> None:
    p = sub.add_parser("run", help="run the lane: camera or scanner -> decision -> relay",
                       description="Run the lane until interrupted, or until an images:/video: "
                                   "source ends. Each decision is logged before the relay moves.")
    _lane_args(p)
    p.add_argument("--tui", action="store_true", help="show the staff terminal UI")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("tui", help="run the lane with the staff terminal UI attached",
                       description="The same as 'gate run --tui': the lane runs in this process and the "
                                   "UI observes and commands it.")
    _lane_args(p)
    p.set_defaults(func=cmd_tui)

    p = sub.add_parser("doctor", help="check camera, relay, sensor, clock, keys, ledger and disk",
                       description="Check the lane before doors open and say what to fix. "
                                   "Exits 1 when any check fails.")
    _hardware_args(p)
    p.set_defaults(func=cmd_doctor)
