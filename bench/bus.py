"""Venue bus latency over loopback. Prints figures; asserts nothing.

N gate processes (default 10) on 127.0.0.1, each a real gate (SQLite ledger and
scan log, simulated relay) with the Zenoh bus in peer mode, full mesh, multicast
off. For each of K fresh paper tickets (default 300), one gate admits it; we
time from the end of its durable append until the record is committed at EVERY
other gate (from then on each of them refuses the ticket). Same host, so the
processes share one wall clock. Beside it, decision latency (submit -> durable
append) at the admitting gate (bus on) and, at the same moment, at an 11th gate
with the bus off, so both see the same machine load.

    .venv/bin/python bench/bus.py [--gates N] [--tickets K]
"""

from __future__ import annotations

import argparse
import json
import os
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
        deadline = time.monotonic() + 30
        while svc.port.peers() < want_peers and time.monotonic() < deadline:
            time.sleep(0.02)
    say({"ready": svc.port.peers() if svc else 0})
    for line in sys.stdin:
        t0 = time.perf_counter()
        ev = lane.submit(line.strip())
        say({"decided": ev.decision.reason.value, "ms": (time.perf_counter() - t0) * 1000,
             "ticket": ev.decision.ticket_id})
    if svc:
        svc.close()


class Proc:
    def __init__(self, args):
        self.p = subprocess.Popen([sys.executable, __file__, "--worker", *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1,
                                  env={**os.environ, "RUST_LOG": "off"})
        self.q: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.q.put(json.loads(x)) for x in self.p.stdout], daemon=True).start()

    def send(self, code: str) -> None:
        self.p.stdin.write(code + "\n")
        self.p.stdin.flush()

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gates", type=int, default=10)
    ap.add_argument("--tickets", type=int, default=300)
    ap.add_argument("--worker", nargs="+")
    a = ap.parse_args()
    if a.worker:
        data, listen, want, *peers = a.worker
        worker(data, listen if listen != "-" else "", peers, int(want))
        return 0

    from bus_lanes import setup_gate, trust_all
    from ports import free_ports
    from crypto.issuer import Issuer

    iss = Issuer(EVENT)
    with tempfile.TemporaryDirectory(prefix="bench-bus-") as tmp:
        tmp = Path(tmp)
        ring = tmp / "ring.json"
        ring.write_text(json.dumps(iss.keyring()))
        dirs = [tmp / f"g{i}" for i in range(a.gates + 1)]  # the last one: bus off
        entries = [setup_gate(d, EVENT, f"lane-{i}", ring) for i, d in enumerate(dirs)]
        trust_all(dirs[:-1], EVENT, entries[:-1], tmp)
        ports = free_ports(a.gates)
        eps = [f"tcp/127.0.0.1:{p}" for p in ports]
        procs = [Proc([str(d), eps[i], str(a.gates - 1), *eps[:i]]) for i, d in enumerate(dirs[:-1])]
        off = Proc([str(dirs[-1]), "-", "0"])
        ready = [p.q.get(timeout=60).get("ready") for p in procs + [off]]
        print(f"{a.gates} gates up (peer mode, full mesh, multicast off); peers per gate: "
              f"min {min(ready[:-1])}, max {max(ready[:-1])}")
        spread, ms_on, heard, first, ms_off = [], [], [], [], []
        for k in range(a.tickets):
            origin = procs[k % a.gates]
            w = iss.mint(rotating=False)
            origin.send(w.code(time.time()))
            off.send(iss.mint(rotating=False).code(time.time()))  # same moment, same machine load
            t_app, stored, arrivals, n_off = None, {}, {}, len(ms_off)
            deadline = time.monotonic() + 10
            while (t_app is None or len(stored) < a.gates - 1 or len(ms_off) == n_off) \
                    and time.monotonic() < deadline:
                while True:
                    try:
                        m = off.q.get_nowait()
                    except queue.Empty:
                        break
                    if "decided" in m:
                        ms_off.append(m["ms"])
                for i, p in enumerate(procs):
                    while True:
                        try:
                            m = p.q.get_nowait()
                        except queue.Empty:
                            break
                        if "appended" in m and p is origin:
                            t_app = m["t"]
                        elif m.get("stored") == w.ticket_id:
                            stored[i] = m["t"]
                            arrivals[i] = m["arr"]
                        elif "decided" in m:
                            ms_on.append(m["ms"])
                time.sleep(0.0005)
            if t_app is None or len(stored) < a.gates - 1:
                print(f"ticket {k}: only {len(stored)} gates stored it within 10 s")
                continue
            spread.append((max(stored.values()) - t_app) / 1e6)
            heard.append((max(arrivals.values()) - t_app) / 1e6)
            first.append((min(arrivals.values()) - t_app) / 1e6)
        for p in procs + [off]:
            p.close()
    print(f"append at one gate -> committed at all {a.gates - 1} others ({len(spread)} tickets): "
          f"p50 {pct(spread, 50):.2f} ms  p99 {pct(spread, 99):.2f} ms  max {max(spread):.2f} ms  (target p99 <= 10 ms)")
    print(f"append at one gate -> message in the receiver's callback, at all others: "
          f"p50 {pct(heard, 50):.2f} ms  p99 {pct(heard, 99):.2f} ms; at the first one: "
          f"p50 {pct(first, 50):.2f} ms  p99 {pct(first, 99):.2f} ms")
    print(f"decision + durable append, bus ON  ({len(ms_on)}): p50 {pct(ms_on, 50):.3f} ms  p99 {pct(ms_on, 99):.3f} ms")
    print(f"decision + durable append, bus OFF ({len(ms_off)}): p50 {pct(ms_off, 50):.3f} ms  p99 {pct(ms_off, 99):.3f} ms")
    print(f"ratio on/off: p50 {pct(ms_on, 50) / pct(ms_off, 50):.2f}x  p99 {pct(ms_on, 99) / pct(ms_off, 99):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
