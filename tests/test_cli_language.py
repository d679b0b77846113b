"""The ``gate`` command line speaks the operator's language (issue 21).

How this could fail: a command or option added with English-only help (not
marked with ``_()``, or marked but left out of the catalogue), help built
before the language is chosen, an error raised with an f-string instead of a
translated message, Chinese help that argparse cannot wrap (it breaks only at
spaces), or a --json output that changes with the language.

The parser is walked, so a new command is checked without touching this file.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_gate
from gate import i18n
from gate.text import cells

ROOT = Path(__file__).resolve().parent.parent
HAN = re.compile(r"[\u4e00-\u9fff]")

# Commands whose help is still English (none left: run, tui, doctor, central ops
# and central device name were the last). Add an entry only while its strings are
# being marked and translated, and remove it when they are.
NOT_YET: set[tuple[str, ...]] = set()

# help texts that are the same in every language (a URL pattern, a format)
SAME_IN_EVERY_LANGUAGE = {"pretix+https://HOST/ORGANIZER/EVENT?list=ID"}


def _commands(parser: argparse.ArgumentParser, prefix=()):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield from _commands(command, prefix + (name,))


def _not_yet(path: tuple[str, ...]) -> bool:
    return any(path[:len(p)] == p for p in NOT_YET)


@pytest.fixture
def zh_parser():
    from gate.app.cli import build_parser

    before = i18n.current()
    i18n.set_language("zh_CN")
    i18n.install_argparse()
    try:
        yield build_parser()
    finally:
        i18n.set_language(before)
        i18n.install_argparse()


def _texts(path, parser):
    """(where, text) for every text a person reads in ``gate PATH --help``."""
    where = "gate " + " ".join(path)
    if parser.description:
        yield f"{where}: description", parser.description
    if parser.epilog:
        yield f"{where}: epilog", parser.epilog
    for action in parser._actions:
        if action.help and action.help is not argparse.SUPPRESS:
            yield f"{where} {'/'.join(action.option_strings) or action.dest}", action.help
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if not _not_yet(path + (choice.dest,)):
                    yield f"{where} {choice.dest} (in the command list)", choice.help


def test_every_commands_help_is_chinese_under_zh_cn(zh_parser):
    commands = list(_commands(zh_parser))
    assert len(commands) > 40  # the walk found the command tree, not just the top
    english = [f"{where}: {text!r}" for path, parser in commands if not _not_yet(path)
               for where, text in _texts(path, parser)
               if not HAN.search(text) and text not in SAME_IN_EVERY_LANGUAGE]
    assert not english, "help still in English under zh_CN:\n" + "\n".join(english)


def test_chinese_help_fits_the_terminal(zh_parser, monkeypatch):
    # argparse alone breaks only at spaces: a Chinese paragraph became one 200-cell line
    monkeypatch.setenv("COLUMNS", "80")
    for path, parser in _commands(zh_parser):
        if _not_yet(path):
            continue
        for line in parser.format_help().splitlines():
            if HAN.search(line):
                assert cells(line) <= 80, (path, line)


def _gate(args, lang: str, tmp_path: Path, stdin: str = "") -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "LANG": lang, "HOME": str(tmp_path),
           "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-c", "import sys; from gate.app.cli import main; sys.exit(main())",
                           *args], capture_output=True, text=True, env=env, cwd=ROOT, input=stdin, timeout=120)


def test_common_errors_follow_lang_chinese_and_english(tmp_path):
    data = tmp_path / "g"
    # a gate not set up
    zh = _gate(["--data", str(data), "keys", "list"], "zh_CN.UTF-8", tmp_path)
    en = _gate(["--data", str(data), "keys", "list"], "C", tmp_path)
    assert zh.returncode == en.returncode == 2
    assert zh.stderr.startswith("gate：错误：") and "尚未设置闸机" in zh.stderr, zh.stderr
    assert en.stderr.startswith("gate: error: no gate set up in"), en.stderr
    # a bad --interval: argparse's words and ours
    zh = _gate(["sync", "--interval", "0"], "zh_CN.UTF-8", tmp_path)
    en = _gate(["sync", "--interval", "0"], "C", tmp_path)
    assert zh.returncode == en.returncode == 2
    assert "参数 --interval：'0' 秒超出范围" in zh.stderr, zh.stderr
    assert "argument --interval: '0' seconds is out of range" in en.stderr, en.stderr
    # a missing key file: named, and what to do, in the reader's language
    assert _gate(["--data", str(data), "init", "--event", "E"], "C", tmp_path).returncode == 0
    (data / "keys" / "device.key").unlink()
    zh = _gate(["--data", str(data), "keys", "list"], "zh_CN.UTF-8", tmp_path)
    en = _gate(["--data", str(data), "keys", "list"], "C", tmp_path)
    assert zh.returncode == en.returncode == 2
    assert "device.key 不存在" in zh.stderr and "请从本闸机的备份中恢复" in zh.stderr, zh.stderr
    assert "device.key is missing" in en.stderr and "restore it from this gate's backup" in en.stderr, en.stderr
    # --lang beats the environment
    forced = _gate(["--lang", "en", "--data", str(data), "keys", "list"], "zh_CN.UTF-8", tmp_path)
    assert forced.stderr == en.stderr


def test_printed_lines_are_translated_and_json_is_byte_identical(tmp_path):
    data = tmp_path / "g"
    zh = _gate(["--data", str(data), "init", "--event", "E", "--require-rotating"], "zh_CN.UTF-8", tmp_path)
    assert zh.returncode == 0 and "就绪" in zh.stdout and "仅限动态票码" in zh.stdout, zh.stdout + zh.stderr
    zh = _gate(["--data", str(data), "ledger", "stats"], "zh_CN.UTF-8", tmp_path)
    en = _gate(["--data", str(data), "ledger", "stats"], "C", tmp_path)
    assert "门票" in zh.stdout and "tickets" in en.stdout and not HAN.search(en.stdout)
    for args in (["ledger", "stats", "--json"], ["keys", "list", "--json"],
                 ["verify", "--json", "--dry-run", "--now", "1800000000", "NOT-A-TICKET"],
                 ["bus", "status", "--json"]):
        zh = _gate(["--data", str(data), *args], "zh_CN.UTF-8", tmp_path)
        en = _gate(["--data", str(data), *args], "C", tmp_path)
        assert zh.returncode == en.returncode == 0, (args, zh.stderr)
        assert zh.stdout == en.stdout, args
        assert zh.stdout.strip() or args[0] == "keys"


def test_the_central_report_is_in_the_operators_language_and_its_json_is_not(tmp_path):
    data = tmp_path / "central"
    run_gate(None, "--data", str(data), "central", "event", "create", "ev-report")
    zh = run_gate(None, "--lang", "zh_CN", "--data", str(data), "central", "report", "--event", "ev-report").stdout
    en = run_gate(None, "--lang", "en", "--data", str(data), "central", "report", "--event", "ev-report").stdout
    assert "对账报告 — 活动 ev-report" in zh and "重复入场（0）" in zh and "DOUBLE ADMISSIONS" not in zh
    assert "Reconciliation report — event ev-report" in en and "DOUBLE ADMISSIONS (0)" in en
    assert "scans 0\n" in en  # nothing counted: no dangling colon
    js = [run_gate(None, "--lang", lang, "--data", str(data), "central", "report", "--event", "ev-report",
                   "--json").stdout for lang in ("zh_CN", "en")]
    assert js[0].replace(js[0][js[0].index('"generated_at"'):].split(",")[0], "") == \
        js[1].replace(js[1][js[1].index('"generated_at"'):].split(",")[0], "")
