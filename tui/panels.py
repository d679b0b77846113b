"""The lane screen's small panels, as text fitted to a width in terminal cells
(Chinese takes two cells a character): the status line (lane, event, mode,
link), the counters and the key hints. Pure functions: no Textual widgets.

Segments are dropped whole, lowest priority first, so nothing is ever cut in
the middle of a word."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from gate.i18n import _, ngettext
from gate.text import cells, clip, plain
from gate.words import link_words, reason_words
from tui.words import KEYS, since

LINK_STYLE = {"ok": "bold black on #3fdc5a", "warn": "bold black on #ffb000", "bad": "bold white on #c00000"}
MODE_STYLE = {"entry": "bold black on #8fd3ff", "exit": "bold white on #123f7a", "paused": "bold black on #ffd75f",
              "fault": "bold white on #6a0d6a", "fire": "bold white on #c23b00"}

# sync.loop.SyncState values -> what the status line says about central
_CENTRAL = {
    "connecting": lambda ago: _("central: connecting"),
    "online": lambda ago: _("synced {ago}").format(ago=ago),
    "degraded": lambda ago: _("central answers with errors; synced {ago}").format(ago=ago),
    "offline": lambda ago: _("central unreachable; synced {ago}").format(ago=ago),
    "clock_wrong": lambda ago: _("CLOCK WRONG: set this gate's clock"),
    "unauthorised": lambda ago: _("NOT ENROLLED: enrol again"),
}


@dataclass(frozen=True, slots=True)
class Status:
    lane: str
    event: str
    mode: str            # entry | exit
    paused: bool
    link: str            # ONLINE | VENUE | ALONE
    fault: bool = False
    fault_kind: str = ""  # RELAY / SENSOR / STORE, translated
    fire: bool = False   # a fire alarm holds the turnstiles released
    peers: int | None = None
    central: str | None = None      # a SyncState value, None: no central set up
    last_sync: float | None = None
    outbox: int | None = None
    now: float = 0.0


def _fit(segments: list[tuple[int, Text]], width: int, sep: str = "  ") -> Text:
    """Join ``(priority, text)`` segments (in display order) with ``sep``, dropping
    the lowest priorities (highest number) until the line fits ``width`` cells."""
    keep = list(segments)
    while keep:
        total = sum(cells(t.plain) for _p, t in keep) + cells(sep) * (len(keep) - 1)
        if total <= width:
            break
        worst = max(range(len(keep)), key=lambda i: (keep[i][0], i))
        if len(keep) == 1:
            only = keep[0][1]
            return Text(clip(only.plain, width), style=only.style)
        keep.pop(worst)
    out = Text()
    for i, (_p, t) in enumerate(keep):
        if i:
            out.append(sep)
        out.append_text(t)
    return out


def status_line(st: Status, width: int) -> Text:
    """Mode, lane, link, event and central in one line, with colour and a word."""
    if st.fire:
        mode_word, mode_style = _("FIRE ALARM"), MODE_STYLE["fire"]
    elif st.fault:
        mode_word = _("FAULT {kind}").format(kind=st.fault_kind) if st.fault_kind else _("FAULT")
        mode_style = MODE_STYLE["fault"]
    elif st.paused:
        mode_word, mode_style = _("PAUSED"), MODE_STYLE["paused"]
    elif st.mode == "exit":
        mode_word, mode_style = _("EXIT"), MODE_STYLE["exit"]
    else:
        mode_word, mode_style = _("ENTRY"), MODE_STYLE["entry"]
    lw = link_words(st.link)
    segs: list[tuple[int, Text]] = [
        (0, Text(f" {mode_word} ", style=mode_style)),
        (1, Text(plain(st.lane, limit=32), style="bold")),
        (0, Text(f" ● {lw.word} ", style=LINK_STYLE[lw.style])),
    ]
    if st.peers is not None:
        segs.append((4, Text(ngettext("{n} peer", "{n} peers", st.peers).format(n=st.peers))))
    segs.append((3, Text(plain(st.event, limit=40))))
    if st.central is not None:
        say = _CENTRAL.get(st.central)
        text = say(since(st.last_sync, st.now)) if say else plain(st.central, limit=30)
        segs.append((2 if st.central in ("unauthorised", "clock_wrong") else 5, Text(text)))
    elif st.link == "ALONE":
        segs.append((5, Text(_("no central set up"), style="dim")))
    if st.outbox:
        segs.append((6, Text(_("outbox {n}").format(n=st.outbox))))
    return _fit(segs, width)


def counter_items(counters) -> tuple[list[Text], list[Text]]:
    """(totals, refusals by reason, most first) as short texts."""
    rejected = sum(counters.rejected.values())
    totals = [Text(_("admitted {n}").format(n=counters.admitted), style="bold"),
              Text(_("inside {n}").format(n=counters.inside)),
              Text(_("exits {n}").format(n=counters.exited)),
              Text(_("refused {n}").format(n=rejected), style="bold" if rejected else "")]
    if counters.rolled_back:
        totals.append(Text(_("not passed {n}").format(n=counters.rolled_back)))
    top = sorted(counters.rejected.items(), key=lambda kv: (-kv[1], kv[0]))
    reasons = [Text(f"{reason_words(code).headline.lower()} {n}") for code, n in top if n]
    return totals, reasons


_PRIORITY = (0, 2, 3, 1, 4)  # admitted, inside, exits, refused, not passed


def counters_strip(counters, width: int) -> Text:
    """One line: the totals, then as many refusal reasons as fit (+N more)."""
    totals, reasons = counter_items(counters)
    line = Text(" · ").join(totals)
    if cells(line.plain) > width:  # keep admitted and refused longest
        return _fit([(_PRIORITY[i], t) for i, t in enumerate(totals)], width, sep=" · ")
    shown = 0
    for r in reasons:
        rest = len(reasons) - shown - 1
        tail = f" +{rest}" if rest else ""
        piece = (": " if shown == 0 else ", ") + r.plain
        if cells(line.plain) + cells(piece) + cells(tail) > width:
            break
        line.append(piece)
        shown += 1
    if shown < len(reasons):
        more = f" +{len(reasons) - shown}"
        if cells(line.plain) + cells(more) <= width:
            line.append(more, style="dim")
    return line


def counters_column(counters, width: int, height: int) -> Text:
    """One item a line (the wide layout's side panel)."""
    totals, reasons = counter_items(counters)
    lines = [Text(clip(t.plain, width), style=t.style) for t in totals]
    if reasons:
        lines.append(Text(_("refused by reason:"), style="dim"))
        room = max(0, height - len(lines))
        for i, r in enumerate(reasons):
            if i == room - 1 and len(reasons) > room:
                lines.append(Text(f"+{len(reasons) - i}", style="dim"))
                break
            if i >= room:
                break
            lines.append(Text("  " + clip(r.plain, width - 2)))
    return Text("\n").join(lines[:max(1, height)])


def key_lines(width: int, *, p_label: str | None = None) -> list[Text]:
    """The key hints, wrapped at whole hints to ``width`` cells; ``p_label`` is what
    `p` does now when that is not "pause" (resume, clear the fault)."""
    lines: list[Text] = [Text()]
    gap = 2 if width >= 80 else 1
    for key, label in KEYS:
        hint = Text()
        hint.append(f" {key} " if gap == 2 else key, style="bold reverse")
        hint.append(f" {_(p_label if key == 'p' and p_label else label)}")
        cur = lines[-1]
        need = cells(hint.plain) + (gap if cur.plain else 0)
        if cur.plain and cells(cur.plain) + need > width:
            lines.append(Text())
            cur = lines[-1]
        if cur.plain:
            cur.append(" " * gap)
        cur.append_text(hint)
    return lines
