"""Decision core: every reason code, ledger-over-claims, and properties
(determinism, never admitting a ticket more often than allowed) on a real gate."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from crypto import gt1
from crypto.issuer import Issuer, ticket_record
from gate import ledger
from gate.appliance import Gate
from gate.decision import FaceCapture, Mode, Reason
from conftest import write_jsonl

NOW = 1_807_283_662


def load(gate: Gate, tmp_path: Path, records) -> None:
    ledger.import_tickets(gate.conn, write_jsonl(tmp_path / "t.jsonl", records),
                          event=gate.policy.event, data_key=gate.data_key, now=0)


def test_accept_then_already_used_then_rollback_frees_the_entry(gate, issuer, tmp_path):
    w = issuer.mint()
    load(gate, tmp_path, [ticket_record(w)])
    d1, e1 = gate.scan(w.code(NOW), now=NOW)
    assert d1.reason is Reason.ACCEPT and d1.consumes_entry and not d1.unlisted
    d2, _ = gate.scan(w.code(NOW + 15), now=NOW + 15)
    assert d2.reason is Reason.ALREADY_USED
    gate.rollback(e1.seq, now=NOW + 20)  # nobody passed the turnstile
    d3, _ = gate.scan(w.code(NOW + 30), now=NOW + 30)
    assert d3.reason is Reason.ACCEPT


def test_rolled_back_step_can_be_shown_again(gate, issuer, tmp_path):
    w = issuer.mint(entries=0)
    _, e = gate.scan(w.code(NOW), now=NOW)
    assert gate.scan(w.code(NOW), now=NOW + 1)[0].reason is Reason.REPLAY
    gate.rollback(e.seq, now=NOW + 2)
    assert gate.scan(w.code(NOW), now=NOW + 3)[0].reason is Reason.ACCEPT


def test_revoked_and_superseded_and_unlisted(gate, issuer, tmp_path):
    revoked, old, unlisted = issuer.mint(), issuer.mint(version=1), issuer.mint()
    load(gate, tmp_path, [ticket_record(revoked, status="revoked"), ticket_record(old, version=2)])
    assert gate.decide(revoked.code(NOW), now=NOW).reason is Reason.REVOKED
    assert gate.decide(old.code(NOW), now=NOW).reason is Reason.SUPERSEDED
    d = gate.decide(unlisted.code(NOW), now=NOW)
    assert d.reason is Reason.ACCEPT and d.unlisted


def test_issuer_key_rotation_and_revocation(gate, issuer):
    before = issuer.mint()
    issuer.rotate()
    after = issuer.mint()
    assert gate.decide(after.code(NOW), now=NOW).reason is Reason.UNKNOWN_KEY
    gate.trust(issuer.keyring())  # both keys active: rotation
    assert gate.decide(before.code(NOW), now=NOW).reason is Reason.ACCEPT
    assert gate.decide(after.code(NOW), now=NOW).reason is Reason.ACCEPT
    issuer.revoked.add(gt1.kid_for(gt1.raw_public(issuer.keys[0])))
    gate.trust(issuer.keyring())
    assert gate.decide(before.code(NOW), now=NOW).reason is Reason.UNKNOWN_KEY
    assert gate.decide(after.code(NOW), now=NOW).reason is Reason.ACCEPT


def test_key_validity_window(tmp_path, issuer):
    ring = issuer.keyring()
    ring["keys"][0]["nbf"], ring["keys"][0]["exp"] = NOW - 100, NOW + 100
    g = Gate.init(tmp_path / "g", event=issuer.event)
    g.trust(ring)
    w = issuer.mint(rotating=False)
    assert g.decide(w.code(NOW), now=NOW).reason is Reason.ACCEPT
    assert g.decide(w.code(NOW), now=NOW + 100).reason is Reason.UNKNOWN_KEY
    assert g.decide(w.code(NOW), now=NOW - 101).reason is Reason.UNKNOWN_KEY


def test_clock_skew_allowance(gate, issuer):
    w = issuer.mint(rotating=False, nbf=NOW + 20, exp=NOW + 100)
    assert gate.decide(w.code(NOW), now=NOW).reason is Reason.ACCEPT  # 20 s early: within skew
    assert gate.decide(w.code(NOW), now=NOW - 15).reason is Reason.NOT_YET_VALID
    assert gate.decide(w.code(NOW), now=NOW + 129).reason is Reason.ACCEPT
    assert gate.decide(w.code(NOW), now=NOW + 130).reason is Reason.EXPIRED


def test_exit_lane_records_exits_for_any_valid_code(gate, issuer, tmp_path):
    w = issuer.mint(rotating=False)
    load(gate, tmp_path, [ticket_record(w)])
    assert gate.scan(w.code(NOW), now=NOW)[0].reason is Reason.ACCEPT
    assert gate.scan(w.code(NOW), now=NOW, mode=Mode.EXIT)[0].reason is Reason.ACCEPT
    assert gate.scan(w.code(NOW), now=NOW, mode=Mode.EXIT)[0].reason is Reason.ACCEPT
    assert gate.scan(w.code(NOW), now=NOW)[0].reason is Reason.ALREADY_USED


def test_face_reasons(gate, issuer, tmp_path):
    enrolled = [0.1] * 128
    w, noface = issuer.mint(face=True), issuer.mint(face=True)
    load(gate, tmp_path, [
        ticket_record(w, face_required=True, face_template=ledger.encode_template(enrolled)),
        ticket_record(noface, face_required=True)])
    assert gate.decide(noface.code(NOW), now=NOW).reason is Reason.NO_FACE_ENROLLED
    assert gate.decide(w.code(NOW), now=NOW).reason is Reason.FACE_REQUIRED
    assert gate.decide(w.code(NOW), now=NOW, face=FaceCapture(None)).reason is Reason.FACE_REQUIRED
    far = gate.decide(w.code(NOW), now=NOW, face=FaceCapture([0.2] * 128))
    assert far.reason is Reason.FACE_MISMATCH and far.face_distance == pytest.approx(1.1314, abs=1e-3)
    near = gate.decide(w.code(NOW), now=NOW, face=FaceCapture([0.11] * 128))
    assert near.reason is Reason.ACCEPT and near.face_distance < 0.5


def test_decision_order_first_failure_wins(gate, issuer):
    # wrong event AND stale AND expired: WRONG_EVENT comes first (row 4)
    w = issuer.mint(event="other", exp=NOW - 1000)
    assert gate.decide(w.code(NOW - 3600), now=NOW).reason is Reason.WRONG_EVENT
    # expired AND stale: EXPIRED (row 5) before STALE_CODE (row 7)
    w = issuer.mint(exp=NOW - 1000)
    assert gate.decide(w.code(NOW - 3600), now=NOW).reason is Reason.EXPIRED


# ---------------------------------------------------------------- properties

ticket_specs = st.lists(
    st.tuples(st.integers(0, 3), st.booleans(), st.booleans()),  # entries, reentry, rotating
    min_size=1, max_size=4)
actions = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["entry", "exit"]),
                             st.integers(0, 40), st.booleans()), max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=ticket_specs, acts=actions)
def test_decisions_follow_the_allowance_model(specs, acts):
    """Two-sided: no ticket is admitted more often than allowed, AND a valid
    code within its allowance is admitted. A small model of docs/decision.md rows 12-13
    (replay of an accepted step, entries, re-entry after an exit, rollbacks
    giving the entry and the step back) predicts every reason; a gate that
    rejects everything fails as surely as one that admits too much."""
    issuer = Issuer("evt-prop")
    with tempfile.TemporaryDirectory() as tmp:
        g = Gate.init(Path(tmp) / "g", event=issuer.event)
        g.trust(issuer.keyring())
        wallets = [issuer.mint(rotating=rot, entries=ent, reentry=rex) for ent, rex, rot in specs]
        load(g, Path(tmp), [ticket_record(w, entries=e, reentry=r) for w, (e, r, _) in zip(wallets, specs)])
        history: list[list[dict]] = [[] for _ in wallets]  # accepted scans, oldest first
        now = NOW
        for idx, mode, dt, roll in acts:
            i = idx % len(wallets)
            ent, rex, rot = specs[i]
            now += dt
            live = [h for h in history[i] if not h["rolled"]]
            step = gt1.current_step(now) if rot else None
            admissions = sum(h["consumes"] for h in live)
            reentering = rex and bool(live) and live[-1]["mode"] == "exit"
            if rot and any(h["step"] == step for h in live):
                expect = Reason.REPLAY
            elif mode == "entry" and not reentering and ent != 0 and admissions >= ent:
                expect = Reason.ALREADY_USED
            else:
                expect = Reason.ACCEPT
            d, e = g.scan(wallets[i].code(now), now=now, mode=Mode(mode))
            assert d.reason is expect, (i, mode, specs[i], history[i])
            if d.accepted:
                h = {"mode": mode, "step": step, "consumes": mode == "entry" and not reentering, "rolled": False}
                history[i].append(h)
                if mode == "entry" and roll:
                    g.rollback(e.seq, now=now + 6)
                    h["rolled"] = True
        for i, (ent, rex, _) in enumerate(specs):
            live = [h for h in history[i] if not h["rolled"]]
            exits = sum(h["mode"] == "exit" for h in live)
            if ent:
                assert sum(h["mode"] == "entry" for h in live) <= ent + (exits if rex else 0)
        g.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # decide() writes nothing
@given(dt=st.integers(-200, 200), mode=st.sampled_from([Mode.ENTRY, Mode.EXIT]),
       rotating=st.booleans())
def test_decisions_are_deterministic(gate, issuer, dt, mode, rotating):
    w = issuer.mint(rotating=rotating)
    qr = w.code(NOW)
    first = gate.decide(qr, now=NOW + dt, mode=mode)
    assert all(gate.decide(qr, now=NOW + dt, mode=mode) == first for _ in range(3))
