"""The staff terminal UI (Textual). It observes the lane and sends it commands;
it never decides. Readable at 80x24; the verdict is icon + words + colour."""

from __future__ import annotations

import threading
import time
from typing import Callable

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, RichLog, Static

from gate.lane import Lane, LaneEvent
from gate.pins import PinCheck
from tui.words import words


def _age(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    s = max(0, now - ts)
    return f"{s:.0f}s" if s < 90 else f"{s / 60:.0f}m" if s < 5400 else f"{s / 3600:.0f}h"


class Verdict(Static):
    def show(self, ev: LaneEvent | None, *, paused: bool = False, fault=None) -> None:
        self.remove_class("accept", "reject", "idle")
        if fault is not None:  # a lane fault (gate.lane): nothing is admitted until it is cleared
            self.add_class("reject")
            self.update(f"⚠  LANE FAULT: {fault.kind.value.upper()}\n{fault.detail}\n"
                        "Nothing is admitted. Fix it, then press p to clear (supervisor PIN)")
            return
        if paused:
            self.add_class("idle")
            self.update("⏸  LANE PAUSED\nPress p to resume")
            return
        if ev is None:
            self.add_class("idle")
            self.update("…  READY\nShow your ticket")
            return
        d = ev.decision
        icon, head, advice, style = words(d.reason.value)
        if ev.outcome == "rolled_back":
            head, advice = head + " — NOT PASSED", "Nobody went through: entry given back"
        self.add_class(style)
        facts = []
        if d.holder:
            facts.append(d.holder)
        if d.tier:
            facts.append(d.tier)
        if d.zone:
            facts.append(f"zone {d.zone}")
        if d.face_distance is not None:
            facts.append(f"face {d.face_distance:.2f}")
        if d.unlisted and d.accepted:
            facts.append("unlisted: sold after last sync")
        if ev.operator:
            facts.append(f"by {ev.operator}")
        tid = (d.ticket_id or "")[:12]
        self.update(f"{icon}  {head}\n{advice}\n{' · '.join(facts)}  [{d.reason.value}] {tid}")


class PinScreen(ModalScreen[tuple[str, str] | None]):
    """Operator name and supervisor PIN for anything that can let someone through
    (manual admit/deny, entry/exit, pause/resume)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str):
        super().__init__()
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(id="pin-box"):
            yield Label(self.title_text, id="pin-title")
            yield Input(placeholder="operator name", id="operator")
            yield Input(placeholder="supervisor PIN", password=True, id="pin")
            yield Label("", id="pin-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "operator":
            self.query_one("#pin", Input).focus()
            return
        op = self.query_one("#operator", Input).value.strip()
        pin = self.query_one("#pin", Input).value
        if not op or not pin:
            self.query_one("#pin-error", Label).update("name and PIN are both needed")
            return
        self.dismiss((op, pin))

    def action_cancel(self) -> None:
        self.dismiss(None)


class LookupScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, lookup: Callable[[str], list[str]]):
        super().__init__()
        self.lookup = lookup

    def compose(self) -> ComposeResult:
        with Vertical(id="lookup-box"):
            yield Label("Ticket lookup: id (or its start) or holder name; Esc closes")
            yield Input(placeholder="ticket id or holder", id="query")
            yield Static("", id="lookup-result")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        rows = self.lookup(event.value.strip())
        self.query_one("#lookup-result", Static).update("\n".join(rows) or "no ticket found")

    def action_close(self) -> None:
        self.dismiss(None)


class GateApp(App):
    CSS = """
    Screen { layout: vertical; }
    #top { height: 10; }
    Verdict { width: 2fr; content-align: center middle; text-align: center;
              text-style: bold; border: heavy $panel; padding: 0 1; height: 10; }
    Verdict.accept { background: darkgreen; color: white; border: heavy lime; }
    Verdict.reject { background: darkred; color: white; border: heavy red; }
    Verdict.idle { background: $surface; color: $text; }
    #side { width: 1fr; min-width: 26; height: 10; }
    #counters, #status { height: auto; border: round $panel; padding: 0 1; }
    #log { height: 1fr; border: round $panel; }
    #pin-box, #lookup-box { width: 60; height: auto; border: thick $accent; background: $surface;
                            padding: 1 2; }
    PinScreen, LookupScreen { align: center middle; }
    #pin-error { color: red; }
    """
    BINDINGS = [
        Binding("a", "override(True)", "Admit"),
        Binding("d", "override(False)", "Deny"),
        Binding("l", "lookup", "Lookup"),
        Binding("m", "toggle_mode", "Entry/Exit"),
        Binding("p", "pause", "Pause"),
        Binding("s", "sync_now", "Sync"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, lane: Lane, *, sync=None,
                 check_pin: Callable[[str, str], "bool | PinCheck"] | None = None,
                 runner: Callable[[], None] | None = None, clock: Callable[[], float] = time.time,
                 title: str | None = None):
        super().__init__()
        self.lane = lane
        self.sync = sync
        self.clock = clock
        # the UI's own connection: lookups, status and PIN checks never touch the
        # lane thread's connection (and never wait for the lane)
        self.db = lane.gate.reopen()
        self.check_pin = check_pin or self._check_pin
        self.runner = runner
        self.last_event: LaneEvent | None = None
        self.pending_story: list[str] = []
        self.sub_title = title or f"{lane.gate.policy.event} · {lane.gate.policy.lane}"
        lane.observers.append(self._from_lane)
        lane.on_fault.append(self._from_fault)

    def _check_pin(self, operator: str, pin: str) -> PinCheck:
        from gate.pins import check_pin
        return check_pin(self.db, operator, pin, now=self.clock())

    def on_unmount(self) -> None:
        self.db.close()

    def compose(self) -> ComposeResult:
        with Horizontal(id="top"):
            yield Verdict(id="verdict")
            with Vertical(id="side"):
                yield Static(id="counters")
                yield Static(id="status")
        yield RichLog(id="log", markup=False, wrap=False, max_lines=500)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "Gate"
        self.query_one(Verdict).show(None, fault=self.lane.fault)
        self.refresh_side()
        for line in self.pending_story:
            self.story(line)
        self.set_interval(1.0, self.refresh_side)
        if self.runner is not None:
            threading.Thread(target=self._run_lane, daemon=True).start()

    def _run_lane(self) -> None:
        try:
            self.runner()
        except Exception as exc:  # show it; the app stays up for staff
            self.call_from_thread(self.notify, f"lane stopped: {exc}", severity="error", timeout=30)

    # ---------------------------------------------------------- lane events

    def _from_lane(self, ev: LaneEvent) -> None:
        if threading.current_thread() is threading.main_thread():
            self.on_lane_event(ev)
        else:
            self.call_from_thread(self.on_lane_event, ev)

    def _from_fault(self, fault, cleared_by: str | None) -> None:
        if threading.current_thread() is threading.main_thread():
            self.on_lane_fault(fault, cleared_by)
        else:
            self.call_from_thread(self.on_lane_fault, fault, cleared_by)

    def on_lane_fault(self, fault, cleared_by: str | None) -> None:
        what = f"cleared by {cleared_by}" if cleared_by else f"FAULT: {fault.detail}"
        self.query_one(RichLog).write(f"{time.strftime('%H:%M:%S')} ⚠ {fault.kind.value} {what}")
        self.query_one(Verdict).show(self.last_event, paused=self.lane.paused, fault=self.lane.fault)
        self.refresh_side()

    def on_lane_event(self, ev: LaneEvent) -> None:
        self.last_event = ev
        self.query_one(Verdict).show(ev, fault=self.lane.fault)
        d = ev.decision
        icon, head, _, _ = words(d.reason.value)
        t = time.strftime("%H:%M:%S", time.localtime(ev.at))
        op = f" by {ev.operator}" if ev.operator else ""
        self.query_one(RichLog).write(
            f"{t} {icon} {head:<16} {d.mode.value:<5} {(d.ticket_id or '-')[:16]:<16} {ev.outcome}{op}")
        self.refresh_side()

    def story(self, line: str) -> None:
        """A narration line (demo) in the scan log."""
        self.query_one(RichLog).write(line)

    def other_lane(self, ev: LaneEvent) -> None:
        """Events of another lane in this process: log only."""
        d = ev.decision
        line = f"  [{d.mode.value} {ev.outcome}] other lane: {words(d.reason.value)[1]} {(d.ticket_id or '-')[:16]}"
        if threading.current_thread() is threading.main_thread():
            self.story(line)
        else:
            self.call_from_thread(self.story, line)

    def refresh_side(self) -> None:
        c = self.lane.counters
        top = sorted(c.rejected.items(), key=lambda kv: (-kv[1], kv[0]))
        rej = sum(c.rejected.values())
        lines = [f"admitted {c.admitted}   inside {c.inside}", f"rejected {rej}   exits {c.exited}",
                 ("  " + ", ".join(f"{words(k)[1].lower()} {v}" for k, v in top)) if top else "  no rejections"]
        self.query_one("#counters", Static).update("\n".join(lines))
        self.query_one("#counters", Static).styles.height = 5
        mode = self.lane.mode.value.upper()
        state = "PAUSED" if self.lane.paused else mode
        if self.lane.fault is not None:
            state = f"FAULT {self.lane.fault.kind.value.upper()}: p clears"
        now = self.clock()
        if self.sync is not None:
            snap = self.sync.snapshot(self.db)
            label = getattr(snap.get("state"), "label", None) or \
                {True: "ONLINE", False: "OFFLINE", None: "connecting"}[snap["online"]]
            net = f"{label} · sync {_age(snap['last_ok'], now)} ago"
            out = f"outbox {snap['outbox']} · ledger {_age(snap['ledger_updated'], now)}"
        else:
            from gate.db import get_setting
            from sync.client import outbox_length
            net = "OFFLINE (no central)"
            out = (f"outbox {outbox_length(self.db)} · ledger "
                   f"{_age(get_setting(self.db.conn, 'ledger_imported_at'), now)}")
        text = f"{state}\n{net}\n{out}"
        if self.lane.link is not None:  # the venue bus link state (gate.bus)
            peers = getattr(self.lane.bus, "peers", None)
            text += f"\nlink {self.lane.link().value}" + (f" · {peers} peer(s)" if peers is not None else "")
        self.query_one("#status", Static).update(text)

    # ---------------------------------------------------------- commands

    def _authorised(self, title: str, then: Callable[[str], None]) -> None:
        """Ask for operator and supervisor PIN; run ``then(operator)`` only when it checks."""

        def done(result: tuple[str, str] | None) -> None:
            if result is None:
                return
            op, pin = result
            check = self.check_pin(op, pin)
            if not check:
                msg = check.message(op) if isinstance(check, PinCheck) else f"wrong PIN for {op}: nothing done"
                self.notify(msg, severity="error")
                return
            then(op)

        self.push_screen(PinScreen(title), done)

    def _command(self, fn: Callable[[], object], after: Callable[[], None] | None = None) -> None:
        """Run a lane command off Textual's event loop (it may wait for the turnstile
        or for the database's write lock); ``after`` runs back on the loop."""

        def work() -> None:
            try:
                fn()
            except Exception as exc:  # shown, never a dead UI
                self.call_from_thread(self.notify, f"not done: {exc}", severity="error", timeout=15)
                return
            if after is not None:
                self.call_from_thread(after)

        self.run_worker(work, thread=True, group="lane-command", exit_on_error=False)

    def action_override(self, admit: bool) -> None:
        verb = "ADMIT" if admit else "DENY"
        tid = self.last_event.decision.ticket_id if self.last_event else None
        title = f"Manual {verb}" + (f" ticket {tid[:12]}…" if tid else " (no ticket)")

        def run(op: str) -> None:
            self._command(lambda: self.lane.override(admit=admit, operator=op, ticket_id=tid,
                                                     note="staff override in the UI"))

        self._authorised(title, run)

    def action_lookup(self) -> None:
        self.push_screen(LookupScreen(self._lookup))

    def _lookup(self, q: str) -> list[str]:
        if not q:
            return []
        conn = self.lane.gate.conn
        rows = conn.execute(
            "SELECT t.ticket_id, t.status, t.version, t.tier, t.zone, t.holder, u.admissions FROM tickets t"
            " LEFT JOIN usage u ON u.ticket_id = t.ticket_id WHERE t.ticket_id LIKE ? OR t.holder LIKE ?"
            " LIMIT 8", (q.lower() + "%", f"%{q}%")).fetchall()
        return [f"{tid[:16]}  {st:<7} v{v} {tier or ''} {zone or ''} {holder or ''}  used {adm or 0}"
                for tid, st, v, tier, zone, holder, adm in rows]

    def action_toggle_mode(self) -> None:
        from gate.decision import Mode
        new = Mode.EXIT if self.lane.mode is Mode.ENTRY else Mode.ENTRY

        def done() -> None:
            self.notify(f"lane now {self.lane.mode.value.upper()}")
            self.refresh_side()

        self._authorised(f"Switch lane to {new.value.upper()}",
                         lambda op: self._command(lambda: self.lane.set_mode(new, operator=op), done))

    def action_pause(self) -> None:
        if self.lane.fault is not None:  # p clears a fault (after the hardware checks out)
            def cleared() -> None:
                self.query_one(Verdict).show(self.last_event, paused=self.lane.paused, fault=self.lane.fault)
                self.refresh_side()

            self._authorised(f"Clear the {self.lane.fault.kind.value} fault",
                             lambda op: self._command(lambda: self.lane.clear_fault(operator=op), cleared))
            return
        pausing = not self.lane.paused

        def done() -> None:
            self.query_one(Verdict).show(self.last_event, paused=self.lane.paused)
            self.refresh_side()

        self._authorised("Pause the lane" if pausing else "Resume the lane",
                         lambda op: self._command(lambda: self.lane.pause(pausing, operator=op), done))

    def action_sync_now(self) -> None:
        if self.sync is None:
            self.notify("no central configured: start with --central URL", severity="warning")
            return
        self.sync.sync_now()
        self.notify("sync requested")


def run_tui(runner) -> int:
    """Run the staff UI over a composed lane (``gate.app.compose.build_lane``):
    the lane runs in a worker thread, the UI observes and commands it (PINs are
    checked through the UI's own database connection)."""
    app = GateApp(runner.lane, sync=runner.sync, runner=runner.run)
    try:
        app.run()
    finally:
        runner.close()
    return 0
