"""Venue bus latency over loopback, plain TCP and mutual TLS. Prints figures;
asserts nothing.

N gate processes (default 10) on 127.0.0.1, each a real gate (SQLite ledger and
scan log, simulated relay) with the Zenoh bus in peer mode, full mesh, multicast
off; run twice: once on plain TCP (gates set up without a central) and once with
the authenticated transport (each gate holds a bus credential issued by the
central's per-event CA, sync.central.bus_ca, so the mesh is mutual TLS). For
each of K fresh paper tickets (default 300), one gate admits it; we time from
the end of its durable append until the record is committed at EVERY other gate
(from then on each of them refuses the ticket). Same host, so the processes
share one wall clock. A ticket some gate did not commit within 10 s is a miss:
it counts as +inf, at the top of the percentiles (never dropped). Beside it,
decision latency (submit -> durable append) at the admitting gate (bus on) and,
at the same moment, at an extra gate with the bus off, so both see the same
machine load.

    .venv/bin/python bench/bus.py [--gates N] [--tickets K] [--mode plain|tls|both]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))
sys.path.append(str(ROOT / "tests"))

from common import pct  # noqa: E402

EVENT = "evt-bench-bus"
TARGET_P99_MS = 10.0


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    from importlib.metadata import version
    return (f"machine: {model}, {os.cpu_count()} cores, load average {load} (1/5/15 min); "
            f"Python {platform.python_version()}, eclipse-zenoh {version('eclipse-zenoh')}")


def worker(data: str, listen: str, peers: list[str], want_peers: int) -> None:
    """One gate: codes on stdin -> lane.submit; JSON lines out."""
    from gate.app.compose import LaneSpec, build_lane, open_gate

    gate = open_gate(data)
    lane = build_lane(LaneSpec(relay="sim", sensor="none", pulse_ms=0), gate, start_sync=False).lane
    lane.cooldown_s = 0.0
    out_lock = threading.Lock()

    def say(doc):
        with out_lock:
            sys.stdout.write(json.dumps(doc) + "\n")
            sys.stdout.flush()

    svc = None
    if listen:
        from sync.bus_service import open_bus
        svc = open_bus(gate, listen=[listen], peers=peers)
        lane.appended.append(lambda seq: say({"appended": seq, "t": time.time_ns()}))
        lane.appended.append(svc.appended)
        arrived = [0]
        orig = svc._on_message

        def on_message(data, orig=orig):
            arrived[0] = time.time_ns()
            orig(data)
        svc._on_message = on_message
        svc.on_stored.append(lambda rec: say({"stored": rec["ticket_id"], "t": time.time_ns(), "arr": arrived[0]}))
        svc.start(wait_peers_s=0)
        deadline = time.monotonic() + 60
        while (svc.port.sessions() < want_peers or svc.peers < want_peers) and time.monotonic() < deadline:
            time.sleep(0.05)
    say({"ready": svc.port.sessions() if svc else 0, "live": svc.peers if svc else 0,
         "transport": ("tls" if svc.port.tls else "tcp") if svc else "-"})
    for line in sys.stdin:
        t0 = time.perf_counter()
        ev = lane.submit(line.strip())
        say({"decided": ev.decision.reason.value, "ms": (time.perf_counter() - t0) * 1000,
             "ticket": ev.decision.ticket_id})
    if svc:
        svc.close()


class Proc:
    """One gate process; its JSON lines go to ``inbox`` as (index, message): the bench
    blocks on that one queue instead of polling the gates' queues (a polling loop on
    this 2-core machine takes CPU from the gates it measures)."""

    def __init__(self, args, index: int, inbox: queue.Queue):
        self.index = index
        self.p = subprocess.Popen([sys.executable, __file__, "--worker", *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1,
                                  env={**os.environ, "RUST_LOG": "off"})
        threading.Thread(target=lambda: [inbox.put((index, json.loads(x))) for x in self.p.stdout],
                         daemon=True).start()

    def send(self, code: str) -> None:
        self.p.stdin.write(code + "\n")
        self.p.stdin.flush()

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(timeout=30)


def issue_credentials(tmp: Path, dirs: list[Path], ids: list[str]) -> None:
    """Each gate's bus credential from a real central's per-event CA (as `gate sync` gets it)."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sync import bus_credential
    from sync.central.bus_ca import BusCA
    from sync.central.store import CentralStore

    store = CentralStore(tmp / "central")
    store.create_event(EVENT)
    ca = BusCA(store)
    for d, dev in zip(dirs, ids):
        key = Ed25519PrivateKey.generate()
        pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        doc = ca.issue(EVENT, dev, {"public_key": base64.urlsafe_b64encode(pub).rstrip(b"=").decode()})
        bus_credential.store(d, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()),
                             doc["certificate"].encode(), doc["ca"].encode())
    store.close()


def fmt(v: float) -> str:
    return "miss" if math.isinf(v) else f"{v:.2f} ms"


def run(mode: str, gates: int, tickets: int) -> dict:
    from bus_lanes import setup_gate, trust_all
    from ports import free_ports
    from crypto.issuer import Issuer

    iss = Issuer(EVENT)
    with tempfile.TemporaryDirectory(prefix=f"bench-bus-{mode}-") as tmp:
        tmp = Path(tmp)
        ring = tmp / "ring.json"
        ring.write_text(json.dumps(iss.keyring()))
        dirs = [tmp / f"g{i}" for i in range(gates + 1)]  # the last one: bus off
        entries = [setup_gate(d, EVENT, f"lane-{i}", ring) for i, d in enumerate(dirs)]
        trust_all(dirs[:-1], EVENT, entries[:-1], tmp)
        if mode == "tls":
            issue_credentials(tmp, dirs[:-1], [e["device_id"] for e in entries[:-1]])
        ports = free_ports(gates)
        eps = [f"tcp/127.0.0.1:{p}" for p in ports]  # the gates use them as tls/ when they hold a credential
        inbox: queue.Queue = queue.Queue()
        procs = [Proc([str(d), eps[i], str(gates - 1), *eps[:i]], i, inbox) for i, d in enumerate(dirs[:-1])]
        off = Proc([str(dirs[-1]), "-", "0"], gates, inbox)
        got_ready: dict[int, dict] = {}
        while len(got_ready) < gates + 1:
            i, m = inbox.get(timeout=120)
            got_ready[i] = m
        ready = [got_ready[i] for i in range(gates + 1)]
        print(f"[{mode}] {gates} gates up (peer mode, full mesh, multicast off, transport "
              f"{sorted({r['transport'] for r in ready[:-1]})}); sessions per gate: min "
              f"{min(r['ready'] for r in ready[:-1])}, max {max(r['ready'] for r in ready[:-1])}; live trusted "
              f"peers per gate: min {min(r['live'] for r in ready[:-1])}")
        spread, ms_on, heard, first, ms_off = [], [], [], [], []
        misses = 0
        for k in range(tickets):
            origin = procs[k % gates]
            w = iss.mint(rotating=False)
            origin.send(w.code(time.time()))
            off.send(iss.mint(rotating=False).code(time.time()))  # same moment, same machine load
            t_app, stored, arrivals, n_off = None, {}, {}, len(ms_off)
            deadline = time.monotonic() + 10
            while (t_app is None or len(stored) < gates - 1 or len(ms_off) == n_off) \
                    and time.monotonic() < deadline:
                try:  # blocks: no polling loop on the machine being measured
                    i, m = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if i == off.index:
                    if "decided" in m:
                        ms_off.append(m["ms"])
                elif "appended" in m and i == origin.index:
                    t_app = m["t"]
                elif m.get("stored") == w.ticket_id:
                    stored[i] = m["t"]
                    arrivals[i] = m["arr"]
                elif "decided" in m:
                    ms_on.append(m["ms"])
            if t_app is None or len(stored) < gates - 1:
                misses += 1  # a straggler: counted at the top of the percentiles, never dropped
                spread.append(math.inf)
                heard.append(math.inf)
                first.append((min(arrivals.values()) - t_app) / 1e6 if arrivals and t_app else math.inf)
                continue
            spread.append((max(stored.values()) - t_app) / 1e6)
            heard.append((max(arrivals.values()) - t_app) / 1e6)
            first.append((min(arrivals.values()) - t_app) / 1e6)
        for p in procs + [off]:
            p.close()
    print(f"[{mode}] append at one gate -> committed at all {gates - 1} others ({tickets} tickets, {misses} "
          f"missed 10 s): p50 {fmt(pct(spread, 50))}  p99 {fmt(pct(spread, 99))}  max {fmt(max(spread))}  "
          f"(target p99 <= {TARGET_P99_MS:g} ms: {'met' if pct(spread, 99) <= TARGET_P99_MS else 'NOT met'})")
    print(f"[{mode}] append at one gate -> message in the receiver's callback, at all others: "
          f"p50 {fmt(pct(heard, 50))}  p99 {fmt(pct(heard, 99))}; at the first one: "
          f"p50 {fmt(pct(first, 50))}  p99 {fmt(pct(first, 99))}")
    print(f"[{mode}] decision + durable append, bus ON  ({len(ms_on)}): p50 {pct(ms_on, 50):.3f} ms  "
          f"p99 {pct(ms_on, 99):.3f} ms")
    print(f"[{mode}] decision + durable append, bus OFF ({len(ms_off)}): p50 {pct(ms_off, 50):.3f} ms  "
          f"p99 {pct(ms_off, 99):.3f} ms  (the floor, same moments)")
    print(f"[{mode}] ratio on/off: p50 {pct(ms_on, 50) / pct(ms_off, 50):.2f}x  "
          f"p99 {pct(ms_on, 99) / pct(ms_off, 99):.2f}x")
    return {"p50": pct(spread, 50), "p99": pct(spread, 99), "misses": misses}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gates", type=int, default=10)
    ap.add_argument("--tickets", type=int, default=300)
    ap.add_argument("--mode", choices=["plain", "tls", "both"], default="both")
    ap.add_argument("--worker", nargs="+")
    a = ap.parse_args()
    if a.worker:
        data, listen, want, *peers = a.worker
        worker(data, listen if listen != "-" else "", peers, int(want))
        return 0
    print(machine())
    got = {m: run(m, a.gates, a.tickets) for m in (("plain", "tls") if a.mode == "both" else (a.mode,))}
    if len(got) == 2:
        print(f"append -> committed at all {a.gates - 1} others, p50/p99: plain {fmt(got['plain']['p50'])} / "
              f"{fmt(got['plain']['p99'])}, mutual TLS {fmt(got['tls']['p50'])} / {fmt(got['tls']['p99'])}")
    print(machine())  # the load again: it moves while the bench runs
    return 0


if __name__ == "__main__":
    sys.exit(main())
