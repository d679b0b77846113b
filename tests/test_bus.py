"""The venue bus with real processes: `gate run --scanner stdin --json-events`
lanes on 127.0.0.1 (explicit endpoints, multicast off), bare Zenoh sessions
that forge and flood (tests/bus_peer.py), a real central. The attacks of issue
19 are in test_bus_attacks.py. No blind sleeps: every wait polls a condition with a
bounded deadline."""

from __future__ import annotations

import hashlib
import json
import shutil
import time

import pytest

from crypto.issuer import Issuer
from gate.keyfiles import load_device_key
from gate import bus, scanlog
from bus_lanes import LaneProc, Outsider, free_ports, lane, setup_gate, trust_all
from conftest import json_lines, run_gate

EVENT = "evt-bus"
pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def venue(tmp_path):
    """Two provisioned gates (north-1, north-2) trusting each other, and the issuer."""
    iss = Issuer(EVENT)
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps(iss.keyring()))
    a, b = tmp_path / "a", tmp_path / "b"
    entries = [setup_gate(a, EVENT, "north-1", ring), setup_gate(b, EVENT, "north-2", ring)]
    trust_all([a, b], EVENT, entries, tmp_path)
    procs: list[LaneProc] = []
    yield iss, a, b, entries, procs
    for p in procs:
        p.stop()


def bus_status(data: Path) -> dict:
    return json.loads(run_gate(data, "bus", "status", "--json").stdout)


def received(st: dict) -> dict:
    return st.get("last_run", {}).get("received", {})


def poll(fn, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def test_acceptance_admitted_at_a_refused_at_b_and_learnt_by_a_after_restart(venue):
    iss, a_dir, b_dir, _, procs = venue
    pa, pb = free_ports(2)
    a = lane(procs, a_dir, pa, [pb])
    b = lane(procs, b_dir, pb, [pa])
    assert a.ready()["link"] == "VENUE" and b.ready()["link"] == "VENUE"  # no central: peers only
    paper = iss.mint(rotating=False)
    first = a.scan(paper.code(time.time()))
    assert first["reason"] == "ACCEPT" and first["link"] == "VENUE"
    # B refuses the photocopy, naming A. Fails if the record never travels, is not
    # trusted, or the usage query ignores bus admissions.
    poll(lambda: bus_status(b_dir)["admissions_from_bus"] == 1, "B stores A's admission")
    again = b.scan(paper.code(time.time()))
    assert again["reason"] == "ALREADY_USED"
    assert "north-1" in again["detail"]
    # A is off while B admits a ticket; A restarted refuses it on its FIRST decision
    # (fails if catch-up does not run before the lane reads its scanner)
    a.stop()
    poll(lambda: b.next(lambda e: "link" in e and "reason" not in e)["link"] == "ALONE", "B sees A gone")
    ticket = iss.mint(rotating=False)
    assert b.scan(ticket.code(time.time()))["reason"] == "ACCEPT"
    a = lane(procs, a_dir, pa, [pb])
    assert a.ready()["caught_up"] >= 1
    e = a.scan(ticket.code(time.time()))
    assert e["reason"] == "ALREADY_USED" and "north-2" in e["detail"]


def test_rollback_at_a_voids_the_admission_at_b(venue):
    import sqlite3
    iss, a_dir, b_dir, _, procs = venue
    pa, pb = free_ports(2)
    # A's holder never passes: the admission is rolled back after 0.1 s
    a = lane(procs, a_dir, pa, [pb], "--sensor", "sim:never", "--passage-timeout", "0.1")
    # B's endpoints set once with 'gate init' (fails if init does not store them for 'gate run')
    run_gate(b_dir, "init", "--event", EVENT, "--lane", "north-2", "--bus-listen", f"tcp/127.0.0.1:{pb}",
             "--bus-peer", f"tcp/127.0.0.1:{pa}")
    b = lane(procs, b_dir, None, [])
    a.ready(), b.ready()
    w = iss.mint(rotating=False)
    assert a.scan(w.code(time.time()))["outcome"] == "rolled_back"

    def voided():
        with sqlite3.connect(b_dir / "gate.db") as c:
            return c.execute("SELECT voided FROM remote_admissions WHERE ticket_id = ?", (w.ticket_id,)).fetchone()
    poll(lambda: voided() == (1,), "B voids A's rolled-back admission")
    # fails if the rollback did not travel or does not void: B would say ALREADY_USED
    assert b.scan(w.code(time.time()))["reason"] == "ACCEPT"


def record(device: str, seq: int, ticket: str, event: str = EVENT, lane_name: str = "north-2", **over) -> dict:
    return {"kind": "scan", "ts_ms": int(time.time() * 1000), "device": device, "lane": lane_name, "event": event,
            "mode": "entry", "decision": "accept", "reason": "ACCEPT", "ticket_id": ticket, "consumes": True,
            "seq": seq, **over}


def signed(key, device: str, seq: int, ticket: str, *, pu=(0, scanlog.GENESIS), **over) -> bus.BusMessage:
    """A bus message as `device` would publish it, signed with `key` (its own, or not)."""
    h = hashlib.sha256(b"%s %d" % (device.encode(), seq)).digest()
    return bus.sign_record(key, device, seq, h, pu[0], pu[1], record(device, seq, ticket, **over))


def test_forged_records_change_no_decision_and_are_counted(venue, tmp_path):
    from dataclasses import replace

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    iss, a_dir, b_dir, entries, procs = venue
    (pa,) = free_ports(1)
    a = lane(procs, a_dir, pa, [])
    a.ready()
    w1, w2, w3 = (iss.mint(rotating=False) for _ in range(3))
    b_id = entries[1]["device_id"]
    b_key = load_device_key(b_dir)  # a trusted device's real key
    unknown = signed(Ed25519PrivateKey.generate(), "gate-stranger", 1, w1.ticket_id)
    good = signed(b_key, b_id, 1, w2.ticket_id)
    edited = replace(good, record=good.record.replace(w2.ticket_id.encode(), w1.ticket_id.encode()))
    other_event = signed(b_key, b_id, 2, w3.ticket_id, event="evt-other")
    impostor = signed(Ed25519PrivateKey.generate(), b_id, 3, w3.ticket_id)
    peer = Outsider(tmp_path, EVENT, connect=[f"tcp/127.0.0.1:{pa}"])
    try:
        msgs = [unknown.encode(), edited.encode(), other_event.encode(), impostor.encode(), b"\xa1junk"]
        assert peer.do("publish", file=peer.messages_file(msgs))["sent"] == 5
        # fails if any forged message is stored, or is silently dropped uncounted
        st = poll(lambda: (lambda s: s if sum(received(s).get(k, 0) for k in (
            "unknown_device", "bad_signature", "wrong_event", "malformed")) >= 5 else None)(bus_status(a_dir)),
            "A counts the five forged messages")
        r = st["last_run"]["received"]
        assert r["unknown_device"] == 1 and r["bad_signature"] == 2 and r["wrong_event"] == 1
        assert r["malformed"] == 1 and r["accepted"] == 0 and st["peer_records"] == 0
        for w in (w1, w3):  # the tickets the forgeries named are still admitted
            assert a.scan(w.code(time.time()))["reason"] == "ACCEPT"
    finally:
        peer.stop()


def test_peer_killed_mid_stream_and_a_dead_endpoint(venue):
    iss, a_dir, b_dir, _, procs = venue
    pa, pb, dead = free_ports(3)
    a = lane(procs, a_dir, pa, [pb, dead])  # one peer endpoint nobody listens on
    b = lane(procs, b_dir, pb, [pa])
    a.ready(), b.ready()
    ws = [iss.mint(rotating=False) for _ in range(6)]
    for w in ws[:5]:
        b.proc.stdin.write(w.code(time.time()) + "\n")
    b.proc.stdin.flush()
    b.next(lambda e: e.get("reason") == "ACCEPT")  # at least one decided; then killed mid-stream
    b.kill()
    # A notices (ALONE: no central, no peer) and keeps deciding (fails if a dead
    # peer blocks the lane)
    a.next(lambda e: e.get("link") == "ALONE" and "reason" not in e)
    fresh = a.scan(ws[5].code(time.time()))
    assert fresh["reason"] == "ACCEPT" and fresh["link"] == "ALONE"
    log = json.loads(run_gate(a_dir, "log", "--json", "--limit", "100").stdout.splitlines()[-1])
    assert log["alone"] is True  # the admission while ALONE is flagged in its record
    # B's durable records may not all have been published before the kill: B back,
    # A catches up and refuses exactly what B admitted (fails if catch-up on rejoin misses)
    b = lane(procs, b_dir, pb, [pa])
    b.ready()
    admitted_at_b = {r["ticket_id"] for r in json_lines(run_gate(b_dir, "log", "--json").stdout)
                     if r.get("decision") == "accept"}
    assert admitted_at_b
    poll(lambda: bus_status(a_dir)["admissions_from_bus"] == len(admitted_at_b), "A catches up with B")
    for w in ws[:5]:
        want = "ALREADY_USED" if w.ticket_id in admitted_at_b else "ACCEPT"
        assert a.scan(w.code(time.time()))["reason"] == want


def test_when_alone_policies_and_bad_endpoint(venue):
    iss, a_dir, _, _, procs = venue
    (dead,) = free_ports(1)
    bad = run_gate(a_dir, "run", "--scanner", "stdin", "--bus-peer", "127.0.0.1:7447", check=False, input="")
    assert bad.returncode != 0 and "tcp/IP:PORT" in bad.stderr and "Traceback" not in bad.stderr
    a = lane(procs, a_dir, None, [dead], "--when-alone", "refuse")
    assert a.ready()["link"] == "ALONE"
    e = a.scan(iss.mint(rotating=False).code(time.time()))
    assert e["reason"] == "LANE_ALONE"
    a.stop()
    a = lane(procs, a_dir, None, [dead], "--when-alone", "rotating-only")
    a.ready()
    assert a.scan(iss.mint(rotating=False).code(time.time()))["reason"] == "PROOF_REQUIRED"
    assert a.scan(iss.mint().code(time.time()))["reason"] == "ACCEPT"


def test_peer_restarted_with_an_older_database(venue, tmp_path):
    iss, a_dir, b_dir, _, procs = venue
    pa, pb = free_ports(2)
    backup = tmp_path / "b-backup"
    shutil.copytree(b_dir, backup)
    a = lane(procs, a_dir, pa, [pb])
    b = lane(procs, b_dir, pb, [pa])
    a.ready(), b.ready()
    t1 = iss.mint(rotating=False)
    assert b.scan(t1.code(time.time()))["reason"] == "ACCEPT"
    poll(lambda: a.scan(t1.code(time.time()))["reason"] == "ALREADY_USED", "A learns t1")
    b.stop()
    shutil.rmtree(b_dir)
    shutil.copytree(backup, b_dir)  # B comes back from a backup taken before t1
    b = lane(procs, b_dir, pb, [pa])
    b.ready()
    # B learns from A what it admitted itself before the restore (fails if a gate
    # ignores records under its own id)
    assert b.scan(t1.code(time.time()))["reason"] == "ALREADY_USED"
    # and what B admits now still reaches A
    t2 = iss.mint(rotating=False)
    b.proc.stdin.write(t2.code(time.time()) + "\n")
    b.proc.stdin.flush()
    assert b.next(lambda e: "reason" in e)["reason"] == "ACCEPT"
    poll(lambda: a.scan(t2.code(time.time()))["reason"] == "ALREADY_USED", "A refuses t2 from the restored B")


def test_flooding_peer_never_blocks_the_lane(venue, tmp_path):
    iss, a_dir, b_dir, entries, procs = venue
    (pa,) = free_ports(1)
    a = lane(procs, a_dir, pa, [])
    a.ready()
    b_id = entries[1]["device_id"]
    b_key = load_device_key(b_dir)
    w = iss.mint(rotating=False)
    real = signed(b_key, b_id, 1, w.ticket_id).encode()
    junk = [signed(b_key, "gate-x", i, "00" * 16).encode() for i in range(1, 200)]
    peer = Outsider(tmp_path, EVENT, connect=[f"tcp/127.0.0.1:{pa}"])
    try:
        peer.send("publish", file=peer.messages_file(junk + [real]), repeat=250)  # 50,000 messages
        # decisions come back while the flood runs (fails if the receiver shares the lane's thread/lock)
        fresh = [iss.mint(rotating=False) for _ in range(5)]
        assert [a.scan(x.code(time.time()))["reason"] for x in fresh] == ["ACCEPT"] * 5
        assert peer.result()["sent"] == 50000
        poll(lambda: a.scan(w.code(time.time()))["reason"] == "ALREADY_USED", "the real record got through")
        st = poll(lambda: (lambda s: s if received(s).get("unknown_device") else None)(bus_status(a_dir)),
                  "flood counted")
        r = st["last_run"]
        # bounded: what was not processed was dropped and counted, never queued without limit
        assert r["received"]["unknown_device"] + r["dropped_in_unknown"] <= 50000
        assert st["peer_records"] == 1
    finally:
        peer.stop()


def test_central_and_bus_carry_one_admission_counted_once(tmp_path):
    from crypto.issuer import Wallet
    from sync.central.app import ServerThread, create_app
    from sync.central.reconcile import build_report
    from sync.central.store import CentralStore
    store = CentralStore(tmp_path / "central")
    store.create_event(EVENT)
    (m,) = store.issue(EVENT, count=1, out=tmp_path / "w", entries=2, rotating=False)
    w = Wallet.load(m["file"])
    server = ServerThread(create_app(store)).start()
    procs = []
    try:
        dirs = [tmp_path / "a", tmp_path / "b"]
        for d, name in zip(dirs, ("north-1", "north-2")):
            run_gate(d, "init", "--event", EVENT, "--lane", name)
        for d in dirs:  # the second enrolment's sync brings both devices' keys (trust from central)
            run_gate(d, "sync", "--central", server.url, "--enroll", store.enrol_code(EVENT), "--once")
        run_gate(dirs[0], "sync", "--once")
        assert bus_status(dirs[0])["trusted_devices"] == 2
        pa, pb = free_ports(2)
        a = lane(procs, dirs[0], pa, [pb], "--central", server.url)
        b = lane(procs, dirs[1], pb, [pa], "--central", server.url)
        a.ready(), b.ready()
        assert a.scan(w.code(time.time()))["reason"] == "ACCEPT"
        poll(lambda: bus_status(dirs[1])["admissions_from_bus"] == 1, "B hears A's admission on the bus")
        b.stop()
        a.stop()
        run_gate(dirs[0], "sync", "--once")
        run_gate(dirs[1], "sync", "--once")  # central now also carries A's admission to B
        # two entries allowed, one used: B admits (fails if central + bus counted it twice)
        out = run_gate(dirs[1], "verify", "--json", w.code(time.time()))
        assert json.loads(out.stdout)["reason"] == "ACCEPT"
        run_gate(dirs[1], "sync", "--once")
        rep = build_report(store, EVENT)
        assert rep["double_admissions"] == [] and sum(rep["per_gate"].values()) == 2
    finally:
        for p in procs:
            p.stop()
        server.stop()
        store.close()


def test_bus_closed_and_reopened_in_the_same_process_is_counted_again(venue):
    # Two lanes in one process (build_lane, real Zenoh sessions on 127.0.0.1): B's bus
    # is closed and reopened on the same endpoints (a new session, a new Zenoh id), as
    # `gate demo` does for its partition. A counts B again only after a fresh signed
    # liveness answer. Fails if liveness is challenged only on first join, if the
    # count is keyed on the old session, or if B cannot listen on its port again.
    from gate.app.compose import LaneSpec, build_lane, open_gate
    from gate.bus import LinkState

    _, a_dir, b_dir, entries, _ = venue
    pa, pb = free_ports(2)
    runners = []
    try:
        for d, mine, other in ((a_dir, pa, pb), (b_dir, pb, pa)):
            spec = LaneSpec(relay="sim", sensor="sim", bus_listen=(f"tcp/127.0.0.1:{mine}",),
                            bus_peers=(f"tcp/127.0.0.1:{other}",))
            runners.append(build_lane(spec, open_gate(d), start_sync=False))
        a, b = runners
        for r in runners:
            r.start_bus(wait_peers_s=0.0)
        # no central here: VENUE with a live peer, ALONE without
        poll(lambda: a.link.peers == 1 and a.link() is LinkState.VENUE, "A counts B")
        b.close_bus()
        poll(lambda: a.link.peers == 0 and a.link() is LinkState.ALONE, "A sees B gone")
        b.open_bus()
        b.start_bus(wait_peers_s=0.0)
        poll(lambda: a.link.peers == 1 and a.link() is LinkState.VENUE, "A counts B again after B's bus reopened",
             timeout=30)
        assert a.bus.live_peers() == [entries[1]["device_id"]]
        poll(lambda: b.link.peers == 1, "B counts A on its new session", timeout=30)
    finally:
        for r in runners:
            r.close()
            r.gate.close()


def test_demo_restore_after_the_partition_counts_the_peer_again(tmp_path):
    # `gate demo`'s own steps: central cut (VENUE, one peer), north-2's bus closed
    # (north-1 ALONE), network and bus restored. north-1's staff screen showed
    # "0 peers" to the end: its bus had been opened (plain TCP) before the first sync
    # brought the gates' bus credentials, and north-2's, reopened, spoke mutual TLS
    # only, so the two never met again. Fails if the demo opens a lane's bus before
    # the gate holds its credential.
    from gate.app.demo import Demo
    from gate.bus import LinkState

    demo = Demo(tmp_path / "demo", out=lambda line: None)
    try:
        demo.setup()
        north1 = demo.runners[0]
        demo._cut()
        poll(lambda: north1.link.peers == 1 and north1.link() is LinkState.VENUE, "north-1 counts north-2",
             timeout=30)
        demo._partition()
        poll(lambda: north1.link.peers == 0 and north1.link() is LinkState.ALONE, "north-1 alone", timeout=30)
        demo._restore()
        transports = [r.bus.port.tls for r in demo.runners]
        assert transports == [True, True], f"both buses on mutual TLS (tls per lane: {transports})"
        poll(lambda: north1.link.peers == 1, "north-1 counts north-2 again after the restore", timeout=30)
        demo.online = False  # central away again: the bus alone makes north-1 VENUE, not ALONE
        assert north1.link() is LinkState.VENUE
    finally:
        demo.close()

def test_core_bus_imports_no_network_library_and_reads_no_clock():
    # fails if gate/bus.py (the port) or the lane pulls in zenoh or a shell module,
    # or if building the CLI parser starts importing the Zenoh adapter
    from test_cli import ROOT, _loaded_after
    assert _loaded_after("import gate.bus, gate.lane, gate.appliance",
                         ("zenoh", "sync", "hardware", "tui", "requests")) == []
    assert _loaded_after("from gate.app.cli import build_parser; build_parser()", ("zenoh",)) == []
    src = (ROOT / "gate" / "bus.py").read_text()
    assert not any(n in src for n in ("time.time(", "datetime.now(", "time.monotonic(", "import time"))


def test_publish_queue_is_bounded_and_never_blocks_the_lane(tmp_path):
    # A congested link (a port whose publish is stuck): the lane's hook still
    # returns at once, the queue stays at its bound and the oldest gossip is
    # dropped and counted. Fails if appended() waits for the network or the
    # queue grows without limit.
    import threading

    from gate.appliance import Gate
    from sync.bus_service import BusService

    stuck = threading.Event()

    class CongestedPort:
        def publish(self, device_id, seq, message):
            stuck.wait(30)

        def subscribe(self, handler): ...
        def answer(self, kind, handler): ...
        def sessions(self): return 1
        def close(self): stuck.set()

        def query(self, kind, payload, *, timeout_s, on_reply, on_done):
            on_done()

    g = Gate.init(tmp_path / "g", event=EVENT)
    iss = Issuer(EVENT)
    g.trust(iss.keyring())
    seqs = [g.scan(iss.mint(rotating=False).code(time.time()), now=time.time())[1].seq for _ in range(3)]
    svc = BusService(g.data_dir, CongestedPort(), device_id=g.config.device_id, event=EVENT, queue_max=8)
    svc.start()
    try:
        svc.appended(seqs[0])
        poll(lambda: not svc._out, "the publisher takes the first record and gets stuck in publish")
        for i in range(1000):
            svc.appended(seqs[i % 3])
        assert len(svc._out) == 8 and svc.dropped_out == 1000 - 8
    finally:
        svc.close()
        g.close()


def test_an_enrolled_gate_without_a_bus_credential_is_warned_at_start(tmp_path, central_db):
    # An enrolled gate that never synced opens its bus on plain TCP; neighbours that hold a
    # credential speak TLS only, so the two would never meet and both could show ALONE.
    from conftest import central_for
    from gate.appliance import Gate
    from sync import client as sc

    with central_for(tmp_path, central_db, "evt-warn") as (store, server):
        g = Gate.init(tmp_path / "g", event="evt-warn", lane="north-1")
        sc.enroll(g, server.url, store.enrol_code("evt-warn"))  # registered, no sync pass yet
        g.close()
        (port,) = free_ports(1)
        args = ("run", "--scanner", "stdin", "--relay", "sim", "--sensor", "none",
                "--bus-listen", f"tcp/127.0.0.1:{port}")
        r = run_gate(tmp_path / "g", *args, input="", env={"RUST_LOG": "off"})
        assert "holds no venue-bus credential yet" in r.stderr and "sync --once" in r.stderr
        run_gate(tmp_path / "g", "sync", "--once")  # the pass brings the credential: no warning
        r = run_gate(tmp_path / "g", *args, input="", env={"RUST_LOG": "off"})
        assert "venue-bus credential" not in r.stderr
