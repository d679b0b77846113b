"""The verdict: what the lane just did, said so a steward reads it from two
metres in under a second.

:func:`view_for` turns a lane event into a :class:`View` (pure: no Textual, no
clock, no database), one of these states:

========== ============ ==================================================
state      colour       when
========== ============ ==================================================
IDLE       neutral      nothing recent: ready, in entry or exit mode
ADMIT      green        an entry admitted (also a supervisor's manual admit)
EXIT       blue         an exit recorded
CAUTION    amber        admitted, but the lane was ALONE or the ticket unlisted
REFUSED    red          any refusal: reason in words, where/when, what to do
NOT_PASSED grey-blue    admitted, nobody went through: the entry given back
PAUSED     yellow rim   staff paused the lane (scans refused and logged)
FAULT      magenta      the turnstile or sensor failed (the lane admits nothing)
FIRE       red-orange   a fire alarm holds every turnstile released (no code is checked)
========== ============ ==================================================

Each state also has a glyph (tui/glyphs.py) and an icon in its title: never
colour alone. The :class:`Verdict` widget shows a view; the app decides which
(and when it returns to IDLE).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from gate.decision import Mode, Reason
from gate.i18n import N_, _, ngettext
from gate.text import clip, plain, wrap
from gate.words import link_words, reason_words, sub_words
from tui.glyphs import HEIGHT as GLYPH_ROWS
from tui.glyphs import WIDTH as GLYPH_COLS
from tui.glyphs import glyph
from tui.words import STATE_WORDS, ago, clock_time

# how long a verdict stays before the screen returns to READY (seconds); an
# admission with a passage sensor also returns on passage (after MIN_SHOW_S)
HOLD_S = {"ADMIT": 4.0, "EXIT": 4.0, "CAUTION": 8.0, "REFUSED": 10.0, "NOT_PASSED": 6.0}
MIN_SHOW_S = 1.5

STYLE = {"IDLE": "idle", "ADMIT": "accept", "EXIT": "exit", "CAUTION": "caution", "REFUSED": "reject",
         "NOT_PASSED": "info", "PAUSED": "paused", "FAULT": "fault", "FIRE": "fire"}


@dataclass(frozen=True, slots=True)
class Context:
    """What a view needs besides the event: this lane's name and zones, and now."""

    lane: str
    zones: tuple[str, ...] = ()
    now: float = 0.0
    mode: Mode = Mode.ENTRY


@dataclass(frozen=True, slots=True)
class View:
    state: str
    title: str                      # icon + words, the biggest text
    lines: tuple[tuple[str, str], ...] = field(default=())  # (role, text) in priority order
    code: str = ""                  # reason code, sub, ticket and seq: for supervisors, dim

    @property
    def style(self) -> str:
        return STYLE[self.state]

    def one_line(self) -> str:
        """The title alone (the window-too-small screen keeps it)."""
        return self.title


def _state(name: str) -> tuple[str, str, str]:
    icon, title, line = STATE_WORDS[name]
    return icon, _(title), _(line) if line else ""


def idle_view(ctx: Context) -> View:
    icon, title, line = _state("IDLE_EXIT" if ctx.mode is Mode.EXIT else "IDLE_ENTRY")
    return View("IDLE", f"{icon} {title}", (("explain", line),))


def paused_view(ctx: Context, *, shown: int = 0, last=None) -> View:
    """The paused lane; ``shown`` codes were refused while paused, ``last`` the latest event."""
    icon, title, line = _state("PAUSED")
    lines = [("explain", line), ("todo", _("→ Resume: p and a supervisor PIN"))]
    if shown:
        what = ngettext("{n} code shown while paused", "{n} codes shown while paused", shown).format(n=shown)
        if last is not None:
            d = last.decision
            who = plain(d.holder, limit=40) if d.holder else (d.ticket_id or "")[:12]
            what += _(", last at {time}").format(time=clock_time(last.at, ctx.now))
            if who:
                what += f" · {who}"
        lines.insert(1, ("where", what))
    return View("PAUSED", f"{icon} {title}", tuple(lines))


_FAULT_KINDS = {"relay": N_("RELAY"), "sensor": N_("SENSOR"), "store": N_("STORE")}


def fault_word(fault: object) -> str:
    """The kind of a lane fault (gate.lane.LaneFault.kind), translated."""
    kind = getattr(getattr(fault, "kind", None), "value", None) or str(getattr(fault, "kind", "") or "")
    word = _FAULT_KINDS.get(kind)
    return _(word) if word else plain(kind.upper(), limit=20)


def fault_view(ctx: Context, fault: object) -> View:
    """A lane fault (gate.lane.LaneFault: kind, detail): nothing is admitted until cleared."""
    icon, _title, line = _state("FAULT")
    kind = fault_word(fault)
    title = _("LANE FAULT: {kind}").format(kind=kind) if kind else _(STATE_WORDS["FAULT"][1])
    what = getattr(fault, "detail", None) or getattr(fault, "message", None) or str(fault)
    if getattr(getattr(fault, "kind", None), "value", None) == "relay":
        # a relay that did not release may leave the turnstile free: "admits nothing" would be false
        line = _("The turnstile may be left open: stop people at it by hand. "
                 "No code is checked until a supervisor clears the fault")
    return View("FAULT", f"{icon} {title}", (("where", plain(what, limit=200)), ("explain", line),
                                             ("todo", _("→ Call a technician; a supervisor clears it: p and a PIN"))))


def fire_view(ctx: Context) -> View:
    """A fire alarm (gate.lane.Lane.fire): every turnstile released, nothing checked, until it ends."""
    icon, title, line = _state("FIRE")
    return View("FIRE", f"{icon} {title}", (("explain", line),
                                            ("todo", _("→ Keep the lane clear; it locks again when the alarm ends"))))


def _facts(ev, ticket=None) -> str:
    d = ev.decision
    holder = d.holder or (ticket.holder if ticket is not None else None)
    tier = d.tier or (ticket.tier if ticket is not None else None)
    zone = _zone(d, ticket)
    facts = []
    if holder:
        facts.append(plain(holder, limit=60))
    if tier:
        facts.append(plain(tier, limit=30))
    if zone:
        facts.append(_("zone {zone}").format(zone=plain(zone, limit=20)))
    if d.face_distance is not None:
        facts.append(_("face {distance:.2f}").format(distance=d.face_distance))
    if ev.operator:
        facts.append(_("by {operator}").format(operator=plain(ev.operator, limit=40)))
    return " · ".join(facts)


def _code(ev) -> str:
    d = ev.decision
    parts = [d.reason.value + (f"/{d.sub.value}" if d.sub else "")]
    if d.ticket_id:
        parts.append(clip(plain(d.ticket_id), 13))
    if ev.seq is not None:
        parts.append(f"#{ev.seq}")
    if d.reason is Reason.ERROR and d.detail:
        parts.append(plain(d.detail, limit=80))
    return " · ".join(parts)


def last_use_line(ev, ctx: Context) -> str:
    """Where and when a refused ticket was used (from the structured last use)."""
    u = ev.last_use
    if u is None or u.last_ts_ms is None:
        return ""
    ts = u.last_ts_ms / 1000
    when, how_long = clock_time(ts, ctx.now), ago(ctx.now - ts)
    left = u.last_kind is Mode.EXIT
    if u.last_where is None:
        text = _("Left here ({lane}) at {time}, {ago}") if left else _("Admitted here ({lane}) at {time}, {ago}")
        return text.format(lane=plain(ctx.lane, limit=40), time=when, ago=how_long)
    text = _("Left at {where} at {time}, {ago}") if left else _("Admitted at {where} at {time}, {ago}")
    return text.format(where=plain(u.last_where, limit=60), time=when, ago=how_long)


def _zone(d, ticket) -> str | None:
    """The zone the decision checked: the ledger's (it overrides the code's claim)."""
    if ticket is not None:
        return ticket.zone
    return d.zone


def _zone_line(ev, ctx: Context, ticket=None) -> str:
    zone = _zone(ev.decision, ticket)
    here = ", ".join(plain(z, limit=20) for z in ctx.zones) or "-"
    if zone:
        return _("Ticket is for zone {zone}; this entrance takes {zones}").format(
            zone=plain(zone, limit=20), zones=here)
    return _("Ticket has no zone; this entrance takes {zones}").format(zones=here)


def view_for(ev, ctx: Context, ticket=None) -> View:
    """The view of one final lane event (or of an "open" one: the turnstile is open).
    ``ticket``: the ledger's record of the ticket (gate.decision.TicketRecord), for a
    refusal's holder and zone (a refusal's decision carries the code's claims)."""
    d = ev.decision
    w = reason_words(d.reason.value)
    facts = _facts(ev, ticket)
    code = _code(ev)
    if ev.outcome == "rolled_back":
        icon, title, line = _state("NOT_PASSED")
        return View("NOT_PASSED", f"{icon} {title}", (("explain", line), ("facts", facts)), code)
    if ev.outcome == "unconfirmed":  # the passage sensor failed (a lane fault follows)
        title = _("PASSAGE NOT KNOWN")
        return View("NOT_PASSED", f"? {title}",
                    (("explain", _("The passage sensor failed: nobody knows if the holder went through")),
                     ("facts", facts)), code)
    if d.accepted:
        if d.mode is Mode.EXIT:
            icon, title, line = _state("EXIT")
            return View("EXIT", f"{icon} {title}", (("explain", line), ("facts", facts)), code)
        why = []
        if ev.alone:
            lw = link_words("ALONE")
            why.append(("why", _("Lane {alone}: {meaning}").format(alone=lw.word, meaning=lw.meaning)))
        if d.unlisted:
            why.append(("why", _("Not in this gate's list (sold after the last sync?): check the ticket")))
        if why and d.reason is Reason.ACCEPT:
            icon, title, line = _state("CAUTION")
            return View("CAUTION", f"{icon} {title}", (*why, ("explain", line), ("facts", facts)), code)
        icon, _title, line = _state("ADMIT")
        return View("ADMIT", f"{icon} {w.headline}", (("explain", w.advice or line), ("facts", facts)), code)
    icon, refused, _line = _state("REFUSED")
    headline, advice, todo = w.headline, w.advice, w.todo
    used = ev.last_use
    if d.reason is Reason.ALREADY_USED and used is not None and used.last_kind is Mode.EXIT:
        # the holder went out: not "already in", and no copy to suspect
        headline = _("NO RE-ENTRY")
        advice = _("The holder left; this ticket does not allow re-entry")
        todo = _("Let them back in only with a supervisor (a and a PIN)")
    lines: list[tuple[str, str]] = [("explain", advice)]
    sub = sub_words(d.sub.value if d.sub else None)
    if sub:
        lines.append(("why", sub))
    where = last_use_line(ev, ctx)
    if where:
        lines.append(("where", where))
    if d.reason is Reason.WRONG_ZONE:
        lines.append(("where", _zone_line(ev, ctx, ticket)))
    if todo:
        lines.append(("todo", "→ " + todo))
    lines.append(("facts", facts))
    return View("REFUSED", f"{w.icon} {refused} · {headline}", tuple(lines), code)


# ------------------------------------------------------------------ the widget

_ROLE_STYLE = {"explain": "", "why": "bold", "where": "bold", "todo": "italic", "facts": "", "code": "dim"}


def render_words(view: View, *, width: int, height: int) -> Text:
    """The view's words for a box ``width`` cells wide and ``height`` rows high:
    the title first, then the lines by priority, broken into lines here (English
    between words, Chinese between characters: gate.text.wrap) so the widget never
    re-wraps them. A line that does not fit is left out whole, with all after it
    (what to do comes before who it was); a blank row follows the title when
    there is room."""
    width, height = max(1, width), max(1, height)
    pieces = [(view.title, "bold")]
    pieces += [(t, _ROLE_STYLE.get(role, "")) for role, t in view.lines if t]
    if view.code:
        pieces.append((clip(view.code, width), "dim"))
    kept: list[tuple[list[str], str]] = []
    rows = 0
    for text, style in pieces:
        lines = wrap(text, width)
        if rows + len(lines) > height:
            break
        kept.append((lines, style))
        rows += len(lines)
    out = Text()
    for i, (lines, style) in enumerate(kept):
        if i:
            out.append("\n")
            if i == 1 and rows < height:
                out.append("\n")
        out.append("\n".join(lines), style=style)
    return out


VERDICT_CSS = """
Verdict { height: 12; border: heavy $panel; padding: 0 1; }
Verdict #glyph { width: 14; height: 100%; content-align: left middle; display: none; }
Verdict.big #glyph { display: block; }
Verdict #words { width: 1fr; height: 100%; content-align: left middle; }
Verdict.idle { background: $surface; color: $text; border: heavy $panel; }
Verdict.accept { background: #0b5d1e; color: white; border: heavy #3fdc5a; }
Verdict.exit { background: #123f7a; color: white; border: heavy #5aa0ff; }
Verdict.caution { background: #ffb000; color: black; border: heavy #fff0b0; }
Verdict.reject { background: #8b0000; color: white; border: heavy #ff4040; }
Verdict.info { background: #3b4a5a; color: white; border: heavy #8fa3b8; }
Verdict.paused { background: #2b2b2b; color: #ffd75f; border: double #ffd75f; }
Verdict.fault { background: #6a0d6a; color: white; border: double #ff7fff; }
Verdict.fire { background: #c23b00; color: white; border: heavy #ffd75f; }
"""


class Verdict(Horizontal):
    """The verdict box: a big glyph (when there is room) beside the words."""

    # the colours of each state: tui.app.GateApp.CSS (VERDICT_CSS)

    def __init__(self, **kw):
        super().__init__(**kw)
        self.view: View | None = None
        self.words_text = Text()   # what the words panel shows now, and its box (cells, rows)
        self.words_box = (0, 0)

    def compose(self) -> ComposeResult:
        yield Static(id="glyph")
        yield Static(id="words")

    def show(self, view: View) -> None:
        self.view = view
        for cls in set(STYLE.values()):
            self.set_class(cls == view.style, cls)
        self._paint()

    def on_resize(self, _event) -> None:
        self._paint()

    def _paint(self) -> None:
        if self.view is None or not self.is_mounted:
            return
        big = self.has_class("big")
        g = self.query_one("#glyph", Static)
        box = self.content_region
        scale = 2 if big and box.height >= 2 * GLYPH_ROWS and box.width >= 120 else 1
        g.styles.width = (GLYPH_COLS + 2) * scale
        if big:
            g.update(Text("\n".join(glyph(self.view.state, scale)), style="bold"))
        width = box.width - ((GLYPH_COLS + 2) * scale if big else 0)
        self.words_text = render_words(self.view, width=width, height=box.height)
        self.words_box = (width, box.height)
        self.query_one("#words", Static).update(self.words_text)

    def render_text(self) -> str:
        """Everything the verdict says now, as plain text (tests, captures)."""
        if self.view is None:
            return ""
        return "\n".join([self.view.title, *(t for _r, t in self.view.lines if t), self.view.code])
