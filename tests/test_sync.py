"""Sync against the real reference central on 127.0.0.1: provisioning, deltas
reaching decisions, uploads; faults; double admission across gates; tampering."""

from __future__ import annotations

import base64
import json
import time

import cbor2
import pytest
import requests

from gate.appliance import Gate
from gate.decision import Reason
from sync import client as sc
from sync.central.app import ServerThread, create_app
from gate.scanlog import head_message
from sync.central.store import CentralStore
from sync.central.reconcile import build_report, render_text
from conftest import json_lines, run_gate
from faulty_proxy import FaultyProxy


def db_args(store) -> list[str]:
    """``gate central`` arguments naming the store's database (none for the SQLite default)."""
    return ["--db", store.db_url] if store.db_url else []


@pytest.fixture
def central(tmp_path, central_db):
    store = CentralStore(tmp_path / "central", central_db)
    store.create_event("evt-sync")
    server = ServerThread(create_app(store)).start()
    yield store, server
    server.stop()
    store.close()


def _gate(tmp_path, store, url, name="g1", lane="lane-1"):
    g = Gate.init(tmp_path / name, event="evt-sync", lane=lane)
    sc.enroll(g, url, store.enrol_code("evt-sync"))
    return g


def _stored(store, g) -> list[tuple[int, int]]:
    """(seq, copies) of the gate's records at central."""
    with store.reader() as db:
        return [tuple(r) for r in db.all("SELECT seq, count(*) FROM scans WHERE device_id = :d GROUP BY seq"
                                         " ORDER BY seq", {"d": g.config.device_id})]


def _wallets(store, tmp_path, n=3, **kw):
    from crypto.issuer import Wallet
    made = store.issue("evt-sync", count=n, out=tmp_path / "wallets", **kw)
    return [Wallet.load(m["file"]) for m in made]


def test_provision_sync_deltas_and_upload_through_the_cli(central, tmp_path):
    store, server = central
    wallets = _wallets(store, tmp_path, 3)
    data = tmp_path / "gate"
    run_gate(data, "init", "--event", "evt-sync", "--lane", "north")
    r = run_gate(data, "sync", "--once", check=False)
    assert r.returncode != 0 and "--enroll CODE" in r.stderr
    code = json.loads(run_gate(tmp_path / "central", "central", *db_args(store), "device", "enroll", "--json").stdout)["code"]
    out = json.loads(run_gate(data, "sync", "--central", server.url, "--enroll", code, "--once", "--json").stdout)
    assert out["ok"] and out["tickets"] == 3 and out["keys"] == 1
    assert oct((data / "keys" / "token").stat().st_mode)[-3:] == "600"
    now = time.time()
    first = json_lines(run_gate(data, "verify", "--json", wallets[0].code(now)).stdout)[0]
    assert first["reason"] == "ACCEPT" and not first["unlisted"]
    # central revokes one ticket and reissues another (transfer): the gate learns both
    store.revoke(wallets[1].ticket_id)
    res = store.reissue(wallets[2].ticket_id, tmp_path / "wallets")
    from crypto.issuer import Wallet
    new_owner = Wallet.load(res["file"])
    out = json.loads(run_gate(data, "sync", "--once", "--json").stdout)  # URL and token remembered
    assert out["ok"] and out["tickets"] == 2 and out["uploaded"] == 1
    reasons = [json_lines(run_gate(data, "verify", "--json", "--dry-run", w.code(now)).stdout)[0]["reason"]
               for w in (wallets[1], wallets[2], new_owner)]
    assert reasons == ["REVOKED", "SUPERSEDED", "ACCEPT"]
    rep = build_report(store, "evt-sync")
    assert rep["per_lane"] == {"north": 1} and rep["devices"][0]["chain_ok"]
    # the same enrolment code cannot register a second device
    with pytest.raises(sc.ApiError) as exc:
        sc.CentralClient(server.url).register(code, "gate-other", b"\x01" * 32)
    assert exc.value.status == 403


def test_gate_keeps_deciding_through_faults_and_central_gets_every_scan_once(central, tmp_path):
    store, server = central
    wallets = _wallets(store, tmp_path, 40)
    with FaultyProxy(server.url) as proxy:
        g = _gate(tmp_path, store, proxy.url)
        # a read timeout a loaded machine never reaches on a normal answer, and a stall well past it
        client = sc.CentralClient(proxy.url, sc.token_path(g).read_text(), timeout=(5, 5))
        proxy.stall_s = 30
        assert sc.sync_once(g, client).ok
        now = time.time()
        modes = ["down", "500", "slow", "reset", "garbage", "deep", "truncate", "drop_ack", "drop_ack", "pass"]
        i = 0
        for mode in modes:
            proxy.mode = mode
            for _ in range(4):  # the lane keeps admitting from the local ledger whatever central does
                d, _ = g.scan(wallets[i].code(now), now=now)
                assert d.reason is Reason.ACCEPT and not d.unlisted
                i += 1
            rep = sc.sync_once(g, client, now=now)
            assert rep.ok == (mode == "pass"), (mode, rep.errors)
            if mode == "drop_ack":
                # central stored the batch and its answer was lost: every record is at central while the
                # gate still counts some as unacknowledged (the next pass sends them again)
                assert [s for s, _ in _stored(store, g)] == list(range(1, i + 1))
                assert sc.outbox_length(g) > 0
        proxy.mode = "pass"
        assert sc.sync_once(g, client).ok
        assert sc.outbox_length(g) == 0
    rows = _stored(store, g)
    assert [s for s, _ in rows] == list(range(1, i + 1)) and all(n == 1 for _, n in rows)  # resent, stored once
    assert build_report(store, "evt-sync")["devices"][0]["chain_ok"]


def test_lying_central_cannot_corrupt_the_ledger(central, tmp_path):
    store, server = central
    _wallets(store, tmp_path, 2)
    g = _gate(tmp_path, store, server.url)
    # a ticket record with a wrong type sits in central's feed
    with store.writer() as db:
        db.run("UPDATE tickets SET entries = -5 WHERE change_seq = 2")
    rep = sc.sync_once(g, sc.client_for(g))
    assert not rep.ok and any("invalid ticket" in e for e in rep.errors)
    assert g.conn.execute("SELECT count(*) FROM tickets").fetchone()[0] == 0  # page not applied
    from gate.db import get_setting
    assert get_setting(g.conn, "sync.tickets_cursor", "") == ""


def test_two_gates_offline_double_admission_is_reported(central, tmp_path):
    store, server = central
    (w,) = _wallets(store, tmp_path, 1)
    with FaultyProxy(server.url) as proxy:
        g1 = _gate(tmp_path, store, proxy.url, "g1", "east")
        g2 = _gate(tmp_path, store, proxy.url, "g2", "west")
        for g in (g1, g2):
            assert sc.sync_once(g, sc.client_for(g)).ok
        proxy.mode = "down"  # the venue network goes
        now = time.time()
        assert g1.scan(w.code(now), now=now)[0].reason is Reason.ACCEPT
        assert g2.scan(w.code(now + 15), now=now + 15)[0].reason is Reason.ACCEPT  # g2 cannot know
        proxy.mode = "pass"
        for g in (g1, g2):
            assert sc.sync_once(g, sc.client_for(g)).ok
        # once online, the gates know about each other's admissions
        assert g1.decide(w.code(now + 30), now=now + 30).reason is Reason.ALREADY_USED
    rep = build_report(store, "evt-sync")
    (dup,) = rep["double_admissions"]
    assert dup["ticket_id"] == w.ticket_id and dup["admitted"] == 2 and len(dup["gates"]) == 2
    assert "DOUBLE ADMISSIONS (1)" in render_text(rep)
    text = run_gate(tmp_path / "central", "central", *db_args(store), "report").stdout
    assert w.ticket_id in text


def test_online_gates_share_admissions_and_rollbacks(central, tmp_path):
    store, server = central
    (w,) = _wallets(store, tmp_path, 1)
    g1, g2 = _gate(tmp_path, store, server.url, "g1"), _gate(tmp_path, store, server.url, "g2")
    for g in (g1, g2):
        assert sc.sync_once(g, sc.client_for(g)).ok
    now = time.time()
    d, entry = g1.scan(w.code(now), now=now)
    assert d.reason is Reason.ACCEPT
    for g in (g1, g2):
        sc.sync_once(g, sc.client_for(g))
    assert g2.decide(w.code(now + 15), now=now + 15).reason is Reason.ALREADY_USED
    g1.rollback(entry.seq, now=now + 6)  # nobody passed g1's turnstile
    for g in (g1, g2):
        sc.sync_once(g, sc.client_for(g))
    assert g2.decide(w.code(now + 15), now=now + 15).reason is Reason.ACCEPT


def _batch(g, records, *, from_seq=1, key=None, device_id=None):
    from gate.keyfiles import load_device_key
    from gate.scanlog import GENESIS, chain_hash
    key = key or load_device_key(g.data_dir)
    h = GENESIS
    if from_seq > 1:
        h = g.conn.execute("SELECT hash FROM scans WHERE seq = ?", (from_seq - 1,)).fetchone()[0]
    for r in records:
        h = chain_hash(h, r)
    dev = device_id or g.config.device_id
    return {"device_id": dev, "from_seq": from_seq, "records": [base64.b64encode(r).decode() for r in records],
            "head_hash": h.hex(), "head_sig": base64.b64encode(key.sign(head_message(dev, from_seq + len(records) - 1, h))).decode()}


def test_tampered_uploads_are_refused_and_reported(central, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    store, server = central
    wallets = _wallets(store, tmp_path, 3)
    g = _gate(tmp_path, store, server.url)
    now = time.time()
    for w in wallets:
        g.scan(w.code(now), now=now)
    recs = [r[0] for r in g.conn.execute("SELECT record FROM scans ORDER BY seq")]
    client = sc.client_for(g)

    def refused(batch, status):
        with pytest.raises(sc.ApiError) as exc:
            client.upload("evt-sync", batch)
        assert exc.value.status == status, exc.value

    edited = cbor2.loads(recs[1])
    edited["reason"] = "REVOKED"
    good_head = _batch(g, recs)
    tampered = dict(good_head, records=[base64.b64encode(r).decode() for r in
                                        (recs[0], cbor2.dumps(edited, canonical=True), recs[2])])
    refused(tampered, 422)                                         # edited record, original signed head
    refused(_batch(g, [recs[1], recs[0], recs[2]]), 422)           # reordered (re-signed, still refused)
    refused(_batch(g, recs, key=Ed25519PrivateKey.generate()), 403)  # wrong device key
    assert client.upload("evt-sync", _batch(g, recs))["stored_through"] == 3
    assert client.upload("evt-sync", _batch(g, recs))["stored_through"] == 3  # repeated: stored once
    forked = cbor2.loads(recs[2])
    forked["ticket_id"] = "00" * 16
    refused(_batch(g, [recs[0], recs[1], cbor2.dumps(forked, canonical=True)]), 409)  # forked chain
    kinds = [p["kind"] for p in build_report(store, "evt-sync")["problems"]]
    assert kinds == ["broken_chain", "broken_chain", "bad_signature", "forked_chain"]
    with store.reader() as db:
        assert db.scalar("SELECT count(*) FROM scans") == 3
    # unknown and revoked tokens get 401
    r = requests.get(f"{server.url}/v1/events/evt-sync/keyring", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    store.revoke_device(g.config.device_id)
    rep = sc.sync_once(g, client)
    assert any("401" in e or "token" in e for e in rep.errors)


def test_retry_policy_backs_off_and_caps():
    import random
    p = sc.RetryPolicy(base_s=1, cap_s=30, jitter=0)
    assert [p.delay(n) for n in range(0, 8)] == [0, 1, 2, 4, 8, 16, 30, 30]
    j = sc.RetryPolicy(base_s=1, cap_s=30, jitter=0.2)
    assert all(0.8 * 4 <= j.delay(3, random.Random(s)) <= 1.2 * 4 for s in range(20))
    assert sc.RetryPolicy.retryable_status(503) and not sc.RetryPolicy.retryable_status(403)
