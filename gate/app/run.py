"""``gate run`` (the lane loop) and ``gate doctor`` (pre-doors checks)."""

from __future__ import annotations

import os
import shutil
import sys
import time

from gate.errors import GateError
from gate.i18n import _


class _Terminated(BaseException):
    """SIGTERM (systemctl stop): the lane closes as on Ctrl-C, and the run ends with 0."""


def _sigterm_handler(runner):
    """SIGTERM stops the loop. Waiting for a code (or hung past any turnstile cycle), it
    ends at once; in the middle of a code it first finishes that code (its record, relay
    and passage), then the loop sees the stop."""
    def on_sigterm(signum, frame) -> None:
        runner.stop()
        stuck = runner.heartbeat.stalled_for()
        if stuck == 0.0 or stuck >= runner.stall_s():
            raise _Terminated()
    return on_sigterm


def cmd_run(args) -> int:
    import signal

    from gate.app.cli import open_set_up_gate as open_gate
    from gate.app.compose import LaneSpec, build_lane, fire_printer, lane_printer

    if args.tui:  # no terminal (or stdin taken by the scanner and the UI both): refuse before building a lane
        from tui.terminal import check_terminal
        check_terminal(scanner=args.scanner)
    runner = build_lane(LaneSpec.from_args(args), open_gate(args.data))
    if runner.bus is not None and not getattr(runner.bus.port, "tls", False):
        from gate.i18n import _
        from sync.client import token_path
        if token_path(runner.gate).exists():  # enrolled, but no bus credential yet: neighbours on TLS won't talk
            print(_("gate: warning: this gate is enrolled with central but holds no venue-bus credential yet, "
                    "so its bus runs on plain TCP and gates that hold one will not connect to it: run "
                    "'gate --data {data} sync --once' before 'gate run'").format(data=args.data), file=sys.stderr)
    if runner.bus is not None:  # the venue bus: catch up before the first decision
        runner.start_bus(on_state=_print_link if args.json_events and not args.tui else None)
    if args.tui:
        from tui.app import run_tui
        return run_tui(runner)
    on_event, on_fault = lane_printer(args.json_events, runner)
    runner.lane.observers.append(on_event)
    runner.lane.on_fault.append(on_fault)
    on_fire = fire_printer(args.json_events)
    runner.lane.on_fire.append(on_fire)
    if runner.lane.fault is not None:  # a fault logged before this start was never cleared
        on_fault(runner.lane.fault, None)
    if runner.lane.fire:  # the fire input was active at start (its record is logged)
        on_fire(True, runner.spec.fire_input or "")
    try:
        previous = signal.signal(signal.SIGTERM, _sigterm_handler(runner))
    except ValueError:  # not the main thread (an embedding): no handler
        previous = None
    try:
        runner.notify_ready()  # READY=1 and the watchdog, under a service manager
        runner.run()  # Ctrl-C: the lane is closed below, then main() exits 130
    except _Terminated:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        runner.close()
        if runner.pipeline is not None and runner.pipeline.errors:
            p = runner.pipeline
            print(_("gate run: {errors} of {frames} frame(s) could not be decoded "
                    "(last: {error}); the lane went on").format(
                      errors=p.errors, frames=p.frames, error=p.last_error), file=sys.stderr, flush=True)
    return 0


def _print_link(state, peers: int, caught_up: int | None = None) -> None:
    import json
    doc = {"link": state.value, "peers": peers}
    if caught_up is not None:
        doc["caught_up"] = caught_up
    print(json.dumps(doc), flush=True)


# ------------------------------------------------------------------ doctor


def cmd_doctor(args) -> int:
    from gate import ledger
    from gate.app.cli import open_set_up_gate as open_gate
    from hardware.registry import is_simulated, open_device

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
            return "SKIP", _("no --camera given")
        cam = open_device("camera", args.camera)
        try:
            frame = cam.read()
        finally:
            cam.close()
        if frame is None:
            return "FAIL", _("{spec} gave no frame: check the camera and its cable").format(spec=args.camera)
        h, w = frame.image.shape[:2]
        return "OK", _("{spec} gives {w}x{h} frames").format(spec=args.camera, w=w, h=h)

    def relay():
        open_device("relay", args.relay).close()
        if is_simulated("relay", args.relay):
            return "WARN", _("{spec} opened (simulated: the turnstile will not move)").format(spec=args.relay)
        return "OK", _("{spec} opened").format(spec=args.relay)

    def sensor():
        s = open_device("sensor", args.sensor)
        s.close()
        if not getattr(s, "present", False):
            return "WARN", _("no passage sensor: admissions cannot be rolled back when nobody passes")
        return "OK", _("{spec} opened").format(spec=args.sensor)

    def clock():
        now = time.time()
        if now < 1_767_225_600:  # 2026-01-01
            return "FAIL", _("the system clock is in the past: set the time (rotating codes depend on it)")
        synced = None
        if shutil.which("timedatectl"):
            out = os.popen("timedatectl show -p NTPSynchronized --value 2>/dev/null").read().strip()
            synced = out == "yes" if out else None
        if synced is False:
            return "WARN", _("clock not NTP-synchronised: rotating codes allow only +/-15 s of drift")
        return "OK", time.strftime("%Y-%m-%d %H:%M:%S %Z")

    def keys():
        active = [k for k in gate.keys if k.usable(time.time())]
        if not active:
            return "FAIL", _("no usable issuer key: run 'gate --data {data} keys trust RING.json'").format(data=args.data)
        return "OK", _("{n} usable issuer key(s)").format(n=len(active))

    def ledger_fresh():
        st = ledger.stats(gate.conn)
        if st["tickets"] == 0:
            return "WARN", _("the ledger is empty: every ticket will be admitted as unlisted "
                            "(or refused with --require-listed)")
        age_h = (time.time() - (st["ledger_imported_at"] or 0)) / 3600
        if age_h > 24:
            return "WARN", _("{n} tickets, last update {hours} h ago: sync before doors open").format(
                n=st["tickets"], hours=f"{age_h:.0f}")
        return "OK", _("{n} tickets, updated {minutes} min ago").format(n=st["tickets"], minutes=f"{age_h * 60:.0f}")

    def disk():
        free = shutil.disk_usage(args.data).free / 1e6
        if free < 200:
            return "FAIL", _("only {mb} MB free on the data disk: free space").format(mb=f"{free:.0f}")
        return "OK", _("{mb} MB free").format(mb=f"{free:,.0f}")

    def link():
        return doctor_link(gate, args)

    def fault():
        from gate.words import fault_words
        rec = gate.open_fault()
        if rec is None:
            return "OK", _("no lane fault in force")
        return "FAIL", _("{fault} logged (seq {seq}: {detail}) and not cleared: fix it, then clear it "
                         "in the staff UI (gate tui, p) or with 'gate fault clear OPERATOR'").format(
            fault=fault_words(rec["action"]), seq=rec.get("seq"), detail=rec.get("detail", ""))

    for name, fn in [("camera", camera), ("relay", relay), ("sensor", sensor), ("clock", clock),
                     ("keys", keys), ("ledger", ledger_fresh), ("disk", disk), ("link", link),
                     ("fault", fault)]:
        check(name, fn)
    for status, name, msg in results:
        print(f"{status:<5}{name:<8}{msg}")
    return 1 if any(s == "FAIL" for s, _name, _msg in results) else 0


def bus_endpoints(gate, args) -> tuple[list[str], list[str]]:
    """--bus-listen / --bus-peer given to this run, added to the ones set with 'gate init'."""
    from gate import bus
    return bus.endpoints(gate.conn, getattr(args, "bus_listen", None) or (), getattr(args, "bus_peer", None) or ())


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
        from sync import bus_credential
        from sync.bus_zenoh import ZenohBus
        port = ZenohBus(gate.policy.event, peers=peers, tls=bus_credential.load(gate.data_dir))
        try:
            deadline = time.monotonic() + 2.0
            while port.peers() < len(peers) and time.monotonic() < deadline:
                time.sleep(0.05)
            n = port.peers()
        finally:
            port.close()
    state = bus.link_state(central_ok=central_ok, peers=n)
    trusted = bus.stored_counts(gate.conn)["trusted_devices"]
    msg = (_("{state}: central answers, {n}/{peers} bus peer(s) reachable, {trusted} trusted device(s)")
           if central_ok else
           _("{state}: central unreachable or not enrolled, {n}/{peers} bus peer(s) reachable, "
             "{trusted} trusted device(s)")).format(state=state.value, n=n, peers=len(peers), trusted=trusted)
    if not (listen or peers):
        msg += _("; no venue bus configured (gate init --bus-listen/--bus-peer)")
    if state is bus.LinkState.ALONE or (peers and n < len(peers)):
        return "WARN", msg
    if (listen or peers) and trusted == 0:
        return "WARN", msg + _(": sync with central or 'gate bus trust FILE' first")
    return "OK", msg


def _hardware_args(p) -> None:
    from hardware.registry import usage

    p.add_argument("--camera", metavar="SPEC", help=_("lane camera: {specs}").format(specs=usage("camera")))
    p.add_argument("--relay", default="sim", metavar="SPEC",
                   help=_("turnstile relay: {specs} (default: sim)").format(specs=usage("relay")))
    p.add_argument("--sensor", default="none", metavar="SPEC",
                   help=_("passage sensor: {specs} (default: none)").format(specs=usage("sensor")))


def cmd_tui(args) -> int:
    args.tui = True
    return cmd_run(args)


def _lane_args(p) -> None:
    _hardware_args(p)
    from gate.argtypes import seconds
    from hardware.registry import usage

    p.add_argument("--scanner", metavar="SPEC",
                   help=_("handheld scanner instead of a camera: {specs}").format(specs=usage("scanner")))
    p.add_argument("--decoder", choices=["zxing", "pyzbar"], default="zxing", help=_("QR decoder (default: zxing)"))
    p.add_argument("--frame", metavar="WxH",
                   help=_("lane camera frame size, up to 1280x960 (default 640x480); larger frames are "
                          "decoded at half size first, the full frame only when that reads nothing"))
    p.add_argument("--no-wechat", action="store_true",
                   help=_("turn off the WeChat CNN fallback (a worker thread that looks at frames the "
                          "zxing passes read nothing in, at most 5 a second)"))
    p.add_argument("--json-events", action="store_true", help=_("print one JSON object per decision"))
    p.add_argument("--max-frames", type=int, metavar="N", help=_("stop after N camera frames"))
    p.add_argument("--pulse-ms", type=int, default=200, help=_("relay pulse length in ms (default 200)"))
    p.add_argument("--passage-timeout", type=seconds, metavar="S",
                   help=_("seconds to wait for a passage before rolling back (default 5)"))
    p.add_argument("--face-camera", metavar="SPEC", help=_("camera for face capture on face-bound tickets"))
    p.add_argument("--face-liveness", action="store_true",
                   help=_("also require head movement across face frames (see README: what it does not stop)"))
    p.add_argument("--central", metavar="URL", help=_("sync with this central server in the background"))
    p.add_argument("--bus-listen", action="append", metavar="tcp/IP:PORT",
                   help=_("venue bus: accept peer gates here (repeatable; added to 'gate init' ones)"))
    p.add_argument("--bus-peer", action="append", metavar="tcp/IP:PORT",
                   help=_("venue bus: connect to this peer gate (repeatable; added to 'gate init' ones)"))
    p.add_argument("--bus-scout", action="store_true",
                   help=_("venue bus: also discover peers by multicast (off by default)"))
    from gate.argtypes import listen_address
    p.add_argument("--relay-exit", metavar="SPEC",
                   help=_("unlock B: a second relay that opens the turnstile for exits (the --relay one, "
                          "unlock A, for entries): {specs}").format(specs=usage("relay")))
    p.add_argument("--fire-input", metavar="SPEC",
                   help=_("fire-alarm contact: while active every relay is held released, no code is "
                          "admitted, start and end are logged: {specs}").format(specs=usage("input")))
    p.add_argument("--metrics-listen", metavar="IP:PORT", type=listen_address,
                   help=_("serve Prometheus metrics at http://IP:PORT/metrics (e.g. 127.0.0.1:9100)"))
    p.add_argument("--when-alone", choices=["admit", "rotating-only", "refuse"], default="admit",
                   help=_("with neither central nor a bus peer: admit (flagged 'alone', default), "
                          "rotating codes only, or refuse"))


def register(sub) -> None:
    p = sub.add_parser("run", help=_("run the lane: camera or scanner -> decision -> relay"),
                       description=_("Run the lane until interrupted, or until an images:/video: "
                                     "source ends. Each decision is logged before the relay moves."))
    _lane_args(p)
    p.add_argument("--tui", action="store_true", help=_("show the staff terminal UI"))
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("tui", help=_("run the lane with the staff terminal UI attached"),
                       description=_("The same as 'gate run --tui': the lane runs in this process and the "
                                     "UI observes and commands it."))
    _lane_args(p)
    p.set_defaults(func=cmd_tui)

    p = sub.add_parser("doctor", help=_("check camera, relay, sensor, clock, keys, ledger, disk and faults"),
                       description=_("Check the lane before doors open and say what to fix. "
                                     "Exits 1 when any check fails."))
    _hardware_args(p)
    p.set_defaults(func=cmd_doctor)
