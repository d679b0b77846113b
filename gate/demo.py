"""``gate demo``: the product on its embedded simulated default.

Mints an event's tickets and wallets, sets up a gate in a scratch directory,
and replays a realistic mix at the lane: valid rotating codes, a screenshot
replayed later, a revoked ticket, a code from before a transfer, a wrong-event
ticket, paper codes, a forged code. Prints each verdict and a summary.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from crypto.issuer import Issuer, ticket_record
from gate import ledger, scanlog
from gate.appliance import Gate
from gate.decision import Decision, Mode

T0 = 1_807_283_662  # a fixed, reproducible doors-open time


@dataclass
class Scan:
    story: str
    qr: str
    at: float
    mode: Mode | None = None


def build_event(workdir: Path, *, tickets: int = 40) -> tuple[Issuer, list, Path, Path]:
    issuer = Issuer("evt-demo-arena")
    wallets = [issuer.mint(rotating=True) for _ in range(tickets)]
    records = [ticket_record(w, holder=f"Holder {i:03d}", tier="GA" if i % 4 else "VIP")
               for i, w in enumerate(wallets)]
    ring = workdir / "keyring.json"
    ring.write_text(json.dumps(issuer.keyring()))
    tickets_file = workdir / "tickets.jsonl"
    tickets_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    return issuer, wallets, ring, tickets_file


def script(issuer: Issuer, wallets: list, tickets_file: Path) -> list[Scan]:
    """The lane's morning, in order. Mutates the ticket file for revocation/transfer."""
    revoked, transferred = wallets[5], wallets[6]
    new_holder = issuer.mint(ticket_id=bytes.fromhex(transferred.ticket_id), version=2)
    records = [json.loads(line) for line in tickets_file.read_text().splitlines()]
    for r in records:
        if r["ticket_id"] == revoked.ticket_id:
            r["status"] = "revoked"
        if r["ticket_id"] == transferred.ticket_id:
            r["version"] = 2
    tickets_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    other_event = Issuer("evt-other-show", keys=issuer.keys).mint()
    paper = issuer.mint(rotating=False)
    forged = Issuer(issuer.event).mint()  # right event, wrong (unknown) issuer key
    screenshot = wallets[0].code(T0 + 5)

    scans = [Scan(f"holder {i} shows a live rotating code", wallets[i].code(T0 + 10 * i), T0 + 10 * i)
             for i in range(5)]
    scans += [
        Scan("a screenshot of holder 0's code, shown 2 minutes later", screenshot, T0 + 125),
        Scan("holder 0 tries again with a live code", wallets[0].code(T0 + 140), T0 + 140),
        Scan("a refunded (revoked) ticket", revoked.code(T0 + 150), T0 + 150),
        Scan("the seller's live code after selling the ticket on", transferred.code(T0 + 160), T0 + 160),
        Scan("the new owner's code after the transfer", new_holder.code(T0 + 170), T0 + 170),
        Scan("a ticket for another event", other_event.code(T0 + 180), T0 + 180),
        Scan("a paper ticket sold after the last sync", paper.code(T0 + 190), T0 + 190),
        Scan("a forged code signed with an unknown key", forged.code(T0 + 200), T0 + 200),
        Scan("a torn, unreadable code", "GT1:THIS-IS-NOT-A-CODE", T0 + 210),
        Scan("holder 1 leaves through the exit", wallets[1].code(T0 + 600), T0 + 600, Mode.EXIT),
    ]
    scans += [Scan(f"holder {i} shows a live rotating code", wallets[i].code(T0 + 700 + 5 * i),
                   T0 + 700 + 5 * i) for i in range(7, 12)]
    return scans


def run_headless(out=print, workdir: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="gate-demo-") as tmp:
        work = Path(workdir or tmp)
        issuer, wallets, ring, tickets_file = build_event(work)
        scans = script(issuer, wallets, tickets_file)
        gate = Gate.init(work / "gate", event=issuer.event, lane="north-1")
        gate.trust(json.loads(ring.read_text()))
        res = ledger.import_tickets(gate.conn, tickets_file, event=issuer.event, data_key=gate.data_key)
        out(f"event {issuer.event}: {res.imported} tickets in the ledger, "
            f"{len(gate.keys)} issuer key(s) trusted; lane north-1 (entry)")
        out("")
        counts: Counter[str] = Counter()
        for s in scans:
            d: Decision
            d, _ = gate.scan(s.qr, now=s.at, mode=s.mode)
            counts[d.reason.value] += 1
            verdict = "ADMIT " if d.accepted else "REJECT"
            flag = " (unlisted)" if d.unlisted and d.accepted else ""
            out(f"  +{s.at - T0:>4.0f}s  {verdict} {d.reason.value:<14}{flag:<11} {s.story}")
        chain = scanlog.verify_chain(gate.conn)
        out("")
        out("summary: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        out(f"scan log: {chain.records} records, chain {'intact' if chain.ok else 'BROKEN'}")
        gate.close()
        return {"counts": dict(counts), "chain_ok": chain.ok, "records": chain.records}


def cmd_demo(args) -> int:
    summary = run_headless()
    if args.json:
        print(json.dumps(summary))
    return 0 if summary["chain_ok"] else 1


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the product on simulated hardware and a scripted crowd",
                       description="Mint an event, set up a gate in a scratch directory and replay "
                                   "a realistic mix of codes; prints each verdict and a summary.")
    p.add_argument("--headless", action="store_true", help="print the story only (no terminal UI)")
    p.add_argument("--json", action="store_true", help="also print the summary as one JSON object")
    p.set_defaults(func=cmd_demo)
