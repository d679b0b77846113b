"""Time per decision and per durable admission for GT1 codes beside the raw
floors they cannot beat, measured in the same run. Prints figures; asserts nothing.

    .venv/bin/python bench/verify.py [--tickets N] [--codes N] [--logged N] [--runs N]

Every row uses distinct codes of distinct tickets (no code is decided twice in a
row, no cache stays warm for it):

- decision (in-process, CPU time): ``Gate.decide`` over the codes, beside the raw
  Ed25519 cost of those same codes (2 verifications each) timed interleaved;
- durable admission (wall and CPU time): ``Gate.scan`` of each code once; every
  one is an admission (checked) logged with synchronous=FULL; the floor is two
  Ed25519 verifications + one 4 KiB fdatasync on the data directory's disk;
- durable refusal: the same codes shown again (REPLAY, checked), also logged;
- every SQL statement of an admission with its median cost, the COMMIT beside a
  bare fdatasync on the same disk, and the admission's ratio to its floor as it
  would be if the COMMIT cost no more than that fdatasync (the rest of the path);
- with ``--logged N``: the log is first filled with N chained scan records (and
  their usage rows), and the rows are measured again: empty log vs N;
- the outsider's view: ``gate verify --dry-run --json`` over N distinct rotating
  codes on stdin, its start-up subtracted (the same command with no codes),
  against the raw Ed25519 cost of those same codes (CPU time).

Each row is measured ``--runs`` times; min and median are printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fsync_us, print_machine  # noqa: E402

from crypto import gt1  # noqa: E402
from crypto.issuer import Issuer, ticket_record  # noqa: E402
from gate import ledger, scanlog  # noqa: E402
from gate.appliance import Gate  # noqa: E402
from gate.db import transaction  # noqa: E402
from gate.decision import Reason  # noqa: E402

NOW = 1_807_283_662


def cpu_ns() -> int:
    return time.thread_time_ns()


def proc_cpu_ns() -> int:
    """This process's CPU (user + system: a commit's write and fdatasync are system time)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return int((r.ru_utime + r.ru_stime) * 1e9)


class Fixture:
    """A gate with ``tickets`` listed rotating tickets (entries=1) plus filler."""

    def __init__(self, root: Path, issuer: Issuer, *, tickets: int, filler: int, name: str):
        self.dir = root / name
        self.gate = Gate.init(self.dir, event=issuer.event)
        self.gate.trust(issuer.keyring())
        wallets = [issuer.mint(entries=1) for _ in range(tickets)]
        records = [ticket_record(w, entries=1) for w in wallets]
        base = records[0]
        records += [{**base, "ticket_id": f"f{i:031x}"} for i in range(filler)]
        src = root / f"{name}.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in records))
        ledger.import_tickets(self.gate.conn, src, event=issuer.event, data_key=self.gate.data_key, now=0)
        src.unlink()
        self.codes = [w.code(NOW) for w in wallets]
        self.parsed = [gt1.parse_qr(q) for q in self.codes]
        self.pub = issuer.signing_key.public_key()

    def fill_log(self, n: int, *, filler: int) -> None:
        """Append n chained scan records (accepted admissions of filler tickets) and
        their usage rows, in one transaction: a log as a long event leaves it."""
        g = self.gate
        conn = g.conn
        with transaction(conn):
            seq, prev = scanlog.head(conn)
            rows, usage = [], []
            for i in range(n):
                seq += 1
                tid = f"f{i % max(filler, 1):031x}"
                rec = {"kind": "scan", "ts_ms": NOW * 1000 - n + i, "device": g.config.device_id,
                       "lane": g.policy.lane, "event": g.policy.event, "mode": "entry",
                       "decision": "accept", "reason": "ACCEPT", "ticket_id": tid, "step": None,
                       "version": 1, "unlisted": False, "consumes": True, "face_e4": None,
                       "qr_sha": os.urandom(16), "seq": seq}
                data = scanlog.encode_record(rec)
                prev = scanlog.chain_hash(prev, data)
                rows.append((seq, rec["ts_ms"], "scan", tid, "ACCEPT", 1, data, prev))
                if i < filler:
                    usage.append((tid, 1, "entry", rec["ts_ms"]))
                if len(rows) >= 50_000:
                    self._flush(rows, usage)
            self._flush(rows, usage)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _flush(self, rows: list, usage: list) -> None:
        conn = self.gate.conn
        conn.executemany("INSERT INTO scans (seq, ts_ms, kind, ticket_id, reason, accepted, record, hash)"
                         " VALUES (?,?,?,?,?,?,?,?)", rows)
        conn.executemany("INSERT OR REPLACE INTO usage (ticket_id, admissions, last_kind, last_ts_ms)"
                         " VALUES (?,?,?,?)", usage)
        rows.clear()
        usage.clear()


def raw_us(parsed: list, pub) -> float:
    t = cpu_ns()
    for p in parsed:
        gt1.verify_issuer(p, pub)
        gt1.verify_proof(p)
    return (cpu_ns() - t) / len(parsed) / 1000


def decide_us(fx: Fixture, codes: list[str]) -> float:
    g = fx.gate
    t = cpu_ns()
    for q in codes:
        g.decide(q, now=NOW)
    return (cpu_ns() - t) / len(codes) / 1000


def scan_rows(fx: Fixture, codes: list[str], expect: Reason, *, chunk: int = 20) -> tuple[float, float, float]:
    """(wall µs, process CPU µs, fdatasync floor µs) per durable scan of each code
    once; every decision is checked to be ``expect`` (an admission, or a refusal
    after both signatures). The disk's floor is measured in between, ``chunk``
    scans then ``chunk`` fdatasyncs: a shared disk's drift hits both alike."""
    g = fx.gate
    wall = cpu = sync = 0
    for i in range(0, len(codes), chunk):
        part = codes[i:i + chunk]
        t, c = time.perf_counter_ns(), proc_cpu_ns()
        for q in part:
            d, entry = g.scan(q, now=NOW)
            if d.reason is not expect or entry is None:
                raise SystemExit(f"bench broken: expected {expect.value}, got {d.reason.value}")
        wall += time.perf_counter_ns() - t
        cpu += proc_cpu_ns() - c
        sync += fsync_us(fx.dir, n=len(part), rounds=1) * len(part)
    n = len(codes)
    return wall / n / 1000, cpu / n / 1000, sync / n


def fmt(values: list[float], unit: str = "us") -> str:
    return f"{min(values):8.1f}{unit} {statistics.median(values):8.1f}{unit}"


def measure(fx: Fixture, runs: int, label: str) -> dict:
    """All in-process rows on ``fx``, ``runs`` times each over fresh slices of its codes."""
    per = len(fx.codes) // (runs * 2)
    out = {k: [] for k in ("decide", "raw", "verify", "sync", "adm_wall", "adm_cpu", "ref_wall", "ref_cpu")}
    for r in range(runs):
        dec_codes = fx.codes[2 * r * per:(2 * r + 1) * per]
        scan_codes = fx.codes[(2 * r + 1) * per:(2 * r + 2) * per]
        dec_parsed = fx.parsed[2 * r * per:(2 * r + 1) * per]
        # interleaved halves: the machine's drift hits both sides alike
        h = per // 2
        d1, r1 = decide_us(fx, dec_codes[:h]), raw_us(dec_parsed[:h], fx.pub)
        r2, d2 = raw_us(dec_parsed[h:], fx.pub), decide_us(fx, dec_codes[h:])
        out["decide"].append((d1 + d2) / 2)
        out["raw"].append((r1 + r2) / 2)
        out["verify"].append((r1 + r2) / 4)
        w, c, f = scan_rows(fx, scan_codes, Reason.ACCEPT)
        out["sync"].append(f)
        out["adm_wall"].append(w)
        out["adm_cpu"].append(c)
        w, c, _ = scan_rows(fx, scan_codes, Reason.REPLAY)
        out["ref_wall"].append(w)
        out["ref_cpu"].append(c)
    floors = [2 * v + s for v, s in zip(out["verify"], out["sync"])]
    ratio = [w / fl for w, fl in zip(out["adm_wall"], floors)]
    rratio = [w / fl for w, fl in zip(out["ref_wall"], floors)]
    own = [d - r for d, r in zip(out["decide"], out["raw"])]
    print(f"\n[{label}] {per} distinct codes per row and run, {runs} runs:{'min':>10}{'median':>10}")
    print(f"  raw Ed25519 verify (CPU)                      {fmt(out['verify'])}")
    print(f"  4 KiB overwrite + fdatasync here (wall, interleaved) {fmt(out['sync'])}")
    print(f"  floor = 2 verifications + 1 fdatasync         {fmt(floors)}")
    print(f"  decision, rotating (CPU)                      {fmt(out['decide'])}")
    print(f"  raw Ed25519 of the same codes (2 verify, CPU) {fmt(out['raw'])}")
    print(f"  our own work per decision (CPU)               {fmt(own)}")
    print(f"  durable admission, ACCEPT (wall)              {fmt(out['adm_wall'])}   x floor {min(ratio):.2f} / {statistics.median(ratio):.2f}")
    print(f"  durable admission, ACCEPT (process CPU)       {fmt(out['adm_cpu'])}")
    print(f"  durable refusal, REPLAY (wall)                {fmt(out['ref_wall'])}   x floor {min(rratio):.2f} / {statistics.median(rratio):.2f}")
    print(f"  durable refusal, REPLAY (process CPU)         {fmt(out['ref_cpu'])}")
    print("  target: durable admission <= 1.3 x floor", flush=True)
    return {k: statistics.median(v) for k, v in out.items()} | {"ratio": statistics.median(ratio),
                                                               "floor": statistics.median(floors)}


def statements(fx: Fixture, codes: list[str]) -> float:
    """Every SQL statement one durable admission runs, with its median cost.
    Returns what the COMMIT costs beyond a bare 4 KiB overwrite + fdatasync on the
    same disk, measured right after (wall µs: the COMMIT's median less the mean
    fdatasync, which outliers raise: the excess errs low, the bound it gives
    errs in the target's favour)."""
    from gate import db as gdb

    seen: dict[str, list[tuple[float, float]]] = {}
    real = gdb.Connection.execute

    def timed(self, sql, *a):
        t, c = time.perf_counter_ns(), cpu_ns()
        try:
            return real(self, sql, *a)
        finally:
            key = " ".join(sql.split())[:58]
            seen.setdefault(key, []).append(((time.perf_counter_ns() - t) / 1000, (cpu_ns() - c) / 1000))
    gdb.Connection.execute = timed
    try:
        for q in codes:
            d, _ = fx.gate.scan(q, now=NOW)
            if not d.accepted:
                raise SystemExit(f"bench broken: expected ACCEPT, got {d.reason.value}")
    finally:
        gdb.Connection.execute = real
    n = len(codes)
    sync = fsync_us(fx.dir, n=n, rounds=1)
    print(f"\nstatements per durable admission ({n} admissions; medians):{'per scan':>12}{'wall':>9}{'CPU':>9}")
    total, commit = 0, math.nan
    for key, v in seen.items():
        if len(v) < n / 2:
            continue  # a cache refill, not part of every admission
        w = statistics.median(x[0] for x in v)
        total += len(v) / n
        if key == "COMMIT":
            commit = w
        print(f"  {key:<58}{len(v) / n:>8.2f}{w:>8.1f}us{statistics.median(x[1] for x in v):>7.1f}us")
    print(f"  {total:.0f} statements per admission (COMMIT's wall includes the fdatasync)")
    print(f"  a bare 4 KiB overwrite + fdatasync here, right after: {sync:.1f}us wall", flush=True)
    return commit - sync


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tickets", type=int, default=20_000, help="filler tickets in the ledger besides the scanned ones")
    ap.add_argument("--scanned", type=int, default=1200, help="distinct rotating tickets per row and run")
    ap.add_argument("--codes", type=int, default=4000, help="rotating codes piped to gate verify")
    ap.add_argument("--logged", type=int, default=0, help="also measure after filling the log with N scan records")
    ap.add_argument("--runs", type=int, default=3, help="runs of each row (min and median printed)")
    ap.add_argument("--no-cli", action="store_true", help="skip the gate verify rows")
    args = ap.parse_args()

    print_machine()
    issuer = Issuer("evt-bench")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = args.scanned * args.runs * 2
        fx = Fixture(tmp, issuer, tickets=n, filler=args.tickets, name="empty")
        print(f"ledger: {n + args.tickets} tickets; log empty at start; data on {tmp}")
        empty = measure(fx, args.runs, "empty log")
        fx.gate.close()
        sfx = Fixture(tmp, issuer, tickets=700, filler=args.tickets, name="statements")
        for q in sfx.codes[:400]:  # untimed: the WAL file reaches its size (a lane's first ~200 scans)
            sfx.gate.scan(q, now=NOW)
        excess = statements(sfx, sfx.codes[400:])
        sfx.gate.close()
        # What the write path would cost if SQLite's durable commit cost no more than the
        # disk's bare fdatasync: the part of the ratio that is not the commit.
        print(f"\nthe durable admission with its COMMIT at a bare fdatasync's cost ({excess:.0f} us less): "
              f"{empty['ratio'] - excess / empty['floor']:.2f} x the floor (median {empty['floor']:.0f} us);"
              f" measured {empty['ratio']:.2f} x (medians)", flush=True)
        if args.logged:
            filler = max(args.tickets, args.logged)
            fx = Fixture(tmp, issuer, tickets=n, filler=filler, name="full")
            t = time.perf_counter()
            fx.fill_log(args.logged, filler=filler)
            print(f"\nledger: {n + filler} tickets; log filled with {args.logged} chained records"
                  f" in {time.perf_counter() - t:.1f} s")
            full = measure(fx, args.runs, f"{args.logged} logged scans")
            fx.gate.close()
            print(f"\n{args.logged} logged vs empty (medians): decision x{full['decide'] / empty['decide']:.3f},"
                  f" durable admission wall x{full['adm_wall'] / empty['adm_wall']:.3f}"
                  f" CPU x{full['adm_cpu'] / empty['adm_cpu']:.3f}; target within 10 %")
        if not args.no_cli:
            outsider(issuer, tmp, args.codes, args.runs)


def _gate_verify(data: Path, codes: str) -> float:
    """CPU seconds (user + system) the gate verify process used."""
    cmd = [str(Path(sys.executable).with_name("gate")), "--data", str(data), "verify", "--dry-run", "--json",
           "--now", str(NOW)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, input=codes, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = out.stdout.splitlines()
    if len(lines) != codes.count("\n"):
        raise SystemExit("bench broken: gate verify answered fewer lines than it was given")
    if codes and not all(json.loads(line)["decision"] == "accept" for line in lines):
        raise SystemExit("bench broken: a code was not accepted by gate verify --dry-run")
    return elapsed


def outsider(issuer: Issuer, tmp: Path, n: int, runs: int) -> None:
    """``gate verify --dry-run --json`` as a user runs it, over n distinct codes."""
    data = tmp / "cli"
    g = Gate.init(data, event=issuer.event)
    g.trust(issuer.keyring())
    wallets = [issuer.mint(entries=0) for _ in range(n)]
    (tmp / "cli.jsonl").write_text("".join(json.dumps(ticket_record(w, entries=0)) + "\n" for w in wallets))
    ledger.import_tickets(g.conn, tmp / "cli.jsonl", event=issuer.event, data_key=g.data_key, now=0)
    g.close()
    codes = [w.code(NOW) for w in wallets]
    text = "\n".join(codes) + "\n"
    pub = issuer.signing_key.public_key()
    parsed = [gt1.parse_qr(q) for q in codes]
    per, raws, starts = [], [], []
    for _ in range(runs):
        # the raw cost of the same codes just before and just after the process, averaged:
        # this VM's speed drifts within seconds, and a drift then hits both sides alike
        before = raw_us(parsed, pub)
        s = _gate_verify(data, "")
        r = _gate_verify(data, text)
        raws.append((before + raw_us(parsed, pub)) / 2)
        starts.append(s)
        per.append((r - s) / n * 1e6)
    own = [p - r for p, r in zip(per, raws)]
    ratio = [o / r for o, r in zip(own, raws)]
    print(f"\n[gate verify --dry-run --json] {n} distinct rotating codes on stdin, CPU time, {runs} runs"
          f" (start-up {statistics.median(starts) * 1000:.0f} ms subtracted):{'min':>6}{'median':>10}")
    print(f"  per code                                      {fmt(per)}")
    print(f"  raw Ed25519 of the same codes (2 verify)      {fmt(raws)}")
    print(f"  our own work per code                         {fmt(own)}   x raw {min(ratio):.2f} / {statistics.median(ratio):.2f}")
    print("  target: own work <= 0.3 x raw verification cost", flush=True)


if __name__ == "__main__":
    main()
