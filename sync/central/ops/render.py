"""Jinja2 for the ops room: templates in ``templates/`` with autoescape on and the
i18n extension, one environment per language (gettext domain ``ops``; reason
codes in the staff UI's words, domain ``gate``). Values are escaped by Jinja;
nothing is marked safe except what a template builds itself."""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache

from jinja2 import Environment, PackageLoader, select_autoescape

from gate.i18n import LANG_NAMES, translations
from gate.words import link_words, reason_words
from sync.central.ops import words

HTML_LANG = {"en": "en", "zh_CN": "zh-CN"}


def hms(ts) -> str:
    if ts is None:
        return "—"
    try:
        return datetime.fromtimestamp(float(ts), timezone.utc).strftime("%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "?"


def hm_date(ts) -> str:
    if ts is None:
        return "—"
    try:
        return datetime.fromtimestamp(float(ts), timezone.utc).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):
        return "?"


@lru_cache(maxsize=None)
def env(lang: str) -> Environment:
    e = Environment(loader=PackageLoader("sync.central.ops", "templates"), autoescape=select_autoescape(["html"]),
                    extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    t = translations(lang, "ops")
    e.install_gettext_translations(t, newstyle=False)
    gate_t = translations(lang, "gate")

    def ago(seconds) -> str:
        if seconds is None:
            return "—"
        s = int(seconds)
        if s < 60:
            return t.gettext("{s} s").format(s=s)
        if s < 3600:
            return t.gettext("{m} min {s} s").format(m=s // 60, s=f"{s % 60:02d}")
        return t.gettext("{h} h {m} min").format(h=s // 3600, m=f"{s % 3600 // 60:02d}")

    def offset(ms) -> str:
        """Central time minus the gate's: positive means the gate's clock is behind."""
        if ms is None:
            return "—"
        if abs(ms) < 50:
            return "0.0 s"
        secs = f"{abs(ms) / 1000:.1f}"
        return (t.gettext("{s} s behind") if ms > 0 else t.gettext("{s} s ahead")).format(s=secs)

    def reason(code) -> str:
        return reason_words(code or "ERROR", lang).headline if code else "—"

    def word(table: dict, code: str, *fields) -> str:
        return t.gettext(table[code]) if code in table else code

    e.globals.update(
        lang=lang, html_lang=HTML_LANG.get(lang, "en"), LANG_NAMES=LANG_NAMES, PAGES=words.PAGES,
        ALERT_WORDS=words.ALERT_WORDS, NOTABLE_WORDS=words.NOTABLE_WORDS, STATE_WORDS=words.STATE_WORDS,
        MODE_WORDS=words.MODE_WORDS, PROBLEM_WORDS=words.PROBLEM_WORDS, reason=reason, reason_words=lambda c: reason_words(c, lang),
        link_words=lambda s: link_words(s, lang), ago=ago, offset=offset, hms=hms, hm_date=hm_date,
        yesno=lambda v: t.gettext("yes") if v else t.gettext("no"), gate_gettext=gate_t.gettext)
    e.filters.update(hms=hms, ago=ago, offset=offset)
    return e


def render(lang: str, template: str, **ctx) -> str:
    return env(lang).get_template(template).render(**ctx)
