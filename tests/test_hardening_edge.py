"""Regression tests for issue 11, items 2, 3, 6, 12, 13 and 14: what an attack
run against the central and the gate found. Real processes throughout: the
central is `gate central serve` in a subprocess on 127.0.0.1, gates are the
installed `gate` command."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cbor2
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import GATE_BIN, json_lines, run_gate
from ports import free_port, stop_process, wait_until_serving
from crypto.issuer import Wallet
from gate.scanlog import GENESIS, chain_hash, head_message

EVENT = "evt-edge"
YEAR_11476 = 300_000_000_000  # unix seconds: a gate clock that says year 11476


# ------------------------------------------------------------------ helpers


class Central:
    def __init__(self, data: Path, port: int, proc: subprocess.Popen, stderr: Path, scheme: str = "http"):
        self.data, self.port, self.proc, self.stderr_path = data, port, proc, stderr
        self.url = f"{scheme}://127.0.0.1:{port}"

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def code(self) -> str:
        return json.loads(run_gate(self.data, "central", "device", "enroll", "--json").stdout)["code"]

    def enrol_device(self, device_id: str = "fuzz-1") -> tuple[str, Ed25519PrivateKey]:
        key = Ed25519PrivateKey.generate()
        pub = key.public_key().public_bytes_raw()
        r = requests.post(self.url + "/v1/devices", json={
            "enrolment_code": self.code(), "device_id": device_id,
            "public_key": base64.urlsafe_b64encode(pub).rstrip(b"=").decode()}, timeout=10)
        assert r.status_code == 201, r.text
        return r.json()["token"], key


@contextlib.contextmanager
def central_server(tmp_path: Path, *extra: str, scheme: str = "http", verify=True):
    data = tmp_path / "central"
    if not data.exists():
        run_gate(data, "central", "event", "create", EVENT)
    port = free_port()
    err = tmp_path / f"central-{port}.err"
    with open(err, "wb") as fh:
        proc = subprocess.Popen([str(GATE_BIN), "--data", str(data), "central", "serve", "--port", str(port),
                                 *extra], stdout=subprocess.DEVNULL, stderr=fh)
    c = Central(data, port, proc, err, scheme)
    try:
        try:
            wait_until_serving(c.url + "/v1/time", proc=proc, verify=verify, what="central serve")
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{c.stderr}") from None
        yield c
    finally:
        stop_process(proc)


OPS = ("ops-reader", "ops reader password")


def ops_account(data: Path) -> tuple[str, str]:
    """The report API takes ops credentials (basic auth), not device tokens."""
    run_gate(data, "central", "ops", "add", OPS[0], "--password-stdin", input=OPS[1] + "\n")
    return OPS


def _status(data: bytes) -> int | None:
    if data.startswith(b"HTTP/1.1 "):
        return int(data[9:12])
    return None


def _stream_body(port: int, path: str, total: int, headers: dict[str, str], *, chunked: bool):
    """Send a ``total``-byte body generated 64 KB at a time (never held whole)
    until central answers or hangs up; returns (HTTP status or None, bytes sent)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {total}\r\n"
    piece = b"7" * 65536
    frame = (b"%x\r\n" % len(piece) + piece + b"\r\n") if chunked else piece
    sent, answer = 0, b""
    try:
        s.sendall(head.encode() + b"\r\n")
        while sent < total:
            if select.select([s], [], [], 0)[0]:
                break
            s.sendall(frame)
            sent += len(piece)
    except OSError:
        pass  # central hung up on us; its answer may be waiting
    try:
        s.settimeout(10)
        while b"\r\n" not in answer:
            more = s.recv(4096)
            if not more:
                break
            answer += more
    except OSError:
        pass
    s.close()
    return _status(answer), sent


# ------------------------------------------------------------------ item 2


def test_item02_gigabyte_bodies_get_413_and_central_stays_small(tmp_path):
    """On main the central read a 1 GB body whole (RSS 64 MB -> 2 GB). Fails if
    a route buffers the body, if the size limit is checked only after reading,
    or if the upload route's limit is missing."""
    with central_server(tmp_path) as c:
        token, key = c.enrol_device()
        gb = 1 << 30
        # chunked (no length announced): central must count as it reads and stop
        status, sent = _stream_body(c.port, "/v1/devices", gb, {"Content-Type": "application/json"}, chunked=True)
        assert status == 413 and sent < gb
        status, sent = _stream_body(c.port, f"/v1/events/{EVENT}/scans", gb,
                                    {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                                    chunked=True)
        assert status == 413 and sent < gb
        # announced length: refused from the header, before any of it is read
        status, sent = _stream_body(c.port, "/v1/devices", gb, {}, chunked=False)
        assert status == 413 and sent < gb
        # an anonymous upload is refused before its body is read at all
        status, sent = _stream_body(c.port, f"/v1/events/{EVENT}/scans", gb, {}, chunked=True)
        assert status == 401 and sent < gb
        assert c.peak_rss_mb() < 200, f"central peaked at {c.peak_rss_mb():.0f} MB"
        print(f"central peak RSS after four 1 GB bodies: {c.peak_rss_mb():.0f} MB")
        # a normal-sized upload still goes through: the limit leaves a gate's largest batch room
        # (2,000 records, ~0.7 MB: far over the 64 KiB limit of the other routes)
        now_ms = int(time.time() * 1000)
        records = [{"kind": "scan", "ts_ms": now_ms + i, "device": "fuzz-1", "lane": "l1", "event": EVENT,
                    "mode": "entry", "decision": "reject", "reason": "MALFORMED", "ticket_id": None, "step": None,
                    "version": None, "unlisted": False, "consumes": False, "face_e4": None,
                    "qr_sha": os.urandom(32), "seq": i + 1} for i in range(2000)]
        body = json.dumps(_batch("fuzz-1", key, records))
        assert len(body) > 512 * 1024
        r = requests.post(f"{c.url}/v1/events/{EVENT}/scans", data=body, timeout=60,
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert r.status_code == 200 and r.json() == {"stored_through": 2000}, r.text
    assert "Traceback" not in c.stderr


def test_item02_json_depth_and_array_length_are_limited(tmp_path):
    """Fails if parse_json stops bounding nesting or element counts."""
    with central_server(tmp_path) as c:
        token, _ = c.enrol_device()
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        deep = b"[" * 30000 + b"]" * 30000  # under the 64 KB limit, far over the depth limit
        assert requests.post(c.url + "/v1/devices", data=deep, timeout=10).status_code == 422
        wide = json.dumps({"device_id": "fuzz-1", "from_seq": 1, "records": ["oA=="] * 10001,
                           "head_hash": "00", "head_sig": ""})
        r = requests.post(f"{c.url}/v1/events/{EVENT}/scans", data=wide, headers=auth, timeout=10)
        assert r.status_code == 422 and "at most" in r.json()["error"]
    assert "Traceback" not in c.stderr


def test_item02_slow_clients_are_cut_off(tmp_path):
    """Slowloris: headers trickled a line at a time, and a body trickled a byte
    at a time. Fails if uvicorn's protocol loses the head deadline (uvicorn only
    times out idle keep-alive connections) or the body deadline goes."""
    with central_server(tmp_path, "--header-timeout", "1", "--body-timeout", "1.5") as c:
        def trickle(first: bytes, drip: bytes, rounds: int = 120) -> tuple[bool, bytes]:
            s = socket.create_connection(("127.0.0.1", c.port), timeout=10)
            got = b""
            try:
                s.sendall(first)
                for _ in range(rounds):  # 30 s of trickling unless central hangs up
                    if select.select([s], [], [], 0.25)[0]:
                        got = s.recv(4096)
                        return True, got
                    s.sendall(drip)
            except OSError:
                return True, got
            finally:
                s.close()
            return False, got

        cut, _ = trickle(b"GET /v1/time HTTP/1.1\r\nHost: x\r\n", b"X-Slow: 1\r\n")
        assert cut, "a client trickling its headers was never disconnected"
        cut, got = trickle(b"POST /v1/devices HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", b"{")
        assert cut and _status(got) == 408
        # and a keep-alive connection cannot trickle its second request either
        s = socket.create_connection(("127.0.0.1", c.port), timeout=10)
        s.sendall(b"GET /v1/time HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(s.recv(4096)) == 200
        cut = False
        try:
            for _ in range(120):
                s.sendall(b"G" if _ == 0 else b"E")
                if select.select([s], [], [], 0.25)[0] and s.recv(4096) == b"":
                    cut = True
                    break
        except OSError:
            cut = True
        s.close()
        assert cut
        # a header bomb: 1 MB of one header line is refused at 64 KB, not accumulated
        s = socket.create_connection(("127.0.0.1", c.port), timeout=10)
        got = b""
        try:
            s.sendall(b"GET /v1/time HTTP/1.1\r\nX-Big: " + b"a" * (1 << 20))
            got = s.recv(4096)
        except OSError:
            pass
        s.close()
        assert _status(got) in (None, 431) and not got.startswith(b"HTTP/1.1 200")
        assert requests.get(c.url + "/v1/time", timeout=5).status_code == 200  # still serving
        assert c.peak_rss_mb() < 200


# ------------------------------------------------------------------ item 6


def _batch(device_id: str, key: Ed25519PrivateKey, records: list[dict], from_seq: int = 1) -> dict:
    raw = [cbor2.dumps(r, canonical=True) for r in records]
    h = GENESIS
    for data in raw:
        h = chain_hash(h, data)
    last = from_seq + len(raw) - 1
    return {"device_id": device_id, "from_seq": from_seq, "records": [base64.b64encode(d).decode() for d in raw],
            "head_hash": h.hex(), "head_sig": base64.b64encode(key.sign(head_message(device_id, last, h))).decode()}


def test_item06_api_fuzz_gives_no_5xx_and_no_traceback(tmp_path):
    """~80 hostile requests: on main 8 of 82 answered 500 with a traceback
    (cursor >= 2^63, deep JSON). Fails if any handler lets an exception out, or
    if a hostile request is answered other than the class the test expects
    for it (refused with 4xx; the cursor and limit cases may also be clamped)."""
    with central_server(tmp_path) as c:
        token, key = c.enrol_device("fuzz-1")
        auth = {"Authorization": f"Bearer {token}"}
        base = c.url
        ev = f"{base}/v1/events/{EVENT}"
        answers: list[tuple[str, int, bool]] = []  # (request, status, the status expected for it)
        four_xx = range(400, 500)

        def go(method, url, expect=four_xx, **kw):
            kw.setdefault("timeout", 15)
            r = requests.request(method, url, **kw)
            answers.append((f"{method} {url[len(base):][:60]} {str(kw.get('data') or kw.get('json'))[:40]}",
                            r.status_code, r.status_code in expect))
            return r

        # cursors and limits
        for cur in [str(2 ** 63), str(-(2 ** 63)), str(2 ** 64), str(-(2 ** 70)), "9" * 5000, "abc", "1e5",
                    "", "-1", "0x10", " 5 ", "NaN"]:
            for feed in ("tickets", "admissions"):
                go("GET", f"{ev}/{feed}", params={"cursor": cur}, headers=auth, expect=range(200, 500))
        for lim in [str(2 ** 63), "-5", "0", "x", str(10 ** 30)]:
            go("GET", f"{ev}/tickets", params={"limit": lim}, headers=auth, expect=range(200, 500))
        assert [s for a, s, _ in answers[:4]] == [422, 422, 422, 422]  # the cursor cases
        # enrolment bodies
        dev = base + "/v1/devices"
        for body in [b"", b"null", b"[]", b"\"x\"", b"1" * 5000, b"{\"enrolment_code\": 1}", b"\xff\xfe\x00",
                     b"{" * 20000, b"[" * 20000 + b"]" * 20000, b"{\"a\":" * 5000 + b"1" + b"}" * 5000,
                     json.dumps({"enrolment_code": "x", "device_id": "d", "public_key": 7}).encode(),
                     json.dumps({"enrolment_code": "x", "device_id": "d", "public_key": "é!"}).encode(),
                     json.dumps({"enrolment_code": "x", "device_id": "d", "public_key": "@@@"}).encode(),
                     json.dumps({"enrolment_code": ["x"], "device_id": {}, "public_key": "AAAA"}).encode(),
                     json.dumps({"enrolment_code": 2 ** 80, "device_id": 2 ** 80, "public_key": "AAAA"}).encode(),
                     b'{"enrolment_code": "\\ud800", "device_id": "\\udfff", "public_key": "AAAA"}']:
            for ctype in ("application/json", "text/plain"):
                go("POST", dev, data=body, headers={"Content-Type": ctype})
        deep = b"{\"a\":" * 5000 + b"1" + b"}" * 5000
        assert go("POST", dev, data=deep, headers={"Content-Type": "application/json"}).status_code == 422
        # uploads: shapes, then signed batches with hostile records
        h = {**auth, "Content-Type": "application/json"}
        for body in [b"{}", b"[]", b"\xff", b"[" * 10000 + b"]" * 10000,
                     json.dumps({"device_id": "fuzz-1", "from_seq": "1", "records": "abc",
                                 "head_hash": "zz", "head_sig": "!"}).encode(),
                     json.dumps({"device_id": "fuzz-1", "from_seq": 2 ** 64, "records": ["AA=="],
                                 "head_hash": "00", "head_sig": "AA=="}).encode(),
                     json.dumps({"device_id": "fuzz-1", "from_seq": -(2 ** 64), "records": [1, None],
                                 "head_hash": 5, "head_sig": []}).encode(),
                     json.dumps({"device_id": "fuzz-1", "from_seq": 1.5, "records": ["***"],
                                 "head_hash": "00", "head_sig": "AA=="}).encode(),
                     json.dumps({"device_id": "other", "from_seq": 1, "records": ["oA=="],
                                 "head_hash": "00", "head_sig": "AA=="}).encode()]:
            go("POST", f"{ev}/scans", data=body, headers=h)
        good = {"kind": "scan", "ts_ms": int(time.time() * 1000), "decision": "accept", "mode": "entry",
                "reason": "ACCEPT", "ticket_id": "ab" * 8, "consumes": True, "lane": "l1"}
        hostile = [{"ts_ms": 2 ** 64}, {"ts_ms": -(2 ** 63) - 1}, {"kind": ["scan"]}, {"ticket_id": {"a": 1}},
                   {"ticket_id": b"\x00" * 8}, {"lane": 3.5}, {"ref": 2 ** 70, "kind": "rollback"},
                   {"ts_ms": 1.5}, {"reason": None, "decision": 7}]
        for change in hostile:
            go("POST", f"{ev}/scans", json=_batch("fuzz-1", key, [{**good, **change, "seq": 1}]), headers=auth,
               expect={422})
        for raw in [b"\xff\xff", b"\x9b" + (2 ** 40).to_bytes(8, "big"), b"\x81" * 5000 + b"\x01", b"\xa0"]:
            h0 = chain_hash(GENESIS, raw)
            go("POST", f"{ev}/scans", headers=auth, expect={422}, json={
                "device_id": "fuzz-1", "from_seq": 1, "records": [base64.b64encode(raw).decode()],
                "head_hash": h0.hex(), "head_sig": base64.b64encode(key.sign(head_message("fuzz-1", 1, h0))).decode()})
        # one honest upload, then the report in both forms
        r = go("POST", f"{ev}/scans", json=_batch("fuzz-1", key, [{**good, "seq": 1}]), headers=auth, expect={200})
        assert r.status_code == 200 and r.json()["stored_through"] == 1
        ops = ops_account(c.data)
        for params in ({}, {"format": "text"}):
            go("GET", f"{ev}/reconciliation", params=params, auth=ops, expect={200})
        rep = requests.get(f"{ev}/reconciliation", auth=ops, timeout=10).json()
        refused = [p for p in rep["problems"] if p["device_id"] == "fuzz-1" and p["kind"] == "malformed_upload"]
        assert len(refused) >= len(hostile) + 3  # every hostile record refused and reported, none stored
        assert rep["devices"][0]["records"] == 1
        # tokens, paths, methods
        for hdr in ({"Authorization": "Bearer " + "x" * 10000}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer \u00e9".encode("utf-8").decode("latin-1")}):
            go("GET", f"{ev}/keyring", headers=hdr, expect={401})
        for path in ["/v1/events/%ff%fe/keyring", "/v1/events/" + "e" * 5000 + "/tickets", "/v1/events//scans",
                     "/v1/events/evt-edge/../../etc/passwd"]:
            go("GET", base + path, headers=auth)
        go("PUT", dev, data=b"{}", expect={405})
        go("DELETE", f"{ev}/scans", headers=auth, expect={405})
    bad = [(what, status) for what, status, _ in answers if status >= 500]
    assert not bad, bad
    unexpected = [(what, status) for what, status, ok in answers if not ok]
    assert not unexpected, unexpected
    assert "Traceback" not in c.stderr, c.stderr[-3000:]


# ------------------------------------------------------------------ item 3


def test_item03_a_gate_clock_in_year_11476_is_flagged_not_fatal(tmp_path):
    """On main: GET /reconciliation 500, `central report`, `gate log` and
    `gate keys list` crash on the year-11476 / far-future times. Fails if a
    renderer formats a stored time without guarding its range, or if the
    report stops naming the gate whose clock is wrong."""
    with central_server(tmp_path) as c:
        made = json.loads(run_gate(c.data, "central", "issue", "--count", "2", "--static", "--out",
                                   str(tmp_path / "w"), "--json").stdout)["tickets"]
        codes = [Wallet.load(m["file"]).code(time.time()) for m in made]
        g = tmp_path / "gate"
        run_gate(g, "init", "--event", EVENT, "--lane", "west")
        run_gate(g, "sync", "--central", c.url, "--enroll", c.code(), "--once")
        d = json_lines(run_gate(g, "verify", "--json", "--now", str(YEAR_11476), codes[0]).stdout)[0]
        assert d["reason"] == "ACCEPT"  # the gate admitted someone while its clock said 11476
        run_gate(g, "verify", "--json", codes[1])  # and one with a right clock
        run_gate(g, "sync", "--once")
        ops = ops_account(c.data)
        r = requests.get(f"{c.url}/v1/events/{EVENT}/reconciliation", auth=ops, timeout=10)
        assert r.status_code == 200
        rep = r.json()
        assert len(rep["clock_wrong"]) == 1 and rep["clock_wrong"][0]["records"] == 1
        device = rep["clock_wrong"][0]["device_id"]
        assert sum(rep["per_gate"].values()) == 2  # the admission is kept as a fact
        assert rep["per_hour"].get("clock wrong") == 1
        text = requests.get(f"{c.url}/v1/events/{EVENT}/reconciliation", params={"format": "text"},
                            auth=ops, timeout=10)
        assert text.status_code == 200 and f"clock wrong on gate {device}" in text.text
        out = run_gate(c.data, "central", "report")
        assert f"clock wrong on gate {device}" in out.stdout
    # the gate's own views
    log = run_gate(g, "log")
    assert f"?{YEAR_11476 * 1000}" in log.stdout and "Traceback" not in log.stderr
    ring = json.loads(run_gate(c.data, "central", "keys", "export").stdout)
    for k in ring["keys"]:
        k["exp"] = 2 ** 62  # a far-future expiry (fits SQLite, overflows datetime)
    (tmp_path / "ring.json").write_text(json.dumps(ring))
    run_gate(g, "keys", "trust", str(tmp_path / "ring.json"))
    keys = run_gate(g, "keys", "list")
    assert f"?{2 ** 62 * 1000}" in keys.stdout


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e300"])
def test_item03_now_nan_or_inf_is_a_usage_error(tmp_path, value):
    """On main `--now nan` reached int(nan * 1000) and crashed with a traceback."""
    g = tmp_path / "gate"
    run_gate(g, "init", "--event", EVENT)
    for args in (["verify", f"--now={value}", "GT1:X"], ["wallet", "code", f"--now={value}", "x.json"]):
        r = run_gate(g, *args, check=False)
        assert r.returncode == 2 and "usable unix time" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------ item 12


def _gate_with_ring(tmp_path):
    from crypto.issuer import Issuer
    issuer = Issuer(EVENT)
    g = tmp_path / "gate"
    run_gate(g, "init", "--event", EVENT)
    (tmp_path / "ring.json").write_text(json.dumps(issuer.keyring()))
    run_gate(g, "keys", "trust", str(tmp_path / "ring.json"))
    return g, issuer


def test_item12_hostile_import_files_name_the_line(tmp_path):
    """RecursionError, OverflowError and UnicodeDecodeError reached the operator
    as tracebacks on main. Fails if any of them escapes an importer again."""
    g, issuer = _gate_with_ring(tmp_path)
    good = json.dumps({"ticket_id": "aa" * 8, "event": EVENT, "version": 1, "status": "valid", "entries": 1})
    cases = {
        "nested": b"[" * 200000 + b"]" * 200000,
        "bigint": json.dumps({"ticket_id": "bb" * 8, "event": EVENT, "version": 2 ** 63,
                              "status": "valid", "entries": 1}).encode(),
        "utf8": b'{"ticket_id": "cc\xff\xfe"}',
        "surrogate": json.dumps({"ticket_id": "dd" * 8, "event": EVENT, "version": 1, "status": "valid",
                                 "entries": 1, "holder": "\ud800"}).encode(),
        "long": b'{"ticket_id": "' + b"e" * 200_000 + b'"}',
    }
    for name, line in cases.items():
        f = tmp_path / f"{name}.jsonl"
        f.write_bytes(good.encode() + b"\n" + line + b"\n")
        r = run_gate(g, "ledger", "import", str(f), check=False)
        assert r.returncode != 0 and "line 2:" in r.stderr and "Traceback" not in r.stderr, (name, r.stderr)
        assert "line 1:" not in r.stderr
    # and --skip-bad keeps the good line
    r = run_gate(g, "ledger", "import", "--skip-bad", str(tmp_path / "bigint.jsonl"))
    assert "imported 1 ticket" in r.stdout
    # key rings
    ring = issuer.keyring()
    bad_rings = {
        "utf8": b'{"event": "' + EVENT.encode() + b'",\n "keys": ["\xff"]}',
        "nested": b'{"event": ' + b"[" * 100000 + b"]" * 100000 + b"}",
        "bigint": json.dumps({**ring, "keys": [{**ring["keys"][0], "nbf": 2 ** 63}]}).encode(),
    }
    for name, raw in bad_rings.items():
        (tmp_path / f"ring-{name}.json").write_bytes(raw)
        r = run_gate(g, "keys", "trust", str(tmp_path / f"ring-{name}.json"), check=False)
        assert r.returncode != 0 and "Traceback" not in r.stderr and r.stderr.startswith("gate: error:"), r.stderr
    assert "line 2: not UTF-8" in run_gate(g, "keys", "trust", str(tmp_path / "ring-utf8.json"),
                                           check=False).stderr


# The gate CLI in a child that reports its own peak RSS (VmHWM, which resets at
# exec) as the last line of stderr: wait4's ru_maxrss would count the pages of
# this big pytest process at fork and fail the bound for the wrong reason.
_MEASURED = ("import sys; from gate.app.cli import main; sys.argv[0] = 'gate'; rc = main(sys.argv[1:]); "
             "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
             "sys.stdout.flush(); print('VmHWM', hwm, file=sys.stderr); sys.exit(rc)")


def _peak_rss_of(cmd: list[str], feed) -> tuple[bytes, bytes, int, float]:
    """Run the gate command cmd (cmd[0] is the gate executable), write its stdin
    with feed(pipe) from a thread; return stdout, stderr, exit code and the
    child's own peak RSS in MB."""
    cmd = [sys.executable, "-c", _MEASURED, *cmd[1:]]
    # stdio decoded strictly, as under a service with a full UTF-8 locale such as
    # en_US.UTF-8 (the C/C.UTF-8 locales here would smuggle bad bytes in as surrogates)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    chunks: dict[str, bytes] = {}

    def drain(name, stream):
        chunks[name] = stream.read()

    readers = [threading.Thread(target=drain, args=(n, s)) for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    try:
        feed(proc.stdin)
    except BrokenPipeError:
        pass
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    proc.wait()
    for t in readers:
        t.join()
    err, _, last = chunks["err"].rstrip(b"\n").rpartition(b"\n")
    if not last.startswith(b"VmHWM"):  # the child died before reporting
        return chunks["out"], chunks["err"], proc.returncode, float("inf")
    return chunks["out"], err, proc.returncode, int(last.split()[1]) / 1024


def test_item12_stdin_bad_bytes_and_a_300mb_line_are_malformed_scans(tmp_path):
    """On main a non-UTF-8 byte killed `gate verify` and `gate run --scanner
    stdin`, and a 300 MB line took 620 MB. Fails if stdin is read as text or a
    line is read whole again."""
    g, issuer = _gate_with_ring(tmp_path)
    code = issuer.mint(rotating=False).code(time.time())  # unlisted, static: ACCEPT once

    def feed(pipe):
        pipe.write(b"GT1:\xff\xfe\x80 not utf-8\n")
        pipe.write(b"GT1:")
        block = b"A" * (1 << 20)
        for _ in range(300):  # 300 MB on one line, generated a block at a time
            pipe.write(block)
        pipe.write(b"\n" + code.encode() + b"\n")

    out, err, rc, peak = _peak_rss_of([str(GATE_BIN), "--data", str(g), "verify", "--json"], feed)
    assert rc == 0 and b"Traceback" not in err, err[-2000:]
    decisions = json_lines(out.decode())
    assert [d["reason"] for d in decisions] == ["MALFORMED", "MALFORMED", "ACCEPT"]
    assert "longer than 4096" in decisions[1]["detail"]
    assert peak < 150, f"gate verify peaked at {peak:.0f} MB reading a 300 MB line"
    print(f"gate verify peak RSS with a 300 MB stdin line: {peak:.0f} MB")

    def feed_small(pipe):
        pipe.write(b"\xc3\x28 bad\n" + b"B" * 5_000_000 + b"\n" + code.encode() + b"\n")

    out, err, rc, _ = _peak_rss_of([str(GATE_BIN), "--data", str(g), "run", "--scanner", "stdin", "--relay", "sim",
                                    "--json-events"], feed_small)
    assert rc == 0 and b"Traceback" not in err, err[-2000:]
    assert [e["reason"] for e in json_lines(out.decode())] == ["MALFORMED", "MALFORMED", "ALREADY_USED"]


# ------------------------------------------------------------------ item 13


def test_item13_keys_trust_counts_what_is_really_active(tmp_path):
    """A key the gate holds as revoked stays revoked when a stale ring says
    'active'; main still printed '(1 active)'."""
    g, issuer = _gate_with_ring(tmp_path)
    ring = issuer.keyring()
    revoked = {**ring, "keys": [{**k, "status": "revoked"} for k in ring["keys"]]}
    (tmp_path / "revoked.json").write_text(json.dumps(revoked))
    out = run_gate(g, "keys", "trust", str(tmp_path / "revoked.json")).stdout
    assert "(0 active" in out
    out = run_gate(g, "keys", "trust", str(tmp_path / "ring.json")).stdout  # the stale ring again
    assert "(1 active" not in out and "(0 active, 1 revoked)" in out
    keys = run_gate(g, "keys", "list").stdout
    assert "revoked" in keys and "active" not in keys.replace("status", "")


# ------------------------------------------------------------------ item 14


def _make_pki(tmp_path: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_item14_enrol_and_sync_over_tls_with_a_pinned_ca(tmp_path):
    """Fails if `central serve` loses --tls-cert/--tls-key, if --ca is not
    pinned (0600) and used for later syncs and the background loop, or if an
    untrusted certificate gives a traceback instead of a clear error."""
    ca, cert, key = _make_pki(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")}
    with central_server(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key), scheme="https",
                        verify=str(ca)) as c:
        assert c.url.startswith("https://")
        made = json.loads(run_gate(c.data, "central", "issue", "--count", "1", "--static", "--out",
                                   str(tmp_path / "w"), "--json").stdout)["tickets"]
        g = tmp_path / "gate"
        run_gate(g, "init", "--event", EVENT)
        out = json.loads(run_gate(g, "sync", "--central", c.url, "--enroll", c.code(), "--ca", str(ca),
                                  "--once", "--json", env=env).stdout)
        assert out["ok"] and out["tickets"] == 1 and out["keys"] == 1
        pinned = g / "keys" / "central-ca.pem"
        assert pinned.read_bytes() == ca.read_bytes() and oct(pinned.stat().st_mode)[-3:] == "600"
        code = Wallet.load(made[0]["file"]).code(time.time())
        assert json_lines(run_gate(g, "verify", "--json", code).stdout)[0]["reason"] == "ACCEPT"
        out = json.loads(run_gate(g, "sync", "--once", "--json", env=env).stdout)  # no --ca: the pinned one
        assert out["ok"] and out["uploaded"] == 1
        # the background loop of a running lane uses the pinned CA too
        from gate.app.compose import open_gate
        from sync.loop import SyncLoop
        loop = SyncLoop.for_gate(open_gate(g), interval_s=0.2).start()
        try:
            deadline = time.monotonic() + 120  # bounds a stuck loop; not a timing assertion
            while loop.last_report is None and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            loop.stop()
        assert loop.last_report is not None and loop.last_report.ok, loop.last_error
        # a gate without --ca does not trust the central's certificate: a clear error
        g2 = tmp_path / "gate2"
        run_gate(g2, "init", "--event", EVENT)
        r = run_gate(g2, "sync", "--central", c.url, "--enroll", c.code(), "--once", check=False, env=env)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert "certificate verify failed" in r.stderr and "--ca FILE" in r.stderr
        assert not (g2 / "keys" / "token").exists()
    assert "Traceback" not in c.stderr


def test_item14_plain_http_off_loopback_is_warned(tmp_path):
    from sync.client import plain_http_warning
    assert plain_http_warning("http://127.0.0.1:8080") is None
    assert plain_http_warning("https://central.example:443") is None
    assert "plain HTTP" in plain_http_warning("http://10.0.0.5:8080")
    r = run_gate(tmp_path / "c", "central", "serve", "--tls-cert", str(tmp_path / "nope.pem"),
                 "--tls-key", str(tmp_path / "nope.key"), check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "cannot read" in r.stderr
