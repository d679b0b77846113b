"""What the reconciliation names, from real uploads through a real central on
127.0.0.1: admissions of tickets revoked before the scan, unlisted admissions,
sequence gaps; and the clock offset a sync pass reports."""

from __future__ import annotations

import time

import pytest

from crypto.issuer import Wallet
from gate.appliance import Gate
from gate.decision import Reason
from sync import client as sc
from sync.central.app import ServerThread, create_app
from sync.central.reconcile import build_report, render_text
from sync.central.store import CentralStore
from test_sync import _batch

EVENT = "evt-rec"


@pytest.fixture
def central(tmp_path, central_db):  # on SQLite and PostgreSQL
    store = CentralStore(tmp_path / "central", central_db)
    store.create_event(EVENT)
    server = ServerThread(create_app(store)).start()
    yield store, server
    server.stop()
    store.close()


def _gate(tmp_path, store, url, name="g1"):
    g = Gate.init(tmp_path / name, event=EVENT, lane=name)
    sc.enroll(g, url, store.enrol_code(EVENT))
    return g


def _sync(*gates) -> None:
    """One sync pass of each gate, in order; each must succeed."""
    for g in gates:
        assert sc.sync_once(g, sc.client_for(g)).ok


def _issue(store, tmp_path, n=1):
    return [Wallet.load(m["file"]) for m in store.issue(EVENT, count=n, out=tmp_path / "wallets")]


def test_revoked_before_the_scan_and_unlisted_admissions_are_named(central, tmp_path):
    store, server = central
    refunded, kept = _issue(store, tmp_path, 2)
    g = _gate(tmp_path, store, server.url)
    assert sc.sync_once(g, sc.client_for(g)).ok
    # central refunds one ticket and sells a new one; the gate, cut off, learns neither
    store.revoke(refunded.ticket_id)
    (late,) = _issue(store, tmp_path, 1)
    now = time.time() + 5  # after the refund
    for w in (refunded, kept, late):
        assert g.scan(w.code(now), now=now)[0].reason is Reason.ACCEPT
    assert sc.sync_once(g, sc.client_for(g)).ok
    rep = build_report(store, EVENT)
    assert [r["ticket_id"] for r in rep["revoked_admissions"]] == [refunded.ticket_id]
    assert [u["ticket_id"] for u in rep["unlisted_admissions"]] == [late.ticket_id]
    text = render_text(rep)
    assert refunded.ticket_id[:12] in text and late.ticket_id[:12] in text
    # an admission before the refund is not "revoked before the scan"
    g2 = _gate(tmp_path, store, server.url, "g2")
    (early,) = _issue(store, tmp_path, 1)
    assert sc.sync_once(g2, sc.client_for(g2)).ok
    t0 = time.time()
    assert g2.scan(early.code(t0), now=t0)[0].reason is Reason.ACCEPT
    assert sc.sync_once(g2, sc.client_for(g2)).ok
    store.revoke(early.ticket_id)
    assert early.ticket_id not in [r["ticket_id"] for r in build_report(store, EVENT)["revoked_admissions"]]


def test_a_sequence_gap_is_refused_named_and_then_filled(central, tmp_path):
    # A batch that skips records (a device whose log lost some, or a forged
    # upload) is refused with the seq central holds; the report shows the
    # device stopped there, and a normal sync fills the gap in order.
    store, server = central
    wallets = _issue(store, tmp_path, 5)
    g = _gate(tmp_path, store, server.url)
    now = time.time()
    for w in wallets:
        g.scan(w.code(now), now=now)
    recs = [r[0] for r in g.conn.execute("SELECT record FROM scans ORDER BY seq")]
    client = sc.client_for(g)
    assert client.upload(EVENT, _batch(g, recs[:2]))["stored_through"] == 2
    with pytest.raises(sc.ApiError) as exc:
        client.upload(EVENT, _batch(g, recs[3:], from_seq=4))
    assert exc.value.status == 409 and "gap" in str(exc.value)
    (dev,) = build_report(store, EVENT)["devices"]
    assert dev["stored_through"] == 2 and dev["records"] == 2
    assert sc.sync_once(g, client).ok  # the gate resends from what central acknowledged
    (dev,) = build_report(store, EVENT)["devices"]
    assert dev["stored_through"] == 5 and dev["chain_ok"] and dev["gaps"] == []


def test_sync_reports_the_clock_offset(central, tmp_path):
    store, server = central
    g = _gate(tmp_path, store, server.url)
    rep = sc.sync_once(g, sc.client_for(g), now=time.time() - 120)  # this gate's clock is 2 min slow
    assert rep.ok and 110 < rep.clock_offset_s < 130
    rep = sc.sync_once(g, sc.client_for(g))
    assert abs(rep.clock_offset_s) < 10


def test_the_report_headline_numbers_are_the_ops_rooms(central, tmp_path):
    # The report counts admissions, exits and refusals per lane in the passes it
    # makes anyway; the ops room counts them with reconcile.counts(). Fails if the
    # two disagree: a rolled-back admission counted, an exit taken for an
    # admission, a refusal on the wrong lane, a reason missing from by_reason.
    from gate.decision import Mode
    from sync.central.reconcile import counts

    store, server = central
    wallets = _issue(store, tmp_path, 6)
    north, south = _gate(tmp_path, store, server.url, "north"), _gate(tmp_path, store, server.url, "south")
    _sync(north, south)
    now = time.time()
    admitted = [north.scan(w.code(now), now=now)[1] for w in wallets[:3]]
    assert north.scan(wallets[0].code(now), now=now)[0].reason is Reason.REPLAY
    north.rollback(admitted[2].seq, now=now + 1)  # the holder never went through
    _sync(north, south)  # south learns north's admissions
    south.scan(wallets[3].code(now), now=now)
    for w in wallets[:2]:  # refused at south too: already admitted at north
        assert not south.scan(w.code(now + 2), now=now + 2)[0].accepted
    assert south.scan("GT1:not-a-code", now=now)[0].reason is Reason.MALFORMED
    assert south.scan(wallets[3].code(now + 90), now=now + 90, mode=Mode.EXIT)[0].accepted  # a later code
    _sync(north, south)
    rep = build_report(store, EVENT)
    with store.reader() as db:
        ops = counts(db, EVENT)
    assert {k: rep[k] for k in ops} == ops
    assert (ops["admitted"], ops["exits"], ops["inside"]) == (3, 1, 2)
    assert ops["refused_per_lane"] == {"north": 1, "south": 3} and ops["refused"] == 4
    assert sum(rep["by_reason"].values()) == rep["scans"] == 9
    assert rep["by_reason"]["REPLAY"] >= 1 and rep["by_reason"]["MALFORMED"] == 1


def test_double_admissions_say_which_admission_was_made_alone(central, tmp_path, monkeypatch):
    # Two offline gates admit the same tickets; one of them had neither central nor
    # a bus peer for some. Fails if the report loses or invents the "alone" flag of
    # an admission, or mixes up two gates' records of the same seq.
    from sync.central import reconcile

    monkeypatch.setattr(reconcile._mark_alone, "__defaults__", (2,))  # several lookups per gate
    store, server = central
    wallets = _issue(store, tmp_path, 5)
    g1, g2 = _gate(tmp_path, store, server.url, "g1"), _gate(tmp_path, store, server.url, "g2")
    _sync(g1, g2)
    now = time.time()
    for i, w in enumerate(wallets):  # the same seqs 1-5 on both gates
        assert g1.scan(w.code(now), now=now, alone=i % 2 == 0)[0].accepted
        assert g2.scan(w.code(now + 60), now=now + 60, alone=i == 4)[0].accepted
    _sync(g1, g2)
    rep = build_report(store, EVENT)
    assert len(rep["double_admissions"]) == 5
    flags = {(a["device_id"], a["seq"]): a["alone"] for o in rep["double_admissions"] for a in o["admissions"]}
    d1, d2 = g1.config.device_id, g2.config.device_id
    assert flags == {**{(d1, s): s % 2 == 1 for s in range(1, 6)}, **{(d2, s): s == 5 for s in range(1, 6)}}


def test_the_report_agrees_with_a_plain_reading_of_random_scans(central_db, tmp_path):
    # Stored records as any device may upload them (NULL decisions, modes, lanes,
    # reasons and consumes, rollbacks, other events, revoked and unlimited tickets),
    # counted by the definitions in sync.central.reconcile, one row at a time in
    # Python. Fails if the report's passes disagree: a rolled-back admission
    # counted, a NULL decision taken for a refusal, an exit for an admission, a
    # refusal on the wrong lane, a revoked ticket's later admission missed.
    import random

    from sync.central.reconcile import counts, fmt_ms

    rng = random.Random(25)
    store = CentralStore(tmp_path / "central", central_db)
    try:
        store.create_event(EVENT)
        store.create_event("other")
        entries = {f"t{i:03d}": rng.choice([0, 1, 1, 2]) for i in range(40)}
        store.add_tickets([{"ticket_id": t, "event": EVENT, "tier": "GA", "zone": None, "version": 1,
                            "status": "valid", "entries": n, "reentry": False, "face_required": False,
                            "face_template": None, "holder": None} for t, n in entries.items()], replace=False)
        for t in list(entries)[::5]:
            store.revoke(t, at=1_807_283_662 + 3 * rng.randrange(40))  # on a scan's time: the boundary counts
        with store.reader() as db:
            revoked_at = dict(db.all("SELECT ticket_id, revoked_at FROM tickets WHERE status = 'revoked'"))
        rows, now = [], time.time()
        for dev in ("d1", "d2", "d3"):
            accepted = []
            for seq in range(1, 201):
                kind = rng.choice(["scan"] * 6 + ["override", "rollback", "passed", "control", None])
                r = {"id": len(rows) + 1, "device_id": dev, "seq": seq, "event": rng.choice([EVENT] * 9 + ["other"]),
                     "ts_ms": rng.choice([1_807_283_662_000 + seq * 3000, None, int(now * 1000) - seq * 1000,
                                          int(now * 1000) - 3 * 86_400_000]), "kind": kind,
                     "mode": rng.choice(["entry", "entry", "exit", None]),
                     "decision": rng.choice(["accept", "accept", "reject", None]),
                     "reason": rng.choice(["ACCEPT", "REPLAY", "MALFORMED", None]),
                     "ticket_id": rng.choice([f"t{rng.randrange(45):03d}"] * 3 + [None]),
                     "unlisted": rng.choice([0, 1]), "consumes": rng.choice([0, 1, 1, None]), "ref": None,
                     "lane": rng.choice(["north", "south", None]), "proven": 0, "record": b"\xa0", "hash": b"h",
                     "received": now}
                if kind == "rollback" and accepted:  # mostly an admission; also a refusal, a seq never stored
                    r["ref"] = rng.choice([rng.choice(accepted)] * 4 + [rng.randrange(1, seq), 999])
                if kind in ("scan", "override") and r["decision"] == "accept":
                    accepted.append(seq)
                rows.append(r)
        with store.writer() as db:
            db.run("INSERT INTO scans (id, device_id, seq, event, ts_ms, kind, mode, decision, reason, ticket_id,"
                   " unlisted, consumes, ref, lane, proven, record, hash, received) VALUES (:id, :device_id, :seq,"
                   " :event, :ts_ms, :kind, :mode, :decision, :reason, :ticket_id, :unlisted, :consumes, :ref,"
                   " :lane, :proven, :record, :hash, :received)", rows)
        rep = build_report(store, EVENT)
        with store.reader() as db:
            ops = counts(db, EVENT)
            created = db.scalar("SELECT created FROM events WHERE event = :e", {"e": EVENT})
    finally:
        store.close()

    voided = {(r["device_id"], r["ref"]) for r in rows if r["kind"] == "rollback"}
    dec = [r for r in rows if r["event"] == EVENT and r["kind"] in ("scan", "override")]
    acc = [r for r in dec if r["decision"] == "accept" and (r["device_id"], r["seq"]) not in voided]
    adm = [r for r in acc if r["mode"] == "entry"]
    by_reason, refused, per_gate, per_lane, per_hour, used = {}, {}, {}, {}, {}, {}
    for r in dec:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
        if r["decision"] is not None and r["decision"] != "accept":
            refused[r["lane"] or "-"] = refused.get(r["lane"] or "-", 0) + 1
    for r in adm:
        per_gate[r["device_id"]] = per_gate.get(r["device_id"], 0) + 1
        per_lane[r["lane"] or "-"] = per_lane.get(r["lane"] or "-", 0) + 1
        hour = fmt_ms((r["ts_ms"] or 0) // 3_600_000 * 3_600_000, "%Y-%m-%d %H:00")
        hour = "clock wrong" if hour.startswith("?") else hour
        per_hour[hour] = per_hour.get(hour, 0) + 1
        if r["ticket_id"] is not None and r["consumes"] is not None:
            used[r["ticket_id"]] = used.get(r["ticket_id"], 0) + r["consumes"]
    over = sorted(t for t, n in used.items() if entries.get(t, 1) > 0 and n > entries.get(t, 1))
    revoked = sorted((r["device_id"], r["seq"]) for r in adm if r["ticket_id"] in revoked_at
                     and r["ts_ms"] is not None and r["ts_ms"] >= revoked_at[r["ticket_id"]] * 1000)
    assert rep["by_reason"] == by_reason and rep["scans"] == len(dec)
    assert (rep["admitted"], rep["exits"]) == (len(adm), sum(r["mode"] == "exit" for r in acc))
    assert rep["refused_per_lane"] == dict(sorted(refused.items())) and rep["refused"] == sum(refused.values())
    assert rep["per_gate"] == per_gate and rep["per_lane"] == dict(sorted(per_lane.items()))
    assert rep["per_hour"] == per_hour and "clock wrong" in per_hour and len(per_hour) > 1
    assert sorted((a["device_id"], a["seq"], a["known_now"]) for a in rep["unlisted_admissions"]) == sorted(
        (r["device_id"], r["seq"], r["ticket_id"] in entries) for r in adm if r["unlisted"] and r["ticket_id"])
    assert {o["ticket_id"]: sorted((a["device_id"], a["seq"]) for a in o["admissions"])
            for o in rep["double_admissions"]} == {
        t: sorted((r["device_id"], r["seq"]) for r in adm if r["ticket_id"] == t) for t in over}
    assert [o["ticket_id"] for o in rep["double_admissions"]] == over and over
    assert sorted((a["device_id"], a["seq"]) for a in rep["revoked_admissions"]) == revoked and revoked
    assert {k: rep[k] for k in ops} == ops
    # stamped by a wrong clock (any kind of record): before the event existed less a day,
    # or after central received it plus a day
    lo, wrong = int(created * 1000) - 86_400_000, {}
    for r in rows:
        if r["event"] == EVENT and r["ts_ms"] is not None and (
                r["ts_ms"] < lo or r["ts_ms"] > int(r["received"] * 1000) + 86_400_000):
            wrong.setdefault(r["device_id"], []).append(r)
    assert rep["clock_wrong"] == [
        {"device_id": d, "records": len(w), "first_seq": w[0]["seq"], "last_seq": w[-1]["seq"],
         "earliest_ts_ms": min(r["ts_ms"] for r in w), "latest_ts_ms": max(r["ts_ms"] for r in w)}
        for d, w in sorted(wrong.items())]
    assert 0 < sum(len(w) for w in wrong.values()) < sum(r["event"] == EVENT and r["ts_ms"] is not None for r in rows)
