"""One chain verifier (gate.scanlog.ChainVerifier) for the three places a scan
chain is checked: ``gate log verify``, central's upload check and ``gate
central report --verify-chains``. The same damage is named the same way by
each (first bad seq, what is wrong), and central has no chain code of its own."""

from __future__ import annotations

import base64
import re
import sqlite3

import cbor2
import pytest

from gate import scanlog
from gate.scanlog import GENESIS, ChainBreak, ChainVerifier, chain_hash, encode_record, head_message
from sync.central.reconcile import build_report
from sync.central.store import CentralError, CentralStore
from conftest import ROOT

DEVICE = "gate-chain"
EVENT = "evt-chain"


def _records(n: int) -> list[bytes]:
    return [encode_record({"kind": "scan", "seq": s, "ts_ms": 1_767_225_600_000 + s * 1000, "decision": "reject",
                           "reason": "NOT_IN_LEDGER", "ticket_id": None}) for s in range(1, n + 1)]


def _hashes(records: list[bytes], prev: bytes = GENESIS) -> list[bytes]:
    out = []
    for r in records:
        prev = chain_hash(prev, r)
        out.append(prev)
    return out


def _damage(kind: str, recs: list[bytes], hashes: list[bytes]) -> tuple[list[tuple[int, bytes, bytes]], int]:
    """Rows (seq, bytes, stored hash) of a 5-record chain damaged at record 3, and the seq to name."""
    rows = [(i + 1, r, h) for i, (r, h) in enumerate(zip(recs, hashes))]
    if kind == scanlog.MISMATCH:  # record 3 edited after it was chained
        edited = cbor2.loads(recs[2])
        edited["reason"] = "ACCEPT"
        rows[2] = (3, encode_record(edited), hashes[2])
    elif kind == scanlog.WRONG_SEQ:  # records 3 and 4 swapped (bytes and hashes), seqs kept
        rows[2], rows[3] = (3, recs[3], hashes[3]), (4, recs[2], hashes[2])
    elif kind == scanlog.UNREADABLE:
        rows[2] = (3, b"\xff\xfe", hashes[2])
    elif kind == scanlog.GAP:
        del rows[2]
    return rows, 3


@pytest.mark.parametrize("kind", scanlog.BREAKS)
def test_the_verifier_names_the_first_bad_record_and_what_is_wrong(kind):
    recs = _records(5)
    rows, bad = _damage(kind, recs, _hashes(recs))
    v = ChainVerifier()
    with pytest.raises(ChainBreak) as exc:
        for seq, data, h in rows:
            v.add(seq, data, stored_hash=h)
    assert (exc.value.seq, exc.value.kind) == (bad, kind)
    assert (v.head_seq, v.count) == (bad - 1, bad - 1)  # the last good link


@pytest.mark.parametrize("kind", scanlog.BREAKS)
def test_gate_log_verify_names_it(tmp_path, kind):
    from gate.appliance import Gate
    g = Gate.init(tmp_path / "g", event=EVENT)
    recs = _records(5)
    rows, bad = _damage(kind, recs, _hashes(recs))
    with g.conn:
        g.conn.executemany("INSERT INTO scans (seq, ts_ms, kind, ticket_id, reason, accepted, record, hash)"
                           " VALUES (?, 0, 'scan', NULL, 'NOT_IN_LEDGER', 0, ?, ?)", rows)
    rep = scanlog.verify_chain(g.conn)
    assert not rep.ok and (rep.broken_at, rep.kind, rep.head_seq) == (bad, kind, bad - 1)
    g.close()


def test_an_intact_log_verifies_to_its_head(tmp_path):
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE scans (seq INTEGER, record BLOB, hash BLOB)")
    recs = _records(4)
    conn.executemany("INSERT INTO scans VALUES (?, ?, ?)", [(i + 1, r, h) for i, (r, h) in
                                                            enumerate(zip(recs, _hashes(recs)))])
    rep = scanlog.verify_chain(conn)
    assert rep.ok and (rep.records, rep.head_seq, rep.head_hash) == (4, 4, _hashes(recs)[-1])


@pytest.fixture
def central(tmp_path, central_db):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    store = CentralStore(tmp_path / "central", central_db)
    store.create_event(EVENT)
    key = Ed25519PrivateKey.generate()
    store.register(store.enrol_code(EVENT), DEVICE, key.public_key().public_bytes_raw())
    yield store, key
    store.close()


def _upload(key, datas: list[bytes], from_seq: int = 1, prev: bytes = GENESIS) -> dict:
    h = prev
    for d in datas:
        h = chain_hash(h, d)
    last = from_seq + len(datas) - 1
    return {"device_id": DEVICE, "from_seq": from_seq, "records": [base64.b64encode(d).decode() for d in datas],
            "head_hash": h.hex(), "head_sig": base64.b64encode(key.sign(head_message(DEVICE, last, h))).decode()}


def test_central_upload_check_names_the_record_out_of_order(central):
    store, key = central
    pub = key.public_key().public_bytes_raw()
    recs = _records(5)
    swapped = [recs[0], recs[1], recs[3], recs[2], recs[4]]  # re-signed: the head matches, the order does not
    with pytest.raises(CentralError) as exc:
        store.store_scans(EVENT, DEVICE, pub, _upload(key, swapped))
    assert exc.value.status == 422 and "record 3 " in str(exc.value)
    assert store.store_scans(EVENT, DEVICE, pub, _upload(key, recs[:3])) == {"stored_through": 3}
    # a batch continuing from the stored hash of seq 3, and one that claims another start
    assert store.store_scans(EVENT, DEVICE, pub, _upload(key, recs[3:], 4, _hashes(recs)[2])) == {"stored_through": 5}
    with pytest.raises(CentralError) as exc:
        store.store_scans(EVENT, DEVICE, pub, _upload(key, recs[3:], 4, GENESIS))
    assert exc.value.status in (409, 422)  # the overlap differs from what is stored (a fork) or does not chain


@pytest.mark.parametrize("kind", [scanlog.MISMATCH, scanlog.WRONG_SEQ, scanlog.UNREADABLE])
def test_central_report_verify_chains_names_the_stored_record_edited_afterwards(central, kind):
    store, key = central
    pub = key.public_key().public_bytes_raw()
    recs = _records(5)
    assert store.store_scans(EVENT, DEVICE, pub, _upload(key, recs)) == {"stored_through": 5}
    assert build_report(store, EVENT, verify_chains=True)["devices"][0]["chain_ok"]
    rows, bad = _damage(kind, recs, _hashes(recs))
    with store.writer() as db:  # someone with database access edits what was stored
        for seq, data, h in rows[2:4]:
            db.run("UPDATE scans SET record = :r, hash = :h WHERE device_id = :d AND seq = :s",
                   {"r": data, "h": h, "d": DEVICE, "s": seq})
    quick = build_report(store, EVENT)["devices"][0]  # counts only: cannot see an edit
    assert quick["chain_ok"] and quick["broken_at"] is None
    dev = build_report(store, EVENT, verify_chains=True)["devices"][0]
    assert not dev["chain_ok"] and dev["broken_at"] == bad


def test_central_has_no_chain_code_of_its_own():
    # the chain rule lives in gate/scanlog.py only: a re-implementation in central fails here
    for path in (ROOT / "sync" / "central").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"\bchain_hash\(|sha256\(\s*prev", text), f"{path}: use gate.scanlog.ChainVerifier"
