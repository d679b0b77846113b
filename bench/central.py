"""Central at venue-group scale: G gates x S scans uploaded concurrently, then the
reconciliation report, on SQLite (one `central serve`) and PostgreSQL (one and
two `serve` processes), side by side in one run; then upload latency of 10 live
gates with and without a report running. Prints figures; asserts nothing.

    .venv/bin/python bench/central.py                      # 100 gates x 10,000 scans
    .venv/bin/python bench/central.py --gates 10 --scans 1000   # a quick run

Each configuration names its durability, and the rows compare like with like:

- durable (the default rows): SQLite ``synchronous=FULL`` (central's default) beside
  PostgreSQL ``synchronous_commit=on``: an acknowledged upload survives a power cut;
- fast (``--only`` sqlite-fast,pg1-fast,pg2-fast): SQLite ``synchronous=NORMAL``
  (``sqlite:///...?synchronous=normal``) beside PostgreSQL ``synchronous_commit=off``:
  a power cut may lose the last acknowledged commits, never corrupts.

PostgreSQL is a throwaway cluster (tests/pg.py) with fsync on; synchronous_commit is
set per database (``ALTER DATABASE ... SET synchronous_commit``).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))  # after the packages: bench/sync.py must not shadow sync/
sys.path.append(str(ROOT / "tests"))

import requests  # noqa: E402

from common import pct, print_floors, print_machine  # noqa: E402
from ports import free_ports, wait_until_serving  # noqa: E402  (tests/ports.py)
from gate import scanlog  # noqa: E402
from gate.appliance import Gate  # noqa: E402
from gate.db import put_setting, transaction  # noqa: E402
from sync import client as sc  # noqa: E402
from sync.central.store import CentralStore  # noqa: E402

GATE = Path(sys.executable).with_name("gate")
EVENT = "evt-bench"
# the night's first scan, 20 hours ago: every record stamped between the event's creation
# at central (less a day) and its upload (plus a day), as a real night's are; a fixed date
# in the future made every record "clock wrong" and the report list all of them
T0_MS = int(time.time() * 1000) - 20 * 3600_000


def ticket_ids(n: int) -> list[str]:
    return [hashlib.sha256(b"t%d" % i).hexdigest()[:32] for i in range(n)]


def fill_log(g: Gate, tickets: list[str], rng: random.Random, start_ms: int) -> None:
    """Chained records as real scans leave them: one admission per ticket at about a
    turnstile's pace (1.1 s apart), 0.1 % of them tickets another gate also admitted."""
    seq, prev = scanlog.head(g.conn)
    rows = []
    for i, tid in enumerate(tickets):
        seq += 1
        rec = {"kind": "scan", "ts_ms": start_ms + i * 1100, "device": g.config.device_id, "lane": g.policy.lane,
               "event": EVENT, "mode": "entry", "decision": "accept", "reason": "ACCEPT",
               "ticket_id": tid if rng.random() > 0.001 else rng.choice(tickets), "step": None, "version": 1,
               "unlisted": False, "consumes": True, "face_e4": None, "qr_sha": rng.randbytes(16), "seq": seq}
        data = scanlog.encode_record(rec)
        prev = scanlog.chain_hash(prev, data)
        rows.append((seq, rec["ts_ms"], "scan", rec["ticket_id"], "ACCEPT", 1, data, prev))
    with transaction(g.conn):
        g.conn.executemany("INSERT INTO scans VALUES (?,?,?,?,?,?,?,?)", rows)


class TimedClient(sc.CentralClient):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.latencies: list[float] = []

    def upload(self, event, batch):
        t = time.perf_counter()
        try:
            return super().upload(event, batch)
        finally:
            self.latencies.append(time.perf_counter() - t)


def _push_many(args) -> tuple[int, list[float]]:
    """One client process: its share of the gates, each on its own thread."""
    jobs, threads, batch = args

    def one(job):
        data, url = job
        g = Gate.open(Path(data), now=time.time())
        c = TimedClient(url, sc.token_path(g).read_text().strip(), timeout=(5, 600))
        for _ in range(50):  # a gate retries what was not acknowledged (503 under load)
            try:
                return sc.push_scans(g, c, batch_size=batch), c.latencies
            except sc.ApiError as exc:
                if exc.status not in (None, 408, 503):  # overloaded: the upload is idempotent
                    raise
                time.sleep(0.5)
        raise RuntimeError("gave up")

    with ThreadPoolExecutor(threads) as pool:
        res = list(pool.map(one, jobs))
    return sum(n for n, _ in res), [x for _, lat in res for x in lat]


def push_all(jobs: list[tuple[str, str]], procs: int, threads: int, batch: int) -> tuple[int, list[float], float]:
    shares = [jobs[i::procs] for i in range(procs)]
    t = time.perf_counter()
    with mp.get_context("fork").Pool(procs) as pool:
        res = pool.map(_push_many, [(s, threads, batch) for s in shares if s])
    return sum(n for n, _ in res), [x for _, lat in res for x in lat], time.perf_counter() - t


def serve(data: Path, db: str | None, port: int) -> subprocess.Popen:
    err = data.parent / f"serve-{port}.err"
    p = subprocess.Popen([str(GATE), "--data", str(data), "central"] + (["--db", db] if db else [])
                         + ["serve", "--port", str(port), "--pool-size", "8", "--pool-timeout", "30"],
                         stdout=subprocess.DEVNULL, stderr=err.open("wb"))
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/v1/time", proc=p, what="central serve")
    except AssertionError as exc:
        raise RuntimeError(f"{exc}: {err.read_text()[-2000:]}") from None
    return p


def run_config(name: str, tmp: Path, db: str | None, nproc: int, gates: list[Path], ids: list[str],
               live: list[Path], args, rng) -> dict:
    data = tmp / f"central-{name}"
    store = CentralStore(data, db)
    store.create_event(EVENT)
    base = {"event": EVENT, "tier": "GA", "zone": None, "version": 1, "status": "valid", "entries": 1,
            "reentry": False, "face_required": False, "face_template": None, "holder": None}
    for i in range(0, len(ids), 100_000):
        store.add_tickets([{**base, "ticket_id": t} for t in ids[i:i + 100_000]], replace=False)
    codes = [store.enrol_code(EVENT) for _ in gates + live]
    from sync.central.ops import accounts
    from sync.central.ops.db import OpsDB
    accounts.add(OpsDB(store), "bench", "bench-password", "viewer", now=time.time())  # reports need ops
    store.close()
    ports = free_ports(nproc)
    procs = [serve(data, db, p) for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for i, d in enumerate(gates + live):  # enrol (again) against this central
            g = Gate.open(d, now=time.time())
            sc.token_path(g).unlink(missing_ok=True)
            sc.enroll(g, urls[i % nproc], codes[i])
            with transaction(g.conn):
                put_setting(g.conn, "sync.uploaded_through", 0)
            g.close()
        jobs = [(str(d), urls[i % nproc]) for i, d in enumerate(gates)]
        sent, lat, secs = push_all(jobs, args.client_procs, max(1, len(gates) // args.client_procs), args.batch)
        import base64
        hdr = {"Authorization": "Basic " + base64.b64encode(b"bench:bench-password").decode()}  # ops credentials
        t = time.perf_counter()
        rep = requests.get(f"{urls[0]}/v1/events/{EVENT}/reconciliation", headers=hdr, timeout=900).json()
        report_s = time.perf_counter() - t
        # what central holds: a gate that retried after a 503/408 counts only its last attempt
        sent = max(sent, rep["scans"])
        t = time.perf_counter()  # again: PostgreSQL's first read after a bulk load also sets hint bits
        requests.get(f"{urls[0]}/v1/events/{EVENT}/reconciliation", headers=hdr, timeout=900)
        report2_s = time.perf_counter() - t
        # PostgreSQL vacuums a freshly loaded table on its own (autovacuum) and the first two
        # reports may share the machine with it: a third report after VACUUM ANALYZE is the
        # steady state (the night's report, long after the last upload). SQLite: no third.
        vacuuming, report3_s = None, None
        if db and db.startswith("postgresql"):
            import psycopg
            with psycopg.connect(db, autocommit=True) as c:
                vacuuming = c.execute("SELECT count(*) FROM pg_stat_activity"
                                      " WHERE backend_type = 'autovacuum worker'").fetchone()[0]
                c.execute("VACUUM ANALYZE")
            t = time.perf_counter()
            requests.get(f"{urls[0]}/v1/events/{EVENT}/reconciliation", headers=hdr, timeout=900)
            report3_s = time.perf_counter() - t
        # live gates: upload latency without, then with reports running
        for k, d in enumerate(live):
            g = Gate.open(d, now=time.time())
            fill_log(g, ids[k * 2 * args.live_scans:(k * 2 + 1) * args.live_scans], rng,
                     T0_MS + 12 * 3600_000)
            g.close()
        live_jobs = [(str(d), urls[i % nproc]) for i, d in enumerate(live)]
        _, lat_quiet, _ = push_all(live_jobs, 1, len(live), 100)
        for k, d in enumerate(live):
            g = Gate.open(d, now=time.time())
            fill_log(g, ids[(k * 2 + 1) * args.live_scans:(k * 2 + 2) * args.live_scans], rng,
                     T0_MS + 18 * 3600_000)
            g.close()
        stop, reports = threading.Event(), [0]

        def reporting():
            while not stop.is_set():
                requests.get(f"{urls[-1]}/v1/events/{EVENT}/reconciliation", headers=hdr, timeout=900)
                reports[0] += 1
        th = threading.Thread(target=reporting)
        th.start()
        time.sleep(0.2)
        _, lat_report, _ = push_all(live_jobs, 1, len(live), 100)
        stop.set()
        th.join()
        return {"name": name, "sent": sent, "secs": secs, "rate": sent / secs, "p50": pct(lat, 50),
                "p99": pct(lat, 99), "report_s": report_s, "report2_s": report2_s,
                "report3_s": report3_s, "vacuuming": vacuuming, "report_scans": rep["scans"],
                "over": len(rep["double_admissions"]), "live_p50": pct(lat_quiet, 50),
                "live_p99": pct(lat_quiet, 99), "rep_p50": pct(lat_report, 50), "rep_p99": pct(lat_report, 99),
                "reports": reports[0]}
    finally:
        for p in procs:
            p.terminate()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gates", type=int, default=100, help="gates uploading at once (default 100)")
    ap.add_argument("--scans", type=int, default=10_000, help="scans per gate (default 10,000)")
    ap.add_argument("--batch", type=int, default=sc.UPLOAD_BATCH, help="records per upload batch")
    ap.add_argument("--client-procs", type=int, default=2, help="client processes sharing the gates")
    ap.add_argument("--live", type=int, default=10, help="live gates for the latency-under-report phase")
    ap.add_argument("--live-scans", type=int, default=1000, help="scans per live gate and phase")
    ap.add_argument("--only", help="comma list of configs: sqlite,pg1,pg2 (durable, the default),"
                    " sqlite-fast,pg1-fast,pg2-fast")
    args = ap.parse_args()
    from pg import PgCluster

    print_machine()
    rng = random.Random(3)
    n = args.gates * args.scans
    ids = ticket_ids(n + 2 * args.live * args.live_scans)
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp, PgCluster(fast=False) as pg:
        tmp = Path(tmp)
        t = time.perf_counter()
        gates = []
        for i in range(args.gates):
            g = Gate.init(tmp / f"g{i}", event=EVENT, lane=f"lane-{i + 1}")
            fill_log(g, ids[i * args.scans:(i + 1) * args.scans], rng, T0_MS)
            gates.append(g.data_dir)
            g.close()
        live = []
        for i in range(args.live):
            g = Gate.init(tmp / f"live{i}", event=EVENT, lane=f"live-{i + 1}")
            live.append(g.data_dir)
            g.close()
        print_floors(tmp)
        print(f"prepared {args.gates} gates x {args.scans:,} chained scans in {time.perf_counter() - t:.1f} s",
              flush=True)
        configs = [(name, kind, nproc, fast) for fast in (False, True)
                   for name, kind, nproc in (("sqlite", "sqlite", 1), ("pg1", "pg", 1), ("pg2", "pg", 2))]
        configs = [(name + ("-fast" if fast else ""), kind, nproc, fast) for name, kind, nproc, fast in configs]
        wanted = (args.only or "sqlite,pg1,pg2").split(",")
        configs = [c for c in configs if c[0] in wanted]
        results = []
        for name, kind, nproc, fast in configs:
            for d in live:  # fresh live logs per config
                g = Gate.open(d, now=time.time())
                with transaction(g.conn):
                    g.conn.execute("DELETE FROM scans")
                    g.conn.execute("DELETE FROM usage")
                    put_setting(g.conn, "sync.uploaded_through", 0)
                g.close()
            if kind == "pg":
                db = pg.create_db(f"bench_{name.replace('-', '_')}")
                import psycopg
                with psycopg.connect(host=str(pg.sock), port=pg.port, user=pg.user, dbname="postgres",
                                     autocommit=True) as c:
                    c.execute(f'ALTER DATABASE "bench_{name.replace("-", "_")}" SET synchronous_commit = '
                              + ("off" if fast else "on"))
            else:
                db = f"sqlite:///{tmp / f'central-{name}' / 'central.db'}?synchronous=" + ("normal" if fast else "full")
            t = time.perf_counter()
            r = run_config(name, tmp, db, nproc, gates + [], ids, live, args, rng)
            results.append(r)
            print(f"{name}: {r['sent']:,} scans in {r['secs']:.1f} s = {r['rate']:,.0f}/s; report "
                  f"{r['report_s']:.2f} s ({time.perf_counter() - t:.0f} s in all)", flush=True)
        base = {False: None, True: None}
        for r, c in zip(results, configs):
            if c[1] == "sqlite":
                base[c[3]] = r["rate"]
        print()
        print(f"{n:,} scans from {args.gates} gates, batches of {args.batch}; {os.cpu_count()} cores;"
              " 'x sqlite' is against SQLite at the same durability")
        print_machine()
        print(f"{'central':<22}{'scans/s':>9}{'x sqlite':>9}{'batch p50':>10}{'p99':>8}{'report 1st/2nd/vacuumed':>25}"
              f"{'live p50/p99':>15}{'during report':>16}")
        labels = {"sqlite": "SQLite FULL, 1 serve", "pg1": "PG sync on, 1 serve", "pg2": "PG sync on, 2 serves",
                  "sqlite-fast": "SQLite NORMAL (fast)", "pg1-fast": "PG sync off, 1 serve",
                  "pg2-fast": "PG sync off, 2 serves"}
        for r, c in zip(results, configs):
            b = base[c[3]] or results[0]["rate"]  # against SQLite at the same durability
            print(f"{labels[r['name']]:<22}{r['rate']:>9,.0f}{r['rate'] / b:>8.2f}x{r['p50']:>9.2f}s"
                  f"{r['p99']:>7.2f}s{r['report_s']:>14.2f}/{r['report2_s']:.2f}/"
                  + ("-" if r["report3_s"] is None else f"{r['report3_s']:.2f}")
                  + f" s{r['live_p50'] * 1000:>8.0f}/{r['live_p99'] * 1000:.0f} ms"
                  f"{r['rep_p50'] * 1000:>9.0f}/{r['rep_p99'] * 1000:.0f} ms")
        print("autovacuum workers at work right after the first two reports (PostgreSQL): "
              + ", ".join(f"{r['name']} {r['vacuuming']}" for r in results if r["vacuuming"] is not None))
        print(f"report over {results[-1]['report_scans']:,} scans; over-admitted tickets found: "
              + ", ".join(str(r["over"]) for r in results)
              + "; reports completed during the live phase: " + ", ".join(str(r["reports"]) for r in results))


if __name__ == "__main__":
    main()
