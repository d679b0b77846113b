"""Operator paths end to end: handheld scanner lanes with background sync,
doctor, and the wallet simulator."""

from __future__ import annotations

import json
import time

import cv2

from crypto.issuer import Wallet
from sync.central.app import ServerThread, create_app
from sync.central.store import CentralStore
from conftest import json_lines, run_gate


def test_scanner_lane_with_background_sync_reaches_central(tmp_path, central_db):
    store = CentralStore(tmp_path / "central", central_db)
    store.create_event("evt-ops")
    made = store.issue("evt-ops", count=3, out=tmp_path / "wallets")
    server = ServerThread(create_app(store)).start()
    try:
        data = tmp_path / "gate"
        run_gate(data, "init", "--event", "evt-ops", "--lane", "south")
        run_gate(data, "sync", "--central", server.url, "--enroll", store.enrol_code("evt-ops"), "--once")
        now = time.time()
        codes = [Wallet.load(m["file"]).code(now) for m in made] + [Wallet.load(made[0]["file"]).code(now + 15)]
        # a keyboard-wedge scanner: one code per line on stdin; the sync loop runs beside the lane
        out = run_gate(data, "run", "--scanner", "stdin", "--relay", "sim", "--sensor", "sim", "--json-events",
                       "--central", server.url, input="\n".join(codes) + "\n")
        events = json_lines(out.stdout)
        assert [e["reason"] for e in events] == ["ACCEPT", "ACCEPT", "ACCEPT", "ALREADY_USED"]
        assert all(e["outcome"] in ("passed", "rejected") for e in events)
        run_gate(data, "sync", "--once")  # the loop may have stopped before its first upload finished
        with store.reader() as db:
            rows = db.scalar("SELECT count(*) FROM scans WHERE kind = 'scan'")
        assert rows == 4
    finally:
        server.stop()
        store.close()


def test_doctor_says_what_to_fix(tmp_path):
    data = tmp_path / "gate"
    run_gate(data, "init", "--event", "evt-ops")
    r = run_gate(data, "doctor", "--camera", f"images:{tmp_path}", check=False)
    assert r.returncode == 1
    lines = {ln.split()[1]: ln for ln in r.stdout.splitlines()}
    assert lines["keys"].startswith("FAIL") and "keys trust" in lines["keys"]
    assert lines["camera"].startswith("FAIL") and "no frame" in lines["camera"]
    assert lines["ledger"].startswith("WARN") and lines["relay"].startswith("WARN")
    assert lines["disk"].startswith("OK")


def test_wallet_code_and_png_decode_to_an_accepted_code(tmp_path):
    store = CentralStore(tmp_path / "central")
    store.create_event("evt-ops")
    (m,) = store.issue("evt-ops", count=1, out=tmp_path / "wallets")
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps(store.keyring("evt-ops")))
    data = tmp_path / "gate"
    run_gate(data, "init", "--event", "evt-ops")
    run_gate(data, "keys", "trust", str(ring))
    now = 1_807_283_662
    code = run_gate(None, "wallet", "code", m["file"], "--now", str(now)).stdout.strip()
    assert code == Wallet.load(m["file"]).code(now)
    png = tmp_path / "code.png"
    run_gate(None, "wallet", "show", m["file"], "--png", str(png))
    from hardware.qr import make_decoder
    (text, _), = make_decoder("pyzbar").decode(cv2.imread(str(png), cv2.IMREAD_GRAYSCALE))
    out = json_lines(run_gate(data, "verify", "--json", "--dry-run", text).stdout)[0]
    assert out["reason"] == "ACCEPT" and out["unlisted"]
    shown = run_gate(None, "wallet", "show", m["file"]).stdout
    assert "rotating" in shown and ("█" in shown or "▀" in shown)
    r = run_gate(None, "wallet", "code", str(ring), check=False)
    assert r.returncode != 0 and "not a readable ticket file" in r.stderr
    store.close()
