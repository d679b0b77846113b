"""Translations: gettext catalogues, English source strings, Simplified Chinese.

The conventions every room follows (command line, staff UI, ops room, wallet):

- Source strings are English and marked where they are written: ``_("...")``.
  Placeholders are ``str.format`` fields filled *after* translation, so the
  translator can move them: ``_("admitted at {lane} {ago} ago").format(lane=..., ago=...)``.
  Never build a sentence from translated pieces.
- Tables built at import time mark their strings with ``N_("...")`` (no lookup)
  and translate where they are shown: ``_(WORDS[code].headline)``.
- Plurals: ``ngettext("{n} peer", "{n} peers", n).format(n=n)``.
- Machine output is never translated: ``--json``, reason codes, scan-log
  records, HTTP API bodies, log lines meant for tools.
- Domains: ``gate`` (shared words for reason codes and link states, the
  command line, the staff UI), ``ops`` (the ops room), ``wallet`` (the holder
  wallet), ``argparse`` (the standard library's own command-line words:
  "usage:", "error:", "show this help message and exit"; extracted from
  argparse.py, installed by :func:`install_argparse`). Catalogues live in ``gate/locale/<lang>/LC_MESSAGES/<domain>.po``
  with the compiled ``.mo`` beside them; ``scripts/i18n.py`` extracts, updates,
  compiles and checks them (``tests/test_i18n.py`` fails on a missing, empty,
  fuzzy or stale translation).
- The process language (command line, staff UI) comes from ``--lang``, else
  the first of ``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG`` that is set
  (gettext's order). Per-request rooms (ops room, wallet) negotiate from
  ``Accept-Language`` with :func:`accept_language` and let the user switch.

Only the standard library's ``gettext`` runs here; Babel is for extraction.
"""

from __future__ import annotations

import gettext as _gettext
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Mapping

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
SUPPORTED: tuple[str, ...] = ("en", "zh_CN")
DEFAULT = "en"
DOMAINS: tuple[str, ...] = ("gate", "ops", "wallet", "argparse")
# the names a user may give with --lang or a switch, and what they mean
LANG_NAMES: dict[str, str] = {"en": "English", "zh_CN": "简体中文"}

_TRADITIONAL = re.compile(r"^zh[-_](hant|tw|hk|mo)\b", re.I)


def normalise(tag: str | None) -> str | None:
    """The supported language a locale name or language tag means, or None.

    ``zh``, ``zh_CN.UTF-8``, ``zh-Hans``, ``zh-SG`` → ``zh_CN``; ``en_GB``,
    ``C``, ``POSIX`` → ``en``; Traditional Chinese and other languages → None."""
    if not tag:
        return None
    t = tag.strip().split(".")[0].split("@")[0]
    if not t:
        return None
    if t in ("C", "POSIX"):
        return "en"
    low = t.lower().replace("-", "_")
    if low == "zh" or low.startswith("zh_"):
        return None if _TRADITIONAL.match(low) else "zh_CN"
    if low == "en" or low.startswith("en_"):
        return "en"
    return None


def from_environ(environ: Mapping[str, str] | None = None) -> str:
    """The language gettext would pick from the environment (the first of
    LANGUAGE, LC_ALL, LC_MESSAGES, LANG that is set decides), or English."""
    env = os.environ if environ is None else environ
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var, "")
        if not value:
            continue
        for part in value.split(":"):
            lang = normalise(part)
            if lang is not None:
                return lang
        return DEFAULT
    return DEFAULT


def accept_language(header: str | None) -> str:
    """The best supported language for an HTTP ``Accept-Language`` header."""
    best, best_q = DEFAULT, -1.0
    for i, item in enumerate((header or "")[:1000].split(",")[:40]):
        tag, _, params = item.strip().partition(";")
        q = 1.0
        m = re.search(r"q\s*=\s*([0-9.]+)", params)
        if m:
            try:
                q = float(m.group(1))
            except ValueError:
                q = 0.0
        lang = normalise(tag)
        if lang is not None and q > 0 and q - i * 1e-6 > best_q:
            best, best_q = lang, q - i * 1e-6
    return best


def choose(value: str | None) -> str:
    """A language from a user's choice (``--lang``, a cookie), else English.
    Unknown values fall back rather than fail: a bad cookie must not break a page."""
    return normalise(value) or DEFAULT


@lru_cache(maxsize=None)
def translations(lang: str, domain: str = "gate") -> _gettext.NullTranslations:
    """The catalogue of ``domain`` in ``lang`` (English: the source strings)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown translation domain {domain!r}")
    if lang == DEFAULT or lang not in SUPPORTED:
        return _gettext.NullTranslations()
    return _gettext.translation(domain, LOCALE_DIR, languages=[lang], fallback=True)


def catalogue(lang: str, domain: str) -> dict[str, str]:
    """Every translated message of a domain as ``{msgid: msgstr}`` (for a web
    page's script; plural forms are left out)."""
    t = translations(lang, domain)
    cat = getattr(t, "_catalog", {})
    return {k: v for k, v in cat.items() if isinstance(k, str) and k}


# ------------------------------------------------------------------ the process language

_current: list[str] = []


def set_language(lang: str | None) -> str:
    """Fix the process language (``--lang``; None: from the environment)."""
    chosen = choose(lang) if lang else from_environ()
    _current[:] = [chosen]
    return chosen


def current() -> str:
    if not _current:
        _current.append(from_environ())
    return _current[0]


def _(message: str) -> str:
    """Translate into the process language (domain ``gate``)."""
    return translations(current(), "gate").gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current(), "gate").ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Mark a string for extraction without translating it (tables built at import)."""
    return message


def install_argparse() -> None:
    """argparse's own words ("usage:", "error:", "the following arguments are
    required", the ``-h`` help) in the process language. argparse looks them up
    through the ``_``/``ngettext`` it imported from gettext at import time (the
    default domain, with the environment's language); point those two at our
    ``argparse`` catalogue in the language :func:`set_language` chose. Call it
    before building a parser (``-h``'s help is looked up when a parser is made)."""
    import argparse

    t = translations(current(), "argparse")
    argparse._ = t.gettext
    argparse.ngettext = t.ngettext
