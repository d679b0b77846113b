"""pretix as the central system, behind the same sync entry points as the
reference central. Selected by a central URL of the form
``pretix+https://HOST/ORGANIZER/EVENT?list=ID`` (``pretix+http://`` for tests).

- provisioning: ``POST /api/v1/device/initialize`` with the device's
  initialisation token; the API token is stored 0600 (``Authorization: Device``);
- ledger: the event's ``valid_keys`` (pretix_sig1), orders by ``modified_since``
  with the ``X-Page-Generated`` header as cursor (pages of 50), revoked secrets
  (``created_since``) and blocked secrets, mapped into the local ledger keyed by
  ``sha256(secret)``;
- scans: every accepted scan becomes a check-in (``checkinrpc/redeem``) with its
  original ``datetime``, a stable ``nonce`` (device id + seq: resending is
  harmless) and ``force: true`` (it was decided offline: it happened); rejected
  scans go to ``failed_checkins``; a rollback annuls its check-in by nonce. The
  outbox advances only on success or a permanent 4xx, as pretixSCAN does.
"""

from __future__ import annotations

import platform
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Mapping
from urllib.parse import parse_qs, urlparse

from crypto.sealed import write_secret
from gate import scanlog
from gate.db import get_setting, put_setting, transaction
from gate.errors import ConfigError, SyncError
from gate.i18n import _
from gate.ledger import TicketRow, upsert_tickets
from gate.pretix_codes import policy_problem, ticket_id_for
from sync.client import UPLOADED_THROUGH, HttpClient, token_path
from sync.engine import ApiError, Step, SyncReport, advance, run_pass

PAGE = 50
ORDERS_CURSOR = "pretix.orders_since"  # X-Page-Generated of the last complete walk through the orders
SENT_HIGH = "pretix.sent_high"  # the highest seq ever sent (a resend after a reset must not re-admit)
_REVOKE = ("INSERT INTO tickets (ticket_id, event, tier, zone, version, status, entries, reentry,"
           " face_required, face_template, holder) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
           " ON CONFLICT(ticket_id) DO UPDATE SET status = 'revoked'")
# our reason codes -> pretix failed check-in reasons
FAILED_REASON = {
    "REVOKED": "revoked", "ALREADY_USED": "already_redeemed", "REPLAY": "already_redeemed",
    "NOT_IN_LEDGER": "invalid", "MALFORMED": "invalid", "BAD_SIGNATURE": "invalid",
    "UNKNOWN_KEY": "invalid", "WRONG_EVENT": "invalid", "NOT_YET_VALID": "invalid_time",
    "EXPIRED": "invalid_time", "WRONG_ZONE": "product", "MANUAL_DENY": "rules",
}


def is_pretix(url: str | None) -> bool:
    return bool(url) and url.startswith(("pretix+http://", "pretix+https://"))


def parse_url(url: str) -> dict:
    u = urlparse(url[len("pretix+"):])
    parts = [p for p in u.path.split("/") if p]
    lists = parse_qs(u.query).get("list")
    if u.scheme not in ("http", "https") or len(parts) < 2 or not lists or not lists[0].isdigit():
        raise ConfigError(_("a pretix central URL looks like pretix+https://HOST/ORGANIZER/EVENT?list=ID"))
    prefix = "/" + "/".join(parts[:-2]) if len(parts) > 2 else ""
    return {"url": url, "base": f"{u.scheme}://{u.netloc}{prefix}", "organizer": parts[-2],
            "event": parts[-1], "list": int(lists[0])}


class PretixClient(HttpClient):
    """The pretix REST API endpoints a check-in device uses (``Authorization: Device``)."""

    auth_scheme = "Device"

    def __init__(self, cfg: dict, token: str | None = None, **kw):
        super().__init__(cfg["base"], token, **kw)
        self.cfg = cfg

    @property
    def org(self) -> str:
        return f"/api/v1/organizers/{self.cfg['organizer']}"

    @property
    def ev(self) -> str:
        return f"{self.org}/events/{self.cfg['event']}"

    def initialize(self, body: dict) -> dict:
        """Provision this device with its one-time initialisation token (no auth)."""
        return self.call("POST", "/api/v1/device/initialize", body=body)

    def event(self) -> dict:
        return self.call("GET", self.ev + "/")

    def get_page(self, path: str, params: dict) -> tuple[list, str | None]:
        doc = self.call("GET", path, params=params)
        results, nxt = doc.get("results"), doc.get("next")
        if not isinstance(results, list):
            raise ApiError(f"pretix sent a malformed page on {path}")
        return results, nxt

    def orders_page(self, params: dict) -> tuple[list, bool, str | None]:
        """(orders, more pages, X-Page-Generated) of one page of the event's orders."""
        ans = self.request("GET", self.ev + "/orders/", params=params)
        results = ans.doc.get("results")
        if not isinstance(results, list):
            raise ApiError("pretix sent a malformed orders page")
        return results, bool(ans.doc.get("next")), ans.headers.get("X-Page-Generated")

    def redeem(self, body: dict) -> dict:
        return self.call("POST", self.org + "/checkinrpc/redeem/", body=body)

    def failed_checkin(self, body: dict) -> dict:
        return self.call("POST", f"{self.ev}/checkinlists/{self.cfg['list']}/failed_checkins/", body=body)

    def annul(self, body: dict) -> dict:
        return self.call("POST", self.org + "/checkinrpc/annul/", body=body)


def enroll(gate, url: str, init_token: str) -> str:
    cfg = parse_url(url)
    if problem := policy_problem(gate.policy):  # before the one-time token is spent
        raise ConfigError(problem)
    client = PretixClient(cfg)
    doc = client.initialize({
        "token": init_token, "hardware_brand": "gate-appliance", "hardware_model": platform.machine(),
        "os_name": platform.system(), "os_version": platform.release(),
        "software_brand": "gate-appliance", "software_version": "0.1.0"})
    token = doc.get("api_token")
    if not isinstance(token, str) or not token:
        raise SyncError(_("pretix did not return an API token for this device"))
    if doc.get("organizer") != cfg["organizer"]:
        raise SyncError(_("that device belongs to organizer {theirs}, not {ours}").format(
            theirs=repr(doc.get("organizer")), ours=repr(cfg["organizer"])))
    write_secret(token_path(gate), token.encode())
    gate.set_pretix({**cfg, "device": doc.get("device_id"), "keys": []})
    with transaction(gate.conn):
        put_setting(gate.conn, "sync.central", url)
    return token


def client_for(gate) -> PretixClient:
    cfg = gate.pretix
    if cfg is None or not token_path(gate).exists():
        raise SyncError(_("this gate is not enrolled with pretix: gate sync --central pretix+https://... --enroll TOKEN"))
    return PretixClient(cfg, token_path(gate).read_text().strip())


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).isoformat()


def pull_keys(gate, client: PretixClient) -> int:
    keys = (client.event().get("valid_keys") or {}).get("pretix_sig1") or []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ApiError("pretix sent malformed valid_keys")
    gate.set_pretix({**gate.pretix, "keys": keys})
    return len(keys)


def _rows_from_order(order: dict, event: str) -> list[TicketRow]:
    if not isinstance(order, dict):
        raise ApiError("pretix sent an order that is not an object")
    status = "valid" if order.get("status") == "p" else "revoked"
    rows = []
    for pos in order.get("positions") or []:
        secret = pos.get("secret") if isinstance(pos, dict) else None
        if not isinstance(secret, str) or not secret:
            raise ApiError("pretix sent a position without a secret")
        st = "revoked" if pos.get("canceled") or pos.get("blocked") else status
        name = pos.get("attendee_name")
        rows.append(TicketRow(ticket_id_for(secret), event, status=st, reentry=1,
                              holder=name if isinstance(name, str) else None))
    return rows


def pull_orders(gate, client: PretixClient) -> int:
    """Orders changed since the last complete walk. pretix's cursor (the first
    page's ``X-Page-Generated``) covers a whole walk through the pages, so the walk
    is the unit: every page is read and checked first, then all of it is applied
    together with the new cursor. A page that fails applies nothing and keeps the
    cursor; the next pass walks again from the same point."""
    since = get_setting(gate.conn, ORDERS_CURSOR)
    params = {"page_size": PAGE, "pdf_data": "false"}
    if since:
        params["modified_since"] = since
    generated = None
    rows: list[TicketRow] = []
    page = 1
    while True:
        results, more, gen = client.orders_page({**params, "page": page})
        if page == 1:
            generated = gen
        rows += [r for order in results for r in _rows_from_order(order, gate.policy.event)]
        if not more:
            break
        page += 1

    def apply(conn):
        upsert_tickets(conn, rows)
        put_setting(conn, "ledger_imported_at", time.time())

    if generated:
        advance(gate, ORDERS_CURSOR, generated, apply)
    else:  # no cursor to keep (an old pretix): the next walk reads everything again
        with transaction(gate.conn):
            apply(gate.conn)
    return len(rows)


def pull_secret_lists(gate, client: PretixClient) -> int:
    """Revoked secrets (a reissued signed ticket's old code) and blocked secrets:
    the whole lists each time (no cursor); marking a secret revoked twice is harmless."""
    n = 0
    for kind, path in (("revoked", "/revokedsecrets/"), ("blocked", "/blockedsecrets/")):
        page = 1
        while True:
            results, nxt = client.get_page(client.ev + path, {"page_size": PAGE, "page": page})
            rows = []
            for r in results:
                secret = r.get("secret") if isinstance(r, dict) else None
                if not isinstance(secret, str):
                    raise ApiError(f"pretix sent a malformed {kind} secret")
                if kind == "blocked" and not r.get("blocked", True):
                    continue
                rows.append(TicketRow(ticket_id_for(secret), gate.policy.event, status="revoked", reentry=1))
            with transaction(gate.conn):
                gate.conn.executemany(_REVOKE, rows)
            n += len(rows)
            if not nxt:
                break
            page += 1
    return n


def push_scans(gate, client: PretixClient) -> int:
    """Each scan record becomes a pretix check-in, failed check-in or annulment;
    the outbox advances record by record, on success or a permanent refusal."""
    cfg = gate.pretix
    device = gate.config.device_id
    sent = 0
    while True:
        through = get_setting(gate.conn, UPLOADED_THROUGH, 0)
        batch = list(scanlog.entries(gate.conn, after=through, limit=100))
        if not batch:
            return sent
        high = get_setting(gate.conn, SENT_HIGH, 0)
        for e in batch:
            r = e.record
            voided = gate.conn.execute("SELECT 1 FROM voided WHERE seq = ?", (e.seq,)).fetchone()
            try:
                if voided and e.seq <= high and r.get("decision") == "accept":
                    pass  # a resend of a rolled-back admission: pretix would take it as new (annulled
                    #      check-ins do not count for its nonce check), so it is not sent again
                else:
                    _push_one(client, cfg, device, e.seq, r)
            except ApiError as exc:
                if exc.retryable or exc.status in (None, 401, 403):
                    raise  # keep it in the outbox and try again later
                # a permanent refusal (e.g. a ticket pretix does not know): pretixSCAN drops it too

            def sent_high(conn, seq=e.seq, high=high):
                if seq > high:
                    put_setting(conn, SENT_HIGH, seq)

            advance(gate, UPLOADED_THROUGH, e.seq, sent_high)
            high = max(high, e.seq)
            sent += 1


def _push_one(client: PretixClient, cfg: dict, device: str, seq: int, r: dict) -> None:
    kind, code = r.get("kind"), r.get("code")
    if kind in (scanlog.SCAN, scanlog.OVERRIDE) and r.get("decision") == "accept" and code:
        client.redeem({
            "secret": code, "lists": [cfg["list"]], "type": r.get("mode", "entry"), "force": True,
            "ignore_unpaid": False, "datetime": _iso(r["ts_ms"]), "nonce": f"{device}-{seq}",
            "questions_supported": False})
    elif kind == scanlog.SCAN and code:
        client.failed_checkin({
            "raw_barcode": code, "error_reason": FAILED_REASON.get(r.get("reason"), "error"),
            "error_explanation": r.get("reason"), "datetime": _iso(r["ts_ms"]), "type": r.get("mode", "entry"),
            "nonce": f"{device}-{seq}"})
    elif kind == scanlog.ROLLBACK:
        client.annul({
            "lists": [cfg["list"]], "nonce": f"{device}-{r['ref']}", "datetime": _iso(r["ts_ms"]),
            "error_explanation": f"no passage through the turnstile ({r.get('why', 'rolled back')})"})


class PretixStrategy:
    """pretix as a strategy of the sync engine: the event's keys, orders (by
    ``modified_since``), the revoked and blocked secrets, then the upload."""

    name = "pretix"

    def __init__(self, client: PretixClient):
        self.client = client

    def begin(self, gate, *, now: float, report: Mapping[str, str]) -> None:
        """pretix has no place for a gate's self-report: nothing to send."""

    def steps(self, gate, rep: SyncReport, *, now: float) -> list[Step]:
        c = self.client
        return [Step("keys", lambda: pull_keys(gate, c), counter="keys"),
                Step("tickets", lambda: pull_orders(gate, c), counter="tickets", cursor=ORDERS_CURSOR),
                Step("secrets", lambda: pull_secret_lists(gate, c), counter="tickets"),
                Step("upload", lambda: push_scans(gate, c), counter="uploaded", cursor=UPLOADED_THROUGH)]

    def upload(self, gate) -> int:
        return push_scans(gate, self.client)


def sync_once(gate, client: PretixClient, *, now: float | None = None) -> SyncReport:
    """One pass against pretix through the sync engine's step runner."""
    return run_pass(gate, PretixStrategy(client), now=now)


def report(url: str, team_token: str) -> dict:
    """Reconciliation against pretix (needs an organizer team token: devices may
    not read check-ins): successful entries per position across devices, and the
    positions entered more often than once without an exit in between."""
    import requests

    cfg = parse_url(url)
    path = (f"{cfg['base']}/api/v1/organizers/{cfg['organizer']}/events/{cfg['event']}/checkins/")
    params: dict | None = {"page_size": PAGE, "list": cfg["list"]}
    rows: list[dict] = []
    while path:
        r = requests.get(path, params=params, headers={"Authorization": f"Token {team_token}"}, timeout=30)
        if r.status_code >= 400:
            raise SyncError(_("pretix answered {status} reading check-ins: is that a team token?").format(
                status=r.status_code))
        doc = r.json()
        rows += doc.get("results") or []
        path, params = doc.get("next"), None
    by_pos: dict = {}
    for c in sorted(rows, key=lambda c: c.get("datetime") or ""):
        if c.get("position") is not None and c.get("successful"):
            by_pos.setdefault(c["position"], []).append(c)
    doubles = []
    for pos, cis in by_pos.items():
        inside, extra = False, []
        for c in cis:
            if c.get("type") == "exit":
                inside = False
            elif inside:
                extra.append(c)
            else:
                inside = True
        if extra:
            doubles.append({"position": pos, "entries": [
                {"datetime": c.get("datetime"), "device": c.get("device_id"), "nonce": c.get("nonce")}
                for c in cis if c.get("type") != "exit"]})
    failed = Counter(c.get("error_reason") for c in rows if not c.get("successful"))
    return {"event": cfg["event"], "list": cfg["list"], "checkins": len(rows),
            "successful": sum(1 for c in rows if c.get("successful")), "failed_by_reason": dict(failed),
            "double_entries": doubles}

