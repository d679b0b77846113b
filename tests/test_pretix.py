"""Gates that sync from, and report back to, a real pretix server (installed in
its own venv at test time; skipped with the reason when it cannot be installed)."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from conftest import json_lines, run_gate
from pretix_server.harness import PretixServer

pytestmark = pytest.mark.pretix
POSITIONS = 150  # per event: two events, a few hundred positions


@pytest.fixture(scope="module")
def pretix(tmp_path_factory):
    server = PretixServer(tmp_path_factory.mktemp("pretix"), POSITIONS)
    yield server
    server.stop()


def _gate(tmp_path, pretix, event, device, name="gate"):
    data = tmp_path / name
    run_gate(data, "init", "--event", event, "--lane", name)
    token = pretix.seed["events"][event]["devices"][device]
    out = json.loads(run_gate(data, "sync", "--central", pretix.url(event), "--enroll", token, "--once",
                              "--json").stdout)
    assert out["ok"], out
    assert oct((data / "keys" / "token").stat().st_mode)[-3:] == "600"
    return data, out


def _verify(data, now, *codes, mode=None):
    args = ["verify", "--json", "--now", str(now)] + (["--mode", mode] if mode else []) + ["--", *codes]
    return json_lines(run_gate(data, *args).stdout)


def _cut(data):
    """Point the gate at a dead address: everything below is decided offline."""
    conn = sqlite3.connect(data / "gate.db")
    cfg = json.loads(conn.execute("SELECT value FROM settings WHERE key = 'pretix'").fetchone()[0])
    live = cfg["base"]
    cfg["base"] = "http://127.0.0.1:9"
    conn.execute("UPDATE settings SET value = ? WHERE key = 'pretix'", (json.dumps(cfg),))
    conn.commit()
    return live


def _restore(data, base):
    conn = sqlite3.connect(data / "gate.db")
    cfg = json.loads(conn.execute("SELECT value FROM settings WHERE key = 'pretix'").fetchone()[0])
    cfg["base"] = base
    conn.execute("UPDATE settings SET value = ? WHERE key = 'pretix'", (json.dumps(cfg),))
    conn.commit()


def test_random_secrets_offline_then_upload_exactly_once(pretix, tmp_path):
    data, out = _gate(tmp_path, pretix, "random", 0)
    assert out["tickets"] == POSITIONS
    pos = pretix.seed["events"]["random"]["positions"]
    live = _cut(data)
    then = int(time.time()) - 600  # the gate's own timestamps, ten minutes before the upload
    admitted = _verify(data, then, *[p["secret"] for p in pos[:10]])
    assert [d["reason"] for d in admitted] == ["ACCEPT"] * 10
    rejected = _verify(data, then + 5, pos[0]["secret"], "not-a-real-secret-at-all")
    assert [d["reason"] for d in rejected] == ["ALREADY_USED", "NOT_IN_LEDGER"]
    # the turnstile never turned for the tenth holder: roll it back
    from gate.appliance import Gate
    g = Gate.open(data, now=time.time())
    g.rollback(admitted[9]["seq"], now=then + 7)
    g.close()
    r = run_gate(data, "sync", "--once", check=False)
    assert r.returncode != 0  # offline: nothing lost, nothing sent
    _restore(data, live)
    assert json.loads(run_gate(data, "sync", "--once", "--json").stdout)["ok"]
    # re-sending everything changes nothing (stable nonces)
    conn = sqlite3.connect(data / "gate.db")
    conn.execute("UPDATE settings SET value = '0' WHERE key = 'sync.uploaded_through'")
    conn.commit()
    assert json.loads(run_gate(data, "sync", "--once", "--json").stdout)["ok"]

    list_id = pretix.seed["events"]["random"]["list"]
    checkins = pretix.team_get("/events/random/checkins/", list=list_id)
    ok = [c for c in checkins if c["successful"]]
    assert sorted(c["position"] for c in ok) == sorted(p["position_id"] for p in pos[:9])
    for c in ok:  # the gate's own time, not the upload time
        ts = time.mktime(time.strptime(c["datetime"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        assert then - 2 <= ts <= then + 2, c["datetime"]
    reasons = sorted(c["error_reason"] for c in checkins if not c["successful"])
    assert reasons == ["already_redeemed", "annulled", "invalid"]
    annulled = [c for c in checkins if c["error_reason"] == "annulled"]
    assert annulled[0]["position"] == pos[9]["position_id"]


def test_signed_secrets_verified_offline_with_revoked_and_blocked_lists(pretix, tmp_path):
    data, out = _gate(tmp_path, pretix, "signed", 0)
    assert out["keys"] == 1
    ev = pretix.seed["events"]["signed"]
    live = _cut(data)
    now = int(time.time())
    good = ev["positions"][2]["secret"]
    tampered = good[:-8] + ("A" if good[-8] != "A" else "B") + good[-7:]
    res = _verify(data, now, good, ev["revoked_secret"], ev["blocked_secret"], tampered)
    assert [d["reason"] for d in res[:3]] == ["ACCEPT", "REVOKED", "REVOKED"]
    assert res[3]["decision"] == "reject"
    # a valid signature is enough offline, even for a ticket the ledger lacks
    from gate.pretix_codes import ticket_id_for
    conn = sqlite3.connect(data / "gate.db")
    fresh = ev["positions"][3]["secret"]
    conn.execute("DELETE FROM tickets WHERE ticket_id = ?", (ticket_id_for(fresh),))
    conn.commit()
    res = _verify(data, now, fresh)
    assert res[0]["reason"] == "ACCEPT" and res[0]["unlisted"]
    _restore(data, live)
    assert json.loads(run_gate(data, "sync", "--once", "--json").stdout)["ok"]
    ok = [c for c in pretix.team_get("/events/signed/checkins/", list=ev["list"]) if c["successful"]]
    assert sorted(c["position"] for c in ok) == sorted(ev["positions"][i]["position_id"] for i in (2, 3))


def test_two_gates_offline_double_entry_is_stored_and_reported(pretix, tmp_path):
    a, _ = _gate(tmp_path, pretix, "random", 1, "east")
    ev = pretix.seed["events"]["random"]
    secret = ev["positions"][40]["secret"]
    now = int(time.time()) - 120
    live_a = _cut(a)
    assert _verify(a, now, secret)[0]["reason"] == "ACCEPT"
    b = tmp_path / "west"
    run_gate(b, "init", "--event", "random", "--lane", "west")
    # each gate is its own pretix device; this one was made for the organizer's other event but may
    # check in on all events
    b_token = pretix.seed["events"]["signed"]["devices"][1]
    out = json.loads(run_gate(b, "sync", "--central", pretix.url("random"), "--enroll", b_token, "--once",
                              "--json").stdout)
    assert out["ok"]
    live_b = _cut(b)
    assert _verify(b, now + 30, secret)[0]["reason"] == "ACCEPT"  # west cannot know about east
    for data, live in ((a, live_a), (b, live_b)):
        _restore(data, live)
        assert json.loads(run_gate(data, "sync", "--once", "--json").stdout)["ok"]
    ok = [c for c in pretix.team_get("/events/random/checkins/", list=ev["list"])
          if c["successful"] and c["position"] == ev["positions"][40]["position_id"]]
    assert len(ok) == 2  # pretix stores both: scans are facts
    rep = json.loads(run_gate(None, "pretix", "report", "--central", pretix.url("random"),
                              "--token", pretix.seed["team_token"], "--json").stdout)
    assert [d["position"] for d in rep["double_entries"]] == [ev["positions"][40]["position_id"]]
    text = run_gate(None, "pretix", "report", "--central", pretix.url("random"),
                    "--token", pretix.seed["team_token"]).stdout
    assert "DOUBLE ENTRIES (1)" in text


def _new_device(pretix, name: str) -> str:
    """A fresh pretix device (the seeded ones are all used by the tests above): its init token."""
    import requests
    r = requests.post(f"{pretix.base}/api/v1/organizers/{pretix.seed['organizer']}/devices/", timeout=30,
                      headers={"Authorization": f"Token {pretix.seed['team_token']}"},
                      json={"name": name, "all_events": True, "limit_events": [], "security_profile": "pretixscan"})
    r.raise_for_status()
    return r.json()["initialization_token"]


def test_a_pretix_step_failure_keeps_its_cursor_like_a_central_one(pretix, tmp_path):
    # pretix runs behind the same step runner as the reference central: a step that fails
    # (here the second page of the orders walk) applies nothing and keeps its cursor, the other
    # steps still run, and the pass is classified and retried by the same policy. On main the
    # orders walk applied page 1 before page 2 failed, and bypassed the client (no TLS trust).
    from faulty_proxy import FaultyProxy
    from gate.db import get_setting

    ev = pretix.seed["events"]["signed"]  # 150 orders: three pages of 50
    data = tmp_path / "behind-proxy"
    run_gate(data, "init", "--event", "signed", "--lane", "proxy")
    with FaultyProxy(pretix.base) as proxy:
        proxy.only_path, proxy.mode = "page=2", "500"
        url = pretix.url("signed").replace(pretix.base, proxy.url)
        token = _new_device(pretix, "gate-behind-proxy")
        r = run_gate(data, "sync", "--central", url, "--enroll", token, "--once", "--json", check=False)
        assert r.returncode == 5, r.stderr
        out = json.loads(r.stdout)
        assert [e.split(":")[0] for e in out["errors"]] == ["tickets"], out["errors"]
        assert out["keys"] == 1 and out["state"] == "degraded" and 0 < out["next_sync_s"] < 10
        assert proxy.hits.get("500", 0) >= 1
        conn = sqlite3.connect(data / "gate.db")
        assert conn.execute("SELECT count(*) FROM tickets WHERE status = 'valid'").fetchone()[0] == 0  # page 1 too
        assert conn.execute("SELECT value FROM settings WHERE key = 'pretix.orders_since'").fetchone() is None
        # the steps after it went on: a refused scan is uploaded as a failed check-in
        assert _verify(data, int(time.time()), "not-a-real-secret-at-all")[0]["reason"] == "NOT_IN_LEDGER"
        out = json.loads(run_gate(data, "sync", "--once", "--json", check=False).stdout)
        assert out["uploaded"] == 1 and [e.split(":")[0] for e in out["errors"]] == ["tickets"]
    _restore(data, pretix.base)  # pretix reachable directly (the proxy does not pass X-Page-Generated)
    out = json.loads(run_gate(data, "sync", "--once", "--json").stdout)
    assert out["ok"] and out["state"] == "online" and out["tickets"] >= len(ev["positions"])
    from gate.appliance import Gate
    g = Gate.open(data, now=time.time())
    try:
        assert get_setting(g.conn, "pretix.orders_since")  # the walk completed: the cursor moved
        assert get_setting(g.conn, "sync.uploaded_through") == 1
    finally:
        g.close()
