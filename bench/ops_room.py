"""The ops room at scale: how long the pages that poll every second take over
N scans at central, against the reconciliation report over the same data (the
baseline, same run). Prints figures; asserts nothing.

    .venv/bin/python bench/ops_room.py [--scans N] [--gates G] [--rounds R]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from sync.central.app import ServerThread, create_app  # noqa: E402
from sync.central.ops import accounts  # noqa: E402
from sync.central.ops.db import OpsDB  # noqa: E402
from sync.central.store import CentralStore  # noqa: E402

EVENT = "evt-ops-bench"


def load(store, n: int, gates: int, rng: random.Random) -> None:
    """n scans over the last hour from `gates` devices on 4 lanes: 92 % admitted,
    the rest refused for a few reasons; straight into central's tables."""
    now_ms = int(time.time() * 1000)
    with store.writer() as db:
        for g in range(gates):
            db.run("INSERT INTO devices (device_id, event, venue, pub, token_hash, status, enrolled_at)"
                   " VALUES (:d, :e, '', :p, :t, 'active', :at)",
                   {"d": f"gate-{g:02d}", "e": EVENT, "p": bytes(32), "t": f"tok{g}", "at": time.time() - 7200})
    reasons = ["ALREADY_USED", "STALE_CODE", "MALFORMED", "REVOKED"]
    rows, seqs = [], [0] * gates
    for i in range(n):
        g = i % gates
        seqs[g] += 1
        ok = rng.random() < 0.92
        rows.append({"id": i + 1, "d": f"gate-{g:02d}", "s": seqs[g], "e": EVENT,
                     "ts": now_ms - 3_600_000 + i * 3_600_000 // n, "dec": "accept" if ok else "reject",
                     "r": "ACCEPT" if ok else rng.choice(reasons), "t": f"{rng.getrandbits(128):032x}",
                     "lane": f"lane-{g % 4 + 1}", "rec": b"x", "h": rng.randbytes(32), "rcv": time.time()})
        if len(rows) == 50_000 or i == n - 1:
            with store.writer() as db:
                db.run("INSERT INTO scans (id, device_id, seq, event, ts_ms, kind, mode, decision, reason,"
                       " ticket_id, unlisted, consumes, ref, lane, proven, record, hash, received) VALUES"
                       " (:id, :d, :s, :e, :ts, 'scan', 'entry', :dec, :r, :t, 0, 1, NULL, :lane, 0, :rec, :h, :rcv)",
                       rows)
            rows = []


def timed(session, url: str, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        r = session.get(url, timeout=600)
        out.append(time.perf_counter() - t)
        r.raise_for_status()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=200_000)
    ap.add_argument("--gates", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        store = CentralStore(Path(tmp) / "central")
        store.create_event(EVENT)
        t = time.perf_counter()
        load(store, args.scans, args.gates, random.Random(5))
        accounts.add(OpsDB(store), "bench", "bench-password", "viewer", now=time.time())
        print(f"central loaded with {args.scans:,} scans from {args.gates} gates in {time.perf_counter() - t:.1f} s")
        server = ServerThread(create_app(store)).start()
        try:
            s = requests.Session()  # a logged-in browser: session cookie (basic auth would pay scrypt each time)
            s.get(f"{server.url}/ops/login", timeout=60)
            s.post(f"{server.url}/ops/login", timeout=60, data={
                "name": "bench", "password": "bench-password", "csrf": s.cookies["ops_csrf"], "next": "/ops"},
                allow_redirects=False)
            base = f"{server.url}/ops/e/{EVENT}"
            cold = timed(s, base + "/doors?part=live", 1)[0]  # whole-event aggregates computed once, in SQL
            report = timed(s, f"{server.url}/v1/events/{EVENT}/reconciliation", args.rounds)
            rep_med = statistics.median(report)
            print(f"baseline: reconciliation report median {rep_med * 1000:.0f} ms over {args.rounds} rounds")
            print(f"doors, first view (whole-event totals in SQL): {cold * 1000:.0f} ms ({cold / rep_med:.2f}x the report)")
            for name, path in (("doors (live part, polled every 1 s)", "/doors?part=live"),
                               ("gates (live part)", "/gates?part=live"), ("alerts (live part)", "/alerts?part=live")):
                ts = timed(s, base + path, args.rounds)
                med = statistics.median(ts)
                print(f"{name}: median {med * 1000:.0f} ms, max {max(ts) * 1000:.0f} ms "
                      f"({med / rep_med:.2f}x the report)")
        finally:
            server.stop()
            store.close()


if __name__ == "__main__":
    main()
