"""Sync at scale over loopback. Prints figures; asserts nothing.

1. initial sync of N tickets (default 1,000,000) from the reference central to
   a fresh gate (`gate sync --enroll --once`, a child process);
2. upload of M scans (default 1,000,000) from 10 gates, then the
   reconciliation report;
peak RSS of the central server process and of the gate sync process.

    .venv/bin/python bench/sync.py [--tickets N] [--scans M] [--gates G]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))  # after the packages: bench/sync.py must not shadow sync/
sys.path.append(str(ROOT / "tests"))

import requests  # noqa: E402

from gate import scanlog  # noqa: E402
from gate.appliance import Gate  # noqa: E402
from gate.db import transaction  # noqa: E402
from sync import client as sc  # noqa: E402
from sync.central.store import CentralStore  # noqa: E402

GATE = Path(sys.executable).with_name("gate")
from common import MEASURED_GATE, print_floors, print_machine  # noqa: E402
from ports import free_port, wait_until_serving  # noqa: E402  (tests/ports.py)

EVENT = "evt-bench"


def hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return 0.0


def fill_log(gate: Gate, n: int, tickets: list[str], rng: random.Random) -> None:
    """Write n scan records straight into the chain (what n real scans would leave):
    each gate admits its own share of the tickets, and 0.1 % of its admissions
    are of tickets another gate also admitted (the offline double admissions)."""
    seq, prev = scanlog.head(gate.conn)
    t0 = 1_807_283_662_000
    rows = []
    for i in range(n):
        seq += 1
        rec = {"kind": "scan", "ts_ms": t0 + i * 50, "device": gate.config.device_id, "lane": gate.policy.lane,
               "event": EVENT, "mode": "entry", "decision": "accept", "reason": "ACCEPT",
               "ticket_id": tickets[i] if rng.random() > 0.001 else rng.choice(tickets), "step": None, "version": 1, "unlisted": False,
               "consumes": True, "face_e4": None, "qr_sha": rng.randbytes(16), "seq": seq}
        data = scanlog.encode_record(rec)
        prev = scanlog.chain_hash(prev, data)
        rows.append((seq, rec["ts_ms"], "scan", rec["ticket_id"], "ACCEPT", 1, data, prev))
    with transaction(gate.conn):
        gate.conn.executemany("INSERT INTO scans VALUES (?,?,?,?,?,?,?,?)", rows)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process pid has used so far."""
    import os
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tickets", type=int, default=1_000_000)
    ap.add_argument("--scans", type=int, default=1_000_000, help="scans to upload (0: the initial sync only)")
    ap.add_argument("--gates", type=int, default=10)
    args = ap.parse_args()
    print_machine()
    rng = random.Random(3)
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        tmp = Path(tmp)
        print_floors(tmp)
        store = CentralStore(tmp / "central")
        store.create_event(EVENT)
        t = time.perf_counter()
        ids = [rng.randbytes(16).hex() for _ in range(args.tickets)]
        base = {"event": EVENT, "tier": "GA", "zone": None, "version": 1, "status": "valid", "entries": 1,
                "reentry": False, "face_required": False, "face_template": None, "holder": None}
        for i in range(0, len(ids), 100_000):
            store.add_tickets([{**base, "ticket_id": tid} for tid in ids[i:i + 100_000]])
        codes = [store.enrol_code(EVENT) for _ in range(args.gates + 1)]
        from sync.central.ops import accounts
        from sync.central.ops.db import OpsDB
        accounts.add(OpsDB(store), "bench", "bench-password", "viewer", now=time.time())  # reports need ops
        store.close()
        print(f"central loaded with {args.tickets:,} tickets in {time.perf_counter() - t:.1f} s")

        port = free_port()  # from the OS: a port made up from the pid could be another run's server
        server = subprocess.Popen([str(GATE), "--data", str(tmp / "central"), "central", "serve", "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(url + "/v1/time", proc=server, what="central serve")
            data = tmp / "gate0"
            subprocess.run([str(GATE), "--data", str(data), "init", "--event", EVENT], check=True, capture_output=True)
            import resource
            t, r0, s0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN), cpu_s(server.pid)
            out = subprocess.run([sys.executable, "-c", MEASURED_GATE, "--data", str(data), "sync", "--central", url,
                                  "--enroll", codes[0], "--once", "--json"], capture_output=True, text=True)
            initial_s = time.perf_counter() - t
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            gate_cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
            central_cpu = cpu_s(server.pid) - s0
            gate_rss = int(out.stderr.strip().splitlines()[-1]) / 1024
            got = json.loads(out.stdout.splitlines()[-1])
            print(f"initial sync: {got['tickets']:,} tickets to a fresh gate in {initial_s:.1f} s "
                  f"({got['tickets'] / initial_s:,.0f}/s); gate CPU {gate_cpu:.1f} s, central CPU {central_cpu:.1f} s;"
                  f" gate peak RSS {gate_rss:.0f} MB (target <= 20 s)", flush=True)
            if args.scans == 0:
                return

            gates = []
            per = args.scans // args.gates
            t = time.perf_counter()
            for i in range(args.gates):
                g = Gate.init(tmp / f"g{i + 1}", event=EVENT, lane=f"lane-{i % 4 + 1}")
                sc.enroll(g, url, codes[i + 1])
                fill_log(g, per, ids[i * per:(i + 1) * per], rng)
                gates.append(g)
            print(f"prepared {args.gates} gates with {per:,} chained scans each in {time.perf_counter() - t:.1f} s")
            # gates upload at the same time, as they do at a venue (each its own connection)
            from concurrent.futures import ThreadPoolExecutor
            t = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                sent = sum(pool.map(lambda g: sc.push_scans(Gate.open(g.data_dir, now=time.time()), sc.client_for(g)), gates))
            upload_s = time.perf_counter() - t
            t = time.perf_counter()
            rep = requests.get(f"{url}/v1/events/{EVENT}/reconciliation",
                               auth=("bench", "bench-password"),
                               timeout=600).json()
            report_s = time.perf_counter() - t
            print(f"upload: {sent:,} scans from {args.gates} gates in {upload_s:.1f} s ({sent / upload_s:,.0f}/s)")
            print(f"reconciliation report over {rep['scans']:,} scans in {report_s:.1f} s: "
                  f"{len(rep['double_admissions']):,} over-admitted tickets, "
                  f"{sum(d['chain_ok'] for d in rep['devices'])}/{len(rep['devices'])} chains ok")
            print(f"upload + report: {upload_s + report_s:.1f} s (target <= 60 s)")
            print(f"central server peak RSS {hwm_mb(server.pid):.0f} MB")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
