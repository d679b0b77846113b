"""The ops room under attack, over real HTTP (uvicorn on 127.0.0.1, clients bound to
other loopback addresses where the test needs distinct client addresses), plus the
checks that need no browser: one definition of each number, bounded lane names,
the palette's contrast. Each test is named after what it stops."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from requests.adapters import HTTPAdapter

from crypto.issuer import Wallet
from gate.appliance import Gate
from gate.decision import Mode, Reason
from gate.errors import ConfigError
from sync import client as sc
from sync.central.app import ServerThread, create_app
from sync.central.ops import accounts, queries, throttle, views
from sync.central.ops.db import OpsDB
from sync.central.ops.render import render
from sync.central.reconcile import build_report
from sync.central.store import CentralStore
from conftest import run_gate

ADMIN, ADMIN_PW = "alice", "correct horse battery"
VIEWER, VIEWER_PW = "victor", "viewer pass 123"


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    data = tmp_path_factory.mktemp("ops-sec")
    store = CentralStore(data)
    server = ServerThread(create_app(store)).start()
    run_gate(data, "central", "ops", "add", ADMIN, "--role", "admin", "--password-stdin", input=ADMIN_PW + "\n")
    run_gate(data, "central", "ops", "add", VIEWER, "--password-stdin", input=VIEWER_PW + "\n")
    store.create_event("sec")
    yield store, server, data
    server.stop()
    store.close()


@pytest.fixture(autouse=True)
def fresh_throttle(central):
    """Each test starts with a clean throttle (they share one server)."""
    _store, server, _ = central
    server.server.config.app.state.ops_room.throttle = throttle.Throttle()
    yield


class _From(HTTPAdapter):
    """Connect from a given loopback address (127.0.0.0/8 is all ours): the server sees distinct clients."""

    def __init__(self, source: str):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *a, **kw):
        kw["source_address"] = (self.source, 0)
        return super().init_poolmanager(*a, **kw)


def client(source: str = "127.0.0.1") -> requests.Session:
    s = requests.Session()
    s.mount("http://", _From(source))
    return s


def login(s: requests.Session, url: str, name: str, pw: str) -> requests.Response:
    page = s.get(url + "/ops/login", timeout=30)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return s.post(url + "/ops/login", data={"csrf": csrf, "name": name, "password": pw, "next": "/ops"},
                  allow_redirects=False, timeout=60)


def page_csrf(s, url) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', s.get(url + "/ops/e/sec/doors", timeout=30).text).group(1)


def test_one_address_hammering_an_account_cannot_lock_out_the_right_password_from_another(central):
    _store, server, _ = central
    attacker, manager = client("127.0.0.2"), client("127.0.0.3")
    codes = [login(attacker, server.url, ADMIN, f"guess {i}").status_code for i in range(12)]
    # the first few are evaluated (401), then the attacker's address waits (429)
    assert codes[:throttle.PAIR_MAX] == [401] * throttle.PAIR_MAX and set(codes[throttle.PAIR_MAX:]) == {429}
    # the ops manager on another address gets in with the right password (an account lock would refuse it)
    r = login(manager, server.url, ADMIN, ADMIN_PW)
    assert r.status_code == 303 and "ops_session" in r.cookies
    # and the attacker's address gets nothing, not even with the right password
    assert login(attacker, server.url, ADMIN, ADMIN_PW).status_code == 429


def test_concurrent_guesses_are_counted_before_they_are_evaluated(central):
    _store, server, _ = central
    calls = []
    real = accounts._kdf
    accounts._kdf = lambda pw, salt: (calls.append(1), real(pw, salt))[1]
    try:
        with ThreadPoolExecutor(40) as ex:
            codes = list(ex.map(lambda i: client("127.0.0.4").get(
                server.url + "/v1/events/sec/reconciliation", auth=(VIEWER, f"guess {i}"), timeout=120).status_code,
                range(40)))
    finally:
        accounts._kdf = real
    # 40 guesses sent at once: no more than the per-(name, address) allowance were checked at all
    # (counting after evaluation let 24-31 through)
    assert codes.count(401) <= throttle.PAIR_MAX and codes.count(429) >= 40 - throttle.PAIR_MAX, codes
    assert len(calls) <= throttle.PAIR_MAX


def test_unknown_and_known_names_get_the_same_answer(central):
    _store, server, _ = central
    known = login(client("127.0.0.5"), server.url, ADMIN, "not the password")
    unknown = login(client("127.0.0.6"), server.url, "nobody-here", "not the password")
    msg = lambda r: re.search(r'role="alert">(.*?)</p>', r.text, re.S).group(1)  # noqa: E731
    assert known.status_code == unknown.status_code == 401 and msg(known) == msg(unknown)
    ka = client("127.0.0.7").get(server.url + "/v1/events/sec/reconciliation", auth=(ADMIN, "x"), timeout=30)
    ua = client("127.0.0.8").get(server.url + "/v1/events/sec/reconciliation", auth=("nobody", "x"), timeout=30)
    assert ka.status_code == ua.status_code == 401 and ka.json() == ua.json()


def test_basic_auth_floods_are_throttled_before_any_scrypt(central):
    _store, server, _ = central
    calls = []
    real = accounts._kdf
    accounts._kdf = lambda pw, salt: (calls.append(1), real(pw, salt))[1]
    s = client("127.0.0.9")
    try:
        codes = [s.get(server.url + "/v1/events/sec/reconciliation", auth=(f"user{i}", "x"), timeout=30).status_code
                 for i in range(throttle.ADDRESS_MAX + 15)]
    finally:
        accounts._kdf = real
    # unknown names, each a new one: the per-address count stops them, and no scrypt runs for them
    assert codes[:throttle.ADDRESS_MAX] == [401] * throttle.ADDRESS_MAX and set(codes[throttle.ADDRESS_MAX:]) == {429}
    assert len(calls) == throttle.ADDRESS_MAX


def test_csrf_is_bound_to_the_session_and_never_in_a_url(central):
    _store, server, _ = central
    a, b = client(), client()
    assert login(a, server.url, ADMIN, ADMIN_PW).status_code == 303
    assert login(b, server.url, ADMIN, ADMIN_PW).status_code == 303
    tok_a = page_csrf(a, server.url)
    # session B with session A's token: refused (a token not tied to the session would pass)
    r = b.post(server.url + "/ops/e/sec/capacity", data={"capacity": "50", "csrf": tok_a}, allow_redirects=False,
               timeout=30)
    assert r.status_code == 403
    r = a.post(server.url + "/ops/e/sec/capacity", data={"capacity": "50", "csrf": tok_a}, allow_redirects=False,
               timeout=30)
    assert r.status_code == 303
    for path in ("doors", "gates", "alerts", "ticket?q=x", "reconciliation"):
        html = a.get(f"{server.url}/ops/e/sec/{path}", timeout=30).text
        assert "csrf=" not in html  # never in a link
        for form in re.findall(r'<form[^>]*method="get".*?</form>', html, re.S):
            assert 'name="csrf"' not in form  # nor in a GET form (it would land in the URL and the logs)


def test_every_ops_response_has_csp_and_frame_headers(central):
    _store, server, _ = central
    s = client()
    login(s, server.url, ADMIN, ADMIN_PW)
    urls = ["/ops/login", "/ops", "/ops/e/sec/doors", "/ops/e/sec/doors?part=live", "/ops/e/sec/gates?part=live",
            "/ops/e/sec/alerts?part=live", "/ops/e/sec/reconciliation", "/ops/e/sec/reconciliation.csv?section=per_lane",
            "/ops/e/nope/doors", "/ops/no-such-page", "/ops/static/ops.css", "/ops/e/sec/reconciliation.csv?section=x"]
    for u in urls:
        r = s.get(server.url + u, allow_redirects=False, timeout=30)
        assert "frame-ancestors 'none'" in r.headers.get("content-security-policy", ""), (u, r.status_code)
        assert r.headers.get("x-frame-options") == "DENY", u
    r = s.post(server.url + "/ops/e/sec/capacity", data={"capacity": "x", "csrf": page_csrf(s, server.url)},
               allow_redirects=False, timeout=30)
    assert r.status_code == 400 and r.headers.get("x-frame-options") == "DENY"  # an error page too


def test_a_password_reset_ends_the_accounts_sessions(central):
    _store, server, data = central
    run_gate(data, "central", "ops", "add", "resetme", "--password-stdin", input="first password\n")
    s = client()
    assert login(s, server.url, "resetme", "first password").status_code == 303
    assert s.get(server.url + "/ops/e/sec/doors", allow_redirects=False, timeout=30).status_code == 200
    run_gate(data, "central", "ops", "add", "resetme", "--password-stdin", input="second password\n")
    r = s.get(server.url + "/ops/e/sec/doors", allow_redirects=False, timeout=30)
    assert r.status_code == 303 and "/ops/login" in r.headers["location"]  # the old session is over


def test_ops_remove_ends_sessions_and_basic_auth(central):
    _store, server, data = central
    run_gate(data, "central", "ops", "add", "leaver", "--password-stdin", input="leaver password\n")
    s = client()
    assert login(s, server.url, "leaver", "leaver password").status_code == 303
    out = run_gate(data, "central", "ops", "remove", "leaver", "--json")
    assert json.loads(out.stdout) == {"name": "leaver", "removed": True}
    assert s.get(server.url + "/ops/e/sec/doors", allow_redirects=False, timeout=30).status_code == 303
    r = client("127.0.0.10").get(server.url + "/v1/events/sec/reconciliation", auth=("leaver", "leaver password"),
                                 timeout=30)
    assert r.status_code == 401
    again = run_gate(data, "central", "ops", "remove", "leaver", check=False)
    assert again.returncode == 2 and "no ops account" in again.stderr


TRIGGERS = ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "\nx", "|calc", "＝1+1", "＋1", "－1", "＠SUM(A1)"]


def test_csv_export_neutralises_every_formula_trigger(central, tmp_path):
    store, server, _ = central
    for t in TRIGGERS:
        assert views.csv_cell(t) == "'" + t
    assert views.csv_cell("north") == "north" and views.csv_cell(3) == 3
    # end to end: a lane named like a formula, exported from the page
    store.create_event("csv-ev")
    made = store.issue("csv-ev", count=1, out=tmp_path / "w")
    g = Gate.init(tmp_path / "g", event="csv-ev", lane="=HYPERLINK(1)")
    sc.enroll(g, server.url, store.enrol_code("csv-ev"))
    assert sc.sync_once(g, sc.client_for(g)).ok  # the key ring and the tickets
    now = time.time()
    assert g.scan(Wallet.load(made[0]["file"]).code(now), now=now)[0].reason is Reason.ACCEPT
    assert sc.sync_once(g, sc.client_for(g)).ok
    s = client()
    login(s, server.url, VIEWER, VIEWER_PW)
    text = s.get(server.url + "/ops/e/csv-ev/reconciliation.csv?section=per_lane", timeout=30).text
    assert "'=HYPERLINK(1)" in text and "\n=HYPERLINK" not in text


@pytest.mark.parametrize("name", ["a\r\nb", 'say "hi"', "a/b", "back\\slash", "tab\there", "x" * 65, " pad"])
def test_event_names_that_break_exports_and_pages_are_refused_at_creation(central, name):
    store, _server, data = central
    with pytest.raises(ConfigError):
        store.create_event(name)
    proc = run_gate(data, "central", "event", "create", name, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_device_with_ten_thousand_lane_names_cannot_blow_up_doors():
    st = queries.EventState("many")
    for i in range(10_000):
        lane = f"lane-{i:05d}-" + "x" * 200
        st.lanes[lane] = 1 + i % 3
        st.lane_refused[lane] = i % 2
        st.buckets[(lane, int(time.time() * 1000) // queries.BUCKET_MS)] = 1

    class NoDB:
        def one(self, *a, **k):
            return None

        def all(self, *a, **k):
            return []

    d = queries.doors(NoDB(), st, time.time(), gs=[])
    assert len(d["lanes"]) == queries.MAX_LANES_SHOWN and d["more_lanes"]["lanes"] == 10_000 - queries.MAX_LANES_SHOWN
    # the excess is counted, not rendered: every admission is still in the totals
    assert sum(r["admitted"] for r in d["lanes"]) + d["more_lanes"]["admitted"] == sum(st.lanes.values())
    html = render("en", "_doors_live.html", d=d, alerts=[], chart=views.chart(d), now=time.time(), event="many",
                  q=lambda x, safe="": x)
    assert len(html) < 100_000, len(html)  # 17.5 MB per refresh before
    assert "x" * (queries.MAX_LANE_CHARS + 1) not in html


def test_a_lone_surrogate_in_json_is_a_4xx_not_a_500(central, tmp_path):
    store, server, _ = central
    g = Gate.init(tmp_path / "g", event="sec", lane="north")
    sc.enroll(g, server.url, store.enrol_code("sec"))
    tok = sc.token_path(g).read_text().strip()
    for body in (b'{"records": [], "head": "\\ud800"}', b'{"\\udfff": 1}'):
        r = requests.post(server.url + "/v1/events/sec/scans", data=body, timeout=30,
                          headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, (r.status_code, r.text)


def _lum(hex_: str) -> float:
    rgb = [int(hex_[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_lum(a), _lum(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_every_text_colour_of_the_palette_has_at_least_4_5_to_1_contrast():
    from importlib import resources
    css = resources.files("sync.central.ops").joinpath("static", "ops.css").read_text()
    var = dict(re.findall(r"--([a-z]+):\s*(#[0-9a-f]{6})", css))
    white = "#ffffff"
    pairs = [(var["text"], var["bg"]), (var["text"], white), (var["navtext"], var["nav"]), (white, var["nav"]),
             (var["idle"], white), (var["idle"], var["bg"]), (var["idle"], "#f1f3f5")]
    for level in ("ok", "warn", "crit"):
        pairs += [(var[level], white), (var[level], var["bg"]), (var[level], var["warnbg"]),
                  (var[level], var["critbg"]), (var[level], "#fff5f5"), (var[level], "#fff9db")]
    pairs += [(var["text"], var["warnbg"]), (var["text"], var["critbg"]), (var["idle"], var["warnbg"]),
              (var["idle"], var["critbg"])]
    pairs += [(colour, white) for colour, _dash in views.LINE_STYLES]  # chart lines and legend
    low = [(fg, bg, round(contrast(fg, bg), 2)) for fg, bg in pairs if contrast(fg, bg) < 4.5]
    assert not low, low


def test_cards_lane_table_chart_and_report_count_by_one_definition(central, tmp_path):
    """Exits are not admissions; rolled-back admissions are not admissions; refusals are per lane."""
    store, server, _ = central
    store.create_event("def-ev")
    made = store.issue("def-ev", count=6, out=tmp_path / "w")
    w = [Wallet.load(m["file"]) for m in made]
    g1 = Gate.init(tmp_path / "g1", event="def-ev", lane="north")
    g2 = Gate.init(tmp_path / "g2", event="def-ev", lane="south")
    for g in (g1, g2):
        sc.enroll(g, server.url, store.enrol_code("def-ev"))
        assert sc.sync_once(g, sc.client_for(g)).ok
    now = time.time()
    for i in range(4):
        assert g1.scan(w[i].code(now - 100 + i), now=now - 100 + i)[0].reason is Reason.ACCEPT
    assert g2.scan(w[0].code(now - 50), now=now - 50, mode=Mode.EXIT)[0].reason is Reason.ACCEPT  # an exit
    _d, entry = g2.scan(w[4].code(now - 40), now=now - 40)
    g2.rollback(entry.seq, now=now - 39)  # nobody went through
    g2.scan("GT1:garbage", now=now - 30)
    assert g2.scan(w[3].code(now - 20), now=now - 20)[0].reason is Reason.ACCEPT  # before g2 hears of g1's
    for g in (g1, g2):
        assert sc.sync_once(g, sc.client_for(g)).ok
    rep = build_report(store, "def-ev")
    ops = OpsDB(store)
    with ops.reader() as r:
        st = queries.Live().state(r, "def-ev", now)
        d = queries.doors(r, st, now, [])
    chart = views.chart(d)
    assert rep["admitted"] == d["admitted"] == 5 == sum(rep["per_gate"].values()) == sum(rep["per_lane"].values())
    assert sum(x["admitted"] for x in d["lanes"]) == 5 == sum(x["hour"] for x in d["lanes"]) == chart["total"]
    assert rep["inside"] == d["inside"] == 4 and rep["exits"] == d["exits"] == 1
    # the same double admissions (one rule, reconcile.over_admitted)
    assert sorted(st.over) == [o["ticket_id"] for o in rep["double_admissions"]] == [w[3].ticket_id]
    assert rep["refused"] == d["refused"] == 1 and rep["refused_per_lane"] == {"south": 1}
    assert {x["lane"]: x["refused"] for x in d["lanes"]} == {"north": 0, "south": 1}


def test_notable_events_name_the_operator_and_include_staff_commands_and_faults(central, tmp_path):
    """Manual decisions (with who made them), pause, relay faults from a gate's scan log, and an
    admission of a cancelled ticket are notable events (they used to be left out)."""
    from gate.decision import Decision
    store, server, _ = central
    store.create_event("note-ev")
    made = store.issue("note-ev", count=2, out=tmp_path / "w")
    w = [Wallet.load(m["file"]) for m in made]
    g = Gate.init(tmp_path / "g", event="note-ev", lane="west")
    sc.enroll(g, server.url, store.enrol_code("note-ev"))
    assert sc.sync_once(g, sc.client_for(g)).ok
    now = time.time()
    g.record(Decision(Reason.MANUAL_ADMIT, Mode.ENTRY, ticket_id=w[0].ticket_id, consumes_entry=True),
             now=now - 50, qr=None, kind="override", operator="Mei Lin")
    g.control("pause", now=now - 40, operator="Mei Lin")
    g.control("relay_fault", now=now - 30, operator=None, detail="relay stuck")
    # the records a lane's fire input writes (gate.lane: fire_alarm, then fire_alarm_end)
    g.control("fire_alarm", now=now - 20, operator=None, detail="sim")
    g.control("fire_alarm_end", now=now - 10, operator=None, detail="sim")
    store.revoke(w[1].ticket_id)  # refunded, but this gate has not heard yet
    later = time.time() + 1
    assert g.scan(w[1].code(later), now=later)[0].reason is Reason.ACCEPT
    assert sc.sync_once(g, sc.client_for(g)).ok
    now = later + 1
    with OpsDB(store).reader() as r:
        st = queries.Live().state(r, "note-ev", now)
        kinds = {n["kind"]: n for n in queries.notable(r, st, now)}
        d = queries.doors(r, st, now, [])
    assert kinds["manual_admit"]["params"]["operator"] == "Mei Lin"
    assert "control_pause" in kinds and "control_relay_fault" in kinds and "cancelled_admitted" in kinds
    assert "control_fire_alarm" in kinds and "control_fire_alarm_end" in kinds
    html = render("zh_CN", "_doors_live.html", d={**d, "notable": list(kinds.values())},
                  alerts=[], chart=None, now=now, event="note-ev", q=lambda x, safe="": x)
    assert "Mei Lin" in html and "继电器故障" in html  # in Chinese, with the operator's name


def _state_with(lanes: dict[str, list[int]], now: float) -> queries.EventState:
    """Admissions per lane per minute for the last len(list) minutes (oldest first)."""
    st = queries.EventState("x")
    now_b = int(now * 1000) // queries.BUCKET_MS
    per_min = 60_000 // queries.BUCKET_MS
    for lane, minutes in lanes.items():
        for k, n in enumerate(reversed(minutes)):  # k minutes ago
            if n:
                st.buckets[(lane, now_b - k * per_min - 1)] = n
    return st


def test_the_stall_alert_leaves_near_empty_lanes_alone_late_at_night():
    now = 1_800_000_000.0
    # a quiet lane (about one person a minute) that saw nobody in the last 2 minutes, while another flows
    quiet = _state_with({"late": [1] * 10 + [0, 0], "main": [6] * 12}, now)
    assert queries.stalled(quiet, now) == []
    # a busy lane that stops is a stall; its time is when it began (its last admission), not now
    busy = _state_with({"jam": [6] * 10 + [0, 0], "main": [6] * 12}, now)
    (s,) = queries.stalled(busy, now)
    assert s["lane"] == "jam" and now - 200 < s["since"] < now - 60


def test_a_revoked_gate_that_keeps_admitting_is_red(central, tmp_path):
    store, server, _ = central
    store.create_event("rev-ev")
    made = store.issue("rev-ev", count=1, out=tmp_path / "w")
    g = Gate.init(tmp_path / "g", event="rev-ev", lane="dock")
    sc.enroll(g, server.url, store.enrol_code("rev-ev"))
    assert sc.sync_once(g, sc.client_for(g)).ok
    now = time.time()
    g.scan(Wallet.load(made[0]["file"]).code(now), now=now)
    assert sc.sync_once(g, sc.client_for(g)).ok
    store.revoke_device(g.config.device_id)
    with OpsDB(store).reader() as r:
        (row,) = queries.gates(r, "rev-ev", now + 5)
        al = queries.alerts(r, queries.Live().state(r, "rev-ev", now + 5), now + 5)
    assert row["state"] == "revoked_admitting"
    assert [a["level"] for a in al if a["kind"] == "revoked_admitting"] == ["crit"]
    html = render("en", "_gates_live.html", rows=[row], amber_min=2, red_min=5)
    assert 'class="crit"' in html and "revoked, still admitting" in html
