"""The staff UI and the command line as an operator starts them: a real `gate`
process, a real pseudo-terminal for the UI, codes piped into its stdin,
signals from outside; and the language switch.

How these could fail: the UI and a stdin scanner reading the same descriptor
(codes never decided, keys dead), `gate tui` drawing escapes into a pipe, an
exit code other than 130 on SIGINT, machine output changing with the
language, a peer's lane name writing terminal escapes through `gate verify`."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import sqlite3
import struct
import subprocess
import termios
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import GATE_BIN, json_lines, run_gate, write_jsonl
from crypto import gt1
from crypto.issuer import Issuer, ticket_record
from gate.keyfiles import load_device_key

pytestmark = pytest.mark.timeout(180)
EVENT = "evt-staff-cli"


def _sigint_default() -> None:
    """In the child before exec: SIGINT as a terminal delivers it. A parent that ignores
    SIGINT (a test runner's worker) would hand that on, and Python keeps an inherited
    "ignore": the interrupt under test would never arrive."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def setup(tmp_path):
    issuer = Issuer(EVENT, keys=[Ed25519PrivateKey.from_private_bytes(bytes(range(32)))])
    data = tmp_path / "gate"
    run_gate(data, "init", "--event", EVENT, "--lane", "north-1")
    (tmp_path / "ring.json").write_text(json.dumps(issuer.keyring()))
    run_gate(data, "keys", "trust", str(tmp_path / "ring.json"))
    wallets = [issuer.mint(rotating=False) for _ in range(3)]
    run_gate(data, "ledger", "import", str(write_jsonl(tmp_path / "t.jsonl", [
        ticket_record(w, holder=f"Holder {i}") for i, w in enumerate(wallets)])))
    run_gate(data, "pin", "set", "ann", input="246813\n")
    return data, wallets


def _until(fn, what: str, timeout: float = 60.0):
    """Wait (bounded) for a condition another process brings about."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _kinds(data) -> list[tuple[str, str | None]]:
    conn = sqlite3.connect(f"file:{data / 'gate.db'}?mode=ro", uri=True, timeout=10)
    try:
        import cbor2
        out = []
        for (blob,) in conn.execute("SELECT record FROM scans ORDER BY seq"):
            r = cbor2.loads(blob)
            out.append((r["kind"], r.get("reason") or r.get("action")))
        return out
    finally:
        conn.close()


class Terminal:
    """A pseudo-terminal that becomes the child's controlling terminal, with a
    reader thread draining what the UI draws."""

    def __init__(self, cols: int = 100, rows: int = 30):
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.out = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, daemon=True)

    def start(self, args, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(args, stdout=self.slave, stderr=self.slave, start_new_session=True,
                                preexec_fn=lambda: fcntl.ioctl(1, termios.TIOCSCTTY, 0), **kw)
        os.close(self.slave)
        self._thread.start()
        return proc

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self.out += chunk

    def text(self) -> str:
        with self._lock:
            return self.out.decode("utf-8", "replace")

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        os.close(self.master)


def test_tui_without_a_terminal_refuses_with_exit_2(setup):
    """On main it drew 900 KB of escapes into the pipe for ten minutes."""
    data, _ = setup
    r = subprocess.run([str(GATE_BIN), "--data", str(data), "tui", "--scanner", "stdin"], capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, start_new_session=True, timeout=60)
    assert r.returncode == 2 and "needs a terminal" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stdout) + len(r.stderr) < 2000


def test_scanner_stdin_with_the_tui_decides_codes_keys_work_and_sigint_exits_130(setup):
    """On main `--scanner stdin --tui` froze: the UI read the codes as keys."""
    data, wallets = setup
    term = Terminal()
    proc = term.start([str(GATE_BIN), "--data", str(data), "tui", "--scanner", "stdin", "--relay", "sim",
                       "--sensor", "none"], stdin=subprocess.PIPE)
    try:
        _until(lambda: "READY" in term.text(), "the UI's first screen")
        proc.stdin.write((wallets[0].code(time.time()) + "\n").encode())
        proc.stdin.flush()
        _until(lambda: ("scan", "ACCEPT") in _kinds(data), "the piped code decided")
        _until(lambda: "ADMIT" in term.text(), "the verdict on the terminal")
        # the keys come from the terminal: pause with a supervisor PIN
        term.type("p")
        _until(lambda: "supervisor PIN" in term.text(), "the PIN dialog")
        term.type("ann")
        _until(lambda: "ann" in term.text(), "the name on screen")
        drawn = len(term.out)
        term.type("\r")  # the focus moves to the PIN field: the screen is redrawn
        _until(lambda: len(term.out) > drawn, "the PIN field focused")
        term.type("246813\r")
        _until(lambda: ("control", "pause") in _kinds(data), "the pause logged")
        proc.stdin.write((wallets[1].code(time.time()) + "\n").encode())
        proc.stdin.flush()
        _until(lambda: ("scan", "LANE_PAUSED") in _kinds(data), "the paused scan logged")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        _until(lambda: "interrupted" in term.text(), "the exit message")
        assert "Traceback" not in term.text()
    finally:
        proc.kill()
        proc.wait()
        term.close()


def test_gate_run_exits_130_on_sigint(setup):
    """On main `gate run` exited 0 on SIGINT (README: 130)."""
    data, wallets = setup
    proc = subprocess.Popen([str(GATE_BIN), "--data", str(data), "run", "--scanner", "stdin", "--relay", "sim",
                             "--json-events"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
    try:
        proc.stdin.write(wallets[0].code(time.time()) + "\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["reason"] == "ACCEPT"  # up and waiting on stdin
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)  # stdin still open: its end must not race the signal
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err


# ------------------------------------------------------------------ languages


def test_lang_option_environment_and_machine_output(setup):
    data, wallets = setup
    code = wallets[2].code(time.time())
    zh = run_gate(data, "--lang", "zh_CN", "verify", "--dry-run", "--", code, "GT1:x").stdout
    assert "放行" in zh and "无法识别" in zh and "ACCEPT" in zh  # codes stay codes
    assert run_gate(data, "verify", "--lang", "zh_CN", "--dry-run", "--", "GT1:x").stdout == zh.splitlines()[1] + "\n"
    env_zh = run_gate(data, "verify", "--dry-run", "GT1:x", env={"LANGUAGE": "", "LC_ALL": "", "LANG": "zh_CN.UTF-8"})
    assert "无法识别" in env_zh.stdout
    en = run_gate(data, "--lang", "en", "verify", "--dry-run", "GT1:x", env={"LANG": "zh_CN.UTF-8"}).stdout
    assert "UNREADABLE" in en  # --lang wins over the environment
    # machine output never changes with the language
    outs = [json_lines(run_gate(data, "--lang", lang, "verify", "--dry-run", "--json", "--now", "1800000000",
                                "--", code, "GT1:x").stdout) for lang in ("en", "zh_CN")]
    assert outs[0] == outs[1]
    logs = [run_gate(data, "--lang", lang, "log", "--json").stdout for lang in ("en", "zh_CN")]
    assert logs[0] == logs[1]
    # argparse's own words and the top-level error handler
    h = run_gate(None, "--lang", "zh_CN", "--help").stdout
    assert h.startswith("用法：gate") and "显示此帮助信息并退出" in h
    assert run_gate(None, "central", "--lang", "zh_CN", "--help").stdout.startswith("用法：gate central")
    r = run_gate(data, "--lang", "zh_CN", "verify", "--now", "soon", check=False)
    assert r.returncode == 2 and "用法：" in r.stderr and "错误" in r.stderr
    r = run_gate(data.parent / "nowhere", "--lang", "zh_CN", "verify", "GT1:x", check=False)
    assert r.returncode == 2 and r.stderr.startswith("gate：错误：")
    r = run_gate(data, "--lang", "xx", "verify", "GT1:x", check=False)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_verify_prints_a_peer_lane_name_with_escapes_neutralised(setup, tmp_path):
    """A lane name with terminal escapes, from another gate, reached `gate verify`'s
    output raw on main: a clear-screen, then a fake green ACCEPT. A gate cannot be set
    up with such a name and the venue bus refuses it as malformed; a rogue device that
    edits its own configuration still gets it to central, whose admissions feed brings
    it here: shown neutralised."""
    from gate import bus
    from gate.appliance import Gate
    from gate.db import put_setting, transaction
    from gate.errors import ConfigError
    from sync import client as sc
    from sync.central.app import ServerThread, create_app
    from sync.central.store import CentralStore

    data, wallets = setup
    evil = "north-2\x1b[2J\x1b[32mACCEPT\x1b[0m"
    with pytest.raises(ConfigError, match="printable"):
        Gate.init(tmp_path / "refused", event=EVENT, lane=evil)
    other = Gate.init(tmp_path / "other", event=EVENT, lane="north-2")
    cfg = other.config.to_json()
    cfg["policy"]["lane"] = evil  # the rogue device's own edit
    with transaction(other.conn):
        put_setting(other.conn, "config", cfg)
    other.close()
    other = Gate.open(tmp_path / "other", now=time.time())
    other.trust(Issuer(EVENT, keys=[Ed25519PrivateKey.from_private_bytes(bytes(range(32)))]).keyring())
    key = load_device_key(other.data_dir)
    now = time.time()
    d, entry = other.scan(wallets[0].code(now), now=now)
    mine = Gate.open(data, now=now)
    bus.store_trust(mine.conn, [bus.TrustedDevice(other.config.device_id, gt1.raw_public(key))], "test")
    book = bus.BusBook(mine.conn, mine.config.device_id, EVENT)
    assert book.receive(bus.message_for(other.conn, key, other.config.device_id, entry.seq).encode()) == "malformed"
    store = CentralStore(tmp_path / "central")
    store.create_event(EVENT)
    server = ServerThread(create_app(store)).start()
    try:
        for g in (other, mine):
            sc.enroll(g, server.url, store.enrol_code(EVENT))
        assert sc.push_scans(other, sc.client_for(other)) == 1
        assert sc.pull_admissions(mine, sc.client_for(mine)) == 1
    finally:
        server.stop()
        store.close()
    mine.close()
    other.close()
    for lang in ("en", "zh_CN"):
        out = run_gate(data, "--lang", lang, "verify", "--", wallets[0].code(now)).stdout
        assert out.startswith("ALREADY_USED") and "north-2\ufffd[2J\ufffd[32mACCEPT" in out
        assert "\x1b" not in out
