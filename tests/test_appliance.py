"""An appliance, not a script (issue 24): the systemd unit, the notify protocol and
its watchdog, Prometheus metrics, and the turnstile's own signals (the PASS
contact, the fire alarm, unlock A/B).

Real parts: the installed ``gate`` command in its own process, a real AF_UNIX
datagram socket as the service manager, real HTTP scrapes on 127.0.0.1, real
SQLite files, Debian's ``systemd-analyze verify``; the shipped simulated drivers
(``sim:hang-on=N`` sensor, ``sim:FILE`` contacts) for the hardware we lack.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid

import pytest
import requests

from gate import scanlog
from gate.app.compose import LaneSpec, build_lane, open_gate
from gate.decision import Mode
from gate.errors import HardwareError
from hardware.registry import open_device, usage
from conftest import GATE_BIN, json_lines, run_gate, static_gate
from ports import free_port

NOW = 1_807_283_662
WAIT_S = 60.0  # upper bound for anything a loaded machine makes slow (never a timing assertion)


class Clock:
    def __init__(self, t: float = NOW):
        self.t = t

    def now(self) -> float:
        self.t += 1
        return self.t

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


@pytest.fixture
def setup(tmp_path):
    """A gate with six listed static tickets (codes valid at any time)."""
    wallets = static_gate(tmp_path / "g", "evt-box", now=NOW)
    return tmp_path / "g", [w.code(NOW) for w in wallets]


def _controls(data) -> list[dict]:
    g = open_gate(data)
    try:
        return [e.record for e in scanlog.entries(g.conn) if e.record["kind"] == scanlog.CONTROL]
    finally:
        g.close()


# ------------------------------------------------------------------ the unit


def _unit(data, *args) -> str:
    return run_gate(data, "service", "unit", *args).stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_units_pass_systemd_analyze_verify(tmp_path):
    # systemd's own checker reads both units (lane and central) as it would at boot:
    # an unknown directive, a bad ExecStart quoting or a wrong section fails here.
    lane = _unit(tmp_path / "lane data", "--user", "gate", "--", "--camera", "opencv:0", "--relay",
                 "gpio:gpiochip0:17", "--sensor", "pass:gpio:gpiochip0:22", "--fire-input", "gpio:gpiochip0:27",
                 "--metrics-listen", "127.0.0.1:9100")
    central = run_gate(tmp_path / "central", "central", "service", "unit", "--", "--port", "8443").stdout
    for name, text in (("gate-lane.service", lane), ("gate-central.service", central)):
        path = tmp_path / name
        path.write_text(text)
        res = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert name.removesuffix(".service") not in res.stderr, res.stderr  # no warning about this unit


def test_the_lane_unit_is_a_notify_service_with_a_watchdog_and_a_sandbox(tmp_path):
    # What the unit promises: systemd waits for READY, restarts on failure and on a
    # silent watchdog, and the process writes only its data directory; the turnstile's
    # devices (cameras, GPIO, serial, HID) stay reachable through DeviceAllow + groups.
    data = tmp_path / "with space"
    text = _unit(data, "--user", "gate", "--watchdog", "20", "--", "--scanner", "stdin", "--relay", "sim")
    lines = text.splitlines()
    for want in ("Type=notify", "WatchdogSec=20", "Restart=on-failure", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "PrivateTmp=yes", "User=gate", "DevicePolicy=closed",
                 "DeviceAllow=char-video4linux rw", "DeviceAllow=char-gpiochip rw", "DeviceAllow=char-ttyUSB rw",
                 f'ReadWritePaths="{data}"', "WantedBy=multi-user.target"):
        assert want in lines, want
    (groups,) = [ln for ln in lines if ln.startswith("SupplementaryGroups=")]
    assert {"video", "gpio", "dialout"} <= set(groups.partition("=")[2].split())
    (exec_start,) = [ln for ln in lines if ln.startswith("ExecStart=")]
    assert exec_start.endswith(f'--data "{data}" run --scanner stdin --relay sim')
    assert exec_start.split()[0] == "ExecStart=" + str(GATE_BIN)


def test_unit_arguments_are_checked_now_not_in_a_restart_loop(tmp_path):
    # A typo in the run options would make systemd restart a failing lane forever:
    # refused here with exit 2 and a word on what to do; --tui has no terminal there.
    r = run_gate(tmp_path, "service", "unit", "--", "--scanner", "stdin", "--relay-typo", "sim", check=False)
    assert r.returncode == 2 and "do not parse" in r.stderr and "Traceback" not in r.stderr
    r = run_gate(tmp_path, "service", "unit", "--", "--tui", check=False)
    assert r.returncode == 2 and "--tui" in r.stderr


def test_install_needs_root_and_writes_the_unit(tmp_path, monkeypatch, capsys):
    # Not root: a clear refusal (exit 2) and nothing written. Root: the unit file,
    # world-readable, with the same text `service unit` prints.
    from gate.app.cli import main

    unit_dir = tmp_path / "units"
    args = ["--data", str(tmp_path / "d"), "service", "install", "--unit-dir", str(unit_dir), "--no-enable",
            "--", "--scanner", "stdin"]
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(args) == 2
    assert "needs root" in capsys.readouterr().err and not unit_dir.exists()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert main(args) == 0
    path = unit_dir / "gate-lane.service"
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.read_text() == _unit(tmp_path / "d", "--", "--scanner", "stdin")


# ------------------------------------------------------------------ sd_notify and the watchdog


class ServiceManager:
    """The service manager's end of the notify protocol: an abstract AF_UNIX datagram
    socket (the '@' form of $NOTIFY_SOCKET)."""

    def __init__(self):
        self.name = f"@gate-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.seen: list[str] = []

    def next(self, timeout: float = WAIT_S) -> str | None:
        self.sock.settimeout(timeout)
        try:
            msg = self.sock.recv(4096).decode()
        except socket.timeout:
            return None
        self.seen.append(msg)
        return msg

    def until(self, pred, timeout: float = WAIT_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if msg is not None and pred(msg):
                return msg
        raise AssertionError(f"never seen; got {self.seen[-10:]}")

    def close(self) -> None:
        self.sock.close()


def _start(data, *args, env=None) -> subprocess.Popen:
    return subprocess.Popen([str(GATE_BIN), "--data", str(data), "run", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                            env={**os.environ, **(env or {})})


def _event(proc, pred, timeout: float = WAIT_S) -> dict:
    """The next JSON line from ``proc`` that ``pred`` accepts (read on a thread: bounded)."""
    import json
    found: list = []

    def read():
        for line in proc.stdout:
            doc = json.loads(line)
            if pred(doc):
                found.append(doc)
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    assert found, "no such event"
    return found[0]


def test_gate_run_says_ready_pings_and_stops_pinging_when_the_loop_hangs(setup):
    # A real `gate run` under a real notify socket: READY=1 once the lane can decide,
    # then WATCHDOG=1 pings with a STATUS line naming the last decision. The second
    # code meets a passage sensor that hangs (sim:hang-on=2, a driver ignoring its
    # timeout): the decision loop is stuck, the pinger sees its heartbeat stop, says
    # so in STATUS and sends no more pings — systemd would restart the lane. On
    # SIGTERM (systemctl stop) it says STOPPING=1 and exits 0.
    data, codes = setup
    sm = ServiceManager()
    proc = _start(data, "--scanner", "stdin", "--relay", "sim", "--sensor", "sim:hang-on=2",
                  "--passage-timeout", "0.5", "--json-events",
                  env={"NOTIFY_SOCKET": sm.name, "WATCHDOG_USEC": "300000"})
    try:
        first = sm.until(lambda m: True)
        assert "READY=1" in first.splitlines() and "STATUS=link" in first
        sm.until(lambda m: "WATCHDOG=1" in m.splitlines())
        proc.stdin.write(codes[0] + "\n")
        proc.stdin.flush()
        ev = _event(proc, lambda d: "reason" in d)
        assert (ev["reason"], ev["outcome"]) == ("ACCEPT", "passed")
        sm.until(lambda m: "WATCHDOG=1" in m and "STATUS=" in m and "last ACCEPT passed" in m)
        proc.stdin.write(codes[1] + "\n")  # the sensor hangs on this one
        proc.stdin.flush()
        stuck = sm.until(lambda m: "decision loop stuck" in m)
        assert "WATCHDOG=1" not in stuck
        # after the stall was declared, no ping comes (ten ping intervals of silence)
        while (msg := sm.next(timeout=1.5)) is not None:
            assert "WATCHDOG=1" not in msg.splitlines(), msg
        proc.terminate()
        sm.until(lambda m: "STOPPING=1" in m.splitlines())
        assert proc.wait(timeout=WAIT_S) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sm.close()


def test_without_a_notify_socket_nothing_is_sent(setup):
    # Outside systemd the lane behaves as before: no socket opened, no watchdog thread.
    data, codes = setup
    r = run_gate(data, "run", "--scanner", "stdin", "--json-events", input=codes[0] + "\n",
                 env={"NOTIFY_SOCKET": "", "WATCHDOG_USEC": "100000"})
    assert [d["reason"] for d in json_lines(r.stdout) if "reason" in d] == ["ACCEPT"]


def test_the_watchdog_is_for_this_process_only(monkeypatch):
    from gate.app.service import watchdog_interval
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval({}) is None and watchdog_interval({"WATCHDOG_USEC": "x"}) is None


# ------------------------------------------------------------------ metrics


def _scrape(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families
    text = requests.get(url, timeout=30).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_metrics_count_decisions_by_reason_after_scans_through_stdin(setup):
    # Three codes through `--scanner stdin`: admitted, the same again (used), and
    # garbage. /metrics counts them by reason code, the latency histogram holds all
    # three, and the scrape-time gauges (link, outbox, ledger age) are there.
    data, codes = setup
    port = free_port()
    proc = _start(data, "--scanner", "stdin", "--sensor", "sim", "--json-events",
                  "--metrics-listen", f"127.0.0.1:{port}")
    try:
        for code in (codes[0], codes[0], "not a ticket"):
            proc.stdin.write(code + "\n")
        proc.stdin.flush()
        reasons = []
        while len(reasons) < 3:
            reasons.append(_event(proc, lambda d: "reason" in d)["reason"])
        assert reasons == ["ACCEPT", "ALREADY_USED", "MALFORMED"]
        m = _scrape(f"http://127.0.0.1:{port}/metrics")
        assert m["gate_decisions_total{reason=ACCEPT}"] == 1
        assert m["gate_decisions_total{reason=ALREADY_USED}"] == 1
        assert m["gate_decisions_total{reason=MALFORMED}"] == 1
        assert m["gate_decisions_total{reason=REVOKED}"] == 0  # every reason exists from the start
        assert m["gate_frame_to_relay_seconds_count"] == 3
        assert m["gate_outcomes_total{outcome=passed}"] == 1
        assert m["gate_outbox_records"] >= 3 and m["gate_ledger_age_seconds"] >= 0
        assert m["gate_link_state{state=ALONE}"] + m["gate_link_state{state=ONLINE}"] \
            + m["gate_link_state{state=VENUE}"] == 1
        assert m["gate_fault"] == 0 and m["gate_fire_alarm"] == 0 and m["gate_faults_total{kind=relay}"] == 0
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=WAIT_S) == 0


def test_a_port_in_use_is_a_clear_error(setup):
    data, _ = setup
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = run_gate(data, "run", "--scanner", "stdin", "--metrics-listen", f"127.0.0.1:{s.getsockname()[1]}",
                     input="", check=False)
    assert r.returncode == 2 and "--metrics-listen" in r.stderr and "Traceback" not in r.stderr
    r = run_gate(data, "run", "--scanner", "stdin", "--metrics-listen", "nowhere", input="", check=False)
    assert r.returncode == 2 and "IP:PORT" in r.stderr


def test_central_metrics_need_ops_credentials_and_use_route_templates(tmp_path):
    # /metrics on the API's address answers 401 without an ops account; with one it
    # counts requests under the route template (the event name never becomes a label)
    # and shows the database pool.
    from sync.central.app import ServerThread, create_app
    from sync.central.store import CentralStore

    run_gate(tmp_path / "c", "central", "ops", "add", "watcher", "--password-stdin", input="watch password 1\n")
    store = CentralStore(tmp_path / "c")
    srv = ServerThread(create_app(store)).start()
    try:
        assert requests.get(srv.url + "/metrics", timeout=30).status_code == 401
        for event in ("evt-a", "evt-b"):
            requests.get(f"{srv.url}/v1/events/{event}/keyring", timeout=30)  # 401: no device token
        requests.get(srv.url + "/v1/time", timeout=30)
        requests.get(srv.url + "/no/such/path", timeout=30)
        r = requests.get(srv.url + "/metrics", auth=("watcher", "watch password 1"), timeout=30)
        assert r.status_code == 200
        text = r.text
        assert 'central_http_requests_total{method="GET",route="/v1/events/{event}/keyring",status="401"} 2.0' in text
        assert 'central_http_requests_total{method="GET",route="/v1/time",status="200"} 1.0' in text
        assert 'route="unmatched",status="404"' in text and "evt-a" not in text
        assert 'central_db_pool_connections{pool="write",state="size"}' in text
        assert "central_scans_ingested_total" in text and "central_upload_batch_seconds_bucket" in text
    finally:
        srv.stop()


# ------------------------------------------------------------------ turnstile signals


def test_the_fire_input_holds_every_relay_released_admits_nothing_and_is_logged(setup, tmp_path):
    # A fire-alarm contact (a file the test toggles, sim:FILE) on a lane with unlock
    # A and B: active, both relays are held closed (turnstile released both ways),
    # a code is ignored and a manual admit refused; the start and the end are control
    # records. Inactive again: both relays open, and the next code is admitted.
    data, codes = setup
    fire = tmp_path / "fire"
    gate = open_gate(data)
    a, b = open_device("relay", "sim"), open_device("relay", "sim")
    runner = build_lane(LaneSpec(sensor="sim", relay_exit="sim", fire_input=f"sim:{fire}"), gate,
                        clock=Clock(), relay=a, start_sync=False)
    runner.lane.relay_exit = b  # the test's own B, to look at (the spec opened one: same driver)
    heard: list = []
    changed = threading.Event()
    runner.lane.on_fire.append(lambda active, detail: (heard.append(active), changed.set()))
    try:
        fire.write_text("1\n")
        assert changed.wait(WAIT_S) and heard == [True]
        assert runner.lane.fire and a.held and a.is_closed() and b.held and b.is_closed()
        assert runner.lane.submit(codes[0]) is None  # ignored, not logged
        with pytest.raises(HardwareError, match="fire alarm"):
            runner.lane.override(admit=True, operator="sup", ticket_id=None)
        changed.clear()
        fire.write_text("0\n")
        assert changed.wait(WAIT_S) and heard == [True, False]
        assert not a.is_closed() and not b.is_closed() and not runner.lane.fire
        ev = runner.lane.submit(codes[0])
        assert ev.decision.reason.value == "ACCEPT" and ev.outcome == "passed" and len(a.pulses) == 1
    finally:
        runner.close()
        gate.close()
    actions = [c["action"] for c in _controls(data)]
    assert actions == ["fire_alarm", "fire_alarm_end"]
    assert f"sim:{fire}" in _controls(data)[0]["detail"]


def test_gate_run_with_the_fire_input_active_opens_the_relay_and_says_so(setup, tmp_path):
    # The same through the command: the fire input is active from the first read
    # (sim:after=1); the relay's journal shows the hold, the code is not decided,
    # the JSON events say fire, and the scan log holds the start.
    data, codes = setup
    journal = tmp_path / "relay.log"
    r = run_gate(data, "run", "--scanner", "stdin", "--relay", f"sim:{journal}", "--fire-input", "sim:after=1",
                 "--json-events", input=codes[0] + "\n")
    lines = json_lines(r.stdout)
    assert lines[0]["fire"] is True and not any("reason" in d for d in lines)
    assert "hold" in journal.read_text()
    assert [c["action"] for c in _controls(data)] == ["fire_alarm"]


def test_an_unreadable_fire_input_counts_as_an_alarm(setup):
    # A fire panel nobody can read releases the lane rather than lock people in.
    data, codes = setup
    gate = open_gate(data)

    class Broken:
        def is_active(self):
            raise HardwareError("cable cut")

        def close(self):
            pass

    from gate.app.compose import FireMonitor
    runner = build_lane(LaneSpec(sensor="sim"), gate, clock=Clock(), start_sync=False)
    try:
        FireMonitor(runner.lane, Broken(), spec="gpio:gpiochip0:27").check()
        assert runner.lane.fire and runner.lane.relay.held
    finally:
        runner.close()
        gate.close()
    assert "unreadable" in _controls(data)[0]["detail"]


def test_unlock_b_opens_the_turnstile_for_exits(setup):
    # Two relays on one lane: entries pulse A, exits pulse B.
    data, codes = setup
    gate = open_gate(data)
    a, b = open_device("relay", "sim"), open_device("relay", "sim")
    runner = build_lane(LaneSpec(sensor="sim"), gate, clock=Clock(), relay=a, start_sync=False)
    runner.lane.relay_exit = b
    try:
        assert runner.lane.submit(codes[0]).outcome == "passed"
        runner.lane.set_mode(Mode.EXIT, operator="sup")
        assert runner.lane.submit(codes[0]).outcome == "exit"
        assert (len(a.pulses), len(b.pulses)) == (1, 1)
    finally:
        runner.close()
        gate.close()


def test_the_pass_contact_is_a_passage_sensor(setup, tmp_path):
    # The turnstile's PASS output on a contact input: a pulse within the passage
    # timeout is a passage; none rolls the admission back.
    data, codes = setup
    contact = tmp_path / "pass"
    gate = open_gate(data)
    runner = build_lane(LaneSpec(sensor=f"pass:sim:{contact}", passage_timeout_s=0.3), gate, clock=Clock(),
                        start_sync=False)
    try:
        assert runner.lane.submit(codes[0]).outcome == "rolled_back"  # the arm never turned
        runner.lane.opened.append(lambda ev: contact.write_text("1\n"))  # the arm turns once it is open
        assert runner.lane.submit(codes[1]).outcome == "passed"
        assert contact.read_text().strip() == "0"  # the pulse was read once
    finally:
        runner.close()
        gate.close()
    assert "pass:INPUT" in usage("sensor") and "sim:after=N" in usage("input")
    from hardware.registry import is_simulated
    assert is_simulated("sensor", "pass:sim:pulse") and not is_simulated("sensor", "pass:gpio:gpiochip0:22")
    with pytest.raises(HardwareError, match="pass:"):
        open_device("sensor", "pass:")



def test_a_real_serial_relay_holds_through_a_pulse_and_releases(setup):
    # The real serial driver on a real pty: hold() writes the "on" bytes and keeps the
    # contact closed (a pulse meanwhile changes nothing, no timer opens it), release()
    # writes "off"; the board sees exactly on, off.
    import pty
    import tty

    master, slave = pty.openpty()
    tty.setraw(master)
    relay = open_device("relay", f"serial:{os.ttyname(slave)}")
    try:
        relay.hold()
        relay.pulse(10)  # a fire alarm holds it: no timer, no second "on"
        assert relay.is_closed()
        relay.release()
        assert not relay.is_closed()
        got = b""
        while len(got) < 8:
            got += os.read(master, 8 - len(got))
        assert got == bytes.fromhex("A00101A2") + bytes.fromhex("A00100A1")
    finally:
        relay.close()
        os.close(master)
        os.close(slave)


def test_the_fire_alarm_reaches_central_in_the_uploaded_log(setup, tmp_path):
    # The ops room learns of the fire from the gate's scan log: after a sync, central
    # holds the gate's whole chain, the fire_alarm control record included, and while
    # it lasts the sync headers carry X-Gate-Fire.
    import cbor2

    from sync import client as sc
    from sync.central.app import ServerThread, create_app
    from sync.central.store import CentralStore

    data, codes = setup
    gate = open_gate(data)
    store = CentralStore(tmp_path / "central")
    store.create_event(gate.policy.event)
    server = ServerThread(create_app(store)).start()
    try:
        sc.enroll(gate, server.url, store.enrol_code(gate.policy.event))
        runner = build_lane(LaneSpec(sensor="sim", central=server.url), gate, clock=Clock())
        runner.sync.stop(flush=False)  # this test drives the pass itself
        runner.lane.fire_alarm(True, detail="fire input sim:after=1")
        assert runner.status_headers()["X-Gate-Fire"] == "1"
        runner.sync.step(gate)
        assert runner.sync.last_report.ok, runner.sync.last_error
        assert store.stored_through(gate.config.device_id) == scanlog.head(gate.conn)
        with store.reader() as db:
            rows = db.all("SELECT record FROM scans WHERE kind = 'control'")
        assert [cbor2.loads(bytes(r[0]))["action"] for r in rows] == ["fire_alarm"]
        runner.close()
    finally:
        server.stop()
        store.close()
        gate.close()


def test_central_serve_under_systemd_says_ready_pings_and_serves_metrics_on_its_own_address(tmp_path):
    # `gate central serve` as its unit runs it: READY=1 at the server loop's first
    # tick, WATCHDOG=1 from the event loop; --metrics-listen serves /metrics with no
    # credentials on a separate address while the API's /metrics still wants them.
    sm = ServiceManager()
    api, metrics = free_port(), free_port()
    unit = run_gate(tmp_path / "c", "central", "service", "unit", "--", "--port", str(api), "--metrics-listen",
                    f"127.0.0.1:{metrics}").stdout  # what the unit would start, word for word
    (exec_start,) = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    assert exec_start == f"ExecStart={GATE_BIN} --data {tmp_path / 'c'} central serve --port {api} " \
                        f"--metrics-listen 127.0.0.1:{metrics}"
    proc = subprocess.Popen(exec_start.partition("=")[2].split(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NOTIFY_SOCKET": sm.name, "WATCHDOG_USEC": "2000000"})
    try:
        assert "READY=1" in sm.until(lambda m: "READY=1" in m)
        sm.until(lambda m: "WATCHDOG=1" in m.splitlines())
        assert requests.get(f"http://127.0.0.1:{api}/metrics", timeout=30).status_code == 401
        requests.get(f"http://127.0.0.1:{api}/v1/time", timeout=30)
        text = requests.get(f"http://127.0.0.1:{metrics}/metrics", timeout=30).text
        assert 'route="/v1/time",status="200"' in text
        proc.terminate()  # uvicorn shuts down, then re-raises SIGTERM: systemd counts that as clean
        assert proc.wait(timeout=WAIT_S) in (0, -15)
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sm.close()


def test_a_relay_that_cannot_hold_the_turnstile_released_is_a_fault(setup):
    # People must be able to leave: a relay whose hold fails at the alarm is a relay
    # fault (logged, shown), which outlives the alarm until a supervisor clears it.
    from gate.lane import FaultKind
    from hardware.relay import SimRelay

    class Stuck(SimRelay):
        def hold(self):
            raise HardwareError("relay: the board does not answer")

    data, codes = setup
    gate = open_gate(data)
    runner = build_lane(LaneSpec(sensor="sim"), gate, clock=Clock(), relay=Stuck(), start_sync=False)
    try:
        runner.lane.fire_alarm(True, detail="test")
        assert runner.lane.fire and runner.lane.fault.kind is FaultKind.RELAY
        runner.lane.fire_alarm(False)
        assert runner.lane.fault is not None and runner.lane.submit(codes[0]) is None
    finally:
        runner.close()
        gate.close()
    assert [c["action"] for c in _controls(data)] == ["fire_alarm", "relay_fault", "fire_alarm_end"]
