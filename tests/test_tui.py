"""The staff UI under Textual's pilot, over a real lane (composed by
gate.app.compose.build_lane, real SQLite, the shipped simulated relay and
sensor), with an injected clock: no sleeps, no wall clock.

How these could fail: a verdict that never returns to READY (or comes back
after a resume), an exit that looks like an entry, a used ticket refused
without where and when, an ALONE admission in plain green, a name with markup
that crashes the screen after the relay opened, a wrong PIN that closes the
dialog, a quit with no PIN, a scan on a paused lane that vanishes, a layout
that loses the verdict in a small window, Chinese laid out in the wrong
number of cells; and snapshots of every state in English and Chinese at
80x24 and 160x45."""

from __future__ import annotations

import os
import time

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import write_jsonl
from crypto import gt1
from crypto.issuer import Issuer, ticket_record
from gate.keyfiles import load_device_key
from gate import bus, i18n, ledger
from gate.app.compose import LaneSpec, build_lane
from gate.appliance import Gate
from gate.bus import LinkState
from gate.decision import Mode, Reason, Sub
from gate.pins import set_pin
from gate.text import cells
from gate.words import REASONS, SUBS, reason_words, sub_words
from hardware.relay import SimRelay
from hardware.sensor import NoSensor, SimSensor
from tui.app import GateApp
from tui.dialogs import LookupScreen, PinScreen
from tui.panels import counters_strip, key_lines
from tui.verdict import HOLD_S, MIN_SHOW_S, Verdict

NOW = 1_700_000_000  # 22:13:20 UTC: every time on screen is fixed
EVENT = "evt-tui"
HOSTILE = "Ann [/] [link=https://evil.example]x[/link] [bold red]"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def utc_english():
    old_tz = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    i18n.set_language("en")
    yield
    i18n.set_language("en")
    if old_tz is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old_tz
    time.tzset()


class Clock:
    def __init__(self):
        self.t = float(NOW)

    def now(self):
        return self.t

    def monotonic_ns(self):
        return 0


def make(tmp_path, *, sensor=None, zones=("A",)):
    """A gate with five fixed tickets: 0 VIP (zone A), 1 a Chinese name, 2 cancelled,
    3 zone B, 4 a hostile name; wallet 5 is signed but not in the ledger."""
    issuer = Issuer(EVENT, keys=[Ed25519PrivateKey.from_private_bytes(bytes(range(32)))])
    g = Gate.init(tmp_path / "g", event=EVENT, lane="north-1", zones=zones)
    g.trust(issuer.keyring())
    wallets = [issuer.mint(ticket_id=bytes([i + 1]) * 16, rotating=False, zone="A") for i in range(6)]
    rows = [ticket_record(wallets[0], holder="Holder 0", tier="VIP", zone="A"),
            ticket_record(wallets[1], holder="张伟", tier="GA", zone="A"),
            ticket_record(wallets[2], holder="Holder 2", zone="A", status="revoked"),
            ticket_record(wallets[3], holder="Holder 3", zone="B"),
            ticket_record(wallets[4], holder=HOSTILE + "\x1b[2J\x1b[32mACCEPT", zone="A")]
    ledger.import_tickets(g.conn, write_jsonl(tmp_path / "t.jsonl", rows), event=EVENT, data_key=g.data_key,
                          now=NOW)
    set_pin(g, "ann", "246813")
    clock = Clock()
    runner = build_lane(LaneSpec(), g, clock=clock, relay=SimRelay(), sensor=sensor or SimSensor(1.0),
                        start_sync=False)
    app = GateApp(runner.lane, clock=clock.now)
    return app, runner.lane, wallets, g, clock


def words_of(app) -> str:
    return app.query_one(Verdict).render_text()


def records(g) -> list[dict]:
    return [cbor2.loads(r[0]) for r in g.conn.execute("SELECT record FROM scans ORDER BY seq")]


async def pin(pilot, operator="ann", code="246813"):
    await pilot.press(*operator, "enter", *code, "enter")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


# ------------------------------------------------------------------ verdict states


@pytest.mark.anyio
async def test_verdict_states_admit_refuse_with_where_and_when_exit_and_back_to_ready(tmp_path):
    app, lane, wallets, g, clock = make(tmp_path, sensor=NoSensor())
    async with app.run_test(size=(100, 30)) as pilot:
        v = app.query_one(Verdict)
        assert v.view.state == "IDLE" and "READY · ENTRY" in words_of(app)
        lane.submit(wallets[0].code(NOW))
        await pilot.pause()
        assert v.view.state == "ADMIT" and v.has_class("accept") and "Holder 0 · VIP · zone A" in words_of(app)
        # no passage sensor: the verdict holds a few seconds, then READY (the app's clock, no sleeping)
        clock.t += HOLD_S["ADMIT"] - 0.5
        app.tick()
        assert v.view.state == "ADMIT"
        clock.t += 1
        app.tick()
        assert v.view.state == "IDLE"
        # the same ticket again, 10 s after it was admitted: refused, saying where and when
        clock.t = NOW + 10
        lane.submit(wallets[0].code(clock.t))
        await pilot.pause()
        text = words_of(app)
        assert v.view.state == "REFUSED" and v.has_class("reject")
        assert "REFUSED · ALREADY IN" in text and "Admitted here (north-1) at 22:13:20, 10 s ago" in text
        assert "Lookup (l) shows where" in text  # what to do
        # another zone's ticket: which zone, and which this entrance takes
        lane.submit(wallets[3].code(clock.t))
        await pilot.pause()
        assert "Ticket is for zone B; this entrance takes A" in words_of(app)
        # an exit is not an entry: its own state and colour
        lane.set_mode(Mode.EXIT, operator="ann")
        lane.submit(wallets[1].code(clock.t))
        await pilot.pause()
        assert v.view.state == "EXIT" and v.has_class("exit") and "EXIT RECORDED" in words_of(app)
        assert "ADMIT" not in words_of(app)
        clock.t += HOLD_S["EXIT"] + 0.1
        app.tick()
        assert v.view.state == "IDLE" and "READY · EXIT" in words_of(app)


@pytest.mark.anyio
async def test_a_holder_who_left_is_refused_as_no_re_entry_not_as_a_copy(tmp_path):
    # A screen review: after the holder went out, the refusal said ALREADY IN and asked
    # "A copy, or passed back?" under a line saying they had left.
    app, lane, wallets, g, clock = make(tmp_path, sensor=NoSensor())
    async with app.run_test(size=(100, 30)) as pilot:
        v = app.query_one(Verdict)
        lane.submit(wallets[0].code(NOW))
        lane.set_mode(Mode.EXIT, operator="ann")
        clock.t = NOW + 20
        lane.submit(wallets[0].code(clock.t))
        lane.set_mode(Mode.ENTRY, operator="ann")
        clock.t = NOW + 60
        lane.submit(wallets[0].code(clock.t))
        await pilot.pause()
        text = words_of(app)
        assert v.view.state == "REFUSED" and "REFUSED · NO RE-ENTRY" in text, text
        assert "Left here (north-1) at 22:13:40, 40 s ago" in text and "does not allow re-entry" in text
        assert "ALREADY IN" not in text and "A copy" not in text


@pytest.mark.anyio
async def test_a_remote_admission_is_named_with_its_lane_as_plain_text(tmp_path):
    """Another gate (lane name with markup) admitted the ticket; the venue bus told us.
    The refusal names that lane as plain text. (A name with terminal escapes cannot
    come over the bus: it is refused as malformed; from central it is neutralised,
    tests/test_staff_cli.py.)"""
    app, lane, wallets, g, clock = make(tmp_path)
    other = Gate.init(tmp_path / "other", event=EVENT, lane="north-2 [b]ACCEPT [/]")
    other.trust(Issuer(EVENT, keys=[Ed25519PrivateKey.from_private_bytes(bytes(range(32)))]).keyring())
    key = load_device_key(other.data_dir)
    bus.store_trust(g.conn, [bus.TrustedDevice(other.config.device_id, gt1.raw_public(key))], "test")
    d, entry = other.scan(wallets[1].code(NOW - 30), now=NOW - 30)
    assert d.reason is Reason.ACCEPT
    book = bus.BusBook(g.conn, g.config.device_id, EVENT)
    assert book.receive(bus.message_for(other.conn, key, other.config.device_id, entry.seq).encode()) == "accepted"
    async with app.run_test(size=(100, 30)) as pilot:
        ev = lane.submit(wallets[1].code(NOW))
        await pilot.pause()
        assert ev.decision.reason is Reason.ALREADY_USED and ev.last_use.last_ts_ms == (NOW - 30) * 1000
        text = words_of(app)
        assert "Admitted at north-2 [b]ACCEPT [/] (" in text and "at 22:12:50, 30 s ago" in text
        assert "\x1b" not in text
        # the lookup shows both: the admission there (via bus) and the refusal here
        await pilot.press("l", *"张伟", "enter")
        await pilot.pause()
        assert isinstance(app.screen, LookupScreen)
        hist = str(app.screen.query_one("#lookup-result").render())
        assert "via bus" in hist and "here (north-1)" in hist and "ALREADY IN" in hist and "\x1b" not in hist
        # and admits from there with a PIN: logged as a manual admission of that ticket
        await pilot.press("a")
        assert isinstance(app.screen, PinScreen)
        assert "Last use: 22:13:20 ALREADY IN" in str(app.screen.query_one("#pin-context").render())
        await pin(pilot)
        assert not isinstance(app.screen, (PinScreen, LookupScreen))
    admitted = [r for r in records(g) if r["kind"] == "override"]
    assert [(r["reason"], r["ticket_id"], r["operator"]) for r in admitted] == [
        ("MANUAL_ADMIT", wallets[1].ticket_id, "ann")]
    other.close()


@pytest.mark.anyio
async def test_caution_when_admitted_alone_or_unlisted(tmp_path):
    app, lane, wallets, g, clock = make(tmp_path)
    lane.link = lambda: LinkState.ALONE  # neither central nor a bus peer (--when-alone admit)
    async with app.run_test(size=(100, 30)) as pilot:
        ev = lane.submit(wallets[0].code(NOW))
        await pilot.pause()
        v = app.query_one(Verdict)
        assert ev.alone and ev.to_json()["alone"] is True
        assert v.view.state == "CAUTION" and v.has_class("caution")
        assert "Lane ALONE: no central, no other gate" in words_of(app)
        assert "ALONE" in str(app.query_one("#status").render())
        lane.link = lambda: LinkState.VENUE
        ev = lane.submit(wallets[5].code(NOW))  # signed, not in this gate's list
        await pilot.pause()
        assert ev.decision.unlisted and not ev.alone
        assert v.view.state == "CAUTION" and "Not in this gate's list" in words_of(app)
        assert "VENUE" in str(app.query_one("#status").render())
    alone = [r.get("alone", False) for r in records(g) if r["kind"] == "scan"]
    assert alone == [True, False]


@pytest.mark.anyio
async def test_passage_returns_to_ready_and_nobody_passing_is_not_green(tmp_path):
    sensor = SimSensor(1.0)
    app, lane, wallets, g, clock = make(tmp_path, sensor=sensor)
    seen = []
    lane.opened.append(lambda ev: seen.append(ev.outcome))
    async with app.run_test(size=(100, 30)) as pilot:
        v = app.query_one(Verdict)
        lane.submit(wallets[0].code(NOW))
        await pilot.pause()
        assert seen == ["open"] and v.view.state == "ADMIT"
        # the holder went through: READY once the verdict has been seen a moment
        clock.t += MIN_SHOW_S
        app.tick()
        assert v.view.state == "IDLE"
        sensor.script.append(False)  # the next holder turns back at the turnstile
        lane.submit(wallets[1].code(clock.t))
        await pilot.pause()
        assert v.view.state == "NOT_PASSED" and not v.has_class("accept")
        assert "NOT PASSED" in words_of(app) and "given back" in words_of(app)


@pytest.mark.anyio
async def test_paused_scans_are_refused_shown_and_logged_and_resume_starts_fresh(tmp_path):
    app, lane, wallets, g, clock = make(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        v = app.query_one(Verdict)
        lane.submit(wallets[0].code(NOW))
        await pilot.pause()
        await pilot.press("p")
        await pin(pilot)
        assert lane.paused and v.view.state == "PAUSED" and v.has_class("paused")
        keys = str(app.query_one("#keys").render())
        assert "resume" in keys and "pause" not in keys  # what p does now
        ev = lane.submit(wallets[1].code(NOW))
        await pilot.pause()
        assert ev.decision.reason is Reason.LANE_PAUSED and not lane.relay.pulses[1:]
        assert "1 code shown while paused, last at 22:13:20 · 张伟" in words_of(app)
        assert lane.submit(wallets[1].code(NOW)) is None  # the camera's re-read: one record, not two
        await pilot.press("p")
        await pin(pilot)
        assert not lane.paused and v.view.state == "IDLE"  # not the admission from before the pause
    recs = records(g)
    assert [(r["kind"], r.get("action") or r.get("reason")) for r in recs] == [
        ("scan", "ACCEPT"), ("passed", None), ("control", "pause"), ("scan", "LANE_PAUSED"), ("control", "resume")]
    assert recs[3]["decision"] == "reject" and recs[3]["ticket_id"] == wallets[1].ticket_id


@pytest.mark.anyio
async def test_a_manual_admission_on_a_paused_lane_is_shown_then_the_pause(tmp_path):
    # A screen review: after a supervisor admitted by hand on a paused lane, the verdict kept
    # saying "LANE PAUSED · every code is refused" while the log said ADMIT (MANUAL).
    app, lane, wallets, g, clock = make(tmp_path, sensor=NoSensor())
    async with app.run_test(size=(100, 30)) as pilot:
        v = app.query_one(Verdict)
        lane.pause(operator="ann")
        lane.override(admit=True, operator="ann", ticket_id=wallets[1].ticket_id)
        await pilot.pause()
        app.repaint()
        assert lane.paused and v.view.state == "ADMIT" and "by ann" in words_of(app), words_of(app)
        clock.t += HOLD_S["ADMIT"] + 0.1
        app.tick()
        assert v.view.state == "PAUSED"


@pytest.mark.anyio
async def test_fault_hook_shows_the_fault_above_everything(tmp_path):
    # a relay/sensor fault (gate.lane's Lane.fault) is shown above everything until cleared
    app, lane, wallets, g, clock = make(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        lane.report_fault("relay", "relay did not release: contact may be closed")
        app.repaint()
        await pilot.pause()
        v = app.query_one(Verdict)
        assert v.view.state == "FAULT" and "LANE FAULT: RELAY" in words_of(app)
        assert "relay did not release" in words_of(app)
        assert "FAULT RELAY" in str(app.query_one("#status").render())
        lane.clear_fault(operator="ann")  # the simulated relay works: cleared; the next tick shows it
        app.tick()
        assert v.view.state == "IDLE" and "FAULT" not in str(app.query_one("#status").render())


@pytest.mark.anyio
async def test_a_fire_alarm_is_shown_above_everything_and_ends_by_itself(tmp_path):
    # gate.lane's fire_alarm: FIRE over a fault too, in the verdict and the status line;
    # a code meanwhile is not decided; when the alarm ends the screen is READY again.
    app, lane, wallets, g, clock = make(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        v = app.query_one(Verdict)
        lane.report_fault("relay", "relay did not release")
        lane.fire_alarm(True, detail="fire input sim:after=1")
        await pilot.pause()
        assert v.view.state == "FIRE" and v.has_class("fire") and "FIRE ALARM" in words_of(app)
        assert "FIRE ALARM" in str(app.query_one("#status").render())
        assert lane.submit(wallets[0].code(NOW)) is None and lane.relay.held
        lane.fire_alarm(False)
        await pilot.pause()
        assert v.view.state == "FAULT"  # the fault is still there, the alarm is over
    assert [r["action"] for r in records(g) if r["kind"] == "control"][-2:] == ["fire_alarm", "fire_alarm_end"]


# ------------------------------------------------------------------ text from outside


@pytest.mark.anyio
async def test_markup_and_escapes_in_names_are_shown_as_text(tmp_path):
    """On main a holder named 'Ann [/]' crashed the UI after the relay opened."""
    app, lane, wallets, g, clock = make(tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        ev = lane.submit(wallets[4].code(NOW))
        await pilot.pause()
        assert ev.outcome == "passed" and len(lane.relay.pulses) == 1
        text = words_of(app)
        assert HOSTILE in text and "\x1b" not in text and "\ufffd[2J" in text
        await pilot.press("l", *"Ann", "enter")
        await pilot.pause()
        assert "Ann [/] [link=https://e" in str(app.screen.query_one("#lookup-result").render())
        await pilot.press("escape")
        await pilot.press("a", *"[/]", "enter", *"[link=x]", "enter")  # markup as operator and PIN: a wrong PIN
        await pilot.pause()
        assert isinstance(app.screen, PinScreen) and "Wrong PIN for [/]" in str(
            app.screen.query_one("#pin-error").render())
        assert app.is_running


# ------------------------------------------------------------------ PINs


@pytest.mark.anyio
async def test_a_wrong_pin_keeps_the_dialog_and_restates_the_refusal(tmp_path):
    app, lane, wallets, g, clock = make(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        lane.submit(wallets[2].code(NOW))
        await pilot.pause()
        await pilot.press("a")
        screen = app.screen
        assert isinstance(screen, PinScreen)
        context = str(screen.query_one("#pin-context").render())
        assert "REFUSED · CANCELLED" in context and "Holder 2" in context
        await pilot.press(*"ann", "enter", *"111111", "enter")
        await pilot.pause()
        assert app.screen is screen  # still open, the name still typed
        assert screen.query_one("#operator").value == "ann"
        error = str(screen.query_one("#pin-error").render())
        assert "Wrong PIN for ann: nothing done (4 tries left)" in error
        assert "REFUSED · CANCELLED" in str(screen.query_one("#pin-context").render())
        assert not any(r["kind"] == "override" for r in records(g))
        await pilot.press(*"246813", "enter")  # the wrong PIN is selected: typing replaces it
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not isinstance(app.screen, PinScreen)
        assert "by ann" in words_of(app) and app.query_one(Verdict).view.state == "ADMIT"
    rec = [r for r in records(g) if r["kind"] == "override"]
    assert [(r["reason"], r["operator"], r["ticket_id"]) for r in rec] == [
        ("MANUAL_ADMIT", "ann", wallets[2].ticket_id)]


@pytest.mark.anyio
async def test_quit_needs_a_supervisor_pin(tmp_path):
    app, lane, wallets, g, clock = make(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        for key in ("q", "ctrl+q"):
            await pilot.press(key)
            assert isinstance(app.screen, PinScreen)
            await pilot.press("escape")
            await pilot.pause()
            assert app.is_running and not isinstance(app.screen, PinScreen)
        await pilot.press("q", *"ann", "enter", *"000000", "enter")
        await pilot.pause()
        assert app.is_running and isinstance(app.screen, PinScreen)
        await pilot.press(*"246813", "enter")
        await pilot.pause()
    assert app.return_code == 0 and not app.is_running


@pytest.mark.anyio
async def test_manual_deny_is_counted_as_its_reason(tmp_path):
    app, lane, wallets, g, clock = make(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        lane.submit(wallets[0].code(NOW))
        await pilot.pause()
        await pilot.press("d")
        await pin(pilot)
        assert dict(lane.counters.rejected) == {"MANUAL_DENY": 1}  # not "OVERRIDE_DENY"
        assert "denied (manual) 1" in str(app.query_one("#counters").render())


# ------------------------------------------------------------------ words and layout


def test_every_reason_and_sub_reason_has_staff_words_in_both_languages():
    # adding a Reason or a Sub without words (and their Chinese) fails here
    assert set(REASONS) == {r.value for r in Reason}
    assert set(SUBS) == {s.value for s in Sub}
    for code in REASONS:
        en, zh = reason_words(code, "en"), reason_words(code, "zh_CN")
        assert en.headline and en.advice and zh.headline != en.headline and zh.advice != en.advice, code
        assert (en.todo == "") == (zh.todo == "") and zh.todo != en.todo or not en.todo, code
    for code in SUBS:
        assert sub_words(code, "en") and sub_words(code, "zh_CN") != sub_words(code, "en"), code


def test_counters_and_keys_fit_their_width_in_both_languages():
    from gate.lane import Counters
    c = Counters(admitted=1234, exited=56)
    for code in REASONS:
        c.rejected[code] += 1
    for lang in ("en", "zh_CN"):
        i18n.set_language(lang)
        for width in (38, 78, 158):
            assert cells(counters_strip(c, width).plain) <= width
            assert all(cells(line.plain) <= width for line in key_lines(width))
        assert len(key_lines(40)) <= 2


@pytest.mark.anyio
@pytest.mark.parametrize("lang", ["en", "zh_CN"])
@pytest.mark.parametrize("size", [(40, 12), (80, 24), (100, 30), (160, 45)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_the_verdict_fits_whole_words_at_every_size(tmp_path, size, lang):
    i18n.set_language(lang)
    app, lane, wallets, g, clock = make(tmp_path, sensor=NoSensor())
    for code in (wallets[2], wallets[3], "GT1:garbage", "not a ticket"):  # many reasons in the counters
        lane.submit(code if isinstance(code, str) else code.code(NOW))
    lane.submit(wallets[0].code(NOW))
    clock.t += 10
    async with app.run_test(size=size) as pilot:
        lane.submit(wallets[0].code(clock.t))
        await pilot.pause()
        v = app.query_one(Verdict)
        shown = v.words_text
        width, height = v.words_box
        lines = shown.plain.split("\n")  # broken by gate.text.wrap: the widget never re-wraps them
        assert 0 < len(lines) <= height and all(cells(line) <= width for line in lines)
        assert app.query_one(Verdict).view.state == "REFUSED"
        # the reason and the where/when are on screen, whatever the counters hold
        head = reason_words("ALREADY_USED").headline
        assert head in lines[0]
        assert reason_words("ALREADY_USED").advice.split()[0] in shown.plain
        # no word cut: every space-separated token on screen is a token of the text
        tokens = set(shown.plain.split())
        for line in lines:  # (Chinese breaks between characters, never inside a Latin word)
            for tok in line.split():
                assert tok in tokens or any(cells(ch) == 2 for ch in tok), (tok, line)
        assert cells(str(app.query_one("#counters").render()).rstrip()) <= size[0]


@pytest.mark.anyio
async def test_a_window_too_small_says_so_and_keeps_the_verdict(tmp_path):
    app, lane, wallets, g, clock = make(tmp_path)
    async with app.run_test(size=(30, 8)) as pilot:
        lane.submit(wallets[2].code(NOW))
        await pilot.pause()
        notice = str(app.query_one("#toosmall").render())
        assert "REFUSED · CANCELLED" in notice and "enlarge it to at least 40×12" in notice
        assert not app.query_one(Verdict).display
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert app.query_one(Verdict).display and not app.query_one("#toosmall").display


# ------------------------------------------------------------------ snapshots

STATES = ["idle", "admit", "exit", "refused", "caution", "paused", "fault", "fire"]


def _before(state, app, lane, wallets, clock):
    async def run(pilot):
        if state == "admit":
            lane.submit(wallets[0].code(NOW))
        elif state == "exit":
            lane.set_mode(Mode.EXIT, operator="ann")
            lane.submit(wallets[1].code(NOW))
        elif state == "refused":
            lane.submit(wallets[1].code(NOW - 10))
            clock.t = NOW
            lane.submit(wallets[1].code(NOW))
        elif state == "caution":
            lane.link = lambda: LinkState.ALONE
            lane.submit(wallets[5].code(NOW))
        elif state == "paused":
            lane.pause(operator="ann")
            lane.submit(wallets[1].code(NOW))
        elif state == "fault":
            lane.report_fault("relay", "relay did not release: contact may be closed")
        elif state == "fire":
            lane.fire_alarm(True, detail="fire input gpio:gpiochip0:27")
        await pilot.pause()
        app.repaint()
        await pilot.pause()
    return run


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
@pytest.mark.parametrize("lang", ["en", "zh_CN"])
@pytest.mark.parametrize("state", STATES)
def test_lane_screen_snapshots(snap_compare, tmp_path, state, lang, size):
    i18n.set_language(lang)
    app, lane, wallets, g, clock = make(tmp_path, sensor=NoSensor())
    if state == "refused":
        clock.t = NOW - 10
    assert snap_compare(app, terminal_size=size, run_before=_before(state, app, lane, wallets, clock))


@pytest.mark.parametrize("size", [(40, 12), (30, 8)], ids=["40x12", "30x8"])
def test_small_window_snapshots(snap_compare, tmp_path, size):
    app, lane, wallets, g, clock = make(tmp_path, sensor=NoSensor())
    clock.t = NOW - 10

    async def run(pilot):
        lane.submit(wallets[1].code(NOW - 10))
        clock.t = NOW
        lane.submit(wallets[1].code(NOW))
        await pilot.pause()
    assert snap_compare(app, terminal_size=size, run_before=run)
