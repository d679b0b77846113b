"""SIGKILL in the middle of an import and of a burst of scans: the ledger stays
usable, imports are all-or-nothing, and every printed decision is in an intact chain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

from crypto.issuer import Issuer, ticket_record
from conftest import GATE_BIN, json_lines, run_gate

NOW = 1_807_283_662


def _setup(tmp_path, issuer):
    data = tmp_path / "gate"
    run_gate(data, "init", "--event", issuer.event)
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps(issuer.keyring()))
    run_gate(data, "keys", "trust", str(ring))
    return data


def _feed(pipe, text: str) -> None:
    try:
        pipe.write(text)
        pipe.close()
    except (BrokenPipeError, ValueError):
        pass  # the process was killed: that is the point


def _stats(data) -> dict:
    return json.loads(run_gate(data, "ledger", "stats", "--json").stdout)


def test_sigkill_mid_import_leaves_ledger_as_before(tmp_path):
    issuer = Issuer("evt-crash")
    data = _setup(tmp_path, issuer)
    w = issuer.mint(rotating=False)
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps(ticket_record(w)) + "\n")
    run_gate(data, "ledger", "import", str(small))
    big = tmp_path / "big.jsonl"
    with big.open("w") as fh:
        base = ticket_record(w)
        for i in range(300_000):
            fh.write(json.dumps({**base, "ticket_id": f"{i:032x}"}) + "\n")
    proc = subprocess.Popen([str(GATE_BIN), "--data", str(data), "ledger", "import", str(big)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wal = data / "gate.db-wal"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if wal.exists() and wal.stat().st_size > 2_000_000:  # well into the transaction
            break
        time.sleep(0.01)
    assert proc.poll() is None, "import finished before it could be killed; make the file bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = _stats(data)
    assert st["tickets"] == 1  # all or nothing: the killed import left no trace
    out = json_lines(run_gate(data, "verify", "--json", "--now", str(NOW), w.code(NOW)).stdout)
    assert out[0]["reason"] == "ACCEPT"
    run_gate(data, "ledger", "import", str(big))  # and the same import works afterwards
    assert _stats(data)["tickets"] == 300_001
    assert "chain ok" in run_gate(data, "log", "verify").stdout


def test_sigkill_mid_scan_burst_keeps_every_printed_decision(tmp_path):
    issuer = Issuer("evt-crash")
    data = _setup(tmp_path, issuer)
    wallets = [issuer.mint(rotating=True) for _ in range(50)]
    codes = "".join(w.code(NOW) + "\n" for w in wallets) * 200  # 10,000 scans, mostly ALREADY_USED/REPLAY
    proc = subprocess.Popen([str(GATE_BIN), "--data", str(data), "verify", "--json", "--now", str(NOW)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    # feed stdin and drain stdout from threads: the gate never waits on a full pipe, so the kill
    # lands while it decides and appends, not while it is parked on a write
    feeder = threading.Thread(target=_feed, args=(proc.stdin, codes), daemon=True)
    feeder.start()
    printed: list[dict] = []
    reader = threading.Thread(target=lambda: printed.extend(json.loads(line) for line in proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while len(printed) < 300:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(30)
    assert "chain ok" in run_gate(data, "log", "verify").stdout
    logged = {r["seq"]: r for r in json_lines(run_gate(data, "log", "--json").stdout)}
    assert len(printed) <= len(logged) < 10_000  # killed mid-burst, not after the last scan
    for d in printed:  # every decision shown (and so every relay pulse) has its record
        rec = logged[d["seq"]]
        assert (rec["reason"], rec["ticket_id"]) == (d["reason"], d["ticket_id"])
    accepted = [r for r in logged.values() if r["decision"] == "accept"]
    assert len(accepted) == len({r["ticket_id"] for r in accepted}) == 50
    # the gate keeps working after the kill
    again = json_lines(run_gate(data, "verify", "--json", "--now", str(NOW + 15), wallets[0].code(NOW + 15)).stdout)
    assert again[0]["reason"] == "ALREADY_USED"
