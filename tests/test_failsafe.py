"""Fail safe (issue 18): a relay that cannot open again, a passage sensor that
fails and a device database that cannot commit each stop the lane — logged,
shown, and cleared only by a supervisor — never a turnstile left released with
no record; lost keys are an error, never a new key; pretix codes obey the lane
policy; float options refuse nan and inf; the demo shows its real error.

Everything runs on the shipped simulated drivers, a real serial relay driver on
a real pty, real SQLite files, and the installed ``gate`` command.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import sqlite3
import threading
import tty

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crypto.issuer import Issuer, ticket_record
from gate import ledger, scanlog
from gate.app.compose import LaneSpec, build_lane, open_gate
from gate.appliance import Gate
from gate.db import connect, transaction
from gate.decision import Reason, Sub
from gate.errors import ConfigError, GateError, HardwareError, StoreError
from gate.lane import FaultKind
from hardware.registry import open_device, usage
from hardware.relay import SerialRelay, SimRelay
from hardware.sensor import SimSensor
from conftest import json_lines, run_gate, static_gate, write_jsonl

NOW = 1_807_283_662


class Clock:
    def __init__(self, t: float = NOW):
        self.t = t

    def now(self) -> float:
        self.t += 1  # each decision a second later: records stay in time order
        return self.t

    def monotonic_ns(self) -> int:
        return int(self.t * 1e9)


def _records(g) -> list[dict]:
    return [e.record for e in scanlog.entries(g.conn)]


def _controls(g) -> list[dict]:
    return [r for r in _records(g) if r["kind"] == scanlog.CONTROL]


@pytest.fixture
def setup(tmp_path):
    """A gate with listed static tickets, opened the way `gate run` opens it."""
    wallets = static_gate(tmp_path / "g", "evt-safe", now=NOW)
    gate = open_gate(tmp_path / "g", now=NOW)
    yield gate, wallets
    gate.close()


def _runner(gate, *, relay="sim", sensor="sim", **kw):
    if not isinstance(relay, str):  # a driver opened by the test
        kw["relay"], relay = relay, "sim"
    if not isinstance(sensor, str):
        kw["sensor"], sensor = sensor, "sim"
    runner = build_lane(LaneSpec(relay=relay, sensor=sensor), gate, clock=Clock(), start_sync=False, **kw)
    heard: list = []
    runner.lane.on_fault.append(lambda f, op: heard.append((f.kind, op)))
    return runner, heard


# ------------------------------------------------------------------ 1. the relay


def test_simulated_relay_and_sensor_faults_are_registered_specs():
    # The fault modes are driver specs like any other: help and doctor list them.
    assert "stuck-after=N" in usage("relay") and "fail-on=N" in usage("relay")
    assert "fail-on=N" in usage("sensor")
    r = open_device("relay", "sim:stuck-after=3")
    assert isinstance(r, SimRelay) and (r.stuck_after, r.fail_on) == (3, None)
    assert open_device("relay", "sim:fail-on=2").fail_on == 2
    s = open_device("sensor", "sim:1:fail-on=4:delay=0.5")
    assert isinstance(s, SimSensor) and (s.fail_on, s.delay_s, s.probability) == (4, 0.5, 1.0)
    for bad in ("sim:stuck-after=0", "sim:stuck-after=x", "sim:fail-on=-1"):
        with pytest.raises(HardwareError, match="N"):
            open_device("relay", bad)
    assert "stuck-after=N" in run_gate(None, "run", "--help").stdout


def test_a_stuck_relay_pauses_the_lane_until_a_supervisor_clears_it(setup):
    # On main a release that failed left the contact closed and only reached
    # threading.excepthook: the lane went on admitting. Here the second
    # release sticks: the lane hears it, logs it, admits nothing more (no
    # decision, no pulse, no manual admit) until the relay works again and a
    # supervisor clears it, and the log says who did.
    gate, w = setup
    runner, heard = _runner(gate, relay="sim:stuck-after=2")
    lane, relay = runner.lane, runner.lane.relay
    assert lane.submit(w[0].code(NOW)).outcome == "passed" and not relay.is_closed()
    ev = lane.submit(w[1].code(NOW))
    assert ev.decision.accepted and relay.is_closed()  # the contact is stuck closed ...
    assert lane.fault is not None and lane.fault.kind is FaultKind.RELAY  # ... and the lane knows
    assert heard == [(FaultKind.RELAY, None)]
    (fault,) = [r for r in _controls(gate) if r["action"] == "relay_fault"]
    assert "stuck" in fault["detail"] and fault["seq"] == lane.fault.seq
    scans, pulses = len(_records(gate)), len(relay.pulses)
    assert lane.submit(w[2].code(NOW)) is None  # ignored: nothing decided, nothing pulsed
    with pytest.raises(HardwareError, match="faulted"):
        lane.override(admit=True, operator="ann", ticket_id=w[2].ticket_id)
    assert (len(_records(gate)), len(relay.pulses)) == (scans, pulses)
    with pytest.raises(HardwareError):  # still stuck: clearing is refused, the fault stays
        lane.clear_fault(operator="ann")
    assert lane.fault is not None and len(_records(gate)) == scans
    relay.repair()
    assert [f.kind for f in lane.clear_fault(operator="ann")] == [FaultKind.RELAY]
    assert lane.fault is None and not relay.is_closed() and heard[-1] == (FaultKind.RELAY, "ann")
    cleared = _controls(gate)[-1]
    assert (cleared["action"], cleared["operator"], cleared["faults"]) == ("fault_cleared", "ann", "relay")
    assert lane.submit(w[2].code(NOW)).outcome == "passed"
    assert scanlog.verify_chain(gate.conn).ok
    runner.close()
    # `gate log` shows the fault and who cleared it
    out = run_gate(gate.data_dir, "log").stdout
    assert "relay_fault" in out and "fault_cleared" in out and "by ann" in out


def test_a_relay_that_cannot_close_gives_the_entry_back_and_faults(setup):
    gate, w = setup
    runner, heard = _runner(gate, relay="sim:fail-on=1")
    lane = runner.lane
    ev = lane.submit(w[0].code(NOW))
    assert ev.outcome == "rolled_back" and lane.fault.kind is FaultKind.RELAY and heard
    assert not lane.relay.is_closed()
    lane.relay.repair()
    lane.clear_fault(operator="bo")
    assert lane.submit(w[0].code(NOW)).outcome == "passed"  # the entry was given back: usable again


def test_a_fault_outlives_a_restart(setup, tmp_path):
    # Stopping and starting the lane is not a way round a supervisor.
    gate, w = setup
    runner, _ = _runner(gate, relay="sim:stuck-after=1")
    runner.lane.submit(w[0].code(NOW))
    assert runner.lane.fault is not None
    runner.lane.relay.repair()
    runner.lane.relay.reset()  # the technician opened the contact; nobody cleared the fault
    runner.close()
    again = open_gate(gate.data_dir, now=NOW)
    lane = _runner(again)[0].lane
    assert lane.fault is not None and lane.fault.kind is FaultKind.RELAY
    assert lane.submit(w[1].code(NOW)) is None
    lane.clear_fault(operator="ann")
    assert lane.submit(w[1].code(NOW)).outcome == "passed"
    again.close()


def _pty_relay():
    master, slave = pty.openpty()
    tty.setraw(master)
    return master, open_device("relay", f"serial:{os.ttyname(slave)}"), slave


def test_serial_relay_retries_a_failed_release_then_faults_the_lane(setup):
    # A real driver on a real pty: the board goes away while the contact is
    # closed (the master end closes, writes fail with EIO). The release is
    # retried on the relay's timer thread, the
    # relay is marked faulted, and the lane — told from the relay's timer
    # thread — logs the fault and stops; closing the relay says so too.
    gate, w = setup
    master, relay, slave = _pty_relay()
    assert isinstance(relay, SerialRelay)
    told = threading.Event()
    runner, heard = _runner(gate, relay=relay)
    runner.lane.on_fault.append(lambda f, op: told.set())
    runner.lane.pulse_ms = 3000  # long enough that the board is gone before the release
    try:
        assert runner.lane.submit(w[0].code(NOW)).outcome == "passed" and relay.is_closed()
        os.close(master)
        assert told.wait(60), "the lane never heard of the failed release"
        assert relay.fault is not None and "release failed 3 times" in relay.fault and relay.is_closed()
        assert runner.lane.counters.rolled_back == 0  # the pulse itself worked: it was the release
        assert runner.lane.fault.kind is FaultKind.RELAY
        assert any(r["action"] == "relay_fault" for r in _controls(gate))
        assert runner.lane.submit(w[1].code(NOW)) is None
        with pytest.raises(HardwareError):
            relay.reset()
        with pytest.raises(HardwareError, match="shutdown"):
            runner.close()  # never a silent shutdown with the contact possibly closed
    finally:
        os.close(slave)


def test_a_sensor_fault_is_a_fault_not_no_passage(setup):
    # On main an exception in wait_passage counted as "nobody passed": the
    # entry was given back although the turnstile had been released. Now the
    # admission stands (unconfirmed), the lane faults and admits nothing more.
    gate, w = setup
    runner, heard = _runner(gate, sensor="sim:fail-on=2")
    lane = runner.lane
    assert lane.submit(w[0].code(NOW)).outcome == "passed"
    ev = lane.submit(w[1].code(NOW))
    assert ev.outcome == "unconfirmed" and lane.fault.kind is FaultKind.SENSOR
    assert not any(r["kind"] == scanlog.ROLLBACK for r in _records(gate))
    assert any(r["action"] == "sensor_fault" for r in _controls(gate))
    assert lane.submit(w[2].code(NOW)) is None
    with pytest.raises(HardwareError):
        lane.clear_fault(operator="ann")
    lane.sensor.repair()
    lane.clear_fault(operator="ann")
    assert lane.submit(w[1].code(NOW)).decision.reason is Reason.ALREADY_USED  # it was not given back
    assert lane.submit(w[2].code(NOW)).outcome == "passed"


def test_gate_run_prints_the_fault_and_refuses_to_stop_silently(setup):
    # `gate run --json-events` with a relay that sticks: the decision, then the
    # fault as its own JSON line; the next code is ignored; at the end the
    # contact is still closed, so the run exits 6 saying so. Started again, the
    # lane says at once that it is faulted.
    gate, w = setup
    gate.close()
    r = run_gate(gate.data_dir, "run", "--scanner", "stdin", "--relay", "sim:stuck-after=1",
                 "--sensor", "sim", "--json-events", input=f"{w[0].code(NOW)}\n{w[1].code(NOW)}\n", check=False)
    lines = json_lines(r.stdout)
    assert [e.get("reason") for e in lines if "reason" in e] == ["ACCEPT"]
    (fault,) = [e for e in lines if "fault" in e]
    assert fault["fault"] == "relay" and "stuck" in fault["detail"] and isinstance(fault["seq"], int)
    assert r.returncode == 6 and "relay at shutdown" in r.stderr and "Traceback" not in r.stderr
    r = run_gate(gate.data_dir, "run", "--scanner", "stdin", "--relay", "sim", "--json-events",
                 input=f"{w[1].code(NOW)}\n")
    lines = json_lines(r.stdout)
    assert lines[0]["fault"] == "relay" and not any("reason" in e for e in lines)
    r = run_gate(gate.data_dir, "doctor", check=False)  # and doctor says what to do about it
    (line,) = [ln for ln in r.stdout.splitlines() if ln.split()[1:2] == ["fault"]]
    assert r.returncode == 1 and line.startswith("FAIL") and "relay fault" in line and "staff UI" in line


def test_a_headless_lane_fault_is_cleared_from_the_command_line_with_a_pin(setup, tmp_path):
    # A service lane has no staff UI: `gate fault show` says a fault is in force,
    # `gate fault clear` checks the relay the lane last ran with, wants the
    # operator's PIN and logs who cleared it. Fails if a clear goes through
    # without a PIN, with a wrong one, with a relay that still fails, with a
    # relay other than the lane's, or with no relay known at all.
    gate, w = setup
    gate.close()
    data = gate.data_dir
    r = run_gate(data, "run", "--scanner", "stdin", "--relay", "sim:stuck-after=1", "--sensor", "sim",
                 "--json-events", input=f"{w[0].code(NOW)}\n", check=False)
    assert r.returncode == 6  # the contact stayed closed: faulted
    show = run_gate(data, "fault", "show", check=False)
    assert show.returncode == 1 and "relay fault" in show.stdout and "gate fault clear" in show.stdout
    run_gate(data, "pin", "set", "ann", input="246810\n")
    other = run_gate(data, "fault", "clear", "ann", "--relay", "sim", input="246810\n", check=False)
    assert other.returncode == 2 and "last ran with --relay sim:stuck-after=1" in other.stderr
    # the lane runs again on a relay that still cannot pulse: still faulted, and the check says so
    r = run_gate(data, "run", "--scanner", "stdin", "--relay", "sim:fail-on=1", "--json-events",
                 input=f"{w[1].code(NOW)}\n")
    assert json_lines(r.stdout)[0]["fault"] == "relay"
    still = run_gate(data, "fault", "clear", "ann", input="246810\n", check=False)
    assert still.returncode == 6 and "the fault stays" in still.stderr
    # repaired: the lane runs with a working relay (still faulted until cleared)
    run_gate(data, "run", "--scanner", "stdin", "--relay", "sim", "--json-events", input="")
    wrong = run_gate(data, "fault", "clear", "ann", input="135791\n", check=False)
    assert wrong.returncode == 2 and "wrong PIN" in wrong.stderr
    empty = run_gate(data, "fault", "clear", "ann", input="\n", check=False)
    assert empty.returncode == 2 and "no PIN" in empty.stderr
    for r in (other, still, wrong, empty):
        assert "Traceback" not in r.stderr
    assert run_gate(data, "fault", "show", check=False).returncode == 1  # none of them cleared it
    ok = run_gate(data, "fault", "clear", "ann", input="246810\n")
    assert "cleared by ann" in ok.stdout and "relay sim" in ok.stdout
    assert run_gate(data, "fault", "show").stdout.strip() == "no lane fault in force"
    g = open_gate(data, now=NOW)
    last = _controls(g)[-1]
    g.close()
    assert (last["action"], last["operator"], last["faults"], last["via"]) == ("fault_cleared", "ann", "relay", "cli")
    r = run_gate(data, "run", "--scanner", "stdin", "--relay", "sim", "--json-events", input=f"{w[1].code(NOW)}\n")
    assert [e["reason"] for e in json_lines(r.stdout) if "reason" in e] == ["ACCEPT"]
    # a gate whose lane never ran here: the relay must be named
    run_gate(tmp_path / "new", "init", "--event", "evt-safe")
    g = open_gate(tmp_path / "new", now=NOW)
    g.control("relay_fault", now=NOW, operator=None, detail="stuck \x1b[31mred\x1b]0;title\x07")
    g.close()
    shown = run_gate(tmp_path / "new", "fault", "show", check=False).stdout
    assert "\x1b" not in shown and "\x07" not in shown and "stuck" in shown
    bare = run_gate(tmp_path / "new", "fault", "clear", "ann", input="246810\n", check=False)
    assert bare.returncode == 2 and "--relay" in bare.stderr
    odd = run_gate(tmp_path / "new", "fault", "clear", "\x1b[2Jann", "--relay", "sim", input="246810\n", check=False)
    assert odd.returncode == 2 and "printable" in odd.stderr


def test_a_running_lane_takes_a_clear_from_the_command_line_only_once_its_parts_work(setup):
    # The lane runs while a supervisor clears its faults from another process (whose
    # own simulated parts pass the check). At its next code the lane checks its own
    # relay and sensor: each one still failing is a fault again (logged), the
    # others stay cleared; only when both work does it admit, and its hooks hear
    # who cleared it. A restart brings back every kind in force, not just the first.
    # Fails if a running lane admits with a part it never checked.
    gate, w = setup
    relay, sensor = open_device("relay", "sim:stuck-after=1"), open_device("sensor", "sim:fail-on=1")
    runner, heard = _runner(gate, relay=relay, sensor=sensor)
    lane = runner.lane
    lane.submit(w[0].code(NOW))
    assert set(lane.faults) == {FaultKind.RELAY, FaultKind.SENSOR}
    assert [f["action"] for f in gate.open_faults()] == ["relay_fault", "sensor_fault"]
    run_gate(gate.data_dir, "pin", "set", "ann", input="246810\n")

    def clear_elsewhere(*parts):
        out = run_gate(gate.data_dir, "fault", "clear", "ann", input="246810\n").stdout
        assert "cleared by ann" in out and all(p in out for p in parts), out

    clear_elsewhere("relay sim", "sensor sim")
    assert lane.submit(w[1].code(NOW)) is None  # its own relay and sensor still fail: not admitted
    assert set(lane.faults) == {FaultKind.RELAY, FaultKind.SENSOR}
    assert all("still failing" in f.detail for f in lane.faults.values())
    assert {f["action"] for f in gate.open_faults()} == {"relay_fault", "sensor_fault"}  # logged again
    relay.repair()
    clear_elsewhere("relay sim", "sensor sim")
    assert lane.submit(w[1].code(NOW)) is None  # the sensor still fails
    assert set(lane.faults) == {FaultKind.SENSOR} and gate.open_faults()[0]["action"] == "sensor_fault"
    runner.close()
    again = open_gate(gate.data_dir, now=NOW)  # a restart: the fault in force comes back
    lane2 = _runner(again, relay=relay, sensor=sensor)[0].lane
    assert set(lane2.faults) == {FaultKind.SENSOR}
    sensor.fail_on = None  # the technician fixed the sensor
    clear_elsewhere("sensor sim")
    assert lane2.submit(w[1].code(NOW)).outcome == "passed" and lane2.fault is None
    assert scanlog.verify_chain(again.conn).ok
    again.close()


def test_a_restarted_lane_holds_every_fault_kind_in_force(setup):
    # Relay and sensor both faulted, then a restart: the lane must hold both, so
    # that clearing checks both parts (it held only the first logged one).
    gate, w = setup
    runner, _ = _runner(gate, relay="sim:stuck-after=1", sensor="sim:fail-on=1")
    runner.lane.submit(w[0].code(NOW))
    assert set(runner.lane.faults) == {FaultKind.RELAY, FaultKind.SENSOR}
    runner.lane.relay.repair()
    runner.lane.relay.reset()  # the contact opened by hand; nobody cleared the faults
    runner.close()
    again = open_gate(gate.data_dir, now=NOW)
    sensor = open_device("sensor", "sim:fail-on=1")
    lane = _runner(again, sensor=sensor)[0].lane
    assert set(lane.faults) == {FaultKind.RELAY, FaultKind.SENSOR}
    with pytest.raises(HardwareError):  # the sensor is still broken: the UI's clear is refused too
        lane.clear_fault(operator="ann")
    assert lane.submit(w[1].code(NOW)) is None
    again.close()


def test_the_fault_reaches_central_in_the_log_and_the_status_headers(setup, tmp_path):
    # Central learns of the fault from the uploaded scan log (a control record:
    # central's chain head is the gate's, fault included) and, while it lasts,
    # from X-Gate-Fault next to X-Gate-Link; the link state is read from the
    # runner's monitor at each pass, never written to the database first.
    import time

    from sync import client as sc
    from sync.central.app import ServerThread, create_app
    from sync.central.ops import queries
    from sync.central.ops.db import OpsDB
    from sync.central.store import CentralStore
    gate, w = setup
    store = CentralStore(tmp_path / "central")
    store.create_event(gate.policy.event)
    server = ServerThread(create_app(store)).start()
    try:
        sc.enroll(gate, server.url, store.enrol_code(gate.policy.event))
        runner = build_lane(LaneSpec(relay="sim:stuck-after=1", sensor="sim", central=server.url), gate,
                            clock=Clock())
        runner.sync.stop(flush=False)  # this test drives the passes itself
        runner.lane.submit(w[0].code(NOW))
        headers = runner.status_headers()
        assert headers["X-Gate-Fault"] == "relay"
        for _ in range(2):  # a pass reports the link as the pass before left it: ONLINE from the 2nd on
            runner.sync.step(gate)
            assert runner.sync.last_report.ok, runner.sync.last_error
        assert store.stored_through(gate.config.device_id) == scanlog.head(gate.conn)
        assert any(r.get("action") == "relay_fault" for r in _controls(gate))
        with OpsDB(store).reader() as r:
            (row,) = queries.gates(r, gate.policy.event, time.time())
        assert row["link"] == runner.link.state().value == "ONLINE"
        from gate.db import get_setting
        assert get_setting(gate.conn, "link.state") is None  # no round trip through the database
        runner.lane.relay.repair()
        runner.lane.clear_fault(operator="ann")
        assert "X-Gate-Fault" not in runner.status_headers()
        runner.close()
    finally:
        server.stop()
        store.close()


# ------------------------------------------------------------------ 3. a COMMIT that fails


def _deny_commit(conn) -> None:
    """An injected failure at the SQLite level: every COMMIT on ``conn`` is refused
    (the statement fails; SQLite keeps the transaction open, as after SQLITE_BUSY)."""
    def authorizer(action, arg1, *_):
        if action == sqlite3.SQLITE_TRANSACTION and arg1 == "COMMIT":
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK
    conn.set_authorizer(authorizer)


def test_a_failed_commit_is_rolled_back_and_never_joined(tmp_path):
    # On main a failed COMMIT left the transaction open; the next
    # `transaction()` saw conn.in_transaction and joined it, so every later
    # "durable" write sat in a transaction that never committed. Another
    # connection (another process, a power cut) never saw them.
    conn = connect(tmp_path / "g.db")
    other = connect(tmp_path / "g.db")
    conn.execute("CREATE TABLE t (x)")
    _deny_commit(conn)
    with pytest.raises(StoreError, match="nothing of it was stored"):
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction  # rolled back, not left open
    conn.set_authorizer(None)
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES (2)")
    assert [r[0] for r in other.execute("SELECT x FROM t")] == [2]  # durable: another connection sees it
    # nesting is counted, not inferred: the inner block joins, the outer commits
    with transaction(conn):
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES (3)")
        assert conn.in_transaction and conn.tx_depth == 1
    assert conn.tx_depth == 0 and [r[0] for r in other.execute("SELECT x FROM t ORDER BY x")] == [2, 3]
    # a transaction this module did not open is never joined
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES (4)")
    with pytest.raises(StoreError, match="did not start"):
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES (5)")
    assert not conn.in_transaction and [r[0] for r in other.execute("SELECT x FROM t ORDER BY x")] == [2, 3]


def test_a_store_that_cannot_commit_stops_the_lane_and_loses_no_durable_append(setup):
    # The lane's own database refuses to commit: nothing was recorded, so the
    # relay never moves and the lane admits nothing (a store fault) until the
    # store works and a supervisor clears it. Every append the lane reported
    # afterwards is visible from a second connection: none silently lost.
    gate, w = setup
    runner, heard = _runner(gate)
    lane = runner.lane
    head = scanlog.head(gate.conn)
    _deny_commit(gate.conn)
    assert lane.submit(w[0].code(NOW)) is None
    assert lane.fault.kind is FaultKind.STORE and heard == [(FaultKind.STORE, None)]
    assert lane.relay.pulses == [] and not gate.conn.in_transaction
    assert lane.submit(w[1].code(NOW)) is None  # admits nothing, decides nothing
    with pytest.raises(StoreError):  # the store still fails: the fault stays
        lane.clear_fault(operator="ann")
    assert lane.fault is not None and scanlog.head(gate.conn) == head
    gate.conn.set_authorizer(None)  # the disk is back
    lane.clear_fault(operator="ann")
    ev = lane.submit(w[0].code(NOW))
    assert ev.outcome == "passed"
    fresh = Gate.open(gate.data_dir, now=NOW)  # another connection: what is really on disk
    try:
        recs = _records(fresh)
        assert [r.get("action") for r in recs[-4:-2]] == ["store_fault", "fault_cleared"]
        assert recs[-2]["seq"] == ev.seq and recs[-2]["decision"] == "accept" and recs[-1]["kind"] == "passed"
        assert scanlog.head(fresh.conn) == scanlog.head(gate.conn) and scanlog.verify_chain(fresh.conn).ok
    finally:
        fresh.close()


# ------------------------------------------------------------------ 2. lost keys


@pytest.fixture(scope="module")
def keyed_gate(tmp_path_factory):
    """A gate with a face-bound ticket (its template sealed with data.key), kept pristine."""
    from gate.ledger import encode_template
    tmp = tmp_path_factory.mktemp("keys")
    issuer = Issuer("evt-keys", keys=[Ed25519PrivateKey.from_private_bytes(bytes(range(32)))])
    run_gate(tmp / "g", "init", "--event", issuer.event)
    (tmp / "ring.json").write_text(json.dumps(issuer.keyring()))
    run_gate(tmp / "g", "keys", "trust", str(tmp / "ring.json"))
    w = issuer.mint(ticket_id=bytes(16), rotating=False)
    write_jsonl(tmp / "t.jsonl", [ticket_record(w, face_required=True,
                                                face_template=encode_template([0.01] * 128))])
    run_gate(tmp / "g", "ledger", "import", str(tmp / "t.jsonl"))
    return tmp / "g", w


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("name,damage", [
    ("device.key", "deleted"), ("device.key", "truncated"),
    ("data.key", "deleted"), ("data.key", "truncated"),
    ("data.key", "replaced"),  # a valid key, but not this gate's (another device key is central's to refuse)
])
def test_a_lost_or_damaged_key_is_an_error_never_a_new_key(keyed_gate, tmp_path, name, damage):
    # On main a missing data.key was silently replaced (every face template then
    # read as NO_FACE_ENROLLED) and device.key was created anew on read paths
    # (a new identity central and peers refuse). Now every command stops with
    # exit 2, names the file and says what to do; no key file is written.
    data, w = keyed_gate
    g = _copy(data, tmp_path / "g")
    key = g / "keys" / name
    if damage == "deleted":
        key.unlink()
    elif damage == "truncated":
        key.write_bytes(key.read_bytes()[:7])
    else:
        key.write_bytes(os.urandom(32))  # a valid key, but not the one the templates were sealed with
    before = {p.name: p.read_bytes() for p in (g / "keys").iterdir()}
    code = w.code(NOW)
    for args in (["verify", code], ["log"], ["bus", "status"], ["ledger", "stats"],
                 ["run", "--scanner", "stdin", "--relay", "sim"], ["sync", "--once"],
                 ["face", "retention", "--days", "30"], ["init", "--event", "evt-keys"]):
        r = run_gate(g, *args, input=f"{code}\n", check=False)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert str(key) in r.stderr and "backup" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert "NO_FACE_ENROLLED" not in r.stdout
    assert {p.name: p.read_bytes() for p in (g / "keys").iterdir()} == before  # nothing created or replaced
    with pytest.raises(ConfigError, match=name):
        Gate.open(g, now=NOW)


def test_keys_are_created_at_init_and_kept_when_it_is_run_again(tmp_path):
    run_gate(tmp_path / "g", "init", "--event", "e1")
    keys = {p.name: p.read_bytes() for p in (tmp_path / "g" / "keys").iterdir()}
    assert sorted(keys) == ["data.key", "device.key"]
    run_gate(tmp_path / "g", "init", "--event", "e1", "--lane", "south")
    assert {p.name: p.read_bytes() for p in (tmp_path / "g" / "keys").iterdir()} == keys


# ------------------------------------------------------------------ 4. pretix codes and the lane policy


def _pretix_gate(tmp_path, key, **policy):
    g = Gate.init(tmp_path / "p", event="democon", **policy)
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    g.set_pretix({"url": "https://pretix.example/democon", "keys": [base64.b64encode(pem).decode()]})
    return g


def test_pretix_codes_honour_the_lanes_zones(tmp_path):
    # On main a lane with --zones A admitted a zone-B pretix ticket.
    from test_pretix_offline import sig1, ticket_protobuf
    from gate.pretix_codes import ticket_id_for
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    g = _pretix_gate(tmp_path, key, zones=("A",))
    codes = {"za": "zone-a-secret", "zb": "zone-b-secret", "none": "no-zone-secret"}
    ledger.import_tickets(g.conn, write_jsonl(tmp_path / "t.jsonl", [
        {"ticket_id": ticket_id_for(s), "event": "democon", "tier": "GA", "zone": z, "version": 1,
         "status": "valid", "entries": 1, "reentry": False, "face_required": False, "face_template": None,
         "holder": None} for s, z in ((codes["za"], "A"), (codes["zb"], "B"), (codes["none"], None))]),
        event="democon", data_key=g.data_key, now=NOW)
    d = g.decide(codes["zb"], now=NOW)
    assert (d.reason, d.zone) == (Reason.WRONG_ZONE, "B")
    assert g.decide(codes["none"], now=NOW).reason is Reason.WRONG_ZONE
    d = g.decide(codes["za"], now=NOW)
    assert (d.reason, d.zone) == (Reason.ACCEPT, "A")
    unlisted = sig1(key, ticket_protobuf("sold-later", 1))  # signed, not in the ledger: its zone is unknown
    assert g.decide(unlisted, now=NOW).reason is Reason.WRONG_ZONE
    g.close()


def test_pretix_and_require_rotating_are_refused_together(tmp_path):
    # pretix secrets are static codes: a --require-rotating lane would refuse
    # every one (or, on main, admit them). Enrolment refuses before the one-time
    # token is spent, every sync refuses, re-init refuses; a code that reaches
    # such a lane anyway is refused PROOF_REQUIRED.
    from gate.decision import LanePolicy
    from gate.pretix_codes import decide_pretix
    from sync import pretix
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    g = Gate.init(tmp_path / "r", event="democon", require_rotating=True)
    with pytest.raises(ConfigError, match="require-rotating"):  # no network call: port 9 is never asked
        pretix.enroll(g, "pretix+http://127.0.0.1:9/org/democon?list=1", "TOKEN")
    with pytest.raises(ConfigError, match="require-rotating"):
        g.set_pretix({"url": "x", "keys": []})
    assert g.pretix is None
    g.close()
    p = _pretix_gate(tmp_path, key)
    p.close()
    r = run_gate(tmp_path / "p", "init", "--event", "democon", "--require-rotating", check=False)
    assert r.returncode == 2 and "require-rotating" in r.stderr
    assert not Gate.open(tmp_path / "p", now=NOW).policy.require_rotating  # unchanged
    lane = LanePolicy(event="democon", require_rotating=True)
    d = decide_pretix("any-secret", now=NOW, lane=lane, keys=[], ledger=None)
    assert (d.reason, d.sub) == (Reason.PROOF_REQUIRED, Sub.LANE_ROTATING_ONLY)


# ------------------------------------------------------------------ 6. numbers and the demo


@pytest.mark.parametrize("args", [
    ["face", "retention", "--days", "nan"], ["face", "retention", "--days", "inf"],
    ["face", "retention", "--days", "-1"], ["face", "tolerance", "nan"],
    ["sync", "--interval", "nan"], ["sync", "--interval", "0"],
    ["run", "--scanner", "stdin", "--passage-timeout", "nan"], ["tui", "--passage-timeout", "inf"],
])
def test_float_options_refuse_nan_and_inf(tmp_path, args):
    # On main `face retention --days nan` stored a NaN deadline: the next open
    # switched biometrics off. Now it is a usage error before anything runs.
    run_gate(tmp_path / "g", "init", "--event", "e1")
    r = run_gate(tmp_path / "g", *args, check=False)
    assert r.returncode == 2 and "usage:" in r.stderr and "Traceback" not in r.stderr
    assert Gate.open(tmp_path / "g", now=NOW).retention_until() is None


@pytest.mark.parametrize("policy", ["refuse", "rotating-only"])
def test_when_alone_on_a_lane_with_neither_central_nor_bus_is_refused_at_start(tmp_path, policy):
    # A screen review: such a lane says ALONE, yet `--when-alone refuse` admitted an unlisted
    # paper code (the policy applies only to a lane that has something to be alone from).
    # Now the lane does not start and says why; `admit` (the default) still runs.
    run_gate(tmp_path / "g", "init", "--event", "e1")
    r = run_gate(tmp_path / "g", "run", "--scanner", "stdin", "--relay", "sim", "--sensor", "none",
                 "--when-alone", policy, input="", check=False)
    assert r.returncode == 2 and "needs --central URL or a venue bus" in r.stderr and "Traceback" not in r.stderr
    r = run_gate(tmp_path / "g", "run", "--scanner", "stdin", "--relay", "sim", "--sensor", "none", input="")
    assert r.returncode == 0


@pytest.mark.parametrize("args", [
    ["serve", "--pool-timeout", "nan"], ["serve", "--header-timeout", "inf"], ["serve", "--body-timeout", "0"],
    ["issue", "--count", "1", "--claim", "--claim-days", "nan"],
])
def test_central_float_options_refuse_nan_and_inf(tmp_path, args):
    # the central's options the same way: a usage error before anything starts (a NaN pool
    # timeout never times out; a NaN claim lifetime made links that never expire)
    r = run_gate(None, "central", "--data", str(tmp_path / "c"), *args, check=False)
    assert r.returncode == 2 and "usage:" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c").exists()


def test_demo_without_face_models_shows_the_real_error(tmp_path):
    # After a plain `pip install` (no dlib-bin) the demo failed halfway through
    # setup and its cleanup raised AttributeError, hiding why.
    (tmp_path / "dlib.py").write_text("raise ImportError(\"No module named 'dlib'\")\n")
    r = run_gate(None, "demo", "--headless", check=False, timeout=300,
                 env={"PYTHONPATH": str(tmp_path), "RUST_LOG": "off"})
    assert r.returncode == HardwareError.exit_code, r.stderr
    assert "dlib is missing" in r.stderr
    assert "AttributeError" not in r.stderr and "Traceback" not in r.stderr
    assert isinstance(HardwareError("x"), GateError)


@pytest.mark.anyio
async def test_the_staff_ui_shows_the_fault_and_clears_it_with_a_pin(setup):
    # The staff UI's minimal fault line: the verdict says LANE FAULT, the status
    # says FAULT; `p` asks for name and PIN and clears it only once the relay
    # works again (a wrong PIN or a still-stuck relay change nothing).
    from gate import pins
    from tui.app import GateApp, PinScreen, Verdict
    gate, w = setup
    pins.set_pin(gate, "ann", "246813")
    runner, _ = _runner(gate, relay="sim:stuck-after=1")
    lane = runner.lane
    app = GateApp(lane, clock=lambda: NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        lane.submit(w[0].code(NOW))
        await pilot.pause()
        assert "LANE FAULT: RELAY" in app.query_one(Verdict).render_text()
        assert "FAULT RELAY" in str(app.query_one("#status").render())
        await pilot.press("p")
        assert isinstance(app.screen, PinScreen)
        await pilot.press(*"ann", "enter", *"000000", "enter")  # wrong PIN: the dialog stays, says why
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, PinScreen) and lane.fault is not None
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("p", *"ann", "enter", *"246813", "enter")  # right PIN, relay still stuck
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert lane.fault is not None and not lane.paused
        lane.relay.repair()
        await pilot.press("p", *"ann", "enter", *"246813", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert lane.fault is None and not lane.paused
        assert "FAULT" not in str(app.query_one("#status").render())
    assert [(r["action"], r["operator"]) for r in _controls(gate)] == [("relay_fault", None), ("fault_cleared", "ann")]


@pytest.mark.parametrize("damage", [b"\xff\x00", b"\x81" * 5000 + b"\x01", b"\x83\x01\x02\x03",
                                    b"\xa1\x66action\x64none"])
def test_a_damaged_fault_record_is_a_log_error_never_a_traceback(tmp_path, damage):
    # Fails if a damaged record of the open fault (not CBOR, nested past the decoder's
    # depth, not a map, not a fault) escapes as a decoder error or RecursionError
    # instead of the LogError that tells the supervisor what to do.
    from gate.errors import LogError
    g = Gate.init(tmp_path / "g", event="evt-damage")
    try:
        entry = g.control("relay_fault", now=NOW, operator=None, detail="stuck")
        assert g.open_fault()["seq"] == entry.seq
        g.conn.execute("UPDATE scans SET record = ? WHERE seq = ?", (damage, entry.seq))
        for read in (g.open_fault, g.open_faults):
            with pytest.raises(LogError, match=f"record {entry.seq} .*gate log verify"):
                read()
    finally:
        g.close()
