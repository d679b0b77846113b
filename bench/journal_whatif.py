"""What a journal would buy the durable admission: the shipped path beside two
designs that are NOT in the product, measured in the same run. Prints figures;
asserts nothing.

Issue 25 asks for a durable admission within 1.3 x its floor (2 Ed25519
verifications + 1 fdatasync). bench/verify.py shows the shipped path near 1.9 x,
and the ratio it would have if SQLite's COMMIT cost no more than a bare
fdatasync. This bench measures the designs that would take SQLite's durable
commit off the write path, so the question "would a journal reach 1.3 x?" has a
measured answer:

- shipped: ``Gate.scan`` as the product runs it (one transaction per scan,
  ``synchronous=FULL``: the COMMIT's fdatasync is the durable point);
- journal: the same scan with SQLite at ``synchronous=NORMAL`` (its COMMIT
  writes the WAL without syncing) and the record's bytes appended to a
  preallocated journal file with one pwrite + fdatasync before the scan returns;
- journal, SQLite batched: as above, and the scans of 32 admissions share one
  SQLite transaction (BEGIN and COMMIT once per 32): what is left on the path
  when SQLite's commit work is moved off it. Its COMMIT still runs in the same
  loop, amortized; the per-scan path latency without it is printed beside.

Both journal rows only time the writes such a design would do; they keep no
promise (nothing replays the journal, nothing bounds it). Every scan is a
distinct admitted code (checked).

    .venv/bin/python bench/journal_whatif.py [--scans N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fsync_us, print_machine  # noqa: E402
from verify import NOW, Fixture, raw_us  # noqa: E402

from crypto.issuer import Issuer  # noqa: E402
from gate import scanlog  # noqa: E402
from gate.db import transaction  # noqa: E402
from gate.decision import Reason  # noqa: E402

BATCH = 32


class Journal:
    """A preallocated file (written, not sparse: an overwrite, not an allocation)
    taking each record as one pwrite + fdatasync, wrapping at its end."""

    def __init__(self, path: Path, size: int = 16 << 20):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        chunk = b"\0" * (1 << 20)
        for i in range(size >> 20):
            os.pwrite(self.fd, chunk, i << 20)
        os.fsync(self.fd)
        self.size, self.off = size, 0

    def append(self, data: bytes) -> None:
        rec = struct.pack("<I", len(data)) + data
        if self.off + len(rec) > self.size:
            self.off = 0
        os.pwrite(self.fd, rec, self.off)
        os.fdatasync(self.fd)
        self.off += len(rec)

    def close(self) -> None:
        os.close(self.fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=320, help="admissions per design and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the designs take turns in each")
    args = ap.parse_args()
    print_machine()
    issuer = Issuer("evt-bench")
    last = [b""]  # the bytes scanlog.append encoded last: what a journal would write
    real_encode = scanlog.encode_record

    def encode(record: dict) -> bytes:
        last[0] = real_encode(record)
        return last[0]
    scanlog.encode_record = encode
    designs = ("shipped", "journal", "journal, SQLite batched")
    warm = 400
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as tmp:
        tmp = Path(tmp)
        need = warm + args.scans * args.rounds
        fx = {name: Fixture(tmp, issuer, tickets=need, filler=20_000, name=f"g{i}")
              for i, name in enumerate(designs)}
        journals = {name: Journal(fx[name].dir / "journal") for name in designs[1:]}
        for name in designs[1:]:
            fx[name].gate.conn.execute("PRAGMA synchronous=NORMAL")
        for f in fx.values():
            for q in f.codes[:warm]:  # untimed: each WAL file reaches its size
                f.gate.scan(q, now=NOW)
        print(f"ledger: {need + 20_000} tickets per gate; {warm} admissions each before timing; data on {tmp}")
        wall = {n: [] for n in designs}
        path = {n: [] for n in designs}
        floors = {n: [] for n in designs}
        for r in range(args.rounds):
            lo = warm + r * args.scans
            for name in designs:
                f, j = fx[name], journals.get(name)
                codes = f.codes[lo:lo + args.scans]
                verify = raw_us(f.parsed[lo:lo + args.scans], f.pub) / 2
                total = sync = 0
                outer = None
                for i in range(0, len(codes), 16):  # 16 scans, then 16 fdatasyncs: drift hits both
                    t = time.perf_counter_ns()
                    for k, q in enumerate(codes[i:i + 16], i):
                        if name == designs[2] and k % BATCH == 0:
                            if outer is not None:
                                outer.__exit__(None, None, None)
                                f.gate.upkeep()  # the WAL follow-up copy, outside the batch
                            outer = transaction(f.gate.conn)
                            outer.__enter__()
                        p = time.perf_counter_ns()
                        d, entry = f.gate.scan(q, now=NOW)
                        if j is not None:
                            j.append(last[0] + entry.hash)
                        path[name].append((time.perf_counter_ns() - p) / 1000)
                        if d.reason is not Reason.ACCEPT:
                            raise SystemExit(f"bench broken: expected ACCEPT, got {d.reason.value}")
                    if outer is not None and i + 16 >= len(codes):
                        outer.__exit__(None, None, None)
                        f.gate.upkeep()
                        outer = None
                    total += time.perf_counter_ns() - t
                    sync += fsync_us(f.dir, n=16, rounds=1) * 16
                n = len(codes)
                wall[name].append(total / n / 1000)
                floors[name].append(2 * verify + sync / n)
        for j in journals.values():
            j.close()
        for f in fx.values():
            f.gate.close()
    print(f"\n{args.scans} distinct admitted codes per design and round, {args.rounds} rounds"
          f" (min / median of the rounds){'':>4}wall per admission   x floor     path p50 / p99")
    for name in designs:
        ratio = [w / fl for w, fl in zip(wall[name], floors[name])]
        pp = sorted(path[name])
        print(f"  {name:<26} {min(wall[name]):7.1f} / {statistics.median(wall[name]):7.1f} us"
              f"   {min(ratio):.2f} / {statistics.median(ratio):.2f}"
              f"   {pp[len(pp) // 2]:7.1f} / {pp[int(len(pp) * 0.99)]:7.1f} us")
    fl = [x for v in floors.values() for x in v]
    print(f"  floor (2 verifications + 1 fdatasync, interleaved): {min(fl):.1f} / {statistics.median(fl):.1f} us;"
          " target: durable admission <= 1.3 x floor", flush=True)


if __name__ == "__main__":
    main()
