"""Import 1,000,000 tickets with `gate ledger import` beside a raw
sqlite3.executemany of the same rows into the same schema; peak RSS of the
import; point lookups (hit / miss). Prints figures; asserts nothing.

    .venv/bin/python bench/ledger_import.py [--tickets N]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))  # after the packages: bench/sync.py must not shadow sync/

from gate.db import connect, transaction  # noqa: E402
from gate.ledger import SqliteLedgerView  # noqa: E402

from common import MEASURED_GATE, print_floors, print_machine  # noqa: E402

EVENT = "evt-bench"
GATE = Path(sys.executable).with_name("gate")




def make_file(path: Path, n: int) -> list[str]:
    ids = []
    rng = random.Random(1)
    with path.open("w") as fh:
        for i in range(n):
            tid = rng.randbytes(16).hex()
            ids.append(tid)
            fh.write(json.dumps({
                "ticket_id": tid, "event": EVENT, "tier": "GA" if i % 5 else "VIP",
                "zone": None if i % 3 else "A", "version": 1, "status": "valid",
                "entries": 1, "reentry": False, "face_required": False,
                "face_template": None, "holder": f"Holder {i}",
            }) + "\n")
    return ids


def raw_rows(path: Path):
    rows = []
    with path.open() as fh:
        for line in fh:
            r = json.loads(line)
            rows.append((r["ticket_id"], r["event"], r["tier"], r["zone"], r["version"], r["status"],
                         r["entries"], int(r["reentry"]), int(r["face_required"]), None, r["holder"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tickets", type=int, default=1_000_000)
    args = ap.parse_args()
    n = args.tickets
    print_machine()
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        tmp = Path(tmp)
        print_floors(tmp)
        src = tmp / "tickets.jsonl"
        t = time.perf_counter()
        ids = make_file(src, n)
        print(f"generated {n} tickets ({src.stat().st_size / 1e6:.0f} MB JSONL) in {time.perf_counter() - t:.1f} s")

        # raw: pre-built tuples, one executemany, one transaction, same schema and pragmas
        rows = raw_rows(src)
        conn = connect(tmp / "raw.db")
        t = time.perf_counter()
        with transaction(conn):
            conn.executemany("INSERT INTO tickets VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
        raw_s = time.perf_counter() - t
        conn.close()
        del rows

        # ours: the real CLI, parsing and validating every line, in a child process
        data = tmp / "gate"
        subprocess.run([str(GATE), "--data", str(data), "init", "--event", EVENT], check=True,
                       capture_output=True)
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", MEASURED_GATE, "--data", str(data), "ledger", "import",
                              str(src)], check=True, capture_output=True, text=True)
        ours_s = time.perf_counter() - t
        rss_mb = int(out.stderr.strip().splitlines()[-1]) / 1024
        t = time.perf_counter()
        subprocess.run([str(GATE), "--data", str(data), "ledger", "import", str(src)], check=True,
                       capture_output=True)
        again_s = time.perf_counter() - t

        conn = connect(data / "gate.db")
        view = SqliteLedgerView(conn, None)
        rng = random.Random(2)
        probe = [rng.choice(ids) for _ in range(20_000)]
        missing = [rng.randbytes(16).hex() for _ in range(20_000)]

        def per_lookup(keys):
            samples = []
            for _ in range(5):
                t0 = time.perf_counter_ns()
                for k in keys:
                    view.ticket(k)
                samples.append((time.perf_counter_ns() - t0) / len(keys) / 1000)
            return statistics.median(samples)

        hit, miss = per_lookup(probe), per_lookup(missing)
        db_mb = (data / "gate.db").stat().st_size / 1e6
        conn.close()

    print(f"raw sqlite3.executemany (pre-built rows): {raw_s:6.1f} s  ({n / raw_s:,.0f} rows/s)")
    print(f"gate ledger import (parse+validate+upsert): {ours_s:6.1f} s  ({n / ours_s:,.0f} rows/s)"
          f"  = {ours_s / raw_s:.2f}x raw (target <= 2x)")
    print(f"re-import of the same file (updates in place): {again_s:.1f} s")
    print(f"peak RSS of the import process: {rss_mb:.0f} MB (target < 300 MB)")
    print(f"point lookup: hit {hit:.1f} us, miss {miss:.1f} us; database {db_mb:.0f} MB")


if __name__ == "__main__":
    main()
