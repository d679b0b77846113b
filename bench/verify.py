"""Time per decision for static and rotating GT1 codes beside the raw cost of
the Ed25519 verifications each contains. Prints figures; asserts nothing.

    .venv/bin/python bench/verify.py [--tickets N] [--iterations N] [--codes N]

Two views: in-process (Gate.decide against raw Ed25519, interleaved rounds), and
as an outsider measures it: ``gate verify --dry-run --json`` over N different
rotating codes on stdin, its start-up subtracted (the same command with no
codes), against the raw Ed25519 cost of those same codes timed in this run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crypto import gt1  # noqa: E402
from crypto.issuer import Issuer, ticket_record  # noqa: E402
from gate import ledger  # noqa: E402
from gate.appliance import Gate  # noqa: E402

NOW = 1_807_283_662


# CPU time of this thread, not wall time: other processes on a busy machine
# stretch wall time for both sides of a comparison unevenly, CPU time not.
clock_ns = time.thread_time_ns


def per_call_us(fn, n: int, rounds: int = 7) -> float:
    """Median over rounds of the mean CPU time per call, in microseconds."""
    fn()
    results = []
    for _ in range(rounds):
        t = clock_ns()
        for _ in range(n):
            fn()
        results.append((clock_ns() - t) / n / 1000)
    return statistics.median(results)


def paired_us(fn, raw, n: int, rounds: int = 15) -> tuple[float, float, float]:
    """(decision, raw, overhead) medians from interleaved rounds: the machine's
    drift hits both sides of each pair alike, so the difference stays honest."""
    fn(), raw()
    dec, base, diff = [], [], []
    for _ in range(rounds):
        a = per_call_us(fn, n, rounds=1)
        b = per_call_us(raw, n, rounds=1)
        dec.append(a)
        base.append(b)
        diff.append(a - b)
    return statistics.median(dec), statistics.median(base), statistics.median(diff)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tickets", type=int, default=20_000, help="tickets in the ledger")
    ap.add_argument("--iterations", type=int, default=500, help="calls per round")
    ap.add_argument("--codes", type=int, default=4000, help="rotating codes piped to gate verify")
    args = ap.parse_args()

    issuer = Issuer("evt-bench")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        g = Gate.init(tmp / "g", event=issuer.event)
        g.trust(issuer.keyring())
        static, rotating = issuer.mint(rotating=False, entries=0), issuer.mint(entries=0)
        records = [ticket_record(static, entries=0), ticket_record(rotating, entries=0)]
        filler = ticket_record(static)
        records += [{**filler, "ticket_id": f"{i:032x}"} for i in range(args.tickets)]
        (tmp / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        ledger.import_tickets(g.conn, tmp / "t.jsonl", event=issuer.event, data_key=g.data_key, now=0)

        qs, qr = static.code(NOW), rotating.code(NOW)
        ps, pr = gt1.parse_qr(qs), gt1.parse_qr(qr)
        issuer_pub = issuer.signing_key.public_key()
        n = args.iterations
        dec_s, raw1, over_s = paired_us(lambda: g.decide(qs, now=NOW),
                                        lambda: gt1.verify_issuer(ps, issuer_pub), n)
        dec_r, raw2, over_r = paired_us(lambda: g.decide(qr, now=NOW),
                                        lambda: (gt1.verify_issuer(pr, issuer_pub), gt1.verify_proof(pr)), n)
        parse_r = per_call_us(lambda: gt1.parse_qr(qr), n)
        bad = per_call_us(lambda: g.decide("GT1:" + "A" * 4000, now=NOW), n)
        # the full scan: decide + append to the scan log (synchronous=FULL commit)
        t = time.perf_counter_ns()  # wall time here: the fsync is the point
        m = 300
        for i in range(m):
            g.scan(qr, now=NOW + 15 * i)
        scan_us = (time.perf_counter_ns() - t) / m / 1000
        outsider = outsider_us(issuer, tmp, args.codes)
        g.close()

    print(f"ledger: {args.tickets + 2} tickets; {n} calls per round, 15 interleaved rounds, medians of CPU time")
    print(f"{'':34}{'decision':>10}{'raw Ed25519':>13}{'our overhead':>14}")
    print(f"{'static code (1 verification)':34}{dec_s:>8.1f}us{raw1:>11.1f}us{over_s:>12.1f}us")
    print(f"{'rotating code (2 verifications)':34}{dec_r:>8.1f}us{raw2:>11.1f}us{over_r:>12.1f}us")
    print(f"parse only (rotating, {len(qr)} chars): {parse_r:.1f}us")
    print(f"oversized garbage (4004 chars) refused in {bad:.1f}us")
    print(f"full scan incl. durable log append (synchronous=FULL): {scan_us:.0f}us")
    cli, raw_cli, start_s = outsider
    print(f"gate verify --dry-run --json, {args.codes} different rotating codes on stdin "
          f"(CPU time; start-up {start_s * 1000:.0f} ms subtracted):")
    print(f"{'':34}{'per code':>10}{'raw Ed25519':>13}{'our overhead':>14}")
    print(f"{'rotating code (2 verifications)':34}{cli:>8.1f}us{raw_cli:>11.1f}us{cli - raw_cli:>12.1f}us")
    print("budget: our overhead <= 60us per rotating code (both views)")


def _gate_verify(data: Path, codes: str) -> float:
    """CPU seconds (user + system) the gate verify process used."""
    import resource

    cmd = [str(Path(sys.executable).with_name("gate")), "--data", str(data), "verify", "--dry-run", "--json",
           "--now", str(NOW)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, input=codes, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert out.stdout.count("\n") == codes.count("\n"), "gate verify answered fewer lines than it was given"
    return elapsed


def outsider_us(issuer: Issuer, tmp: Path, n: int) -> tuple[float, float, float]:
    """(per code, raw Ed25519 per code, start-up s): the CLI as a user runs it."""
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
    runs, starts, raws = [], [], []
    for _ in range(5):  # interleaved: start-up, the codes, the raw cost of the same codes
        starts.append(_gate_verify(data, ""))
        runs.append(_gate_verify(data, text))
        t = clock_ns()
        for p in parsed:
            gt1.verify_issuer(p, pub)
            gt1.verify_proof(p)
        raws.append((clock_ns() - t) / n / 1000)
    start = statistics.median(starts)
    per_code = statistics.median((r - s) / n * 1e6 for r, s in zip(runs, starts))
    return per_code, statistics.median(raws), start


if __name__ == "__main__":
    main()
