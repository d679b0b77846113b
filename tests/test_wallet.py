"""The holder's wallet in a real browser: Debian's Chromium driven by Playwright at
phone size, against a real central (uvicorn on 127.0.0.1, SQLite and PostgreSQL),
and a real gate that syncs with it over HTTP and decides with `gate verify`.

The codes are read back from screenshots of the page with `gate decode` (the
lane's QR pipeline), never from the page's own state: a code that looks fine
to the script but does not scan fails here. Screenshots go to each test's tmp
dir (wallet-*.png)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import ROOT, json_lines, run_gate
from crypto import gt1
from sync.central.app import ServerThread, create_app
from sync.central.store import CentralStore

CHROMIUM = "/usr/bin/chromium"
FACES = ROOT / "gate" / "assets" / "faces"


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def central(request, tmp_path_factory):
    """One central per backend: every claim, transfer and reissue runs on SQLite and PostgreSQL."""
    data = tmp_path_factory.mktemp("wallet-central")
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_cluster").create_db()
    store = CentralStore(data, url)
    server = ServerThread(create_app(store)).start()
    yield Central(store, server, data, ["--db", url] if url else [])
    server.stop()
    store.close()


class Central:
    def __init__(self, store, server, data, db):
        self.store, self.server, self.data, self.db = store, server, data, db

    @property
    def url(self) -> str:
        return self.server.url

    def cli(self, *args, **kw):
        return run_gate(self.data, "central", *self.db, *args, **kw)

    def event(self, name: str) -> str:
        self.cli("event", "create", name, "--venue", "Riverside Arena")
        return name

    def issue(self, event: str, n: int = 1, *extra) -> list[dict]:
        """Tickets waiting for holders, the way a box office makes them: the CLI."""
        out = json.loads(self.cli("issue", "--event", event, "--count", str(n), "--claim", "--json",
                                  "--base-url", self.url, *extra).stdout)
        assert [sorted(t) for t in out["tickets"]] == [["claim_url", "ticket_id"]] * n
        return out["tickets"]

    def gate(self, tmp: Path, event: str) -> "Gate":
        g = Gate(tmp / f"gate-{event}", self)
        run_gate(g.dir, "init", "--event", event)
        code = json.loads(self.cli("device", "enroll", "--event", event, "--json").stdout)["code"]
        run_gate(g.dir, "sync", "--central", self.url, "--enroll", code, "--once")
        return g


class Gate:
    """A real gate directory, synced with the central through `gate sync`."""

    def __init__(self, path: Path, central: Central):
        self.dir, self.central = path, central

    def sync(self) -> None:
        run_gate(self.dir, "sync", "--once")

    def decide(self, text: str, *, late: float = 0, face: Path | None = None) -> dict:
        """`gate verify` at the code's own step (+ ``late`` seconds): no race with the wall clock."""
        now = gt1.parse_qr(text).step * gt1.STEP_SECONDS + 5 + late
        args = ["verify", "--dry-run", "--json", "--now", str(now)]
        if face is not None:
            args += ["--face", str(face)]
        (out,) = json_lines(run_gate(self.dir, *args, "--", text).stdout)
        return out


@pytest.fixture(scope="module")
def pw():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(pw):
    b = pw.chromium.launch(executable_path=CHROMIUM)
    yield b
    b.close()


def phone(browser, **kw):
    """A new phone: its own browser profile (IndexedDB, service worker), phone-sized."""
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                              has_touch=True, **kw)
    page = ctx.new_page()
    page.csp = []  # Content-Security-Policy violations (an inline script or style slipped in)
    page.on("console", lambda m: "Content Security Policy" in m.text and page.csp.append(m.text))
    page.on("pageerror", lambda exc: page.csp.append(f"script error: {exc}"))
    return ctx, page


def claim(page, url: str):
    page.goto(url)
    page.click("#add")
    page.wait_for_selector("canvas.qr[data-step]")
    assert "#t=" in page.url and "claim" not in page.url  # the token left the address bar
    return page


def shot_code(page, path: Path) -> str:
    """Screenshot the whole phone screen and read the code back with `gate decode`."""
    page.screenshot(path=str(path))
    (out,) = json_lines(run_gate(None, "decode", "--json", "--frame", "native", str(path)).stdout)
    assert len(out["texts"]) == 1, out
    assert out["texts"][0].startswith("GT1:")
    return out["texts"][0]


# ------------------------------------------------------------------ acceptance


def test_claim_screenshot_verifies_then_goes_stale_and_the_link_works_once(central, browser, tmp_path):
    ev = central.event("ev-claim")
    (t,) = central.issue(ev)
    assert t["claim_url"].startswith(central.url + "/wallet/claim#")
    gate = central.gate(tmp_path, ev)
    ctx, page = phone(browser)
    claim(page, t["claim_url"])
    assert page.inner_text(".event") == ev and page.inner_text(".zone") and page.inner_text(".countdown")
    text = shot_code(page, tmp_path / "wallet-code.png")
    p = gt1.parse_qr(text)
    assert p.claims.ticket_id == t["ticket_id"] and p.claims.holder_pub is not None and p.rotating
    # the central bound the credential to the browser's key; the private key stays there
    with central.store.reader() as db:
        bound = db.one("SELECT holder_pub FROM tickets WHERE ticket_id = :t", {"t": t["ticket_id"]})[0]
    assert bytes(bound) == p.claims.holder_pub
    assert page.evaluate("""async () => {
        const db = await new Promise(r => { const q = indexedDB.open('gt1-wallet'); q.onsuccess = () => r(q.result); });
        const t = await new Promise(r => { const q = db.transaction('tickets').objectStore('tickets').getAll();
                                           q.onsuccess = () => r(q.result[0]); });
        try { await crypto.subtle.exportKey('pkcs8', t.key.privateKey); return 'exported'; }
        catch (e) { return t.key.kind + ' ' + t.key.privateKey.extractable; } }""") == "webcrypto false"
    v = gate.decide(text)
    assert (v["reason"], v["ticket_id"]) == ("ACCEPT", t["ticket_id"])
    assert gate.decide(text, late=60)["reason"] == "STALE_CODE"  # the same screenshot a minute later
    assert page.csp == []
    # a second opening, from another phone: refused in words, and by code at the API
    ctx2, page2 = phone(browser)
    page2.goto(t["claim_url"])
    page2.wait_for_selector(".refusal[data-code=CLAIM_USED]")
    assert "already been used" in page2.inner_text(".refusal h2")
    page2.screenshot(path=str(tmp_path / "wallet-used.png"))
    # another link opened in the same tab (only the part after '#' changes): that link is drawn
    page2.goto(central.url + "/wallet/claim#" + "A" * 32)
    page2.wait_for_selector(".refusal[data-code=CLAIM_UNKNOWN]")
    token = t["claim_url"].split("#", 1)[1]
    r = requests.post(central.url + "/wallet/api/claim/open", json={"token": token}, timeout=10)
    assert (r.status_code, r.json()["code"]) == (410, "CLAIM_USED")
    # the first phone opening its own link again just shows its ticket
    page.goto(t["claim_url"])
    page.wait_for_selector("canvas.qr[data-step]")
    ctx.close()
    ctx2.close()


def test_transfer_leaves_the_old_phone_superseded_after_sync(central, browser, tmp_path):
    ev = central.event("ev-transfer")
    (t,) = central.issue(ev)
    gate = central.gate(tmp_path, ev)
    ctx_a, a = phone(browser)
    claim(a, t["claim_url"])
    old = shot_code(a, tmp_path / "wallet-seller.png")
    assert gate.decide(old)["reason"] == "ACCEPT"
    a.click("text=Give this ticket to someone else")
    a.click("text=Give it away")
    a.wait_for_selector(".transferred[data-state=transferred]")
    a.screenshot(path=str(tmp_path / "wallet-transferred.png"))
    link = a.input_value("input.link")
    assert link.startswith(central.url + "/wallet/claim#") and link != t["claim_url"]
    assert a.query_selector("canvas.qr") is None  # no code on the old phone any more
    ctx_b, b = phone(browser)
    claim(b, link)
    new = shot_code(b, tmp_path / "wallet-buyer.png")
    assert gt1.parse_qr(new).claims.ver == 2
    gate.sync()
    assert gate.decide(old)["reason"] == "SUPERSEDED"
    v = gate.decide(new)
    assert (v["reason"], v["version"]) == ("ACCEPT", 2)
    a.reload()
    a.wait_for_selector(".transferred[data-state=transferred]")  # it stays transferred
    # the old phone's key cannot move the ticket again (it was deleted; a forged request is refused)
    r = requests.post(central.url + "/wallet/api/transfer", json={
        "ticket_id": t["ticket_id"], "version": 1, "at": int(time.time()),
        "signature": base64.urlsafe_b64encode(bytes(64)).decode().rstrip("=")}, timeout=10)
    assert (r.status_code, r.json()["code"]) == (403, "BAD_SIGNATURE")
    assert a.csp == [] and b.csp == []
    ctx_a.close()
    ctx_b.close()


def test_box_office_reissue_moves_a_lost_phones_ticket(central, browser, tmp_path):
    ev = central.event("ev-reissue")
    (t,) = central.issue(ev)
    gate = central.gate(tmp_path, ev)
    ctx_a, a = phone(browser)
    claim(a, t["claim_url"])
    lost = shot_code(a, tmp_path / "wallet-lost.png")
    res = json.loads(central.cli("reissue", t["ticket_id"], "--claim", "--json", "--base-url", central.url).stdout)
    assert res["version"] == 2 and res["claim_url"].startswith(central.url + "/wallet/claim#")
    a.reload()  # the old phone, found again: it learns the ticket moved when it is online
    a.wait_for_selector(".refusal[data-state=replaced]")
    ctx_c, c = phone(browser)
    claim(c, res["claim_url"])
    fresh = shot_code(c, tmp_path / "wallet-reissued.png")
    gate.sync()
    assert gate.decide(lost)["reason"] == "SUPERSEDED"
    assert gate.decide(fresh)["reason"] == "ACCEPT"
    # the first link now says it was replaced, not "used"
    ctx_d, d = phone(browser)
    d.goto(t["claim_url"])
    d.wait_for_selector(".refusal[data-code=CLAIM_USED], .refusal[data-code=CLAIM_REPLACED]")
    for ctx in (ctx_a, ctx_c, ctx_d):
        ctx.close()


def test_offline_reload_still_shows_a_code_that_verifies(browser, tmp_path):
    """Flight mode: the central is gone (server stopped) and the browser offline; a reload
    still draws a fresh code from the service worker's copy of the app."""
    store = CentralStore(tmp_path / "central")
    server = ServerThread(create_app(store)).start()
    try:
        c = Central(store, server, tmp_path / "central", [])
        ev = c.event("ev-offline")
        (t,) = c.issue(ev)
        gate = c.gate(tmp_path, ev)
        ctx, page = phone(browser)
        claim(page, t["claim_url"])
        page.wait_for_selector("body[data-offline=ready]")
        page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    finally:
        server.stop()
    try:
        ctx.set_offline(True)
        page.reload()
        page.wait_for_selector("canvas.qr[data-step]")
        text = shot_code(page, tmp_path / "wallet-offline.png")
        assert gate.decide(text)["reason"] == "ACCEPT"
        first = page.get_attribute("canvas.qr", "data-step")
        # it keeps rotating with no network: the next step draws a new code
        page.wait_for_function("s => document.querySelector('canvas.qr').dataset.step !== s", arg=first,
                               timeout=20_000)
        assert gate.decide(shot_code(page, tmp_path / "wallet-offline-next.png"))["reason"] == "ACCEPT"
        assert page.csp == []
    finally:
        ctx.close()
        store.close()


def _y4m(photo: Path, out: Path, frames: int = 30) -> Path:
    """A fake front camera: the photo letterboxed into 640x480, as a YUV4MPEG2 (4:2:0) video."""
    import cv2
    import numpy as np

    img = cv2.imread(str(photo))
    h, w = img.shape[:2]
    k = min(640 / w, 480 / h)
    img = cv2.resize(img, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 40, np.uint8)
    y0, x0 = (480 - img.shape[0]) // 2, (640 - img.shape[1]) // 2
    canvas[y0:y0 + img.shape[0], x0:x0 + img.shape[1]] = img
    yuv = cv2.cvtColor(canvas, cv2.COLOR_BGR2YUV_I420).tobytes()
    with out.open("wb") as f:
        f.write(b"YUV4MPEG2 W640 H480 F10:1 Ip A1:1 C420jpeg\n")
        for _ in range(frames):
            f.write(b"FRAME\n" + yuv)
    return out


@pytest.mark.face
def test_face_bound_claim_admits_the_holder_and_refuses_another_person(central, pw, tmp_path):
    ev = central.event("ev-face")
    (t,) = central.issue(ev, 1, "--claim-face", "offer")
    gate = central.gate(tmp_path, ev)
    video = _y4m(FACES / "obama1.jpg", tmp_path / "holder.y4m")
    # a browser whose front camera films the holder's photo
    b = pw.chromium.launch(executable_path=CHROMIUM, args=[
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}"])
    try:
        ctx, page = phone(b, permissions=["camera"])
        page.goto(t["claim_url"])
        page.wait_for_selector("#face-consent")
        assert page.is_enabled("#add")  # face binding offered, not required
        assert "30" in page.inner_text(".face")  # the retention period is shown before consent
        page.check("#face-consent")
        assert not page.is_enabled("#add")  # consented: the photos come first
        page.wait_for_selector("#face-start:enabled")
        page.click("#face-start")
        page.wait_for_selector(".progress[data-done='1']", timeout=60_000)
        page.screenshot(path=str(tmp_path / "wallet-face.png"))
        page.click("#add")
        page.wait_for_selector("canvas.qr[data-step]")
        text = shot_code(page, tmp_path / "wallet-face-code.png")
        assert page.csp == []
    finally:
        b.close()
    assert gt1.parse_qr(text).claims.fce is True
    gate.sync()  # the template reaches the gate as a ticket change
    holder = gate.decide(text, face=FACES / "obama2.jpg")
    assert holder["reason"] == "ACCEPT" and holder["face_distance"] is not None
    other = gate.decide(text, face=FACES / "biden1.jpg")
    assert other["reason"] == "FACE_MISMATCH"
    assert gate.decide(text)["reason"] == "FACE_REQUIRED"
    # the photos were never stored: only the fused template, on the ticket
    with central.store.reader() as db:
        row = db.one("SELECT face_encodings, face_at FROM wallet_claims WHERE ticket_id = :t", {"t": t["ticket_id"]})
    assert tuple(row) == (None, None)


def test_the_wallet_speaks_chinese_from_the_browser_and_switches(central, browser, tmp_path):
    ev = central.event("ev-lang")
    (t,) = central.issue(ev)
    ctx, page = phone(browser, locale="zh-CN")
    page.goto(t["claim_url"])
    page.wait_for_selector("#add")
    assert page.inner_text("#add") == "添加到此手机"
    page.click("#lang")
    page.wait_for_function("() => document.querySelector('#add')?.innerText === 'Add to this phone'")
    page.click("#add")
    page.wait_for_selector("canvas.qr[data-step]")
    assert "New code in" in page.inner_text(".countdown")
    page.click("#lang")
    page.wait_for_function("() => document.querySelector('.countdown')?.innerText.includes('秒')")
    page.screenshot(path=str(tmp_path / "wallet-zh.png"))
    ctx.close()


# ------------------------------------------------------------------ the JS GT1 against the Python one

STEPS = [0, 23, 24, 255, 256, 65535, 65536, 117815040, 2**32 - 1, 2**32]  # every CBOR integer width


def test_js_codes_are_byte_for_byte_the_python_ones(central, browser):
    """crypto/gt1.py is the reference: for credentials of several shapes and steps at every
    CBOR integer width, the page's gt1.js gives the same QR text, with WebCrypto's Ed25519
    and with the vendored fallback; gt1.claimsOf reads back what Python wrote."""
    import random

    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    rng = random.Random(7)
    issuer = Ed25519PrivateKey.generate()
    cases = []
    for i, step in enumerate(STEPS):
        holder = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        cred = gt1.issue(issuer, ticket_id=rng.randbytes(8 + i * 2), event=["e", "演唱会 2026", "x" * 90][i % 3],
                         tier=["GA", "", "VIP"][i % 3], zone=None if i % 2 else "North",
                         entries=i, version=1 + i, face=bool(i % 2) or None, holder_pub=gt1.raw_public(holder))
        seed = holder.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        cases.append({"cred": base64.b64encode(cred).decode(), "step": step,
                      "d": base64.urlsafe_b64encode(seed).decode().rstrip("="),
                      "x": base64.urlsafe_b64encode(gt1.raw_public(holder)).decode().rstrip("="),
                      "want": gt1.present(cred, holder_key=holder, step=step)})
    ctx, page = phone(browser)
    page.goto(central.url + "/wallet/")
    got = page.evaluate("""async (cases) => {
        const gt1 = await import('/wallet/gt1.js');
        const keys = await import('/wallet/keys.js');
        const out = [];
        for (const c of cases) {
            const cred = gt1.b64decode(c.cred);
            const priv = await crypto.subtle.importKey('jwk', {kty: 'OKP', crv: 'Ed25519', d: c.d, x: c.x},
                                                       {name: 'Ed25519'}, false, ['sign']);
            const web = await gt1.present(cred, c.step, (m) => keys.sign({kind: 'webcrypto', privateKey: priv}, m));
            const seed = gt1.b64decode(c.d.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - c.d.length % 4) % 4));
            const js = await gt1.present(cred, c.step, (m) => keys.sign({kind: 'js', seed}, m));
            const cl = gt1.claimsOf(cred);
            out.push({web, js, claims: [cl.ticketId, cl.event, cl.tier, cl.zone, cl.entries, cl.version, cl.face]});
        }
        return out; }""", cases)
    for c, g in zip(cases, got):
        assert g["web"] == c["want"], c["step"]
        assert g["js"] == c["want"], c["step"]
        cl = gt1.parse_qr(c["want"]).claims
        assert g["claims"] == [cl.ticket_id, cl.evt, cl.tier, cl.zone, cl.ent, cl.ver, cl.fce]
    assert page.csp == []
    ctx.close()


def test_a_browser_without_webcrypto_ed25519_uses_the_vendored_one(central, browser, tmp_path):
    ev = central.event("ev-fallback")
    (t,) = central.issue(ev)
    gate = central.gate(tmp_path, ev)
    ctx, page = phone(browser)
    ctx.add_init_script("globalThis.GT1_WALLET_TUNING = {forceJsEd25519: true}")
    claim(page, t["claim_url"])
    assert page.evaluate("""async () => {
        const db = await new Promise(r => { const q = indexedDB.open('gt1-wallet'); q.onsuccess = () => r(q.result); });
        return await new Promise(r => { const q = db.transaction('tickets').objectStore('tickets').getAll();
                                        q.onsuccess = () => r(q.result[0].key.kind); }); }""") == "js"
    assert gate.decide(shot_code(page, tmp_path / "wallet-fallback.png"))["reason"] == "ACCEPT"
    ctx.close()


def test_the_demo_prints_a_claim_link_that_works_while_it_runs(tmp_path):
    """`gate demo` shows the claim of one ticket: the printed link opens while the story runs."""
    import re

    from gate.app.demo import run_headless

    seen = {}

    def out(line: str) -> None:
        m = re.match(r"wallet\s+open (http://127\.0\.0\.1:\d+)/wallet/claim#(\S+) ", line)
        if m and not seen:  # checked from inside the run: the central is up now
            base, token = m.groups()
            seen["page"] = requests.get(f"{base}/wallet/claim", timeout=10).status_code
            seen["offer"] = requests.post(f"{base}/wallet/api/claim/open", json={"token": token}, timeout=10).json()

    summary = run_headless(out=out, workdir=tmp_path)
    assert summary["chains_ok"]
    assert seen["page"] == 200 and seen["offer"]["event"] == "evt-demo-arena", seen


def test_one_phone_holds_several_tickets(central, browser, tmp_path):
    ev = central.event("ev-family")
    t1, t2 = central.issue(ev, 2)
    ctx, page = phone(browser)
    claim(page, t1["claim_url"])
    claim(page, t2["claim_url"])
    assert page.get_attribute(".code", "data-ticket") == t2["ticket_id"]
    page.click("a[href='/wallet/#all']")
    page.wait_for_selector("ul.list li")
    assert len(page.query_selector_all("ul.list li")) == 2
    page.click(f"a[href='/wallet/#t={t1['ticket_id']}']")
    page.wait_for_selector(f".code[data-ticket='{t1['ticket_id']}'] canvas.qr[data-step]")
    ctx.close()
