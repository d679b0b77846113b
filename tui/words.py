"""What staff read: the reason words live in gate/words.py (shared with the
command line, the ops room and the wallet); this module adds the staff
screen's own: verdict states, "how long ago", key hints.

Every string is English source text marked for gettext (domain ``gate``,
conventions in gate/i18n.py) and translated when shown, so the screen follows
the process language (``--lang``, ``LANGUAGE``/``LC_ALL``/``LC_MESSAGES``/``LANG``).
"""

from __future__ import annotations

import time

from gate.i18n import N_, _
from gate.words import reason_words


def words(reason: str) -> tuple[str, str, str, str]:
    """(icon, headline, advice, style) for a reason code, translated."""
    w = reason_words(reason)
    return w.icon, w.headline, w.advice, w.style


# The verdict states: icon, title and the line under it (what happens now).
STATE_WORDS: dict[str, tuple[str, str, str]] = {
    "IDLE_ENTRY": ("▶", N_("READY · ENTRY"), N_("Show your ticket")),
    "IDLE_EXIT": ("◀", N_("READY · EXIT"), N_("Scan the ticket to leave")),
    "ADMIT": ("✔", N_("ADMIT"), N_("Let the holder through")),
    "EXIT": ("◀", N_("EXIT RECORDED"), N_("The holder may leave")),
    "REFUSED": ("✖", N_("REFUSED"), ""),
    "CAUTION": ("!", N_("ADMIT · CAUTION"), N_("Let the holder through, and look twice")),
    "NOT_PASSED": ("↺", N_("NOT PASSED"), N_("Nobody went through: the entry was given back")),
    "PAUSED": ("⏸", N_("LANE PAUSED"), N_("Every code is refused and logged")),
    "FAULT": ("⚠", N_("FAULT"), N_("The lane admits nothing until a supervisor clears the fault")),
    "FIRE": ("▲", N_("FIRE ALARM · LANE OPEN"),
             N_("Every turnstile is released: let everyone out, no ticket is checked")),
}


def ago(seconds: float) -> str:
    """'10 s ago', '3 min ago', '2 h ago', translated."""
    s = max(0, int(round(seconds)))
    if s < 90:
        return _("{n} s ago").format(n=s)
    if s < 90 * 60:
        return _("{n} min ago").format(n=round(s / 60))
    return _("{n} h ago").format(n=round(s / 3600))


def since(ts: float | None, now: float) -> str:
    """How old something is, for status lines ('never' when it never happened)."""
    if ts is None:
        return _("never")
    return ago(now - ts)


def clock_time(ts: float, now: float) -> str:
    """A local time of day; with the date when it is not within the last 20 hours."""
    fmt = "%H:%M:%S" if abs(now - ts) < 20 * 3600 else "%Y-%m-%d %H:%M"
    try:
        return time.strftime(fmt, time.localtime(ts))
    except (OverflowError, OSError, ValueError):
        return "?"


# Keys at the bottom of the lane screen: (key, label). Labels are short on purpose.
KEYS: tuple[tuple[str, str], ...] = (
    ("a", N_("admit")),
    ("d", N_("deny")),
    ("l", N_("lookup")),
    ("m", N_("entry/exit")),
    ("p", N_("pause")),
    ("s", N_("sync")),
    ("q", N_("quit")),
)
# what `p` does on a paused or faulted lane (the key line says so instead of "pause")
KEY_P_PAUSED, KEY_P_FAULT = N_("resume"), N_("clear fault")
