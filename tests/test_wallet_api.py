"""Claim links and the wallet API without a browser, on SQLite and PostgreSQL:
single use, expiry, per-address limits, what a claim link can reach, signed
transfer and status requests, face binding refusals, body limits and the
pages' security headers.

How these could fail: a token stored in clear or short; a used link that
claims again with a new key; an expired link that still works; a refusal not
counted (guessing links at full speed); a claim answer naming another ticket;
a transfer that anyone who knows a ticket id can make; an inline script that
the CSP would have to allow."""

from __future__ import annotations

import base64
import re
import time

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import run_gate
from crypto import gt1
from sync.central.store import CentralError, CentralStore
from sync.central.wallet.claims import (FAILURES_PER_MINUTE, Claims, Signed, holder_message)


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def wallet(tmp_path, central_db):
    store = CentralStore(tmp_path / "central", central_db)
    store.create_event("ev", venue="Arena")
    clock = Clock(time.time())
    yield store, Claims(store, clock=clock), clock
    store.close()


def token_of(made: dict) -> str:
    return made["claim_url"].split("#", 1)[1]


def refused(fn, *args, **kw) -> tuple[int, str]:
    with pytest.raises(CentralError) as exc:
        fn(*args, **kw)
    return exc.value.status, exc.value.extra.get("code")


def key() -> tuple[Ed25519PrivateKey, bytes]:
    k = Ed25519PrivateKey.generate()
    return k, gt1.raw_public(k)


def signed(k, action: str, tid: str, version: int, at: int) -> Signed:
    return Signed(tid, version, at, k.sign(holder_message(action, tid, version, at)))


def test_tokens_are_long_random_and_stored_only_as_hashes(wallet):
    store, claims, _ = wallet
    made = claims.issue("ev", count=50)
    tokens = [token_of(m) for m in made]
    assert len(set(tokens)) == 50
    for t in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", t)  # 24 random bytes = 192 bits
    assert all(m["claim_url"].startswith("/wallet/claim#") for m in made)  # a path when no --base-url
    with store.reader() as db:
        rows = [tuple(str(v) for v in r) for r in db.all("SELECT * FROM wallet_claims")]
    assert not any(t in v for r in rows for v in r for t in tokens)


def test_a_link_claims_once_and_a_retry_by_the_same_key_gets_the_same_credential(wallet):
    _, claims, _ = wallet
    (made,) = claims.issue("ev", count=1, zone="B", entries=2)
    tok = token_of(made)
    offer = claims.open(tok, client="a")
    assert (offer["event"], offer["zone"], offer["entries"], offer["face"]) == ("ev", "B", 2, "off")
    k, pub = key()
    first = claims.redeem(tok, pub, face=False, client="a")
    cred = base64.b64decode(first["credential"])
    c = gt1.parse_credential(cred)[3]
    assert (c.ticket_id, c.holder_pub, c.zone, c.ent, c.ver) == (made["ticket_id"], pub, "B", 2, 1)
    # the answer was lost: the same phone (same key) asks again and gets the same credential
    assert claims.redeem(tok, pub, face=False, client="a")["credential"] == first["credential"]
    # anyone else, with another key, or just looking: refused
    assert refused(claims.redeem, tok, key()[1], face=False, client="b") == (410, "CLAIM_USED")
    assert refused(claims.open, tok, client="b") == (410, "CLAIM_USED")
    assert refused(claims.open, "x" * 32, client="b") == (404, "CLAIM_UNKNOWN")


def test_a_claim_answer_holds_only_its_own_ticket(wallet):
    _, claims, _ = wallet
    made = claims.issue("ev", count=3)
    tok = token_of(made[1])
    offer = claims.open(tok, client="a")
    got = claims.redeem(tok, key()[1], face=False, client="a")
    assert set(offer) == {"event", "venue", "starts_at", "tier", "zone", "entries", "version", "face",
                          "face_frames", "face_retention_days", "expires"}
    assert set(got) == set(offer) | {"ticket_id", "credential", "face_bound"}
    blob = repr(offer) + repr(got)
    assert made[1]["ticket_id"] in blob
    assert made[0]["ticket_id"] not in blob and made[2]["ticket_id"] not in blob


def test_links_expire(wallet):
    _, claims, clock = wallet
    (made,) = claims.issue("ev", count=1, days=2)
    clock.t += 2 * 86400 - 1
    claims.open(token_of(made), client="a")
    clock.t += 2
    assert refused(claims.redeem, token_of(made), key()[1], face=False, client="a") == (410, "CLAIM_EXPIRED")


def test_refusals_are_limited_per_client_address(wallet):
    _, claims, clock = wallet
    (good,) = claims.issue("ev", count=1)
    for i in range(FAILURES_PER_MINUTE):
        assert refused(claims.open, f"guess-{i:026d}", client="10.0.0.9")[1] == "CLAIM_UNKNOWN"
    # the next request from that address is refused even with a real link ...
    assert refused(claims.open, token_of(good), client="10.0.0.9") == (429, "TOO_MANY")
    # ... while other addresses are served, and the address recovers after a minute
    assert claims.open(token_of(good), client="10.0.0.10")["event"] == "ev"
    clock.t += 61
    assert claims.open(token_of(good), client="10.0.0.9")["event"] == "ev"


def test_transfer_needs_the_holders_signature_and_bumps_the_version(wallet):
    store, claims, clock = wallet
    (made,) = claims.issue("ev", count=1)
    tid = made["ticket_id"]
    k, pub = key()
    claims.redeem(token_of(made), pub, face=False, client="a")
    now = int(clock())
    other = Ed25519PrivateKey.generate()
    assert refused(claims.transfer, signed(other, "transfer", tid, 1, now), client="a") == (403, "BAD_SIGNATURE")
    # a status signature is not a transfer signature
    assert refused(claims.transfer, Signed(tid, 1, now, k.sign(holder_message("status", tid, 1, now))),
                   client="a") == (403, "BAD_SIGNATURE")
    assert refused(claims.transfer, signed(k, "transfer", tid, 1, now - 600), client="a") == (403, "STALE_REQUEST")
    with store.reader() as db:
        seq_before = db.scalar("SELECT change_seq FROM tickets WHERE ticket_id = :t", {"t": tid})
    res = claims.transfer(signed(k, "transfer", tid, 1, now), client="a")
    assert res["version"] == 2 and res["claim_url"].startswith("/wallet/claim#")
    with store.reader() as db:
        version, holder, seq = db.one("SELECT version, holder_pub, change_seq FROM tickets WHERE ticket_id = :t",
                                      {"t": tid})
    assert (version, holder) == (2, None) and seq > seq_before  # gates pull the new version
    # the old key cannot transfer again, and its status says the ticket moved on
    assert refused(claims.transfer, signed(k, "transfer", tid, 1, now), client="a") == (409, "TRANSFERRED")
    assert claims.status(signed(k, "status", tid, 1, now), client="a")["state"] == "replaced"
    k2, pub2 = key()
    got = claims.redeem(token_of(res), pub2, face=False, client="b")
    assert gt1.parse_credential(base64.b64decode(got["credential"]))[3].ver == 2
    assert claims.status(signed(k2, "status", tid, 2, now), client="b")["state"] == "valid"


def test_reissue_replaces_an_open_link_and_a_revoked_ticket_cannot_be_claimed(wallet, tmp_path):
    store, claims, _ = wallet
    a, b = claims.issue("ev", count=2)
    res = claims.reissue(a["ticket_id"])
    assert refused(claims.open, token_of(a), client="x") == (410, "CLAIM_REPLACED")
    assert claims.open(token_of(res), client="x")["version"] == 2
    store.revoke(b["ticket_id"])
    assert refused(claims.open, token_of(b), client="x") == (410, "TICKET_REVOKED")


def test_status_counts_entries_from_uploaded_scans(wallet, tmp_path):
    """A gate admits the holder and uploads; the wallet's signed status then says 1 of 1 used."""
    from gate.appliance import Gate
    from sync import client as sc
    from sync.central.app import ServerThread, create_app

    store, claims, clock = wallet
    (made,) = claims.issue("ev", count=1)
    k, pub = key()
    got = claims.redeem(token_of(made), pub, face=False, client="a")
    server = ServerThread(create_app(store)).start()
    try:
        g = Gate.init(tmp_path / "gate", event="ev")
        sc.enroll(g, server.url, store.enrol_code("ev"))
        assert sc.sync_once(g, sc.client_for(g)).ok
        now = time.time()
        qr = gt1.present(base64.b64decode(got["credential"]), holder_key=k, now=now)
        d, _ = g.scan(qr, now=now)
        assert d.reason.value == "ACCEPT"
        assert sc.sync_once(g, sc.client_for(g)).ok
        g.close()
    finally:
        server.stop()
    st = claims.status(signed(k, "status", made["ticket_id"], 1, int(clock())), client="a")
    assert (st["state"], st["entries"], st["used"]) == ("valid", 1, 1)
    store.revoke(made["ticket_id"])
    assert claims.status(signed(k, "status", made["ticket_id"], 1, int(clock())), client="a")["state"] == "revoked"


def test_face_binding_refusals(wallet):
    _, claims, _ = wallet
    (plain,) = claims.issue("ev", count=1)
    (needs,) = claims.issue("ev", count=1, face="require")
    assert refused(claims.face_frame, token_of(plain), b"\xff\xd8jpeg", client="a") == (400, "FACE_NOT_OFFERED")
    assert refused(claims.redeem, token_of(plain), key()[1], face=True, client="a") == (400, "FACE_NOT_OFFERED")
    assert refused(claims.redeem, token_of(needs), key()[1], face=False, client="a") == (400, "FACE_REQUIRED")
    assert refused(claims.redeem, token_of(needs), key()[1], face=True, client="a")[1] == "FACE_FRAMES"
    # not a photo: an answer saying so, nothing kept
    assert claims.face_frame(token_of(needs), b"not a jpeg", client="a") == {
        "frames": 0, "needed": 3, "problem": "POOR_CAPTURE"}
    assert refused(claims.face_frame, token_of(needs), b"x" * 100_000, client="a")[0] == 413


def test_cli_refuses_mixed_options_with_a_clear_message(tmp_path):
    data = tmp_path / "central"
    run_gate(data, "central", "event", "create", "ev")
    for args, words in ((["issue", "--count", "1", "--claim", "--out", "x"], "cannot go with --claim"),
                        (["issue", "--count", "1"], "--out DIR"),
                        (["issue", "--count", "1", "--out", "x", "--claim-face", "offer"], "go with --claim"),
                        (["reissue", "0" * 32, "--claim"], "no ticket")):
        proc = run_gate(data, "central", *args, check=False)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


def test_pages_have_strict_headers_no_inline_script_and_bounded_bodies(tmp_path):
    from sync.central.app import ServerThread, create_app

    store = CentralStore(tmp_path / "central")
    server = ServerThread(create_app(store)).start()
    try:
        for path in ("/wallet/", "/wallet/claim", "/wallet/app.js", "/wallet/sw.js"):
            r = requests.get(server.url + path, timeout=10)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe" not in csp and "frame-ancestors 'none'" in csp
            assert r.headers["referrer-policy"] == "no-referrer"
        html = requests.get(server.url + "/wallet/", timeout=10).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)  # every script is a file
        assert not re.search(r"\son[a-z]+\s*=", html) and "style=" not in html
        sw = requests.get(server.url + "/wallet/sw.js", timeout=10).text
        assert "__RELEASE__" not in sw and re.search(r'RELEASE = "[0-9a-f]{16}"', sw)
        assert requests.get(server.url + "/wallet/../central.db", timeout=10).status_code == 404
        assert requests.get(server.url + "/wallet/nothing.js", timeout=10).status_code == 404
        zh = requests.get(server.url + "/wallet/i18n/zh_CN.json", timeout=10).json()
        assert zh["Add to this phone"] == "添加到此手机"
        big = requests.post(server.url + "/wallet/api/claim/face", data=b"{" + b" " * 100_000 + b"}",
                            headers={"Content-Type": "application/json"}, timeout=10)
        assert big.status_code == 413
        r = requests.post(server.url + "/wallet/api/claim/open", json={"token": "a\x00b"}, timeout=10)
        assert r.status_code in (400, 422)
        r = requests.post(server.url + "/wallet/api/claim", json={"token": "x" * 32}, timeout=10)
        assert (r.status_code, r.json()["code"]) == (400, "BAD_REQUEST")
        # the same per-address limit over HTTP (the TCP peer; X-Forwarded-For is not believed)
        codes = [requests.post(server.url + "/wallet/api/claim/open", json={"token": f"{i:032d}"},
                               headers={"X-Forwarded-For": f"10.1.1.{i}"}, timeout=10).status_code
                 for i in range(FAILURES_PER_MINUTE + 1)]
        assert codes == [404] * FAILURES_PER_MINUTE + [429]
    finally:
        server.stop()
        store.close()


def test_a_missing_issuer_key_refuses_the_claim_and_keeps_the_link(wallet):
    store, claims, _ = wallet
    (made,) = claims.issue("ev", count=1)
    keys = list((store.dir / "keys").glob("issuer-*.key"))
    hidden = [k.rename(k.with_suffix(".away")) for k in keys]
    try:
        assert refused(claims.redeem, token_of(made), key()[1], face=False, client="a") == (503, "UNAVAILABLE")
    finally:
        for k in hidden:
            k.rename(k.with_suffix(".key"))
    assert claims.open(token_of(made), client="a")["event"] == "ev"  # still open: nothing was written
    assert claims.redeem(token_of(made), key()[1], face=False, client="a")["ticket_id"] == made["ticket_id"]
