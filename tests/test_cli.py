"""The gate CLI as operators and scripts use it: help, errors, import rules,
stdin, dry runs, tamper detection, file permissions, import hygiene."""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import stat
import subprocess
import sys

import pytest

from crypto.issuer import ticket_record
from gate.app.cli import build_parser
from conftest import ROOT, json_lines, run_gate, write_jsonl

NOW = 1_807_283_662


def _commands(parser: argparse.ArgumentParser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from _commands(sub, prefix + (name,))


def test_every_command_has_help_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    cmds = list(_commands(build_parser()))
    assert len(cmds) >= 8
    for path, sub in cmds:
        assert sub.description and sub.description.strip(), f"'gate {' '.join(path)}' has no description"
        helps = [a.help for a in sub._actions if a.option_strings and a.dest != "help"]
        assert all(helps), f"{' '.join(path)} has an option without help"
        pattern = r"gate(?: --data \S+)? " + re.escape(" ".join(path)) + r"\b"
        assert re.search(pattern, readme), f"'gate {' '.join(path)}' is not documented in README.md"


# every `gate ... --help` in one fresh interpreter (one process, not one per command): a command
# whose module fails to import or whose help cannot be formatted fails here
_HELP_ALL = """
import contextlib, io, json, sys
sys.argv[0] = "gate"
from gate.app.cli import main
out = {}
for path in json.loads(sys.argv[1]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main([*path, "--help"])
            code = None
        except SystemExit as exc:
            code = exc.code
    out[" ".join(path)] = [code, buf.getvalue()]
print(json.dumps(out))
"""


def test_help_runs_for_every_command():
    paths = [list(path) for path, _ in _commands(build_parser())]
    r = subprocess.run([sys.executable, "-c", _HELP_ALL, json.dumps(paths)], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    helped = json.loads(r.stdout)
    assert len(helped) == len(paths) >= 8
    bad = {cmd: got for cmd, got in helped.items() if got[0] != 0 or f"usage: gate {cmd}" not in got[1]}
    assert not bad, bad


@pytest.fixture
def data(tmp_path, issuer):
    d = tmp_path / "gate"
    run_gate(d, "init", "--event", issuer.event, "--lane", "north-3")
    (tmp_path / "ring.json").write_text(json.dumps(issuer.keyring()))
    run_gate(d, "keys", "trust", str(tmp_path / "ring.json"))
    return d


def test_bad_line_imports_nothing_unless_skip_bad(data, issuer, tmp_path):
    good = [ticket_record(issuer.mint()) for _ in range(3)]
    lines = [json.dumps(good[0]), json.dumps(good[1]), "{not json", json.dumps({**good[2], "status": "maybe"})]
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(lines) + "\n")
    r = run_gate(data, "ledger", "import", str(f), check=False)
    assert r.returncode != 0
    assert "line 3" in r.stderr and "line 4" in r.stderr and "--skip-bad" in r.stderr
    assert json.loads(run_gate(data, "ledger", "stats", "--json").stdout)["tickets"] == 0
    r = run_gate(data, "ledger", "import", "--skip-bad", str(f))
    assert "imported 2" in r.stdout and "line 3" in r.stderr
    assert json.loads(run_gate(data, "ledger", "stats", "--json").stdout)["tickets"] == 2


def test_reimport_updates_in_place_and_never_lowers_version(data, issuer, tmp_path):
    w = issuer.mint(version=2)
    run_gate(data, "ledger", "import", str(write_jsonl(tmp_path / "a.jsonl", [ticket_record(w, version=2)])))
    run_gate(data, "ledger", "import", str(write_jsonl(tmp_path / "b.jsonl", [ticket_record(w, version=2, status="revoked")])))
    out = json_lines(run_gate(data, "verify", "--json", "--dry-run", "--now", str(NOW), w.code(NOW)).stdout)
    assert out[0]["reason"] == "REVOKED"
    # a stale file (version 1, valid) must not undo the revocation or the reissue
    run_gate(data, "ledger", "import", str(write_jsonl(tmp_path / "c.jsonl", [ticket_record(w, version=1)])))
    out = json_lines(run_gate(data, "verify", "--json", "--dry-run", "--now", str(NOW), w.code(NOW)).stdout)
    assert out[0]["reason"] == "REVOKED"
    st = json.loads(run_gate(data, "ledger", "stats", "--json").stdout)
    assert st["tickets"] == 1


def test_verify_reads_stdin_and_dry_run_records_nothing(data, issuer):
    a, b = issuer.mint(), issuer.mint(rotating=False)
    text = f"{a.code(NOW)}\n\n{b.code(NOW)}\nnonsense\n"
    out = json_lines(run_gate(data, "verify", "--json", "--dry-run", "--now", str(NOW), input=text).stdout)
    assert [o["reason"] for o in out] == ["ACCEPT", "ACCEPT", "MALFORMED"]
    assert all(o["unlisted"] for o in out[:2]) and out[2]["ticket_id"] is None
    assert run_gate(data, "log", "--json").stdout.strip() == ""
    out = json_lines(run_gate(data, "verify", "--json", "--now", str(NOW), input=text).stdout)
    assert [o["seq"] for o in out] == [1, 2, 3]
    human = run_gate(data, "log").stdout
    assert "ACCEPT" in human and "MALFORMED" in human


def test_mode_flag_overrides_lane_mode(data, issuer):
    w = issuer.mint(rotating=False)
    run_gate(data, "verify", "--now", str(NOW), w.code(NOW))
    out = json_lines(run_gate(data, "verify", "--json", "--mode", "exit", "--now", str(NOW), w.code(NOW)).stdout)
    assert out[0]["reason"] == "ACCEPT" and out[0]["mode"] == "exit"


def test_operational_errors_exit_nonzero_with_advice(tmp_path, data):
    r = run_gate(tmp_path / "nowhere", "verify", "GT1:X", check=False)
    assert r.returncode != 0 and "init --event" in r.stderr
    r = run_gate(data, "ledger", "import", str(tmp_path / "missing.jsonl"), check=False)
    assert r.returncode != 0 and "cannot read" in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"event": "evt-test", "keys": [{"kid": "00" * 8, "alg": "EdDSA", "pub": "AAAA"}]}))
    r = run_gate(data, "keys", "trust", str(bad), check=False)
    assert r.returncode != 0 and "nothing was trusted" in r.stderr
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"event": "evt-other", "keys": []}))
    r = run_gate(data, "keys", "trust", str(other), check=False)
    assert r.returncode != 0 and "evt-other" in r.stderr
    r = run_gate(data, "init", "--event", "another-event", check=False)
    assert r.returncode != 0 and "new --data" in r.stderr


def test_tampered_log_is_detected(data, issuer):
    w = issuer.mint()
    for i in range(3):
        run_gate(data, "verify", "--now", str(NOW + i * 15), w.code(NOW + i * 15))
    assert "chain ok: 3" in run_gate(data, "log", "verify").stdout
    conn = sqlite3.connect(data / "gate.db")
    rec = conn.execute("SELECT record FROM scans WHERE seq = 2").fetchone()[0]
    conn.execute("UPDATE scans SET record = ? WHERE seq = 2", (rec.replace(b"ALREADY_USED", b"ACCEPT\x00\x00\x00\x00\x00\x00"),))
    conn.commit()
    conn.close()
    r = run_gate(data, "log", "verify", check=False)
    assert r.returncode != 0 and "record 2" in r.stderr


def test_secret_files_are_private(data):
    for name in ("device.key", "data.key"):
        mode = stat.S_IMODE((data / "keys" / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def _loaded_after(imports: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` a fresh interpreter has loaded after running ``imports``."""
    code = f"import sys; {imports}; print(sorted(m for m in {names!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return eval(out.stdout)


def test_verify_path_does_not_import_heavy_libraries():
    heavy = ("cv2", "face_recognition", "dlib", "textual", "fastapi", "numpy", "requests", "zxingcpp", "pyzbar")
    assert _loaded_after("from gate.app.cli import build_parser; build_parser(); import gate.appliance, gate.decision",
                         heavy) == []
