"""The staff UI under Textual's pilot: keys pressed, widgets asserted, and
snapshots of the lane screen at 80x24 and 120x40 in accept, reject, offline and
override states. The app only observes and commands a real lane."""

from __future__ import annotations

import os
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto.issuer import Issuer, ticket_record
from gate import ledger
from gate.appliance import Gate
from gate.decision import Mode
from gate.lane import Lane
from hardware.relay import SimRelay
from hardware.sensor import SimSensor
from sync.loop import SyncLoop, SyncState
from tui.app import GateApp, PinScreen, Verdict
from gate.pins import set_pin
from conftest import write_jsonl

NOW = 1_700_000_000  # in the past: ages shown by the UI stay "0s"/"never" and snapshots stable


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def utc():
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


class Clock:
    def __init__(self):
        self.t = NOW

    def now(self):
        return self.t

    def monotonic_ns(self):
        return 0


def make(tmp_path, *, offline=False):
    issuer = Issuer("evt-tui", keys=[Ed25519PrivateKey.from_private_bytes(bytes(range(32)))])
    g = Gate.init(tmp_path / "g", event=issuer.event, lane="north-1")
    g.trust(issuer.keyring())
    wallets = [issuer.mint(ticket_id=bytes([i + 1]) * 16, rotating=False) for i in range(3)]
    ledger.import_tickets(g.conn, write_jsonl(tmp_path / "t.jsonl", [
        ticket_record(w, holder=f"Holder {i}", tier="VIP" if i == 0 else "GA", status="revoked" if i == 2 else "valid")
        for i, w in enumerate(wallets)]), event=issuer.event, data_key=g.data_key, now=NOW)
    set_pin(g, "ann", "246813")
    clock = Clock()
    lane = Lane(g, relay=SimRelay(), sensor=SimSensor(1.0), clock=clock)
    sync = None
    if offline:
        sync = SyncLoop(g.data_dir, "http://127.0.0.1:9")
        sync.state, sync.last_error = SyncState.OFFLINE, "cannot reach central"
    app = GateApp(lane, sync=sync, clock=clock.now)
    return app, lane, wallets, g


@pytest.mark.anyio
async def test_pilot_keys_drive_the_lane(tmp_path):
    app, lane, wallets, g = make(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        verdict = app.query_one(Verdict)
        assert "READY" in str(verdict.render())
        lane.submit(wallets[0].code(NOW))
        await pilot.pause()
        assert verdict.has_class("accept") and "ADMIT" in str(verdict.render())
        assert "Holder 0" in str(verdict.render())
        lane.submit(wallets[0].code(NOW))
        await pilot.pause()
        # a re-read inside the cooldown is not a new scan; the panel keeps the admit
        assert verdict.has_class("accept")
        lane.submit(wallets[2].code(NOW))
        await pilot.pause()
        assert verdict.has_class("reject") and "CANCELLED" in str(verdict.render())
        await pilot.press("m", *"ann", "enter", *"246813", "enter")
        await app.workers.wait_for_complete()
        assert lane.mode is Mode.EXIT and g.policy.mode is Mode.EXIT
        await pilot.press("m", *"ann", "enter", *"246813", "enter")
        await app.workers.wait_for_complete()
        await pilot.press("p", *"ann", "enter", *"246813", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert lane.paused and "PAUSED" in str(verdict.render())
        assert lane.submit(wallets[1].code(NOW)) is None
        await pilot.press("p", *"ann", "enter", *"246813", "enter")
        await app.workers.wait_for_complete()
        assert not lane.paused
        # manual admit with a wrong PIN: nothing happens
        await pilot.press("a")
        assert isinstance(app.screen, PinScreen)
        await pilot.press(*"ann", "enter", *"111111", "enter")
        await pilot.pause()
        assert not any(r[0] == "override" for r in g.conn.execute("SELECT kind FROM scans"))
        # with the right PIN it is logged with the operator
        await pilot.press("a")
        await pilot.press(*"ann", "enter", *"246813", "enter")
        await app.workers.wait_for_complete()  # the admit waits for the passage off the UI loop
        await pilot.pause()
        kinds = [r[0] for r in g.conn.execute("SELECT kind FROM scans ORDER BY seq")]
        assert kinds[-2:] == ["override", "passed"]  # the admit opened the turnstile and they went through
        import cbor2
        rec = cbor2.loads(g.conn.execute("SELECT record FROM scans WHERE kind = 'override'").fetchone()[0])
        assert rec["operator"] == "ann" and rec["reason"] == "MANUAL_ADMIT"
        assert rec["ticket_id"] == wallets[2].ticket_id
        assert "by ann" in str(verdict.render())
        # lookup by holder name
        await pilot.press("l")
        await pilot.press(*"Holder 1", "enter")
        await pilot.pause()
        result = str(app.screen.query_one("#lookup-result").render())
        assert wallets[1].ticket_id[:16] in result
        await pilot.press("escape")
        assert "admitted 2" in str(app.query_one("#counters").render())


STATES = ["accept", "reject", "offline", "override"]


def _before(state, lane, wallets):
    async def run(pilot):
        if state in ("accept", "offline"):
            lane.submit(wallets[0].code(NOW))
        elif state == "reject":
            lane.submit(wallets[2].code(NOW))
        elif state == "override":
            lane.submit(wallets[2].code(NOW))
            await pilot.pause()
            await pilot.press("a", *"ann", "enter", *"246813", "enter")
            await pilot.app.workers.wait_for_complete()
        await pilot.pause()
    return run


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
@pytest.mark.parametrize("state", STATES)
def test_lane_screen_snapshots(snap_compare, tmp_path, state, size):
    app, lane, wallets, _ = make(tmp_path, offline=state == "offline")
    assert snap_compare(app, terminal_size=size, run_before=_before(state, lane, wallets))
