"""The translation layer (gate/i18n.py) and its catalogues (scripts/i18n.py).

How these could fail: a marked string without a Chinese translation, a
translation that drops or renames a placeholder, a stale .mo, a locale
variable read in the wrong order, Traditional Chinese taken for Simplified."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from gate import i18n
from gate.text import cells, clip, pad, plain
from gate.words import REASONS, reason_words

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("i18n_script", ROOT / "scripts" / "i18n.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_catalogue_is_complete_current_and_compiled():
    # Lists every untranslated/fuzzy message, placeholder mismatch, message in the
    # code but not in the catalogue (or the reverse) and stale .mo file.
    assert _script().check() == []


@pytest.mark.parametrize(("env", "want"), [
    ({}, "en"),
    ({"LANG": "zh_CN.UTF-8"}, "zh_CN"),
    ({"LANG": "en_US.UTF-8", "LC_MESSAGES": "zh_CN.UTF-8"}, "zh_CN"),
    ({"LC_ALL": "en_GB.UTF-8", "LANG": "zh_CN.UTF-8"}, "en"),
    ({"LANGUAGE": "fr:zh_CN", "LANG": "en_US.UTF-8"}, "zh_CN"),
    ({"LANGUAGE": "", "LANG": "zh_SG.UTF-8"}, "zh_CN"),
    ({"LANG": "zh_TW.UTF-8"}, "en"),
    ({"LANG": "C"}, "en"),
    ({"LANG": "de_DE.UTF-8"}, "en"),
])
def test_the_language_follows_the_environment_in_gettexts_order(env, want):
    assert i18n.from_environ(env) == want


@pytest.mark.parametrize(("header", "want"), [
    (None, "en"), ("", "en"), ("zh-CN,zh;q=0.9,en;q=0.8", "zh_CN"), ("en-US,en;q=0.9,zh;q=0.8", "en"),
    ("de-DE, zh-Hans;q=0.5", "zh_CN"), ("zh-TW", "en"), ("zh;q=0, en;q=0.1", "en"), ("*", "en"),
    ("zh-CN;q=abc", "zh_CN"),
])
def test_accept_language_picks_the_best_supported(header, want):
    assert i18n.accept_language(header) == want


def test_reason_words_exist_for_every_reason_and_translate():
    from gate.decision import Reason

    assert set(REASONS) == {r.value for r in Reason}
    for code in REASONS:
        en, zh = reason_words(code, "en"), reason_words(code, "zh_CN")
        assert en.headline and en.advice
        assert zh.headline != en.headline and zh.icon == en.icon and zh.style == en.style, code


def test_machine_words_never_depend_on_the_language():
    # a code unknown to this gate is shown as itself in every language
    assert reason_words("SOMETHING_NEW", "zh_CN").headline == "SOMETHING_NEW"


def test_cli_process_language_comes_from_the_environment():
    code = "from gate import i18n; from gate.words import reason_words; print(reason_words('ACCEPT').headline)"
    env = {"PATH": "/usr/bin:/bin", "LANG": "zh_CN.UTF-8"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.stdout.strip() == "放行", out.stderr


def test_plain_drops_terminal_escapes_and_bidi_overrides():
    hostile = "Ann\x1b[2J\x1b[32mACCEPT\x07\u202eevil\u200b\nnext"
    shown = plain(hostile)
    assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown and "\n" not in shown
    assert shown.startswith("Ann") and "ACCEPT" in shown and "next" in shown
    assert plain("张三 [bold]x[/]") == "张三 [bold]x[/]"  # markup is the renderer's job: kept as text
    assert plain("a" * 50, limit=10) == "a" * 9 + "…"


def test_chinese_takes_two_cells():
    assert cells("放行") == 4 and cells("ADMIT") == 5 and cells("e\u0301") == 1
    assert cells(pad("放行", 6)) == 6 and pad("放行", 6, right=True) == "  放行"
    assert cells(clip("请让持票人通过", 7)) <= 7 and clip("abc", 5) == "abc"


def test_wrap_breaks_english_between_words_and_chinese_between_characters():
    from gate.text import wrap
    en = wrap("A copy, or passed back? Lookup (l) shows where", 20)
    assert en == ["A copy, or passed", "back? Lookup (l)", "shows where"]
    zh = wrap("是复制票还是转手票？查询（l）可看到入场地点；如有疑问请呼叫主管", 20)
    assert all(cells(line) <= 20 for line in zh) and "".join(zh).startswith("是复制票")
    assert not any(line[0] in "，。；：？！）" for line in zh)  # no closing punctuation starts a line
    assert wrap("（north-1）入场", 12)[0] in ("（north-1）", "（north-1）入")  # a Latin word stays whole
    assert wrap("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]  # only a word wider than the line is cut
    assert wrap("放行", 1) == ["放", "行"]  # a line narrower than one character still ends
