"""Regression tests for the central items of issue 11 (1, 4, 5, 7), each on
SQLite and PostgreSQL. Every one of them failed on main before the fix."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import threading
import time

import pytest
import requests

from crypto.issuer import Wallet
from gate.keyfiles import load_device_key
from gate import scanlog
from gate.appliance import Gate
from gate.decision import Reason
from gate.scanlog import GENESIS, chain_hash, head_message
from sync import client as sc
from sync.central.reconcile import build_report, render_text
from sync.central.store import CentralStore
from conftest import central_for, run_gate

EVENT = "evt-hard"


@pytest.fixture
def central(tmp_path, central_db):
    with central_for(tmp_path, central_db, EVENT) as running:
        yield running


def _gate(tmp_path, store, url, name="g1", lane="lane-1", event=EVENT):
    g = Gate.init(tmp_path / name, event=event, lane=lane)
    sc.enroll(g, url, store.enrol_code(event))
    return g


def _register(url, code, device_id, key=b"\x07" * 32, event=None):
    body = {"enrolment_code": code, "device_id": device_id,
            "public_key": base64.urlsafe_b64encode(key).decode().rstrip("=")}
    if event is not None:
        body["event"] = event
    return requests.post(f"{url}/v1/devices", json=body, timeout=10)


# ------------------------------------------------------------------ item 1


def test_item1_enrolment_cannot_take_over_or_revive_a_device(central, tmp_path):
    store, server = central
    store.create_event("evt-other")
    (w,) = [Wallet.load(m["file"]) for m in store.issue(EVENT, count=1, out=tmp_path / "w")]
    g = _gate(tmp_path, store, server.url)
    victim = g.config.device_id
    used_code = store.enrol_code(EVENT)
    assert _register(server.url, used_code, "gate-new").status_code == 201
    # (fails on main: INSERT OR REPLACE gave the attacker the victim's row with a new key and token)
    assert _register(server.url, used_code, victim).status_code == 403             # a used code
    assert _register(server.url, store.enrol_code(EVENT), victim).status_code == 403  # a fresh code, taken id
    assert _register(server.url, store.enrol_code("evt-other"), victim).status_code == 403  # another event's
    assert _register(server.url, store.enrol_code("evt-other"), "gate-x", event=EVENT).status_code == 403
    assert sc.sync_once(g, sc.client_for(g)).ok  # the victim's own token and key still work
    now = time.time()
    assert g.scan(w.code(now), now=now)[0].reason is Reason.ACCEPT
    assert sc.sync_once(g, sc.client_for(g)).ok
    # a revoked device stays revoked, even with its own code again
    store.revoke_device(victim)
    assert _register(server.url, used_code, victim).status_code == 403
    assert store.device_status(victim)["status"] == "revoked"
    assert not sc.sync_once(g, sc.client_for(g)).ok


def test_item1_wrong_codes_are_counted_and_rate_limited(central):
    store, server = central
    good = store.enrol_code(EVENT)
    for i in range(10):
        assert _register(server.url, f"BAD-{i}", f"gate-{i}").status_code == 403
    r = _register(server.url, "BAD-X", "gate-x")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert _register(server.url, good, "gate-good").status_code == 429  # this client waits a minute
    with store.reader() as db:
        assert db.scalar("SELECT count(*) FROM enrol_failures") == 10
    # the code was not spent by the refused attempt
    with store.writer() as db:
        db.run("DELETE FROM enrol_failures")
    assert _register(server.url, good, "gate-good").status_code == 201


# ------------------------------------------------------------------ issue 18 item 6: coming back after a revoke


def test_a_revoked_gate_comes_back_with_a_code_made_for_it_and_its_chain_goes_on(central, tmp_path):
    """README: '401 means the token was revoked: enrol again'. On main every new code answered
    'already enrolled' (a dead end). A code made for the device re-admits it: same id and key, a new
    token, the scan chain continues where central stopped; the old token stays dead."""
    store, server = central
    w1, w2 = [Wallet.load(m["file"]) for m in store.issue(EVENT, count=2, out=tmp_path / "w")]
    g = _gate(tmp_path, store, server.url)
    dev = g.config.device_id
    pub = load_device_key(g.data_dir).public_key().public_bytes_raw()
    assert sc.sync_once(g, sc.client_for(g)).ok  # key ring and tickets
    now = time.time()
    assert g.scan(w1.code(now), now=now)[0].reason is Reason.ACCEPT
    assert sc.sync_once(g, sc.client_for(g)).ok
    old_token = sc.token_path(g).read_text().strip()
    store.revoke_device(dev)
    assert not sc.sync_once(g, sc.client_for(g)).ok  # 401
    assert g.scan(w2.code(now + 1), now=now + 1)[0].reason is Reason.ACCEPT  # the lane goes on, offline
    # a plain code still cannot revive it, and says what can
    r = _register(server.url, store.enrol_code(EVENT), dev, key=pub)
    assert r.status_code == 403 and f"--device {dev}" in r.json()["error"], r.text
    code = store.enrol_code(device_id=dev)
    assert _register(server.url, code, "gate-someone-else", key=pub).status_code == 403  # only for that device
    assert _register(server.url, code, dev, key=b"\x09" * 32).status_code == 403       # and its own key
    sc.enroll(g, server.url, code)  # the documented path: enrol again with the new code
    assert store.device_status(dev)["status"] == "active"
    rep = sc.sync_once(g, sc.client_for(g))
    assert rep.ok, rep.errors
    assert store.stored_through(dev)[0] == 2  # the offline admission arrived, in the same chain
    assert [i["ticket_id"] for i in store.admissions(EVENT, 0, 10)[0]] == [w1.ticket_id, w2.ticket_id]
    r = requests.get(f"{server.url}/v1/events/{EVENT}/keyring", headers={"Authorization": f"Bearer {old_token}"},
                     timeout=10)
    assert r.status_code == 401  # the revoked token stays dead
    assert _register(server.url, code, dev, key=pub).status_code == 403  # and the code was single-use


def test_device_release_on_a_revoked_device_fails_and_changes_nothing(tmp_path, central_db):
    """On main 'central device release' on a revoked device printed 'released from quarantine'
    and exited 0."""
    data = tmp_path / "c"
    db = ["--db", central_db] if central_db else []

    def central(*args, check=True):
        return run_gate(data, "central", *db, *args, check=check)

    central("event", "create", EVENT)
    store = CentralStore(data, central_db)
    store.register(store.enrol_code(EVENT), "gate-r", b"\x05" * 32)

    def quarantine():
        with store.writer() as w:
            w.run("UPDATE devices SET quarantined_at = 1, quarantine_reason = 'x' WHERE device_id = 'gate-r'")

    r = central("device", "release", "gate-r")
    assert "was not quarantined: nothing changed" in r.stdout
    quarantine()
    assert json.loads(central("device", "release", "gate-r", "--json").stdout)["released"] is True
    assert not store.device_status("gate-r")["quarantined"]
    quarantine()
    central("device", "revoke", "gate-r")
    r = central("device", "release", "gate-r", check=False)
    assert r.returncode == 2 and "revoked" in r.stderr and "enroll --device gate-r" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "released" not in r.stdout
    assert store.device_status("gate-r")["quarantined"]  # nothing changed
    # the way back: a code for the device, the gate enrols with it, then the release works
    code = json.loads(central("device", "enroll", "--device", "gate-r", "--json").stdout)
    assert code["device_id"] == "gate-r" and code["event"] == EVENT
    store.register(code["code"], "gate-r", b"\x05" * 32)
    assert store.device_status("gate-r")["status"] == "active"
    assert json.loads(central("device", "release", "gate-r", "--json").stdout)["released"] is True
    assert central("device", "release", "gate-nobody", check=False).returncode == 2
    assert central("device", "enroll", "--device", "gate-nobody", check=False).returncode == 2
    store.close()


# ------------------------------------------------------------------ item 4


def _forge(g, records: list[dict], from_seq: int = 1, prev: bytes = GENESIS) -> dict:
    """What a rogue (enrolled or hijacked) device can upload: any records it likes,
    correctly chained and signed with its own key."""
    key = load_device_key(g.data_dir)
    datas, h = [], prev
    for i, r in enumerate(records):
        data = scanlog.encode_record({**r, "seq": from_seq + i})
        h = chain_hash(h, data)
        datas.append(data)
    dev = g.config.device_id
    return {"device_id": dev, "from_seq": from_seq, "records": [base64.b64encode(d).decode() for d in datas],
            "head_hash": h.hex(),
            "head_sig": base64.b64encode(key.sign(head_message(dev, from_seq + len(records) - 1, h))).decode()}


def _accept(tid: str, ts_ms: int, lane="lane-r") -> dict:
    return {"kind": "scan", "ts_ms": ts_ms, "device": "x", "lane": lane, "event": EVENT, "mode": "entry",
            "decision": "accept", "reason": "ACCEPT", "ticket_id": tid, "step": None, "version": 1,
            "unlisted": False, "consumes": True, "face_e4": None, "qr_sha": None}


def test_item4_rogue_device_is_quarantined_and_cannot_lock_out_holders(central, tmp_path):
    store, server = central
    wallets = [Wallet.load(m["file"]) for m in store.issue(EVENT, count=60, out=tmp_path / "w")]
    rogue = _gate(tmp_path, store, server.url, "rogue", "lane-r")
    honest = _gate(tmp_path, store, server.url, "honest", "lane-h")
    assert sc.sync_once(honest, sc.client_for(honest)).ok
    now = time.time()
    # 5,000 fabricated admissions in 5 seconds on one lane: no turnstile passes that
    fake = [_accept(wallets[i % 60].ticket_id, int(now * 1000) + i) for i in range(5000)]
    client = sc.client_for(rogue)
    ack = client.upload(EVENT, _forge(rogue, fake[:2500]))
    assert ack["stored_through"] == 2500 and ack["quarantined"]  # (fails on main: no such field)
    ack = client.upload(EVENT, _forge(rogue, fake[2500:], 2501, _head(store, rogue, 2500)))
    assert ack["stored_through"] == 5000 and ack["quarantined"]
    with store.reader() as db:  # nothing lost: every record is kept as evidence
        assert db.scalar("SELECT count(*) FROM scans WHERE device_id = :d", {"d": rogue.config.device_id}) == 5000
    # the honest gate learns none of them: real holders still get in
    assert sc.sync_once(honest, sc.client_for(honest)).ok
    assert honest.scan(wallets[0].code(now), now=now)[0].reason is Reason.ACCEPT
    rep = build_report(store, EVENT)
    assert [q["device_id"] for q in rep["quarantined"]] == [rogue.config.device_id]
    assert "turnstile" in rep["quarantined"][0]["reason"]
    assert "QUARANTINED DEVICES (1)" in render_text(rep)


def test_item4_admissions_outside_the_event_window_quarantine(central, tmp_path):
    store, server = central
    (w,) = [Wallet.load(m["file"]) for m in store.issue(EVENT, count=1, out=tmp_path / "w")]
    rogue = _gate(tmp_path, store, server.url, "rogue")
    far = int((time.time() + 30 * 86400) * 1000)  # a month after the event ends
    ack = sc.client_for(rogue).upload(EVENT, _forge(rogue, [_accept(w.ticket_id, far)]))
    assert ack["quarantined"] and "window" in ack["quarantine_reason"]
    items, _, _ = store.admissions(EVENT, 0, 100)
    assert items == []


def test_item4_holder_proofs_are_verified_and_propagated_as_proven(central, tmp_path):
    store, server = central
    wallets = [Wallet.load(m["file"]) for m in store.issue(EVENT, count=30, out=tmp_path / "w")]
    g = _gate(tmp_path, store, server.url, "g1")
    assert sc.sync_once(g, sc.client_for(g)).ok
    now = time.time()
    for w in wallets:  # 30 real rotating codes at once: faster than a turnstile, but each proven
        assert g.scan(w.code(now), now=now)[0].reason is Reason.ACCEPT
    assert sc.sync_once(g, sc.client_for(g)).ok
    assert store.device_status(g.config.device_id)["quarantined"]
    items, _, _ = store.admissions(EVENT, 0, 100)
    assert len(items) == 30 and all(i["proven"] for i in items)  # proven admissions still flow
    # a forged proof (the rogue has no holder key) is not proven and is not propagated
    rec = _accept(wallets[0].ticket_id, int(now * 1000))
    rec.update(step=int(now) // 15, cred_sha=b"\x01" * 32, proof=b"\x02" * 64)
    rogue = _gate(tmp_path, store, server.url, "rogue")
    ack = sc.client_for(rogue).upload(EVENT, _forge(rogue, [rec]))
    assert ack["quarantined"] and "proof" in ack["quarantine_reason"]
    assert all(i["device_id"] != rogue.config.device_id for i in store.admissions(EVENT, 0, 100)[0])


@pytest.mark.parametrize("trick", ["a lane per record", "times running back"])
def test_item4_a_rogue_cannot_dodge_the_rate_with_lane_names_or_timestamps(central, tmp_path, trick):
    # The re-attack after the first fix: the bucket was keyed on the lane text the
    # device writes and fed by the times it writes. 3,000 forged admissions with a
    # new lane name each, or spaced 1 s apart backwards from now, must quarantine
    # it as surely as 5,000 in 5 s.
    store, server = central
    wallets = [Wallet.load(m["file"]) for m in store.issue(EVENT, count=30, out=tmp_path / "w")]
    rogue = _gate(tmp_path, store, server.url, "rogue")
    honest = _gate(tmp_path, store, server.url, "honest", "lane-h")
    assert sc.sync_once(honest, sc.client_for(honest)).ok
    now_ms = int(time.time() * 1000)
    if trick == "a lane per record":
        fake = [_accept(wallets[i % 30].ticket_id, now_ms - 3000 + i, lane=f"L{i}") for i in range(3000)]
    else:
        fake = [_accept(wallets[i % 30].ticket_id, now_ms - i * 1000) for i in range(3000)]
    ack = sc.client_for(rogue).upload(EVENT, _forge(rogue, fake))
    assert ack["quarantined"], ack
    assert sc.sync_once(honest, sc.client_for(honest)).ok
    now = time.time()
    assert honest.scan(wallets[0].code(now), now=now)[0].reason is Reason.ACCEPT


def _head(store, g, seq: int) -> bytes:
    with store.reader() as db:
        return bytes(db.scalar("SELECT hash FROM scans WHERE device_id = :d AND seq = :s",
                               {"d": g.config.device_id, "s": seq}))


# ------------------------------------------------------------------ item 5


def test_item5_reports_read_a_snapshot_without_blocking_uploads(central, tmp_path):
    store, server = central
    wallets = [Wallet.load(m["file"]) for m in store.issue(EVENT, count=4, out=tmp_path / "w")]
    g = _gate(tmp_path, store, server.url)
    assert sc.sync_once(g, sc.client_for(g)).ok
    now = time.time()
    g.scan(wallets[0].code(now), now=now)
    assert sc.sync_once(g, sc.client_for(g)).ok
    for w in wallets[1:]:
        assert g.scan(w.code(now), now=now)[0].reason is Reason.ACCEPT
    done = threading.Event()
    # a report's read transaction stays open (on main there was no separate reader:
    # build_report held the store's global lock, and uploads waited for it)
    with store.reader(scratch=True) as db:
        assert db.scalar("SELECT count(*) FROM scans") == 1

        def upload():
            sc.push_scans(Gate.open(g.data_dir, now=now), sc.client_for(g))
            done.set()
        t = threading.Thread(target=upload, daemon=True)
        t.start()
        # a deadlock guard, not a timing check: the upload must finish while the snapshot is open
        assert done.wait(60), "upload blocked behind an open report"
        assert db.scalar("SELECT count(*) FROM scans") == 1  # the report's snapshot is stable
    with store.reader() as db:
        assert db.scalar("SELECT count(*) FROM scans") == 4
    rep = build_report(store, EVENT)
    assert rep["per_gate"] == {g.config.device_id: 4}, rep


# ------------------------------------------------------------------ item 7


def test_item7_existing_central_dir_and_files_are_made_private(tmp_path, central_db):
    data = tmp_path / "central"
    (data / "keys").mkdir(parents=True)
    os.chmod(data, 0o755)
    os.chmod(data / "keys", 0o755)
    sqlite3.connect(data / "central.db").close()  # left 0644 by an earlier version or a copy
    os.chmod(data / "central.db", 0o644)
    (data / "keys" / "issuer-old.key").write_bytes(b"x" * 32)
    os.chmod(data / "keys" / "issuer-old.key", 0o644)
    store = CentralStore(data, central_db)
    store.create_event(EVENT)
    store.close()
    modes = {p.relative_to(data).as_posix(): oct(p.stat().st_mode & 0o777) for p in data.rglob("*")}
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    assert modes.pop("keys") == "0o700"
    assert modes and all(m == "0o600" for m in modes.values()), modes


# ------------------------------------------------------------------ NUL characters, X-Forwarded-For


def test_nul_characters_are_refused_with_4xx_never_5xx(central, tmp_path):
    """PostgreSQL cannot hold NUL in text (DataError): every text a client sends is checked first."""
    store, server = central
    r = _register(server.url, store.enrol_code(EVENT), "a\u0000")
    assert r.status_code in (400, 422) and "NUL" in r.json()["error"], r.text
    g = _gate(tmp_path, store, server.url)
    tok = sc.token_path(g).read_text().strip()
    now_ms = int(time.time() * 1000)
    batch = _forge(g, [_accept("T-nul", now_ms, lane="a\u0000")])
    r = requests.post(f"{server.url}/v1/events/{EVENT}/scans", json=batch, timeout=10,
                      headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 422 and "lane contains a NUL" in r.json()["error"], r.text
    for path in (f"/v1/events/{EVENT}%00/keyring", f"/v1/events/{EVENT}/tickets?cursor=%00"):
        r = requests.get(server.url + path, headers={"Authorization": f"Bearer {tok}"}, timeout=10)
        assert r.status_code == 400 and "NUL" in r.json()["error"], (path, r.text)
    r = requests.post(f"{server.url}/ops/login", data={"name": "a\u0000", "password": "x"}, timeout=10,
                      allow_redirects=False)
    assert r.status_code < 500, r.text
    r = requests.get(f"{server.url}/v1/events/{EVENT}/reconciliation", auth=("a\u0000", "x"), timeout=10)
    assert r.status_code == 401, r.text
    assert sc.sync_once(g, sc.client_for(g)).ok  # the gate itself is unaffected


def test_x_forwarded_for_does_not_reset_the_enrolment_limit(central):
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 unless proxy_headers=False: the per-address
    limit must count the TCP peer, whatever address a client claims."""
    store, server = central

    def reg(code, dev, xff):
        body = {"enrolment_code": code, "device_id": dev,
                "public_key": base64.urlsafe_b64encode(b"\x07" * 32).decode().rstrip("=")}
        return requests.post(f"{server.url}/v1/devices", json=body, timeout=10, headers={"X-Forwarded-For": xff})

    codes = [reg(f"BAD-{i}", f"gate-{i}", f"10.0.0.{i + 1}").status_code for i in range(11)]
    assert codes[:10] == [403] * 10 and codes[10] == 429, codes
    r = reg(store.enrol_code(EVENT), "gate-good", "192.0.2.77")
    assert r.status_code == 429, r.text
    with store.reader() as db:
        assert {c for (c,) in db.all("SELECT client FROM enrol_failures")} == {"127.0.0.1"}
