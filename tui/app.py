"""The staff terminal UI (Textual). It observes the lane and sends it commands;
it never decides.

One screen, top to bottom: the status line (mode, lane, link ONLINE / VENUE /
ALONE, event, central), the verdict (tui/verdict.py: a state, its glyph, the
reason in words, where and when a used ticket was used, what to do), the
counters, the scan log, the keys. It degrades with the window: no glyph, no
log, and below :data:`MIN_W` x :data:`MIN_H` a "window too small" notice that
still carries the verdict. Quit, pause, mode and manual decisions ask for an
operator name and a supervisor PIN; lookup shows a ticket's history at every
gate and can admit it with a PIN.

Text is translated (gate/i18n.py) into the process language; everything that
came from outside (holder, lane and operator names) is shown as plain text.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.widgets import RichLog, Static

from gate.decision import Mode, Reason
from gate.i18n import _
from gate.lane import Lane, LaneEvent
from gate.pins import PinCheck
from gate.text import clip, pad, plain
from tui import history
from tui.dialogs import DIALOG_CSS, LookupScreen, PinScreen
from tui.panels import Status, counters_column, counters_strip, key_lines, status_line
from tui.verdict import (HOLD_S, MIN_SHOW_S, VERDICT_CSS, Context, Verdict, View, fault_view, fault_word,
                         fire_view, idle_view, paused_view, view_for)
from tui.words import KEY_P_FAULT, KEY_P_PAUSED, clock_time, words

MIN_W, MIN_H = 40, 12      # below this: the "window too small" notice (with the verdict)
SIDE_W = 120               # from this width the counters stand beside the log
GLYPH_W, GLYPH_H = 64, 7   # the big glyph needs this much of the verdict box

# the verdict's colours as one line of text (the window-too-small notice)
LINE_STYLE = {"idle": "bold", "accept": "bold white on #0b5d1e", "exit": "bold white on #123f7a",
              "caution": "bold black on #ffb000", "reject": "bold white on #8b0000",
              "info": "bold white on #3b4a5a", "paused": "bold #ffd75f on #2b2b2b",
              "fault": "bold white on #6a0d6a", "fire": "bold white on #c23b00"}

def _outcome_words(outcome: str) -> str:
    return {"passed": _("passed"), "rolled_back": _("not passed"), "rejected": _("refused"),
            "exit": _("exit"), "override": _("manual")}.get(outcome, outcome)


class GateApp(App):
    CSS = DIALOG_CSS + VERDICT_CSS + """
    Screen { layout: vertical; }
    #status { height: 1; }
    #lower { height: 1fr; }
    #log { width: 1fr; height: 100%; border: round $panel; }
    #counters-side { width: 34; height: 100%; border: round $panel; padding: 0 1; display: none; }
    #counters { height: 1; padding: 0 1; }
    #keys { height: 1; }
    #toosmall { display: none; height: 100%; padding: 0 1; }
    """
    ENABLE_COMMAND_PALETTE = False  # it could quit the lane without a PIN
    BINDINGS = [
        Binding("a", "override(True)", show=False),
        Binding("d", "override(False)", show=False),
        Binding("l", "lookup", show=False),
        Binding("m", "toggle_mode", show=False),
        Binding("p", "pause", show=False),
        Binding("s", "sync_now", show=False),
        Binding("q", "quit", show=False),
    ]

    def __init__(self, lane: Lane, *, sync=None,
                 check_pin: Callable[[str, str], "bool | PinCheck"] | None = None,
                 runner: Callable[[], None] | None = None, clock: Callable[[], float] = time.time,
                 title: str | None = None, sigint_exits: bool = False, quit_needs_pin: bool = True):
        super().__init__()
        self.sigint_exits = sigint_exits  # SIGINT (kill -INT, systemd) ends the UI with 130
        self.quit_needs_pin = quit_needs_pin  # False only for the demo (simulated lanes, no PINs set)
        self.lane = lane
        self.sync = sync
        self.clock = clock
        # the UI's own connection: lookups, status and PIN checks never touch the
        # lane thread's connection (and never wait for the lane)
        self.db = lane.gate.reopen()
        self.check_pin = check_pin or self._check_pin
        self.runner = runner
        self.banner = title  # the demo names itself
        self.last_event: LaneEvent | None = None   # the last final event (manual decisions refer to it)
        self.event_view: View | None = None        # the verdict shown until ``until``
        self.until: float | None = None
        self.shown_at = 0.0
        self.paused_shown = 0
        self.paused_last: LaneEvent | None = None
        self.pending_story: list[str] = []
        self.mounted = False
        self.screen_size = None
        self.early: list[LaneEvent] = []
        self.sub_title = title or f"{lane.gate.policy.event} · {lane.gate.policy.lane}"
        lane.observers.append(self._from_lane)
        lane.opened.append(self._from_lane)
        if hasattr(lane, "on_fault"):  # gate.lane's fault hooks, where the lane has them
            lane.on_fault.append(self._from_fault)
        if hasattr(lane, "on_fire"):  # and its fire-alarm hooks
            lane.on_fire.append(lambda active, detail="": self._from_fault(None))
        self.shown_fault = None
        self.shown_fire = False

    def _check_pin(self, operator: str, pin: str) -> PinCheck:
        from gate.pins import check_pin
        return check_pin(self.db, operator, pin, now=self.clock())

    def on_unmount(self) -> None:
        self.db.close()

    # ---------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield Verdict(id="verdict")
        yield Static(id="counters")
        with Horizontal(id="lower"):
            yield RichLog(id="log", markup=False, wrap=False, max_lines=500)
            yield Static(id="counters-side")
        yield Static(id="keys")
        yield Static(id="toosmall")

    def on_mount(self) -> None:
        self.title = _("Gate")
        self._layout()
        self.mounted = True
        for ev in self.early:
            self.on_lane_event(ev)
        self.early.clear()
        self.repaint()
        for line in self.pending_story:
            self.story(line)
        if self.sigint_exits:
            import asyncio
            import signal
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, lambda: self.exit(return_code=130))
        self.set_interval(0.5, self._on_timer(self.tick))
        self.set_interval(1.0, self._on_timer(self.refresh_side))
        if self.runner is not None:
            threading.Thread(target=self._run_lane, daemon=True).start()

    @staticmethod
    def _on_timer(fn: Callable[[], None]) -> Callable[[], None]:
        """A timer's callback that outlives the widgets: at exit Textual removes the
        screen's widgets while an interval may still fire (a tick then found no
        ``#status``, and the steward's quit ended in a traceback)."""
        def run() -> None:
            try:
                fn()
            except NoMatches:
                pass  # the widgets are gone: nothing left to refresh
        return run

    def on_resize(self, event) -> None:
        self.screen_size = event.size  # self.size still says the old one while this runs
        self._layout()
        self.repaint()

    @property
    def window(self) -> tuple[int, int]:
        size = self.screen_size or self.size
        return size.width, size.height

    def _layout(self) -> None:
        w, h = self.window
        tiny = w < MIN_W or h < MIN_H
        for wid in ("#status", "#verdict", "#counters", "#lower", "#keys"):
            self.query_one(wid).display = not tiny
        self.query_one("#toosmall").display = tiny
        if tiny:
            return
        keys = len(key_lines(w))
        self.query_one("#keys").styles.height = keys
        side = w >= SIDE_W and h >= 24
        self.query_one("#counters").display = not side
        self.query_one("#counters-side").display = side
        fixed = 1 + keys + (0 if side else 1)
        if h >= 40:
            verdict = 17
        elif h >= 30:
            verdict = 14
        elif h >= 24:
            verdict = 12
        else:
            verdict = h - fixed - (4 if h >= 20 else 0)
        verdict = max(5, min(verdict, h - fixed))
        v = self.query_one(Verdict)
        v.styles.height = verdict
        self.query_one("#lower").display = h - fixed - verdict >= 3
        v.set_class(verdict - 2 >= GLYPH_H and w >= GLYPH_W, "big")

    # ---------------------------------------------------------- the verdict

    def context(self) -> Context:
        p = self.lane.gate.policy
        return Context(lane=p.lane, zones=tuple(p.zones), now=self.clock(), mode=self.lane.mode)

    def current_view(self) -> View:
        ctx = self.context()
        if getattr(self.lane, "fire", False):  # a fire alarm: above everything, faults included
            return fire_view(ctx)
        fault = getattr(self.lane, "fault", None)  # a relay / sensor fault (gate.lane), when the lane has one
        if fault:
            return fault_view(ctx, fault)
        manual = self.last_event is not None and self.last_event.decision.reason in (Reason.MANUAL_ADMIT,
                                                                                    Reason.MANUAL_DENY)
        if self.lane.paused and not (manual and self.event_view is not None):
            # (a supervisor's manual decision on a paused lane is shown for its while, then the pause)
            return paused_view(ctx, shown=self.paused_shown, last=self.paused_last)
        if self.event_view is not None:
            return self.event_view
        return idle_view(ctx)

    def repaint(self) -> None:
        self.shown_fault = getattr(self.lane, "fault", None)
        self.shown_fire = getattr(self.lane, "fire", False)
        view = self.current_view()
        self.query_one(Verdict).show(view)
        w, h = self.window
        if w < MIN_W or h < MIN_H:
            note = _("Window too small ({w}×{h}): enlarge it to at least {min_w}×{min_h}").format(
                w=w, h=h, min_w=MIN_W, min_h=MIN_H)
            title = Text(pad(clip(view.one_line(), max(1, w - 2)), max(1, w - 2)), style=LINE_STYLE[view.style])
            self.query_one("#toosmall", Static).update(Text("\n").join([title, Text(""), Text(note)]))
        self.refresh_side()

    def tick(self) -> None:
        """Return to READY once the verdict's time is up (the clock is the app's:
        tests advance it and call this); show a lane fault that began or ended."""
        if self.until is not None and self.clock() >= self.until:
            self.event_view, self.until = None, None
            self.repaint()
        elif getattr(self.lane, "fault", None) != self.shown_fault or \
                getattr(self.lane, "fire", False) != self.shown_fire:
            self.repaint()

    def _from_fault(self, fault, cleared_by=None) -> None:
        """A lane fault began (or was cleared): repaint now, from any thread."""
        try:
            if not self.mounted:
                return
            if threading.current_thread() is threading.main_thread():
                self.repaint()
            else:
                self.call_from_thread(self.repaint)
        except Exception:  # closing: the lane goes on
            pass

    def _show(self, view: View, *, hold: float | None) -> None:
        now = self.clock()
        self.event_view, self.shown_at = view, now
        self.until = None if hold is None else now + hold
        self.repaint()

    # ---------------------------------------------------------- lane events

    def _from_lane(self, ev: LaneEvent) -> None:
        """A lane observer: never raises into the lane (a screen fault must not stop it)."""
        if not self.mounted:  # before the screen exists: shown once it does
            self.early.append(ev)
            return
        try:
            if threading.current_thread() is threading.main_thread():
                self.on_lane_event(ev)
            else:
                self.call_from_thread(self.on_lane_event, ev)
        except Exception:  # the app is closing (or a drawing fault): the lane goes on
            pass

    def view_of(self, ev: LaneEvent) -> View:
        d = ev.decision
        ticket = None
        if d.ticket_id and (not d.accepted or not d.holder):  # the ledger's holder and zone (own connection)
            try:
                ticket = self.db.view.ticket(d.ticket_id)
            except Exception:  # a verdict without the holder's name, never a dead screen
                ticket = None
        return view_for(ev, self.context(), ticket)

    def on_lane_event(self, ev: LaneEvent) -> None:
        if ev.outcome == "open":  # the turnstile is open: say so until the passage (or its timeout)
            view = self.view_of(ev)
            self._show(view, hold=self.lane.gate.config.passage_timeout_s + HOLD_S[view.state])
            return
        self.last_event = ev
        self._log(ev)
        if ev.decision.reason is Reason.LANE_PAUSED:
            self.paused_shown += 1
            self.paused_last = ev
        view = self.view_of(ev)
        if ev.outcome == "passed" and getattr(self.lane.sensor, "present", False) \
                and self.event_view is not None and self.event_view.state == view.state:
            # the holder went through: back to READY (after the verdict was seen a moment)
            now = self.clock()
            self.until = max(now, self.shown_at + MIN_SHOW_S)
            self.event_view = view
            if now >= self.until:
                self.event_view, self.until = None, None
            self.repaint()
            return
        self._show(view, hold=HOLD_S.get(view.state, HOLD_S["REFUSED"]))

    def _log(self, ev: LaneEvent) -> None:
        d = ev.decision
        icon, head, _a, _s = words(d.reason.value)
        if d.accepted and d.mode is Mode.EXIT:
            icon, head = "◀", _("EXIT RECORDED")
        t = clock_time(ev.at, self.clock())
        op = " " + _("by {operator}").format(operator=plain(ev.operator, limit=24)) if ev.operator else ""
        flag = " " + _("ALONE") if ev.alone else ""
        mode = _("entry") if d.mode is Mode.ENTRY else _("exit")
        self.query_one(RichLog).write(Text(
            f"{t} {icon} {pad(clip(head, 16), 16)} {pad(mode, 5)} {(d.ticket_id or '-')[:16]:<16} "
            f"{_outcome_words(ev.outcome)}{op}{flag}"))
        self.refresh_side()

    def story(self, line: str) -> None:
        """A narration line (demo) in the scan log."""
        self.query_one(RichLog).write(Text(plain(line)))

    def other_lane(self, ev: LaneEvent) -> None:
        """Events of another lane in this process: log only."""
        if ev.outcome == "open":
            return
        d = ev.decision
        line = "  " + _("[{mode} {outcome}] other lane: {what} {ticket}").format(
            mode=d.mode.value, outcome=_outcome_words(ev.outcome), what=words(d.reason.value)[1],
            ticket=(d.ticket_id or "-")[:16])
        if threading.current_thread() is threading.main_thread():
            self.story(line)
        else:
            self.call_from_thread(self.story, line)

    # ---------------------------------------------------------- status, counters, keys

    def status(self) -> Status:
        p = self.lane.gate.policy
        now = self.clock()
        central = last_sync = outbox = None
        central_ok = None
        if self.sync is not None:
            snap = self.sync.snapshot(self.db)
            state = snap.get("state")
            central = getattr(state, "value", None) or {True: "online", False: "offline", None: "connecting"}[
                snap.get("online")]
            central_ok = snap.get("online")
            last_sync, outbox = snap.get("last_ok"), snap.get("outbox")
        if self.lane.link is not None:
            link = self.lane.link().value
        else:
            link = "ONLINE" if central_ok else "ALONE"
        peers = getattr(self.lane.bus, "peers", None) if self.lane.bus is not None else None
        fault = getattr(self.lane, "fault", None)
        return Status(lane=p.lane, event=p.event, mode=self.lane.mode.value, paused=self.lane.paused,
                      fault=bool(fault), fault_kind=fault_word(fault) if fault else "", link=link,
                      fire=bool(getattr(self.lane, "fire", False)),
                      peers=peers if isinstance(peers, int) else None, central=central,
                      last_sync=last_sync, outbox=outbox, now=now)

    def refresh_side(self) -> None:
        w, h = self.window
        width = max(1, w)
        self.query_one("#status", Static).update(status_line(self.status(), width - 1))
        c = self.lane.counters
        self.query_one("#counters", Static).update(counters_strip(c, max(1, width - 2)))
        side = self.query_one("#counters-side", Static)
        if side.display:
            side.update(counters_column(c, 30, max(1, side.content_region.height or 10)))
        p_label = KEY_P_FAULT if getattr(self.lane, "fault", None) else KEY_P_PAUSED if self.lane.paused else None
        self.query_one("#keys", Static).update(Text("\n").join(key_lines(width, p_label=p_label)))

    # ---------------------------------------------------------- commands

    def _authorised(self, title: str, then: Callable[[str], None], *, context: list[str] | None = None) -> None:
        """Ask for operator and supervisor PIN; run ``then(operator)`` only when it checks.
        A wrong PIN keeps the dialog (and what was typed) open and says why."""

        def done(operator: str | None) -> None:
            if operator is not None:
                then(operator)

        self.push_screen(PinScreen(title, self.check_pin, context=context), done)

    def _command(self, fn: Callable[[], object], after: Callable[[], None] | None = None) -> None:
        """Run a lane command off Textual's event loop (it may wait for the turnstile
        or for the database's write lock); ``after`` runs back on the loop."""

        def work() -> None:
            try:
                fn()
            except Exception as exc:  # shown, never a dead UI
                self.call_from_thread(self.notify, _("Not done: {error}").format(error=plain(exc, limit=200)),
                                      severity="error", timeout=15, markup=False)
                return
            if after is not None:
                self.call_from_thread(after)

        self.run_worker(work, thread=True, group="lane-command", exit_on_error=False)

    def _refusal_context(self) -> list[str]:
        """What a manual decision would overrule: the last verdict, restated."""
        ev = self.last_event
        if ev is None:
            return [_("No ticket scanned yet: the decision is logged without a ticket")]
        d = ev.decision
        view = self.view_of(ev)
        facts = next((t for role, t in view.lines if role == "facts" and t), "")
        lines = [_("Ticket {ticket}").format(ticket=(d.ticket_id or "-")[:16]) + (f" · {facts}" if facts else "")]
        lines.append(_("Last verdict: {verdict}").format(verdict=view.title))
        lines += [t for role, t in view.lines if role in ("explain", "why", "where") and t][:3]
        return lines

    def action_override(self, admit: bool) -> None:
        tid = self.last_event.decision.ticket_id if self.last_event else None
        title = _("Manual ADMIT: open the turnstile") if admit else _("Manual DENY: record a refusal")

        def run(op: str) -> None:
            self._command(lambda: self.lane.override(admit=admit, operator=op, ticket_id=tid,
                                                     note="staff override in the UI"))

        self._authorised(title, run, context=self._refusal_context())

    def action_lookup(self) -> None:
        conn = self.db.conn

        def admit(ticket: history.Ticket) -> None:
            def run(op: str) -> None:
                self.pop_screen()
                self._command(lambda: self.lane.override(admit=True, operator=op, ticket_id=ticket.ticket_id,
                                                         note="admitted from lookup in the UI"))
            uses = history.history(conn, ticket.ticket_id)
            ctx = [_("Ticket {ticket}").format(ticket=ticket.ticket_id[:16])
                   + (f" · {plain(ticket.holder, limit=40)}" if ticket.holder else "")]
            if ticket.status != "valid":
                ctx.append(_("Status: {status}").format(status=words("REVOKED")[1]))
            if uses:
                last = uses[-1]
                ctx.append(_("Last use: {time} {what}").format(
                    time=clock_time((last.ts_ms or 0) / 1000, self.clock()), what=words(last.reason)[1]))
            self._authorised(_("Manual ADMIT from lookup: open the turnstile"), run, context=ctx)

        self.push_screen(LookupScreen(find=lambda q: history.find(conn, q),
                                      history=lambda tid: history.history(conn, tid),
                                      lane=self.lane.gate.policy.lane, now=self.clock, admit=admit))

    def action_toggle_mode(self) -> None:
        new = Mode.EXIT if self.lane.mode is Mode.ENTRY else Mode.ENTRY

        def done() -> None:
            self.notify(_("Lane now {mode}").format(mode=_("EXIT") if self.lane.mode is Mode.EXIT else _("ENTRY")),
                        markup=False)
            self.repaint()

        title = _("Switch the lane to EXIT") if new is Mode.EXIT else _("Switch the lane to ENTRY")
        self._authorised(title, lambda op: self._command(lambda: self.lane.set_mode(new, operator=op), done))

    def action_pause(self) -> None:
        if getattr(self.lane, "fault", None) and hasattr(self.lane, "clear_fault"):
            # a relay/sensor fault paused the lane: p clears it (gate.lane's hook), with a PIN
            self._authorised(_("Clear the fault: the lane admits again"), lambda op: self._command(
                lambda: self.lane.clear_fault(operator=op), lambda: self.repaint()))
            return
        pausing = not self.lane.paused

        def done() -> None:
            # a fresh start either way: the verdict before the pause does not come back
            self.event_view, self.until = None, None
            self.paused_shown, self.paused_last = 0, None
            self.repaint()

        title = _("Pause the lane: every code is refused") if pausing else _("Resume the lane")
        self._authorised(title, lambda op: self._command(lambda: self.lane.pause(pausing, operator=op), done))

    def action_sync_now(self) -> None:
        if self.sync is None:
            self.notify(_("No central set up: start with --central URL"), severity="warning", markup=False)
            return
        self.sync.sync_now()
        self.notify(_("Sync requested"), markup=False)

    async def action_quit(self) -> None:
        """Quitting stops the lane: a supervisor PIN, like any other command."""
        if not self.quit_needs_pin:
            self.exit()
            return
        self._authorised(_("Quit: the lane stops admitting"), lambda op: self.exit())

    def action_help_quit(self) -> None:  # ctrl+c inside the UI (a key, not a signal)
        self.notify(_("To quit press q (supervisor PIN)"), markup=False)

    def _run_lane(self) -> None:
        try:
            self.runner()
        except Exception as exc:  # show it; the app stays up for staff
            self.call_from_thread(self.notify, _("Lane stopped: {error}").format(error=plain(exc, limit=200)),
                                  severity="error", timeout=30, markup=False)


def run_tui(runner) -> int:
    """Run the staff UI over a composed lane (``gate.app.compose.build_lane``):
    the lane runs in a worker thread, the UI observes and commands it (PINs are
    checked through the UI's own database connection). SIGINT ends it with 130."""
    from tui.terminal import own_terminal

    with own_terminal(keep_stdin=runner.spec.scanner == "stdin"):
        app = GateApp(runner.lane, sync=runner.sync, runner=runner.run, sigint_exits=True)
        try:
            app.run()
        finally:
            runner.close()
    if app.return_code == 130:
        raise KeyboardInterrupt  # main() says "interrupted" and exits 130, like every command
    return app.return_code or 0
