"""Regression tests for the fixes of the last review (commit 20c3560) that had none:
a lane paused during face capture admits nothing; only a useful central answer
counts as online for the link state; a quarantined device's rollbacks still reach
the other gates. (The fourth fix, issuer keys reloaded across connections, is
tests/test_hardening_gate.py::test_review_a_running_lane_sees_issuer_keys_changed_by_another_connection.)
Each test says how it failed before the fix."""

from __future__ import annotations

import time

import pytest

from crypto.issuer import Issuer, Wallet, ticket_record
from gate import ledger
from gate.appliance import Gate
from gate.bus import LinkState, WhenAlone, link_state
from gate.decision import FaceCapture, Reason
from gate.lane import Lane, State
from hardware.relay import SimRelay
from hardware.sensor import SimSensor
from sync import client as sc
from sync.loop import SyncLoop, SyncState
from conftest import central_for, write_jsonl
from faulty_proxy import FaultyProxy

NOW = 1_807_283_662
EVENT = "evt-review"


class _Clock:
    def now(self) -> float:
        return NOW

    def monotonic_ns(self) -> int:
        return 0


class _StaffPausesWhileTheFaceIsCaptured:
    """The face camera's port (capture(timeout) -> FaceCapture): the holder's face is
    found, but a supervisor pauses the lane while the camera looks (lane.pause runs
    here, between the code's first decision and its decision with the face)."""

    def __init__(self, encoding):
        self.encoding = encoding
        self.lane: Lane | None = None
        self.pause = True

    def capture(self, timeout_s: float) -> FaceCapture:
        if self.pause:
            self.lane.pause(True, operator="ann")
        return FaceCapture(self.encoding)


def test_a_lane_paused_during_face_capture_admits_nothing(tmp_path):
    # Before the fix the lane decided the code again with the captured face and
    # opened the turnstile although staff had paused it meanwhile.
    issuer = Issuer(EVENT)
    g = Gate.init(tmp_path / "g", event=EVENT)
    g.trust(issuer.keyring())
    w = issuer.mint(rotating=False, face=True, entries=0)
    ledger.import_tickets(g.conn, write_jsonl(tmp_path / "t.jsonl", [ticket_record(w, face_required=True, entries=0)]),
                          event=EVENT, data_key=g.data_key, now=NOW)
    face = [0.1] * 128
    ledger.enroll_face(g.conn, w.ticket_id, face, g.data_key)
    camera = _StaffPausesWhileTheFaceIsCaptured(face)
    lane = Lane(g, relay=SimRelay(), sensor=SimSensor(1.0), clock=_Clock(), face=camera)
    camera.lane = lane
    ev = lane.submit(w.code(NOW))  # paused before the face decision: refused like any code now
    assert ev.decision.reason is Reason.LANE_PAUSED and not ev.decision.accepted
    assert lane.paused and lane.state is State.IDLE and lane.relay.pulses == []
    assert lane.counters.admitted == 0
    rows = [r for r in g.conn.execute("SELECT kind FROM scans ORDER BY seq")]
    assert [r[0] for r in rows] == ["control", "scan"]  # the pause, then the refusal (logged), no admission
    # the same face and code once the lane is resumed: admitted (so the refusal above was the pause)
    lane.pause(False, operator="ann")
    camera.pause = False
    ev = lane.submit(w.code(NOW))
    assert ev.decision.reason is Reason.ACCEPT and len(lane.relay.pulses) == 1
    g.close()


@pytest.fixture
def central(tmp_path, central_db):
    with central_for(tmp_path, central_db, EVENT) as running:
        yield running


def _gate(tmp_path, store, url, name):
    g = Gate.init(tmp_path / name, event=EVENT, lane=name)
    sc.enroll(g, url, store.enrol_code(EVENT))
    return g


def test_only_a_useful_central_answer_counts_as_online_for_the_link_state(central, tmp_path):
    # Before the fix a central answering 500 (DEGRADED) counted as online: a lane with
    # --when-alone refuse kept admitting with no central and no peer to learn from.
    store, server = central
    with FaultyProxy(server.url) as proxy:
        g = _gate(tmp_path, store, proxy.url, "north-1")
        loop = SyncLoop.for_gate(g, proxy.url)
        lane = Lane(g, relay=SimRelay(), sensor=SimSensor(1.0), clock=_Clock())
        lane.link = lambda: link_state(central_ok=loop.online, peers=0)  # the lane's link, as compose wires it
        lane.when_alone = WhenAlone.REFUSE
        wallets = [Wallet.load(m["file"]) for m in store.issue(EVENT, count=3, out=tmp_path / "w", rotating=False)]
        ring = store.keyring(EVENT)
        g.trust(ring)
        states = {}
        for mode, w in (("500", wallets[0]), ("pass", wallets[1])):
            proxy.mode = mode
            states[mode] = loop.step(g)
            states[mode, "link"] = lane.link()
            states[mode, "reason"] = lane.submit(w.code(NOW)).decision.reason
        assert states == {"500": SyncState.DEGRADED, ("500", "link"): LinkState.ALONE,
                          ("500", "reason"): Reason.LANE_ALONE,
                          "pass": SyncState.ONLINE, ("pass", "link"): LinkState.ONLINE,
                          ("pass", "reason"): Reason.ACCEPT}
        # a refused token is not a useful answer either
        store.revoke_device(g.config.device_id)
        assert loop.step(g) is SyncState.UNAUTHORISED and lane.link() is LinkState.ALONE
        assert lane.submit(wallets[2].code(NOW)).decision.reason is Reason.LANE_ALONE
        g.close()


def test_a_quarantined_devices_rollbacks_still_reach_the_other_gates(central, tmp_path):
    # Before the fix central withheld every record of a quarantined device that was not
    # proven by a holder key, rollbacks included: another gate kept counting an admission
    # its own gate had voided (nobody passed), and refused the holder ALREADY_USED.
    store, server = central
    wallets = [Wallet.load(m["file"]) for m in store.issue(EVENT, count=30, out=tmp_path / "w")]
    a, b = _gate(tmp_path, store, server.url, "a"), _gate(tmp_path, store, server.url, "b")
    for g in (a, b):
        assert sc.sync_once(g, sc.client_for(g)).ok
    now = time.time()
    seqs = []
    for w in wallets:  # 30 rotating codes at once: faster than a turnstile -> quarantined, each proven
        d, entry = a.scan(w.code(now), now=now)
        assert d.reason is Reason.ACCEPT
        seqs.append(entry.seq)
    assert sc.sync_once(a, sc.client_for(a)).ok
    assert store.device_status(a.config.device_id)["quarantined"]
    a.rollback(seqs[0], now=now + 6)  # nobody passed a's turnstile with the first ticket
    assert sc.sync_once(a, sc.client_for(a)).ok
    assert sc.sync_once(b, sc.client_for(b)).ok
    later = now + 15
    assert b.decide(wallets[1].code(later), now=later).reason is Reason.ALREADY_USED  # proven admissions flowed
    assert b.decide(wallets[0].code(later), now=later).reason is Reason.ACCEPT  # and so did the rollback
    a.close()
    b.close()
