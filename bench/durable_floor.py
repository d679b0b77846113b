"""What one durable write can cost on this disk, by kind of write, beside the
smallest SQLite commits: where the floor of a durable admission lies.

Issue 25 asks for a durable admission within 1.3 x (2 Ed25519 verifications +
1 fdatasync). This bench shows the parts that ratio is made of, measured in the
same run: the 4 KiB overwrite + fdatasync the other benches divide by, an
append that grows the file (+ the metadata the filesystem must then sync), and
SQLite WAL commits of one and of two small tables at synchronous=FULL (the
gate's setting) and NORMAL (not durable against a power cut). Prints figures;
asserts nothing.

    .venv/bin/python bench/durable_floor.py [--n 2000]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from common import ed25519_verify_us, print_machine  # noqa: E402


def timed(n: int, fn) -> tuple[float, float]:
    """(wall µs, process CPU µs) per call, mean over n calls."""
    c, w = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - w) / n * 1e6, (time.process_time() - c) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="writes per row")
    n = ap.parse_args().n
    print_machine()
    verify = ed25519_verify_us()
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        d = Path(tmp)
        page, rec = b"y" * 4096, b"x" * 200
        fd = os.open(d / "over", os.O_RDWR | os.O_CREAT)
        os.write(fd, page * 8)
        os.fsync(fd)
        rows.append(("4 KiB overwrite + fdatasync (the benches' floor)",
                     timed(n, lambda i: (os.pwrite(fd, page, 0), os.fdatasync(fd)))))
        rows.append(("5 x 4 KiB overwrite + fdatasync",
                     timed(n, lambda i: ([os.pwrite(fd, page, k * 4096) for k in range(5)], os.fdatasync(fd)))))
        os.close(fd)
        fa = os.open(d / "append", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        rows.append(("200 B append (file grows) + fdatasync", timed(n, lambda i: (os.write(fa, rec), os.fdatasync(fa)))))
        os.close(fa)
        for sync in ("FULL", "NORMAL"):
            c = sqlite3.connect(d / f"db-{sync}", isolation_level=None)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute(f"PRAGMA synchronous={sync}")
            c.execute("CREATE TABLE s (seq INTEGER PRIMARY KEY, rec BLOB)")
            c.execute("CREATE TABLE u (t TEXT PRIMARY KEY, n INT) WITHOUT ROWID")

            def one(i, c=c):
                c.execute("BEGIN IMMEDIATE")
                c.execute("INSERT INTO s VALUES (?, ?)", (i, rec))
                c.execute("COMMIT")

            def two(i, c=c):
                c.execute("BEGIN IMMEDIATE")
                c.execute("INSERT INTO s VALUES (?, ?)", (n + i, rec))
                c.execute("INSERT INTO u VALUES (?, 1)", (os.urandom(16).hex(),))
                c.execute("COMMIT")
            rows.append((f"SQLite WAL commit, 1 insert, synchronous={sync}", timed(n, one)))
            rows.append((f"SQLite WAL commit, 2 tables, synchronous={sync}", timed(n, two)))
            c.close()
    print(f"Ed25519 verify {verify:.1f} us CPU; {n} writes per row, mean per write:")
    print(f"  {'':52}{'wall':>9}{'CPU':>9}")
    for name, (wall, cpu) in rows:
        print(f"  {name:52}{wall:7.1f}us{cpu:7.1f}us")
    floor = 2 * verify + rows[0][1][0]
    print(f"floor (2 verifications + the 4 KiB fdatasync) {floor:.0f} us; 1.3 x floor = {1.3 * floor:.0f} us:"
          f" what a decision (>= 2 verifications of CPU) plus its durable write must fit in")


if __name__ == "__main__":
    main()
