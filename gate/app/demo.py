"""``gate demo``: the whole product on its embedded simulated default.

Starts the reference central on 127.0.0.1, issues an event's tickets with
wallets, provisions two simulated lanes, and streams synthetic camera frames
(real QR images, decoded by zxing-cpp) with a realistic crowd: live rotating
codes, a screenshot replayed later, a refunded ticket, the seller's code after a
transfer, a ticket for another day, a face-bound ticket shown by an impostor and
then by its holder, a holder who turns back at the turnstile, a relay that
sticks closed (the lane stops until a supervisor clears it). Midway central
goes away: the lanes still talk over the venue bus (Zenoh, 127.0.0.1), so a
photocopied paper ticket admitted at north-1 is refused at north-2. Then north-2
is cut off from everything (ALONE): another photocopied ticket gets in at both
lanes. The network comes back, the gates sync, and central's reconciliation
names that double admission, flagged ALONE. On a terminal the staff UI shows lane north-1; with
``--headless`` the story and the summary are printed.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from gate.i18n import _

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "faces"
EVENT = "evt-demo-arena"


class DemoClock:
    """Simulated time: the story runs in seconds but spans the evening."""

    def __init__(self, start: float):
        self.t = start

    def now(self) -> float:
        return self.t

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


@dataclass
class Step:
    lane: int  # 0 = north-1, 1 = north-2
    story: str
    code: Callable[[float], str] | None = None
    face: str | None = None  # photo the face camera sees
    before: Callable[[], None] | None = None
    passes: bool = True
    advance: float = 20.0


@dataclass
class Demo:
    work: Path
    out: Callable[[str], None] = print
    clock: DemoClock = field(default_factory=lambda: DemoClock(time.time()))
    counts: Counter = field(default_factory=Counter)
    online: bool = True
    counts_bus: int = 0  # refusals naming the lane that admitted the ticket (venue bus)
    # filled by setup(); empty until then, so close() after a failed setup closes what exists
    gates: list = field(default_factory=list)
    runners: list = field(default_factory=list)
    bus_up: list = field(default_factory=lambda: [False, False])
    server: object = None
    store: object = None

    # ------------------------------------------------------------- setup

    def setup(self) -> None:
        from crypto import gt1
        from crypto.issuer import Wallet
        from gate.app.compose import LaneSpec, build_lane, init_gate
        from hardware.camera import PhotoCamera, SyntheticCamera
        from hardware.face import FaceEngine, FaceSource, encoding_from_photo
        from hardware.qr import FramePipeline, make_decoder
        from sync import client as sc
        from sync.central.app import ServerThread, create_app
        from sync.central.store import CentralStore
        from gate.ledger import encode_template

        self.sc = sc
        self.store = CentralStore(self.work / "central")
        self.store.create_event(EVENT)
        self.server = ServerThread(create_app(self.store)).start()
        wallets = self.work / "wallets"
        self.w = [Wallet.load(m["file"]) for m in self.store.issue(EVENT, count=20, out=wallets)]
        self.paper = Wallet.load(self.store.issue(EVENT, count=1, out=wallets, rotating=False)[0]["file"])
        self.paper2 = Wallet.load(self.store.issue(EVENT, count=1, out=wallets, rotating=False)[0]["file"])
        template = encode_template(encoding_from_photo(ASSETS / "obama1.jpg"))
        self.face_ticket = Wallet.load(self.store.issue(EVENT, count=1, out=wallets, face_template=template,
                                                        tier="VIP")[0]["file"])
        self.tomorrow = Wallet(bytes(16).hex(), "evt-demo-arena-day2",
                               gt1.issue(self.store.signing_key(EVENT), ticket_id=bytes(16), event="evt-demo-arena-day2"))
        self.out(f"central  http://127.0.0.1:{self.server.port}  event {EVENT}: "
                 f"{len(self.w) + 2} tickets issued (rotating, paper, face-bound)")
        from sync.central.ops import demo_login
        self.out(demo_login(self.store, self.server.url))
        from sync.central.wallet import demo_claim  # one ticket waiting for a phone: the wallet at /wallet
        self.out(demo_claim(self.store, EVENT, self.server.url))
        self.gates, self.runners, self.lanes, self.cams, self.pipes = [], [], [], [], []
        engine = FaceEngine()
        self.face_cam = [PhotoCamera(), PhotoCamera()]
        self.bus_ports = _free_ports(2)
        eps = [f"tcp/127.0.0.1:{p}" for p in self.bus_ports]
        for name in ("north-1", "north-2"):
            g = init_gate(self.work / name, event=EVENT, lane=name)
            self.gates.append(g)
            sc.enroll(g, self.server.url, self.store.enrol_code(EVENT))
        # first sync before build_lane opens the buses: it brings the trust list and each gate's
        # bus credential, so both buses speak mutual TLS from the start. Synced after, north-1's
        # bus stayed on plain TCP while north-2's, reopened after the partition, spoke TLS only:
        # the two never met again and north-1 showed 0 peers to the end.
        self.sync_all("doors open: both lanes sync")
        for i, (name, g) in enumerate(zip(("north-1", "north-2"), self.gates)):
            spec = LaneSpec(relay="sim", sensor="sim", bus_listen=(eps[i],), bus_peers=(eps[1 - i],),
                            fire_input=f"sim:{self.work / f'fire-{name}'}")  # echo 1 > FILE: the alarm
            runner = build_lane(spec, g, clock=self.clock, face=FaceSource(self.face_cam[i], engine, max_frames=2),
                                central_ok=lambda: self.online)
            runner.lane.observers.append(self._print_event)
            runner.lane.on_fault.append(self._print_fault)
            runner.lane.on_fire.append(self._print_fire)
            self.runners.append(runner)
            self.lanes.append(runner.lane)
            self.cams.append(SyntheticCamera(clock=self.clock, max_idle=1))
            self.pipes.append(FramePipeline(make_decoder("zxing")))
        for i in range(2):
            self.open_bus(i)
        self.out(f"bus      Zenoh peer mode on 127.0.0.1:{self.bus_ports[0]} / :{self.bus_ports[1]}, "
                 f"multicast off; link {self.lanes[0].link().value}")

    def open_bus(self, i: int) -> None:
        """Start lane i's venue bus (again); when the other lane's runs, wait for it as a peer."""
        runner = self.runners[i]
        if runner.bus is None:
            runner.open_bus()
        runner.start_bus(wait_peers_s=2.0 if self.bus_up[1 - i] else 0.0)
        self.bus_up[i] = True

    def close_bus(self, i: int) -> None:
        self.runners[i].close_bus()
        self.bus_up[i] = False

    def settle(self, timeout: float = 2.0) -> None:
        """Let the bus deliver what was just published (the demo runs faster than people walk):
        wait until each gate holds the other's last usage record."""
        if not all(self.bus_up):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._holds(self.gates[i], self.gates[1 - i]) for i in range(2)):
                return
            time.sleep(0.005)

    @staticmethod
    def _holds(g, other) -> bool:
        (last,) = other.conn.execute("SELECT max(seq) FROM scans WHERE (accepted = 1 AND ticket_id IS NOT NULL)"
                                     " OR kind = 'rollback'").fetchone()
        (got,) = g.conn.execute(  # by the bus, or by central
            "SELECT max(seq) FROM (SELECT seq FROM bus_records WHERE device_id = ?1"
            " UNION ALL SELECT seq FROM remote_admissions WHERE device_id = ?1)",
            (other.config.device_id,)).fetchone()
        return last is None or (got or 0) >= last

    def close(self) -> None:
        """Close whatever setup() got to (it may have failed halfway: the real error stays visible)."""
        for runner in self.runners:
            runner.close()
        for g in self.gates:
            g.close()
        if self.server is not None:
            self.server.stop()
        if self.store is not None:
            self.store.close()

    # ------------------------------------------------------------- actions

    def client(self, g):
        if self.online:
            return self.sc.client_for(g)
        return self.sc.CentralClient("http://127.0.0.1:9", self.sc.token_path(g).read_text(), timeout=(0.5, 0.5))

    def sync_all(self, why: str) -> None:
        results = []
        for g in self.gates:
            rep = self.sc.sync_once(g, self.client(g), now=self.clock.now())
            results.append("ok" if rep.ok else "OFFLINE")
        self.out(f"  sync   {why}: " + ", ".join(f"{g.policy.lane} {r}" for g, r in zip(self.gates, results)))

    def _print_event(self, ev) -> None:
        d = ev.decision
        self.counts[d.reason.value] += 1
        mark = "ADMIT " if d.accepted and ev.outcome != "rolled_back" else "REJECT"
        if ev.outcome == "rolled_back":
            mark = "BACK  "
        extra = f" face {d.face_distance:.2f}" if d.face_distance is not None else ""
        if d.detail.startswith("admitted at"):
            self.counts_bus += 1
            extra = f" ({d.detail.split(' (')[0]}{d.detail[d.detail.rfind(')') + 1:]})"
        self._last = f"{mark} {d.reason.value:<14}{extra}"

    def _print_fault(self, fault, cleared_by) -> None:
        if cleared_by is None:
            self.out("  " + _("fault  {kind}: {detail} (logged; the lane checks no code until a supervisor "
                              "clears it)").format(kind=fault.kind.value, detail=fault.detail))
        else:
            self.out("  " + _("fault  {kind} cleared by {operator} (logged)").format(kind=fault.kind.value,
                                                                                    operator=cleared_by))

    def _print_fire(self, active: bool, detail: str = "") -> None:
        self.out("  " + (_("fire   alarm: every turnstile held released, no code checked (logged)") if active
                         else _("fire   alarm over: the turnstiles lock again (logged)")))

    def show(self, step: Step) -> str:
        lane = self.lanes[step.lane]
        if step.face is not None:
            self.face_cam[step.lane].path = str(ASSETS / step.face)
        lane.sensor.script = [step.passes]
        self._last = "IGNORED (fire alarm)" if lane.fire else \
            "IGNORED (lane faulted)" if lane.fault is not None else "(no code seen)"
        if step.code is not None:
            cam, pipe = self.cams[step.lane], self.pipes[step.lane]
            cam.show(step.code, frames=2)
            while True:
                frame = cam.read()
                if frame is None:
                    break
                for text in pipe.process(frame.image, frame.index):
                    lane.submit(text, frame.captured_ns)
            cam._idle = 0
        return self._last

    # ------------------------------------------------------------- story

    def story(self) -> list[Step]:
        w, c = self.w, self.clock
        screenshot = {}
        steps = [Step(i % 2, _("holder {n} shows a live rotating code").format(n=i), w[i].code) for i in range(6)]
        steps[1].before = lambda: screenshot.setdefault("code", w[1].code(c.now()))
        steps += [
            Step(0, _("holder 6 turns back at the turnstile (no passage: rolled back)"), w[6].code, passes=False),
            Step(0, _("holder 6 comes back and goes through"), w[6].code),
            Step(1, _("a screenshot of holder 1's code, shown 3 minutes later"), lambda now: screenshot["code"],
                 before=lambda: setattr(c, "t", c.t + 180)),
            Step(0, _("central refunds ticket 7 and reissues ticket 8 (transfer); lanes sync"), None,
                 before=self._refund_and_transfer),
            Step(0, _("the refunded ticket 7"), w[7].code),
            Step(1, _("the seller's live code for transferred ticket 8"), w[8].code),
            Step(1, _("the buyer's new code for ticket 8"), lambda now: self.new_owner.code(now)),
            Step(0, _("a ticket for tomorrow's show"), self.tomorrow.code),
            Step(0, _("someone else with the face-bound VIP ticket"), self.face_ticket.code, face="biden1.jpg"),
            Step(0, _("the VIP holder herself"), self.face_ticket.code, face="obama2.jpg", advance=30),
            Step(1, _("a torn, unreadable code"), lambda now: "GT1:NOT/A/REAL/CODE"),
            Step(0, _("--- north-1's relay will stick closed after its next pulse ---"), None,
                 before=self._stick_relay),
            Step(0, _("holder 12 goes through; the contact does not open again"), w[12].code),
            Step(0, _("holder 13 waits: the faulted lane admits nobody"), w[13].code),
            Step(0, _("a technician frees the relay; supervisor ann clears the fault"), None, before=self._repair),
            Step(0, _("holder 13 again"), w[13].code),
            Step(1, _("--- the fire alarm sounds at north-2 (its fire input) ---"), None, before=lambda: self._fire(True)),
            Step(1, _("holder 14 shows a code while everyone leaves"), w[14].code),
            Step(1, _("--- the alarm ends ---"), None, before=lambda: self._fire(False)),
            Step(0, _("--- central is unreachable: the lanes talk over the venue bus ---"), None, before=self._cut),
            Step(0, _("a paper ticket"), self.paper.code, advance=3),
            Step(1, _("a photocopy of the same paper ticket, at the other lane (the bus knows)"), self.paper.code),
            Step(1, _("holder 9 (offline, still decided locally)"), w[9].code),
            Step(0, _("--- north-2 is cut off from everything: ALONE ---"), None, before=self._partition),
            Step(0, _("another paper ticket"), self.paper2.code, advance=3),
            Step(1, _("its photocopy at north-2, which cannot know"), self.paper2.code),
            Step(0, _("holder 10"), w[10].code),
            Step(0, _("--- the network is back ---"), None, before=self._restore),
            Step(0, _("the first photocopy tries lane north-1 too"), self.paper.code),
            Step(0, _("holder 11"), w[11].code),
        ]
        return steps

    def _refund_and_transfer(self) -> None:
        from crypto.issuer import Wallet
        self.store.revoke(self.w[7].ticket_id)
        self.new_owner = Wallet.load(self.store.reissue(self.w[8].ticket_id, self.work / "wallets")["file"])
        self.sync_all("ticket changes")

    def _stick_relay(self) -> None:
        relay = self.lanes[0].relay  # the shipped simulated relay's fault mode (sim:stuck-after=N)
        relay.stuck_after = relay.releases + 1

    def _repair(self) -> None:
        self.lanes[0].relay.repair()
        self.lanes[0].clear_fault(operator="ann")  # in the staff UI: p, then name and PIN

    def _fire(self, active: bool) -> None:
        monitor = self.runners[1].fire_monitor  # the shipped simulated contact, driven from here
        monitor.contact.set(active)
        monitor.check()

    def _cut(self) -> None:
        self.online = False
        self.sync_all("central unreachable")
        self.out("  link   " + ", ".join(f"{ln.gate.policy.lane} {ln.link().value}" for ln in self.lanes))

    def _partition(self) -> None:
        self.close_bus(1)
        deadline = time.monotonic() + 5
        while self.lanes[0].link().value != "ALONE" and time.monotonic() < deadline:
            time.sleep(0.02)
        self.out("  link   " + ", ".join(f"{ln.gate.policy.lane} {ln.link().value}" for ln in self.lanes)
                 + " (admissions are flagged 'alone')")

    def _restore(self) -> None:
        self.online = True
        self.open_bus(1)
        self.sync_all("network back: scans up, other gates' admissions down")
        self.out("  link   " + ", ".join(f"{ln.gate.policy.lane} {ln.link().value}" for ln in self.lanes))

    def run(self, *, pace: float = 0.0) -> dict:
        self.setup()
        t0 = self.clock.now()
        for step in self.story():
            if step.story.startswith("---"):
                self.out(f"  {step.story}")
            if step.before:
                step.before()
            if step.code is None:
                continue
            self.settle()
            verdict = self.show(step)
            lane = self.lanes[step.lane].gate.policy.lane
            self.out(f"  +{(self.clock.now() - t0) / 60:4.1f}m {lane:<8} {verdict:<26} {step.story}")
            self.clock.t += step.advance
            if pace:
                time.sleep(pace)
        self.sync_all("doors close: final upload")
        from sync.central.reconcile import build_report, render_text
        rep = build_report(self.store, EVENT)
        self.out("")
        self.out(render_text(rep, _=_))
        summary = {
            "counts": dict(sorted(self.counts.items())),
            "double_admissions": [d["ticket_id"] for d in rep["double_admissions"]],
            "paper_ticket": self.paper.ticket_id,
            "alone_ticket": self.paper2.ticket_id,
            "refused_by_bus": self.counts_bus,
            "alone_flagged": [a["device_id"] for d in rep["double_admissions"] for a in d["admissions"]
                              if a.get("alone")],
            "chains_ok": all(d["chain_ok"] for d in rep["devices"]),
            "scans_at_central": rep["scans"],
            "rolled_back": sum(l.counters.rolled_back for l in self.lanes),
        }
        self.out("summary: " + ", ".join(f"{k} {v}" for k, v in summary["counts"].items()))
        self.out(_("double admissions found by reconciliation: {n}; chains {state}").format(
            n=len(summary["double_admissions"]), state=_("intact") if summary["chains_ok"] else _("BROKEN")))
        return summary


def _free_ports(n: int) -> list[int]:
    import socket
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_headless(out=print, workdir: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="gate-demo-") as tmp:
        demo = Demo(Path(workdir or tmp), out=out)
        try:
            return demo.run()
        finally:
            demo.close()


class DemoSync:
    """What the staff UI asks a sync loop, answered by the demo's own syncing."""

    def __init__(self, demo: Demo):
        self.demo = demo

    def snapshot(self, gate) -> dict:
        st = self.demo.sc.status(gate)
        st.update(online=self.demo.online, last_error=None)
        return st

    def sync_now(self) -> None:
        threading.Thread(target=self.demo.sync_all, args=("requested by staff",), daemon=True).start()


def run_with_tui() -> int:
    from tui.app import GateApp

    with tempfile.TemporaryDirectory(prefix="gate-demo-") as tmp:
        lines: list[str] = []
        demo = Demo(Path(tmp), out=lines.append)
        demo.setup()
        app = GateApp(demo.lanes[0], title=f"DEMO {EVENT} · north-1 (north-2 in the log)",
                      sync=DemoSync(demo), quit_needs_pin=False)
        demo.out = lambda s: app.call_from_thread(app.story, s) if s.strip() else None
        for line in lines:
            app.pending_story.append(line)
        demo.lanes[1].observers.append(app.other_lane)
        demo.setup = lambda: None  # already done

        def runner():
            summary = demo.run(pace=1.2)
            app.call_from_thread(app.notify, "demo finished: reconciliation in the log; press q to quit",
                                 timeout=60)
            return summary

        app.runner = runner
        try:
            app.run()
        finally:
            demo.close()
    return 0


def cmd_demo(args) -> int:
    if args.headless or not sys.stdout.isatty():
        summary = run_headless()
        if args.json:
            print(json.dumps(summary))
        return 0 if summary["chains_ok"] else 1
    return run_with_tui()


def register(sub) -> None:
    p = sub.add_parser("demo", help=_("the whole product on simulated hardware and a scripted crowd"),
                       description=_("Start a reference central on 127.0.0.1, issue tickets, provision two "
                                   "simulated lanes, stream synthetic camera frames with a realistic mix, "
                                   "cut and restore the network, and print the reconciliation. Shows the "
                                   "staff UI on a terminal; --headless prints the story."))
    p.add_argument("--headless", action="store_true", help=_("print the story and summary; no terminal UI"))
    p.add_argument("--json", action="store_true", help=_("with --headless, also print the summary as JSON"))
    p.set_defaults(func=cmd_demo)
