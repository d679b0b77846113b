"""Every exit code README documents, produced the way an operator would meet
it, through the installed `gate`; and `make demo`'s own command."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import GATE_BIN, ROOT, run_gate


def _sigint_default() -> None:
    """In the child before exec: SIGINT as a terminal delivers it. A parent that ignores
    SIGINT (a test runner's worker) would hand that on, and Python keeps an inherited
    "ignore": the interrupt under test would never arrive."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def data(tmp_path, issuer):
    d = tmp_path / "gate"
    run_gate(d, "init", "--event", issuer.event)
    (tmp_path / "ring.json").write_text(json.dumps(issuer.keyring()))
    run_gate(d, "keys", "trust", str(tmp_path / "ring.json"))
    return d


def test_exit_codes_are_documented():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Exit codes"):]
    for code in (0, 1, 2, 3, 4, 5, 6, 7, 130):
        assert re.search(rf"^\| `{code}` \|", table, re.M), f"exit code {code} is not in README's table"


def test_0_a_rejection_is_an_answer(data):
    r = run_gate(data, "verify", "--", "GT1:not-a-code", check=False)
    assert r.returncode == 0 and "MALFORMED" in r.stdout


def test_1_doctor_found_a_failure(data):
    r = run_gate(data, "doctor", "--camera", "images:/nonexistent-folder", check=False)
    assert r.returncode == 1 and "FAIL" in r.stdout


def test_2_configuration(tmp_path):
    r = run_gate(tmp_path / "nothing-here", "verify", "GT1:X", check=False)
    assert r.returncode == 2 and "init --event" in r.stderr
    r = run_gate(tmp_path, "verify", "--now", "soon", check=False)  # a usage error
    assert r.returncode == 2 and "usage:" in r.stderr


def test_3_ledger_file(data, tmp_path):
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    r = run_gate(data, "ledger", "import", str(tmp_path / "bad.jsonl"), check=False)
    assert r.returncode == 3 and "line 1" in r.stderr


def test_4_broken_chain(data, issuer):
    import sqlite3
    run_gate(data, "verify", issuer.mint(rotating=False).code(time.time()))
    run_gate(data, "verify", issuer.mint(rotating=False).code(time.time()))
    conn = sqlite3.connect(data / "gate.db")
    conn.execute("DELETE FROM scans WHERE seq = 1")
    conn.commit()
    conn.close()
    r = run_gate(data, "log", "verify", check=False)
    assert r.returncode == 4 and "BROKEN" in r.stderr


def test_5_sync_failed(data):
    r = run_gate(data, "sync", "--central", "http://127.0.0.1:9", "--enroll", "CODE", "--once", check=False)
    assert r.returncode == 5 and "127.0.0.1:9" in r.stderr


def test_6_hardware(data, tmp_path):
    r = run_gate(data, "run", "--scanner", "stdin", "--relay", f"serial:{tmp_path}/no-such-port", input="",
                 check=False)
    assert r.returncode == 6 and "relay" in r.stderr


def test_7_disk_full(tmp_path, issuer):
    # A real full disk: a 2 MB tmpfs mounted for the test (root can; skipped
    # only where the machine forbids mounting). The disk fills while the lane
    # runs: the next scan cannot be recorded, `gate verify` stops with 7 and
    # every scan answered before is in an intact chain; opening a gate on a
    # full disk says the same.
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow mounting a small tmpfs")
    try:
        data = mnt / "gate"
        run_gate(data, "init", "--event", issuer.event)
        (tmp_path / "ring.json").write_text(json.dumps(issuer.keyring()))
        run_gate(data, "keys", "trust", str(tmp_path / "ring.json"))
        proc = subprocess.Popen([str(GATE_BIN), "--data", str(data), "verify", "--json"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        answered = 0
        for _ in range(3):
            proc.stdin.write(issuer.mint(rotating=False).code(time.time()) + "\n")
            proc.stdin.flush()
            assert json.loads(proc.stdout.readline())["reason"] == "ACCEPT"
            answered += 1
        with open(mnt / "filler", "wb") as fh:  # now fill what is left
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        try:
            for _ in range(200):
                proc.stdin.write(issuer.mint(rotating=False).code(time.time()) + "\n")
                proc.stdin.flush()
        except BrokenPipeError:
            pass
        out, err = proc.communicate(timeout=60)
        answered += len(out.splitlines())
        assert proc.returncode == 7 and "disk is full" in err and "Traceback" not in err
        r = run_gate(data, "verify", "GT1:X", check=False)  # opening on a full disk: the same answer
        assert r.returncode == 7 and "full" in r.stderr
        os.remove(mnt / "filler")
        log = run_gate(data, "log", "--json").stdout.splitlines()
        assert len(log) >= answered  # every answered scan was recorded before it was answered
        assert run_gate(data, "log", "verify").returncode == 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_130_interrupted(data):
    proc = subprocess.Popen([str(GATE_BIN), "--data", str(data), "verify"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default)
    try:
        proc.stdin.write("GT1:first\n")  # its answer shows the lane is up and waiting on stdin
        proc.stdin.flush()
        assert "MALFORMED" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        # wait with stdin still open: closing it at once (communicate) races the signal with an
        # end of input, which a loaded machine can deliver first (a clean exit 0)
        proc.wait(timeout=60)
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in err


def test_make_demo_runs_its_command_to_the_end():
    # The command `make demo` runs (read from the Makefile, not copied here),
    # with no terminal: the headless story, ending in the reconciliation.
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n\t(.+)$", makefile, re.M).group(1)
    cmd = recipe.replace("$(BIN)/", str(GATE_BIN.parent) + "/").split()
    assert cmd[0].endswith("/gate") and cmd[1] == "demo"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-2000:]
    found = re.search(r"double admissions found by reconciliation: (\d+); chains intact", r.stdout)
    assert found and int(found.group(1)) >= 1, r.stdout[-2000:]
    assert re.search(r"ops room http://127\.0\.0\.1:\d+/ops  login demo / \S+", r.stdout)  # the live ops room
