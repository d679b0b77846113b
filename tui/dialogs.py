"""The staff UI's dialogs: the supervisor PIN (for everything that changes what
the lane lets through, and for quitting) and the ticket lookup.

A wrong PIN keeps the dialog open with what was typed, says why, and restates
what the dialog is for (e.g. the refusal a manual admit would overrule).
Everything shown that came from outside (names, lanes) is plain text: no
markup is ever parsed from it."""

from __future__ import annotations

from typing import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from gate.i18n import _, ngettext
from gate.pins import LOCKOUT_S, MAX_FAILURES, PinCheck
from gate.text import pad, plain
from gate.words import reason_words
from tui.history import Ticket, Use
from tui.words import clock_time

DIALOG_CSS = """
PinScreen, LookupScreen { align: center middle; }
#pin-box, #lookup-box { width: 76; max-width: 100%; height: auto; max-height: 100%;
                        border: thick $accent; background: $surface; padding: 0 1; }
#pin-box Input, #lookup-box Input { height: 1; border: none; padding: 0 1; margin: 0 0 1 0;
                                    background: $boost; }
#pin-box Input:focus, #lookup-box Input:focus { background: $accent 40%; }
#pin-title, #lookup-title { text-style: bold; }
#pin-context { margin: 0 0 1 0; }
#pin-error { color: $error; text-style: bold; height: auto; }
#lookup-result { height: auto; max-height: 30; }
#lookup-result:focus { background: $boost; }
#pin-hint, #lookup-hint { color: $text-muted; }
"""


def pin_refusal(check: PinCheck | bool, operator: str) -> str:
    """Why a PIN was not accepted, in the reader's language."""
    who = plain(operator, limit=40)
    if isinstance(check, PinCheck) and check.locked_until is not None:
        return _("{operator} is locked out after {n} wrong PINs: another supervisor, or wait {minutes} minutes"
                 ).format(operator=who, n=MAX_FAILURES, minutes=round(LOCKOUT_S / 60))
    if isinstance(check, PinCheck):
        return ngettext("Wrong PIN for {operator}: nothing done ({n} try left)",
                        "Wrong PIN for {operator}: nothing done ({n} tries left)",
                        check.tries_left).format(operator=who, n=check.tries_left)
    return _("Wrong PIN for {operator}: nothing done").format(operator=who)


class PinScreen(ModalScreen[str | None]):
    """Operator name and supervisor PIN. ``check(operator, pin)`` decides; the
    screen is dismissed with the operator only when it passes (None: cancelled)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    def __init__(self, title: str, check: Callable[[str, str], "PinCheck | bool"], *,
                 context: list[str] | None = None):
        super().__init__()
        self.title_text = title
        self.context = [c for c in (context or []) if c]
        self.check = check
        self.refusals = 0

    def compose(self) -> ComposeResult:
        with Vertical(id="pin-box"):
            yield Static(Text(self.title_text), id="pin-title")
            yield Static(Text("\n".join(self.context)), id="pin-context")
            yield Input(placeholder=_("operator name"), id="operator")
            yield Input(placeholder=_("supervisor PIN"), password=True, id="pin")
            yield Static("", id="pin-error")
            yield Static(Text(_("Enter: confirm · Esc: cancel")), id="pin-hint")

    def on_mount(self) -> None:
        self.query_one("#pin-context").display = bool(self.context)
        self.query_one("#operator", Input).focus()

    def _error(self, text: str) -> None:
        self.query_one("#pin-error", Static).update(Text(text))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        op = self.query_one("#operator", Input).value.strip()
        pin_input = self.query_one("#pin", Input)
        if event.input.id == "operator" and not pin_input.value:
            pin_input.focus()
            return
        if not op or not pin_input.value:
            self._error(_("Name and PIN are both needed"))
            (pin_input if op else self.query_one("#operator", Input)).focus()
            return
        result = self.check(op, pin_input.value)
        if not result:
            self.refusals += 1
            self._error(pin_refusal(result, op))
            pin_input.focus()  # what was typed stays; it is selected, so typing replaces it
            pin_input.select_all()
            return
        self.dismiss(op)

    def action_cancel(self) -> None:
        self.dismiss(None)


def _use_line(u: Use, *, lane: str, now: float) -> str:
    when = clock_time(u.ts_ms / 1000, now) if u.ts_ms is not None else "?"
    if u.here:
        where = _("here ({lane})").format(lane=plain(lane, limit=24))
    else:
        where = plain(u.lane or "?", limit=24) + (f" ({plain(u.device, limit=16)})" if u.device else "")
        if u.via:
            where += " " + (_("via bus") if u.via == "bus" else _("via central"))
    w = reason_words(u.reason)
    icon, what = w.icon, w.headline
    if u.kind != "override" and u.accepted and u.mode == "exit":
        icon, what = "◀", _("EXIT RECORDED")
    flags = []
    if u.voided:
        flags.append(_("not passed: given back"))
    if u.alone:
        flags.append(_("ALONE"))
    if u.operator:
        flags.append(_("by {operator}").format(operator=plain(u.operator, limit=24)))
    return f"{pad(when, 9)} {icon} {pad(what, 16)} {pad(where, 28)} {' · '.join(flags)}".rstrip()


class LookupScreen(ModalScreen[None]):
    """Find a ticket by id (or its start) or holder; see its history at every
    gate; admit it with a supervisor PIN."""

    BINDINGS = [Binding("escape", "close", "Close", show=False),
                Binding("down", "move(1)", show=False), Binding("up", "move(-1)", show=False),
                Binding("a", "admit", show=False), Binding("slash", "search", show=False)]

    def __init__(self, *, find: Callable[[str], list[Ticket]], history: Callable[[str], list[Use]],
                 lane: str, now: Callable[[], float], admit: Callable[[Ticket], None]):
        super().__init__()
        self.find, self.history, self.lane, self.now, self.admit = find, history, lane, now, admit
        self.found: list[Ticket] = []
        self.chosen = 0

    def compose(self) -> ComposeResult:
        with Vertical(id="lookup-box"):
            yield Static(Text(_("Ticket lookup")), id="lookup-title")
            yield Input(placeholder=_("ticket id (or its start) or holder name"), id="query")
            yield Static("", id="lookup-result")
            yield Static(Text(_("Enter search · ↑↓ choose · a admit (PIN) · / search · Esc close")),
                         id="lookup-hint")

    def on_mount(self) -> None:
        r = self.query_one("#lookup-result", Static)
        r.can_focus = True
        self.query_one("#query", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.found = self.find(event.value)
        self.chosen = 0
        self._paint()
        if self.found:
            self.query_one("#lookup-result", Static).focus()

    def _paint(self) -> None:
        out = self.query_one("#lookup-result", Static)
        if not self.found:
            out.update(Text(_("No ticket found") if self.query_one("#query", Input).value.strip() else ""))
            return
        lines: list[Text] = []
        for i, t in enumerate(self.found):
            mark = "▸" if i == self.chosen else " "
            used = ngettext("used {n} time", "used {n} times", t.admissions).format(n=t.admissions)
            status = _("valid") if t.status == "valid" else _("cancelled") if t.status == "revoked" else t.status
            row = f"{mark} {t.ticket_id[:16]}  {pad(plain(t.holder or '-', limit=24), 24)} " \
                  f"{plain(t.tier, limit=8)} {plain(t.zone or '', limit=8)} {status} · {used}"
            lines.append(Text(row, style="bold" if i == self.chosen else ""))
        t = self.found[self.chosen]
        uses = self.history(t.ticket_id)
        lines.append(Text(""))
        lines.append(Text(_("History of {ticket} at every gate:").format(ticket=t.ticket_id[:16]), style="bold"))
        now = self.now()
        if not uses:
            lines.append(Text("  " + _("never scanned at any gate we know of")))
        for u in uses[-12:]:
            lines.append(Text("  " + _use_line(u, lane=self.lane, now=now)))
        out.update(Text("\n").join(lines))

    def action_move(self, step: int) -> None:
        if self.found:
            self.chosen = (self.chosen + step) % len(self.found)
            self._paint()

    def action_search(self) -> None:
        self.query_one("#query", Input).focus()

    def action_admit(self) -> None:
        if self.found:
            self.admit(self.found[self.chosen])

    def action_close(self) -> None:
        self.dismiss(None)
