"""One sync engine (issue 18): ``gate sync --once``, ``gate sync`` (looping) and a
lane's background loop drive the same step runner, retry policy and state,
against the real reference central on 127.0.0.1. (pretix as the other strategy
behind the same runner: tests/test_pretix.py.)"""

from __future__ import annotations

import ast
import json
import os
import queue
import signal
import subprocess
import threading
import time

import pytest

from conftest import GATE_BIN, ROOT, run_gate
from faulty_proxy import FaultyProxy
from gate.appliance import Gate
from gate.db import get_setting
from sync import client as sc
from sync.central.app import ServerThread, create_app
from sync.central.store import CentralStore
from sync.engine import RetryPolicy, SyncState, cursors
from sync.loop import SyncLoop, strategy_for

def _sigint_default() -> None:
    """In the child before exec: SIGINT as a terminal delivers it. A parent that ignores
    SIGINT (a test runner's worker) would hand that on, and Python keeps an inherited
    "ignore": the interrupt under test would never arrive."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


EVENT = "evt-engine"


@pytest.fixture
def central(tmp_path):
    store = CentralStore(tmp_path / "central", pool_size=1, pool_timeout=0.5)
    store.create_event(EVENT)
    server = ServerThread(create_app(store)).start()
    yield store, server
    server.stop()
    store.close()


def _gate(tmp_path, store, url, name="g"):
    g = Gate.init(tmp_path / name, event=EVENT, lane=name)
    sc.enroll(g, url, store.enrol_code(EVENT))
    return g


class Lines:
    """The stdout lines of a running ``gate sync`` (read on a thread: never blocks the test forever)."""

    def __init__(self, proc: subprocess.Popen):
        self.q: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.q.put(line) for line in proc.stdout], daemon=True).start()

    def next(self, deadline_s: float = 90) -> dict:
        return json.loads(self.q.get(timeout=deadline_s))


def test_gate_sync_honours_retry_after_the_same_way_as_the_lane_loop(central, tmp_path):
    # On main `gate sync` slept its own backoff (about 1 s) whatever central asked; the
    # lane's loop waited for Retry-After. A CLI that ignores it reports ~1 s here, not 2.
    store, server = central
    store.issue(EVENT, count=2, out=tmp_path / "w")
    g = _gate(tmp_path, store, server.url)
    g.close()
    default = RetryPolicy()
    with store.reader():  # the central's only connection is taken: it answers 503 + Retry-After
        loop = SyncLoop(tmp_path / "g")
        lane_gate = Gate.open(tmp_path / "g", now=time.time())
        rep = loop.run_pass(lane_gate)
        assert not rep.ok and any("503" in e for e in rep.errors), rep.errors
        # the precondition that makes this test able to fail: central asks for longer than the
        # longest first backoff the policy would choose on its own
        assert rep.retry_after is not None and rep.retry_after > default.base_s * (1 + default.jitter)
        assert loop.state is SyncState.DEGRADED and loop.next_wait == rep.retry_after
        proc = subprocess.Popen([str(GATE_BIN), "--data", str(tmp_path / "g"), "sync", "--json", "--interval", "30"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_sigint_default)
        try:
            lines = Lines(proc)
            first = lines.next()
        except BaseException:
            proc.kill()
            raise
    try:
        assert not first["ok"] and first["state"] == "degraded"
        assert first["next_sync_s"] == loop.next_wait == rep.retry_after  # the same wait, from the same engine
        # central has a free connection again: the next pass (after the wait it asked for) goes through
        nxt = first
        while not nxt["ok"]:
            assert nxt["next_sync_s"] >= rep.retry_after
            nxt = lines.next()
        assert nxt["state"] == "online" and nxt["next_sync_s"] == 30 and nxt["tickets"] == 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert loop.step(lane_gate) is SyncState.ONLINE and loop.next_wait == loop.interval_s
    lane_gate.close()


def test_looping_gate_sync_stops_when_central_refuses_the_token(central, tmp_path):
    # On main `gate sync` kept retrying a revoked token forever; the engine parks on 401 (no
    # timer), and a foreground run that nobody can wake stops with exit 5 and what to do.
    store, server = central
    g = _gate(tmp_path, store, server.url)
    store.revoke_device(g.config.device_id)
    g.close()
    r = run_gate(tmp_path / "g", "sync", "--interval", "0.01", "--json", check=False, timeout=120)
    assert r.returncode == 5 and "Traceback" not in r.stderr
    (line,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert line["state"] == "unauthorised" and line["next_sync_s"] is None
    assert any("re-enrol" in e for e in line["errors"])
    r = run_gate(tmp_path / "g", "sync", "--interval", "nan", check=False)
    assert r.returncode == 2 and "--interval" in r.stderr and "Traceback" not in r.stderr


def test_a_failing_step_applies_nothing_and_keeps_its_cursor_while_the_others_go_on(central, tmp_path):
    store, server = central
    from crypto.issuer import Wallet
    wallets = [Wallet.load(m["file"]) for m in store.issue(EVENT, count=3, out=tmp_path / "w")]
    with FaultyProxy(server.url) as proxy:
        g = _gate(tmp_path, store, proxy.url)
        strategy = strategy_for(g)
        assert sc.sync_once(g, strategy.client).ok
        before = cursors(g, strategy)
        assert set(before) == {"tickets", "upload", "admissions"} and before["tickets"]
        store.issue(EVENT, count=2, out=tmp_path / "w2")  # two new tickets wait at central
        now = time.time()
        assert g.scan(wallets[0].code(now), now=now)[0].accepted
        proxy.only_path, proxy.mode = "/tickets", "truncate"  # the ticket page arrives cut short
        rep = sc.sync_once(g, strategy.client)
        assert [e.split(":")[0] for e in rep.errors] == ["tickets"]
        after = cursors(g, strategy)
        assert after["tickets"] == before["tickets"]             # the failing step kept its cursor
        assert g.conn.execute("SELECT count(*) FROM tickets").fetchone()[0] == 3  # and applied nothing
        assert rep.uploaded == 1 and after["upload"] == 1         # the steps after it went on
        proxy.mode = "pass"
        rep = sc.sync_once(g, strategy.client)
        assert rep.ok and rep.tickets == 2 and cursors(g, strategy)["tickets"] != before["tickets"]
    g.close()


def test_the_engine_tells_its_state_to_listeners_and_reports_the_lane_link_without_the_database(
        central, tmp_path):
    from sync.central.ops import queries
    from sync.central.ops.db import OpsDB

    def link_at_central():
        with OpsDB(store).reader() as r:
            (row,) = queries.gates(r, EVENT, time.time())
        return row["link"]

    store, server = central
    g = _gate(tmp_path, store, server.url)
    loop = SyncLoop.for_gate(g)
    heard: list[SyncState] = []
    loop.listeners.append(heard.append)
    loop.link = lambda: "VENUE"  # the lane's link state, read at each pass
    assert loop.online is None  # nothing known before the first pass
    assert loop.step(g) is SyncState.ONLINE and loop.online is True
    assert link_at_central() == "VENUE"
    loop.link, loop.headers = None, lambda: {"X-Gate-Link": "ALONE"}  # the composition root's richer hook
    assert loop.step(g) is SyncState.ONLINE  # no change: nobody is told twice
    assert link_at_central() == "ALONE"
    store.revoke_device(g.config.device_id)
    assert loop.step(g) is SyncState.UNAUTHORISED and loop.online is False
    assert heard == [SyncState.ONLINE, SyncState.UNAUTHORISED]
    # the link state went to central as a header of the pass, and nowhere into the gate's database
    assert get_setting(g.conn, "link.state") is None
    g.close()


def test_the_lane_loop_thread_backs_off_and_recovers_through_the_same_engine(central, tmp_path):
    store, server = central
    store.issue(EVENT, count=1, out=tmp_path / "w")
    with FaultyProxy(server.url) as proxy:
        g = _gate(tmp_path, store, proxy.url)
        proxy.mode = "down"
        loop = SyncLoop.for_gate(g, interval_s=3600, policy=RetryPolicy(base_s=0.01, cap_s=0.05)).start()
        try:
            deadline = time.monotonic() + 60
            while loop.failures < 3 and time.monotonic() < deadline:  # retried with backoff, not the interval
                time.sleep(0.01)
            assert loop.failures >= 3 and loop.state is SyncState.OFFLINE
            proxy.mode = "pass"
            while loop.state is not SyncState.ONLINE and time.monotonic() < deadline:
                time.sleep(0.01)
            assert loop.state is SyncState.ONLINE and loop.next_wait == 3600 and loop.failures == 0
        finally:
            loop.stop()
    assert get_setting(g.conn, "sync.tickets_cursor")
    g.close()


# ------------------------------------------------------------------ the shape of the engine

SYNC_MODULES = ["sync/engine.py", "sync/client.py", "sync/loop.py", "sync/cli.py", "sync/pretix.py"]


def _private_reaches(path) -> list[str]:
    """``obj._name`` where obj is not self/cls, and ``from m import _name`` (``_`` itself is
    gettext's public name: ``from gate.i18n import _``)."""
    found = []
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path}:{node.lineno} .{node.attr}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("sync", "gate", "crypto"):
            found += [f"{path}:{node.lineno} import {a.name}" for a in node.names
                      if a.name.startswith("_") and a.name != "_"]
    return found


def test_no_sync_module_reaches_into_another_modules_private_names():
    # On main sync/pretix.py called the client's private `_call` (and sent its own orders
    # request past the client's TLS trust and error handling).
    assert [f for p in SYNC_MODULES for f in _private_reaches(p)] == []


def test_the_engine_never_sleeps_its_drivers_wait():
    # The retry policy computes a delay; only the drivers wait (an Event the lane can wake).
    for path in SYNC_MODULES:
        calls = [n for n in ast.walk(ast.parse((ROOT / path).read_text()))
                 if isinstance(n, ast.Attribute) and n.attr == "sleep"]
        assert calls == [], f"{path} sleeps at line {calls[0].lineno}"


def test_gate_sync_help_names_the_retry_behaviour():
    out = subprocess.run([str(GATE_BIN), "sync", "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"}).stdout
    assert "Retry-After" in out and "--interval S" in out and "next_sync_s" in out
