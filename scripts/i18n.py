#!/usr/bin/env python3
"""Translation catalogues: extract, update, compile, check (Babel).

    .venv/bin/python scripts/i18n.py update    # extract marked strings, merge into every .po, compile .mo
    .venv/bin/python scripts/i18n.py check     # exit 1 and list what is missing, empty, fuzzy or stale
    .venv/bin/python scripts/i18n.py compile   # .po -> .mo only

Domains and the files their strings come from (gate/i18n.py has the conventions):

- ``ops``: ``sync/central/ops/`` (Python, Jinja2 templates ``*.html``, scripts ``*.js``)
- ``wallet``: ``sync/central/wallet/`` (the same kinds)
- ``gate``: every other Python file of the product (gate/, tui/, hardware/, sync/, crypto/)
- ``argparse``: the standard library's argparse.py, the running Python's (its own words:
  "usage:", "error:", ...; gate.i18n.install_argparse)

The .po files are written sorted by message, without line numbers and with a
fixed header date, so two branches that add messages merge cleanly and an
unchanged catalogue is byte-for-byte unchanged. A translation is kept while
its English source string is unchanged; a changed source string must be
translated again (``check`` lists it).
"""

from __future__ import annotations

import datetime as _dt
import io
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gate.i18n import DOMAINS, LOCALE_DIR, SUPPORTED  # noqa: E402

PROJECT = "gate-appliance"
FIXED_DATE = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)
KEYWORDS = {"_": None, "N_": None, "gettext": None, "ngettext": (1, 2)}
JS_KEYWORDS = {"_": None, "ngettext": (1, 2)}
OPS_DIR = ROOT / "sync" / "central" / "ops"
WALLET_DIR = ROOT / "sync" / "central" / "wallet"
PRODUCT_DIRS = ("gate", "tui", "hardware", "sync", "crypto")
TRANSLATED = [lang for lang in SUPPORTED if lang != "en"]
STDLIB = {"argparse": "argparse"}  # domain -> the standard library module whose messages it holds
_FIELD = re.compile(r"\{[^{}]*\}|%\([a-z_]+\)[sd]|%[sd]")


def _domain_of(path: Path) -> str | None:
    if OPS_DIR in path.parents:
        return "ops"
    if WALLET_DIR in path.parents:
        return "wallet"
    if path.suffix == ".py":
        return "gate"
    return None


def _files(domain: str) -> list[Path]:
    if domain in STDLIB:
        import importlib
        return [Path(importlib.import_module(STDLIB[domain]).__file__)]
    found = []
    for top in PRODUCT_DIRS:
        for path in sorted((ROOT / top).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or "locale" in path.parts:
                continue
            if path.suffix not in (".py", ".html", ".js"):
                continue
            if path.suffix != ".py" and domain == "gate":
                continue
            if _domain_of(path) == domain:
                found.append(path)
    return found


def extract(domain: str):
    """The domain's messages as a Babel catalogue (source strings only)."""
    from babel.messages.catalog import Catalog
    from babel.messages.extract import extract_from_file

    cat = Catalog(project=PROJECT, domain=domain, creation_date=FIXED_DATE, revision_date=FIXED_DATE)
    for path in _files(domain):
        rel = path.relative_to(ROOT).as_posix() if ROOT in path.parents else f"<python>/{path.name}"
        if path.suffix == ".py":
            method, kw, opts = "python", KEYWORDS, {}
        elif path.suffix == ".js":
            method, kw, opts = "javascript", JS_KEYWORDS, {}
        else:
            method, kw = "jinja2.ext:babel_extract", KEYWORDS
            opts = {"extensions": "jinja2.ext.i18n", "trimmed": "true"}
        for lineno, message, comments, context in extract_from_file(
                method, str(path), keywords=kw, options=opts, strip_comment_tags=True):
            cat.add(message, locations=[(rel, lineno)], auto_comments=comments, context=context)
    return cat


def _po_path(lang: str, domain: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{domain}.po"


def read(lang: str, domain: str):
    from babel.messages.pofile import read_po

    path = _po_path(lang, domain)
    if not path.exists():
        return None
    with path.open("rb") as fh:
        return read_po(fh, locale=lang, domain=domain)


def _render_po(cat) -> bytes:
    from babel.messages.pofile import write_po

    buf = io.BytesIO()
    write_po(buf, cat, width=100, sort_output=True, omit_header=False, include_lineno=False,
             ignore_obsolete=True, include_previous=False)
    return buf.getvalue()


def _render_mo(cat) -> bytes:
    from babel.messages.mofile import write_mo

    buf = io.BytesIO()
    write_mo(buf, cat, use_fuzzy=False)
    return buf.getvalue()


def merged(lang: str, domain: str):
    """The extracted catalogue with the existing translations of ``lang`` carried over."""
    from babel.messages.catalog import Catalog

    source = extract(domain)
    old = read(lang, domain)
    cat = Catalog(locale=lang, domain=domain, project=PROJECT, creation_date=FIXED_DATE,
                  revision_date=FIXED_DATE, fuzzy=False)
    cat.last_translator = "gate-appliance translators"
    cat.language_team = f"{lang}"
    cat.version = "1"
    cat.header_comment = (f"# {domain}: the gate appliance's {lang} messages (scripts/i18n.py; conventions in gate/i18n.py)\n#")
    for msg in source:
        if not msg.id:
            continue
        string = ("", "") if isinstance(msg.id, (list, tuple)) else ""
        flags = set()
        if old is not None:
            prev = old.get(msg.id, context=msg.context)
            if prev is not None and prev.string and "fuzzy" not in prev.flags:
                string = prev.string
        cat.add(msg.id, string=string, locations=msg.locations, auto_comments=msg.auto_comments,
                context=msg.context, flags=flags)
    return cat


def update() -> None:
    for domain in DOMAINS:
        for lang in TRANSLATED:
            cat = merged(lang, domain)
            path = _po_path(lang, domain)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_render_po(cat))
            path.with_suffix(".mo").write_bytes(_render_mo(cat))
            missing = sum(1 for m in cat if m.id and not _done(m))
            print(f"{path.relative_to(ROOT)}: {len([m for m in cat if m.id])} messages, {missing} untranslated")


def compile_all() -> None:
    for domain in DOMAINS:
        for lang in TRANSLATED:
            cat = read(lang, domain)
            if cat is not None:
                _po_path(lang, domain).with_suffix(".mo").write_bytes(_render_mo(cat))


def _done(msg) -> bool:
    if "fuzzy" in msg.flags:
        return False
    if isinstance(msg.string, (list, tuple)):
        return all(msg.string)
    return bool(msg.string)


def _fields(text: str) -> list[str]:
    return sorted(_FIELD.findall(text))


def check() -> list[str]:
    """Every problem with the catalogues, one line each (empty: all good)."""
    problems: list[str] = []
    for domain in DOMAINS:
        source = extract(domain)
        ids = {(m.id if isinstance(m.id, str) else tuple(m.id), m.context) for m in source if m.id}
        for lang in TRANSLATED:
            po = _po_path(lang, domain)
            cat = read(lang, domain)
            if cat is None:
                if ids:
                    problems.append(f"{po.relative_to(ROOT)}: missing ({len(ids)} messages to translate);"
                                    " run scripts/i18n.py update")
                continue
            have = {(m.id if isinstance(m.id, str) else tuple(m.id), m.context) for m in cat if m.id}
            for mid, _ctx in sorted(ids - have, key=str):
                problems.append(f"{po.relative_to(ROOT)}: not in the catalogue: {mid!r} (run scripts/i18n.py update)")
            for mid, _ctx in sorted(have - ids, key=str):
                problems.append(f"{po.relative_to(ROOT)}: no longer in the code: {mid!r} (run scripts/i18n.py update)")
            for m in cat:
                if not m.id:
                    continue
                if not _done(m):
                    problems.append(f"{po.relative_to(ROOT)}: untranslated or fuzzy: {m.id!r}")
                    continue
                sources = [m.id] if isinstance(m.id, str) else list(m.id)
                strings = [m.string] if isinstance(m.string, str) else list(m.string)
                want = _fields(sources[-1])
                for s in strings:
                    if _fields(s) != want:
                        problems.append(f"{po.relative_to(ROOT)}: placeholders differ in {m.id!r}: "
                                        f"{_fields(s)} vs {want}")
            mo = po.with_suffix(".mo")
            if not mo.exists() or mo.read_bytes() != _render_mo(cat):
                problems.append(f"{mo.relative_to(ROOT)}: stale: run scripts/i18n.py compile")
            if po.read_bytes() != _render_po(merged(lang, domain)):
                problems.append(f"{po.relative_to(ROOT)}: not in canonical form: run scripts/i18n.py update")
    return problems


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "check"
    if cmd == "update":
        update()
        return 0
    if cmd == "compile":
        compile_all()
        return 0
    if cmd == "check":
        problems = check()
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s)" if problems else "catalogues complete")
        return 1 if problems else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
