"""Back-to-back durable admissions with this tree's WAL checkpointer beside an
older commit's, in one process, interleaved in chunks of 100 scans (the
machine's drift hits both alike). Prints figures; asserts nothing.

    .venv/bin/python bench/checkpoint_ab.py [--old b17315f] [--scans 3000]

Before 371a7e3 the scan connection never copied the WAL back itself: with scans
arriving back to back the thread's checkpoint never caught up, SQLite never
started the WAL over, the file grew ~20 KB per scan and every commit appended
to it (its fdatasync then also writes the file's new size and blocks).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import fsync_us, print_machine  # noqa: E402
from verify import NOW, Fixture  # noqa: E402

import gate.appliance as appliance  # noqa: E402
from crypto.issuer import Issuer  # noqa: E402
from gate import db as this_db  # noqa: E402


def old_checkpointer(commit: str, tmp: Path):
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:gate/db.py"], capture_output=True,
                         text=True, check=True).stdout
    path = tmp / "db_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("db_old", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Checkpointer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="b17315f", help="the commit whose gate/db.py Checkpointer is compared")
    ap.add_argument("--scans", type=int, default=3000, help="admissions per side")
    args = ap.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        tmp = Path(tmp)
        issuer = Issuer("evt-bench")
        fxs = {}
        for name, cls in ((f"old ({args.old})", old_checkpointer(args.old, tmp)), ("this tree", this_db.Checkpointer)):
            appliance.Checkpointer = cls  # what Gate.scan creates on its first durable scan
            fx = Fixture(tmp, issuer, tickets=args.scans + 1, filler=20_000, name=name.split()[0].replace("(", ""))
            fx.gate.scan(fx.codes[0], now=NOW)
            fxs[name] = fx
        appliance.Checkpointer = this_db.Checkpointer
        per: dict[str, list[float]] = {n: [] for n in fxs}
        sync = []
        for k, i in enumerate(range(1, args.scans + 1, 100)):
            for name in (list(fxs) if k % 2 else list(fxs)[::-1]):
                g, codes = fxs[name].gate, fxs[name].codes[i:i + 100]
                t = time.perf_counter_ns()
                for q in codes:
                    d, _ = g.scan(q, now=NOW)
                    if not d.accepted:
                        raise SystemExit(f"bench broken: expected ACCEPT, got {d.reason.value}")
                per[name].append((time.perf_counter_ns() - t) / len(codes) / 1000)
            sync.append(fsync_us(tmp, n=20, rounds=1))
        print(f"{args.scans} back-to-back durable admissions per side, wall per admission in 100-scan chunks:")
        for name, v in per.items():
            wal = fxs[name].dir / "gate.db-wal"
            print(f"  {name:<16} mean {statistics.mean(v):6.0f} us  median {statistics.median(v):6.0f} us"
                  f"  min {min(v):6.0f} us   WAL file at the end {os.path.getsize(wal) / 1e6:5.1f} MB")
            fxs[name].gate.close()
        print(f"  4 KiB overwrite + fdatasync here (interleaved): median {statistics.median(sync):.0f} us")


if __name__ == "__main__":
    main()
