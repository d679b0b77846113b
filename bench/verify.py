"""Time per decision for static and rotating GT1 codes beside the raw cost of
the Ed25519 verifications each contains. Prints figures; asserts nothing.

    .venv/bin/python bench/verify.py [--tickets N] [--iterations N]
"""

from __future__ import annotations

import argparse
import json
import statistics
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


def per_call_us(fn, n: int, rounds: int = 7) -> float:
    """Median over rounds of the mean time per call, in microseconds."""
    fn()
    results = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        for _ in range(n):
            fn()
        results.append((time.perf_counter_ns() - t) / n / 1000)
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
        t = time.perf_counter_ns()
        m = 300
        for i in range(m):
            g.scan(qr, now=NOW + 15 * i)
        scan_us = (time.perf_counter_ns() - t) / m / 1000
        g.close()

    print(f"ledger: {args.tickets + 2} tickets; {n} calls per round, 15 interleaved rounds, medians")
    print(f"{'':34}{'decision':>10}{'raw Ed25519':>13}{'our overhead':>14}")
    print(f"{'static code (1 verification)':34}{dec_s:>8.1f}us{raw1:>11.1f}us{over_s:>12.1f}us")
    print(f"{'rotating code (2 verifications)':34}{dec_r:>8.1f}us{raw2:>11.1f}us{over_r:>12.1f}us")
    print(f"parse only (rotating, {len(qr)} chars): {parse_r:.1f}us")
    print(f"oversized garbage (4004 chars) refused in {bad:.1f}us")
    print(f"full scan incl. durable log append (synchronous=FULL): {scan_us:.0f}us")
    print("target: our overhead <= 100us per code")


if __name__ == "__main__":
    main()
