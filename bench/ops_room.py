"""The ops room at scale: how long the pages take over N scans at central while
new scans keep arriving (a writer thread adds --rate scans a second, as gates
uploading would), the first view included, against the reconciliation report
over the same data (the baseline, same run). Prints the machine and figures;
asserts nothing.

    .venv/bin/python bench/ops_room.py [--scans N] [--gates G] [--rounds R] [--rate S] [--db URL]
    .venv/bin/python bench/ops_room.py --screenshots docs   # the README's pictures (real gates, Chromium)
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import threading
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


def arrivals(store, gates: int, rate: float, stop: threading.Event, start_id: int, counts: list) -> None:
    """New scans as gates would upload them: one small batch every 0.1 s, `rate` a second."""
    rng, i = random.Random(9), start_id
    seqs = {}
    with store.reader() as db:
        for d, m in db.all("SELECT device_id, max(seq) FROM scans GROUP BY device_id"):
            seqs[d] = m
    while not stop.is_set():
        rows = []
        for _ in range(max(1, int(rate / 10))):
            i += 1
            d = f"gate-{i % gates:02d}"
            seqs[d] = seqs.get(d, 0) + 1
            ok = rng.random() < 0.9
            rows.append({"id": i, "d": d, "s": seqs[d], "e": EVENT, "ts": int(time.time() * 1000),
                         "dec": "accept" if ok else "reject", "r": "ACCEPT" if ok else "MALFORMED",
                         "t": f"{rng.getrandbits(128):032x}", "lane": f"lane-{i % gates % 4 + 1}", "rec": b"x",
                         "h": rng.randbytes(32), "rcv": time.time()})
        with store.writer() as db:
            db.run("INSERT INTO scans (id, device_id, seq, event, ts_ms, kind, mode, decision, reason,"
                   " ticket_id, unlisted, consumes, ref, lane, proven, record, hash, received) VALUES"
                   " (:id, :d, :s, :e, :ts, 'scan', 'entry', :dec, :r, :t, 0, 1, NULL, :lane, 0, :rec, :h, :rcv)",
                   rows)
        counts[0] += len(rows)
        stop.wait(0.1)


def machine(store) -> str:
    cpu = "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"machine: {platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), "
            f"load {load[0]:.2f}, Python {platform.python_version()}, database {store.db.dialect}")


def timed(session, url: str, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        r = session.get(url, timeout=600)
        out.append(time.perf_counter() - t)
        r.raise_for_status()
    return out


def screenshots(out: Path) -> None:
    """Four named gates syncing for real, one lane refusing everyone, a double admission; Doors on a
    desktop and on a phone (390 px), in Chromium."""
    from playwright.sync_api import sync_playwright

    from crypto.issuer import Wallet
    from gate.appliance import Gate
    from gate.decision import Mode
    from sync import client as sc

    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        tmp = Path(tmp)
        store = CentralStore(tmp / "central")
        store.create_event("arena-night")
        made = store.issue("arena-night", count=170, out=tmp / "wallets")
        wallets = [Wallet.load(m["file"]) for m in made]
        accounts.add(OpsDB(store), "ops", "ops-password", "admin", now=time.time())
        server = ServerThread(create_app(store)).start()
        try:
            gates = {}
            for lane, name in (("north-1", "North door 1"), ("north-2", "North door 2"), ("south-1", "South door 1"),
                               ("east-1", "East door")):
                g = Gate.init(tmp / lane, event="arena-night", lane=lane)
                sc.enroll(g, server.url, store.enrol_code("arena-night"))
                sc.sync_once(g, sc.client_for(g))
                with OpsDB(store).writer() as w:
                    w.run("INSERT INTO ops_gate_names (device_id, name, named_at) VALUES (:d, :n, :t)",
                          {"d": g.config.device_id, "n": name, "t": time.time()})
                gates[lane] = g
            now, it = time.time(), iter(wallets)
            for k in range(40):  # 40 minutes of a crowd at the north and east doors
                t = now - 2400 + k * 60
                for lane, n in (("north-1", 2), ("north-2", 1), ("east-1", 1)):
                    for j in range(n):
                        gates[lane].scan(next(it).code(t + j * 7), now=t + j * 7)
            for i in range(14):  # south-1 refuses everyone for the last few minutes
                gates["south-1"].scan(f"GT1:smudged-{i}", now=now - 200 + i * 12)
            gates["east-1"].scan(wallets[0].code(now - 30), now=now - 30, mode=Mode.EXIT)
            gates["north-2"].scan(wallets[1].code(now - 20), now=now - 20)  # a double admission
            for g in gates.values():
                sc.sync_once(g, sc.client_for(g))
            with sync_playwright() as p:
                b = p.chromium.launch(executable_path="/usr/bin/chromium")
                for name, vp in (("ops-doors.png", {"width": 1280, "height": 900}),
                                 ("ops-doors-phone.png", {"width": 390, "height": 844})):
                    page = b.new_context(viewport=vp, device_scale_factor=1).new_page()
                    page.goto(server.url + "/ops/login")
                    page.fill("input[name=name]", "ops")
                    page.fill("input[name=password]", "ops-password")
                    page.click("form button")
                    page.goto(server.url + "/ops/e/arena-night/doors")
                    page.screenshot(path=str(out / name), full_page=vp["width"] < 500)
                    print("wrote", out / name)
                b.close()
        finally:
            server.stop()
            store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=200_000)
    ap.add_argument("--gates", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rate", type=float, default=100, help="scans a second arriving while pages are timed")
    ap.add_argument("--db", help="a PostgreSQL URL (default: SQLite in a temporary folder)")
    ap.add_argument("--screenshots", metavar="DIR", type=Path, help="write the README's pictures instead")
    args = ap.parse_args()
    if args.screenshots:
        return screenshots(args.screenshots)
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        store = CentralStore(Path(tmp) / "central", args.db)
        print(machine(store))
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
            stop, counts = threading.Event(), [0]
            writer = threading.Thread(target=arrivals, args=(store, args.gates, args.rate, stop, args.scans, counts))
            writer.start()
            cold = timed(s, base + "/doors", 1)[0]  # first view: whole-event aggregates computed once, in SQL
            report = timed(s, f"{server.url}/v1/events/{EVENT}/reconciliation", args.rounds)
            rep_med = statistics.median(report)
            print(f"baseline: reconciliation report median {rep_med * 1000:.0f} ms over {args.rounds} rounds")
            print(f"doors, first view (whole-event totals in SQL): {cold * 1000:.0f} ms ({cold / rep_med:.2f}x the report)")
            for name, path in (("doors (live part, polled every 1 s)", "/doors?part=live"),
                               ("gates (live part)", "/gates?part=live"), ("alerts (live part)", "/alerts?part=live"),
                               ("doors (whole page)", "/doors"), ("reconciliation page", "/reconciliation")):
                ts = timed(s, base + path, args.rounds)
                med = statistics.median(ts)
                print(f"{name}: median {med * 1000:.0f} ms, max {max(ts) * 1000:.0f} ms "
                      f"({med / rep_med:.2f}x the report)")
            stop.set()
            writer.join()
            print(f"scans arriving meanwhile: {counts[0]:,} (target {args.rate:.0f}/s)")
        finally:
            stop_ = locals().get("stop")
            if stop_ is not None:
                stop_.set()
            server.stop()
            store.close()


if __name__ == "__main__":
    main()
