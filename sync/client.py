"""The gate's side of the sync protocol (docs/sync.md): an HTTP client with
timeouts, a retry policy value object, and one sync pass that pulls keys,
ticket deltas and other gates' admissions, and pushes the scan log outbox.

Nothing a server says is trusted blindly: every response is shape-checked and
every ticket validated exactly like a file import; a page that fails is not
applied and its cursor is not advanced. Scans leave the outbox only when the
server acknowledged them (``stored_through``); the local log itself is kept.
"""

from __future__ import annotations

import base64
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from crypto.keyring import b64url_encode
from crypto.sealed import load_or_create_ed25519, write_secret
from gate import ledger, scanlog
from gate.db import get_setting, put_setting, transaction
from gate.errors import LedgerError, SyncError

TIMEOUT = (3.05, 15)  # connect, read
TICKET_PAGE = 5000
UPLOAD_BATCH = 2000


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again and how long to wait (exponential backoff with jitter);
    computes, never sleeps. Modelled on urllib3's ``Retry.is_retry``: a failure is
    retried when nothing answered (network down, timeout) or when the status is
    in ``status_forcelist``; an answer in ``stop_statuses`` (the token is refused)
    means retrying cannot help until someone acts."""

    base_s: float = 1.0
    cap_s: float = 60.0
    jitter: float = 0.2
    status_forcelist: frozenset = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
    stop_statuses: frozenset = frozenset({401, 403})

    def is_retry(self, status: int | None) -> bool:
        """Retry after a failure with this HTTP status (None: central did not answer)."""
        if status is None:
            return True
        return status in self.status_forcelist or status >= 500

    def is_stop(self, status: int | None) -> bool:
        """This answer means: stop retrying until an operator acts (enrol again)."""
        return status is not None and status in self.stop_statuses

    def delay(self, failures: int, rng: random.Random | None = None, *, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` failures in a row; a server's
        ``Retry-After`` is honoured (never retry sooner than it asks, up to the cap)."""
        if failures <= 0:
            return 0.0
        d = min(self.cap_s, self.base_s * 2 ** (failures - 1))
        r = (rng or random).uniform(-self.jitter, self.jitter)
        d = max(0.0, d * (1 + r))
        if retry_after is not None and retry_after > 0:
            d = max(d, min(self.cap_s, float(retry_after)))
        return d

    @staticmethod
    def retryable_status(status: int) -> bool:
        """:meth:`is_retry` of the default policy (for errors raised before a policy is known)."""
        return _DEFAULT_POLICY.is_retry(status)


_DEFAULT_POLICY = RetryPolicy()


class ApiError(SyncError):
    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True,
                 body: dict | None = None, answered: bool = True, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retryable, self.body = status, retryable, body or {}
        self.answered = answered  # False: no answer at all (unreachable, timeout)
        self.retry_after = retry_after  # seconds central asked us to wait (Retry-After)


def _retry_after(resp) -> float | None:
    """``Retry-After`` in seconds (the delta form; an HTTP date is rare from central)."""
    try:
        v = float(resp.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return v if 0 <= v < 86400 else None


class CentralClient:
    auth_scheme = "Bearer"

    def __init__(self, base_url: str, token: str | None = None, *, timeout=TIMEOUT,
                 session: requests.Session | None = None, verify: bool | str = True):
        self.base = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = session or requests.Session()
        self.verify = verify  # True: the system CA store; a path: the CA pinned at enrolment
        self.status_headers: dict[str, str] = {}  # X-Gate-* self-report for the ops room (sync_once)

    def _call(self, method: str, path: str, *, body=None, params=None) -> dict:
        headers = {"Accept": "application/json", **self.status_headers}
        if self.token:
            headers["Authorization"] = f"{self.auth_scheme} {self.token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            resp = self.session.request(method, self.base + path, params=params, headers=headers,
                                        data=None if body is None else json.dumps(body),
                                        timeout=self.timeout, verify=self.verify)
            data = resp.content
        except requests.exceptions.SSLError as exc:
            why = "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else "TLS handshake failed"
            pinned = "the CA pinned at enrolment" if isinstance(self.verify, str) else "the system CA store"
            raise ApiError(f"central at {self.base} is not trusted ({why} against {pinned}): enrol with "
                           "'--ca FILE' (the central's CA or certificate) or install its CA in the system "
                           "store", retryable=False) from None
        except requests.Timeout:
            raise ApiError(f"central did not answer within {self.timeout[1]} s ({path})",
                           answered=False) from None
        except requests.RequestException as exc:
            raise ApiError(f"cannot reach central at {self.base}: {type(exc).__name__}",
                           answered=False) from None
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = None
        if resp.status_code == 401:
            raise ApiError("central refused this device's token (unknown or revoked): re-enrol with "
                           "'gate sync --central URL --enroll CODE'", status=401, retryable=False)
        if resp.status_code >= 400:
            msg = doc.get("error") if isinstance(doc, dict) else None
            raise ApiError(f"central answered {resp.status_code} on {path}: {msg or 'no details'}",
                           status=resp.status_code, retryable=RetryPolicy.retryable_status(resp.status_code),
                           body=doc if isinstance(doc, dict) else None, retry_after=_retry_after(resp))
        if not isinstance(doc, dict):
            raise ApiError(f"central sent a malformed answer on {path} (not a JSON object)")
        return doc

    def register(self, code: str, device_id: str, public_key: bytes, event: str | None = None) -> dict:
        body = {"enrolment_code": code, "device_id": device_id, "public_key": b64url_encode(public_key)}
        if event is not None:
            body["event"] = event  # central refuses a code made for another event
        return self._call("POST", "/v1/devices", body=body)

    def time(self) -> float:
        t = self._call("GET", "/v1/time").get("time")
        if not isinstance(t, (int, float)):
            raise ApiError("central sent a malformed time")
        return float(t)

    def keyring(self, event: str) -> dict:
        return self._call("GET", f"/v1/events/{event}/keyring")

    def page(self, path: str, cursor: str, limit: int) -> tuple[list, str, bool]:
        doc = self._call("GET", path, params={"cursor": cursor, "limit": limit})
        items, nxt, more = doc.get("items"), doc.get("cursor"), doc.get("more")
        if not isinstance(items, list) or not isinstance(nxt, str) or not isinstance(more, bool):
            raise ApiError(f"central sent a malformed page on {path}")
        return items, nxt, more

    def devices(self, event: str) -> dict:
        return self._call("GET", f"/v1/events/{event}/devices")

    def upload(self, event: str, batch: dict) -> dict:
        return self._call("POST", f"/v1/events/{event}/scans", body=batch)

    def bus_credential(self, event: str, public_key: str) -> dict:
        """A venue-bus certificate for this TLS key (sync.bus_credential)."""
        return self._call("POST", f"/v1/events/{event}/bus-credential", body={"public_key": public_key})


# ------------------------------------------------------------------ device side


def token_path(gate) -> Path:
    return gate.data_dir / "keys" / "token"


def ca_path(gate) -> Path:
    return gate.data_dir / "keys" / "central-ca.pem"


def plain_http_warning(url: str) -> str | None:
    """A warning when gate <-> central traffic would cross a network unencrypted."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return (f"warning: {url} is plain HTTP: the device token and scans cross the network "
                "unencrypted; serve central over https (gate central serve --tls-cert/--tls-key)")
    return None


def _read_ca(path: str) -> bytes:
    from cryptography import x509

    try:
        pem = Path(path).read_bytes()
        x509.load_pem_x509_certificates(pem)
    except OSError as exc:
        raise SyncError(f"cannot read --ca {path}: {exc.strerror}") from None
    except ValueError:
        raise SyncError(f"--ca {path} is not a PEM certificate (give the central's CA or certificate)") from None
    return pem


def enroll(gate, central_url: str, code: str, ca: str | None = None) -> str:
    """First contact: register the device key with a one-time code; store the token 0600.
    ``ca`` (a PEM file) is the certificate authority to trust for this central from
    now on: it is copied to keys/central-ca.pem (0600) and used for every later call."""
    from crypto import gt1

    pem = _read_ca(ca) if ca else None
    device_key = load_or_create_ed25519(gate.data_dir / "keys" / "device.key")
    client = CentralClient(central_url, verify=ca or _verify(gate))
    doc = client.register(code, gate.config.device_id, gt1.raw_public(device_key), gate.policy.event)
    token, event = doc.get("token"), doc.get("event")
    if not isinstance(token, str) or not token:
        raise SyncError("central did not return a device token")
    if event != gate.policy.event:
        raise SyncError(f"that enrolment code is for event {event!r}; this gate admits to {gate.policy.event!r}")
    write_secret(token_path(gate), token.encode())
    if pem is not None:
        write_secret(ca_path(gate), pem)
    with transaction(gate.conn):
        put_setting(gate.conn, "sync.central", central_url)
    return token


def _verify(gate) -> bool | str:
    path = ca_path(gate)
    return str(path) if path.exists() else True


def client_for(gate, central_url: str | None = None) -> CentralClient:
    url = central_url or get_setting(gate.conn, "sync.central")
    path = token_path(gate)
    if not url or not path.exists():
        raise SyncError("this gate is not enrolled: run 'gate --data DIR sync --central URL --enroll CODE'")
    return CentralClient(url, path.read_text().strip(), verify=_verify(gate))


@dataclass
class SyncReport:
    keys: int = 0
    tickets: int = 0
    uploaded: int = 0
    admissions: int = 0
    clock_offset_s: float | None = None
    errors: list[str] = field(default_factory=list)
    failures: list[ApiError] = field(default_factory=list)  # the errors, with their status

    @property
    def retry_after(self) -> float | None:
        """The longest Retry-After central sent in this pass (None: it sent none)."""
        waits = [f.retry_after for f in self.failures if getattr(f, "retry_after", None) is not None]
        return max(waits) if waits else None

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict:
        return {"ok": self.ok, "keys": self.keys, "tickets": self.tickets, "uploaded": self.uploaded,
                "admissions": self.admissions, "clock_offset_s": self.clock_offset_s, "errors": self.errors}


def outbox_length(gate) -> int:
    head, _ = scanlog.head(gate.conn)
    return head - get_setting(gate.conn, "sync.uploaded_through", 0)


def pull_keys(gate, client: CentralClient) -> int:
    doc = client.keyring(gate.policy.event)
    try:
        return len(gate.trust(doc))
    except (ValueError, LedgerError) as exc:  # an invalid ring, or one for another event
        raise ApiError(f"central sent an invalid key ring: {exc}") from None


def pull_tickets(gate, client: CentralClient, *, page: int = TICKET_PAGE, progress=None) -> int:
    total = 0
    path = f"/v1/events/{gate.policy.event}/tickets"
    while True:
        cursor = get_setting(gate.conn, "sync.tickets_cursor", "")
        items, nxt, more = client.page(path, cursor, page)
        rows = []
        keep = ledger.biometrics_allowed(gate.conn)
        for i, item in enumerate(items):
            try:
                rows.append(ledger.ticket_row(item, gate.policy.event, gate.data_key, keep_template=keep))
            except ValueError as exc:
                raise ApiError(f"central sent an invalid ticket (item {i} of page after cursor "
                               f"{cursor!r}): {exc}; page not applied") from None
        with transaction(gate.conn):
            if not ledger.biometrics_allowed(gate.conn):  # wiped while this page was on its way
                rows = ledger.strip_templates(rows)
            ledger.upsert_tickets(gate.conn, rows)
            put_setting(gate.conn, "sync.tickets_cursor", nxt)
            put_setting(gate.conn, "ledger_imported_at", time.time())
        total += len(rows)
        if progress:
            progress(total)
        if not more or not items:
            return total


def push_scans(gate, client: CentralClient, *, batch_size: int = UPLOAD_BATCH) -> int:
    device_key = load_or_create_ed25519(gate.data_dir / "keys" / "device.key")
    sent = 0
    while True:
        through = get_setting(gate.conn, "sync.uploaded_through", 0)
        rows = gate.conn.execute("SELECT seq, record, hash FROM scans WHERE seq > ? ORDER BY seq LIMIT ?",
                                 (through, batch_size)).fetchall()
        if not rows:
            return sent
        last_seq, last_hash = rows[-1][0], rows[-1][2]
        batch = {
            "device_id": gate.config.device_id, "from_seq": rows[0][0],
            "records": [base64.b64encode(r[1]).decode() for r in rows],
            "head_hash": last_hash.hex(),
            "head_sig": base64.b64encode(device_key.sign(
                scanlog.head_message(gate.config.device_id, last_seq, last_hash))).decode(),
        }
        try:
            ack = client.upload(gate.policy.event, batch).get("stored_through")
        except ApiError as exc:
            stored = exc.body.get("stored_through")
            if exc.status == 409 and isinstance(stored, int) and 0 <= stored < through:
                with transaction(gate.conn):  # central lost some of ours: send them again
                    put_setting(gate.conn, "sync.uploaded_through", stored)
                continue
            raise
        if not isinstance(ack, int) or not rows[0][0] - 1 <= ack <= last_seq:
            raise ApiError(f"central acknowledged an impossible seq {ack!r} for {rows[0][0]}-{last_seq}")
        with transaction(gate.conn):
            put_setting(gate.conn, "sync.uploaded_through", ack)
        sent += ack - through
        if ack < last_seq:
            return sent


def pull_admissions(gate, client: CentralClient) -> int:
    total = 0
    path = f"/v1/events/{gate.policy.event}/admissions"
    me = gate.config.device_id
    while True:
        cursor = get_setting(gate.conn, "sync.admissions_cursor", "")
        items, nxt, more = client.page(path, cursor, 5000)
        admits, voids = [], []
        for it in items:
            if not isinstance(it, dict) or not isinstance(it.get("device_id"), str) \
                    or not isinstance(it.get("seq"), int):
                raise ApiError("central sent a malformed admission; page not applied")
            if it["device_id"] == me:
                continue
            if it.get("kind") == "rollback":
                if isinstance(it.get("ref"), int):
                    voids.append((it["device_id"], it["ref"]))
            elif isinstance(it.get("ticket_id"), str) and it.get("mode") in ("entry", "exit"):
                admits.append((it["device_id"], it["seq"], it["ticket_id"], it["mode"],
                               int(bool(it.get("consumes"))), it.get("ts_ms"),
                               it["lane"] if isinstance(it.get("lane"), str) else None))
        with transaction(gate.conn):
            # the same admission may already have come over the venue bus: (device, seq) dedups
            # and its rollback may have come over the bus first (bus_voids): store it voided
            gate.conn.executemany("INSERT OR IGNORE INTO remote_admissions (device_id, seq, ticket_id, mode,"
                                  " consumes, ts_ms, lane, via, voided) VALUES (?1,?2,?3,?4,?5,?6,?7,'central',"
                                  " EXISTS (SELECT 1 FROM bus_voids WHERE device_id = ?1 AND ref = ?2))", admits)
            gate.conn.executemany("UPDATE remote_admissions SET voided = 1 WHERE device_id = ? AND seq = ?", voids)
            put_setting(gate.conn, "sync.admissions_cursor", nxt)
        total += len(admits)
        if not more or not items:
            return total


def pull_devices(gate, client: CentralClient) -> int:
    """The event's devices and their keys: who the venue bus trusts."""
    from gate import bus
    try:
        devices = bus.parse_trust(client.devices(gate.policy.event), gate.policy.event)
    except ValueError as exc:
        raise ApiError(f"central sent an invalid device list: {exc}") from None
    return bus.store_trust(gate.conn, devices, "central")


def _report_status(gate, client: CentralClient, now: float) -> None:
    """What the ops room shows about this gate: outbox depth, ledger age, link state (when known)."""
    h = {"X-Gate-Outbox": str(outbox_length(gate))}
    imported = get_setting(gate.conn, "ledger_imported_at")
    if isinstance(imported, (int, float)):
        h["X-Gate-Ledger-Age-S"] = str(max(0, int(now - imported)))
    link = get_setting(gate.conn, "link.state")
    if isinstance(link, str) and link:
        h["X-Gate-Link"] = link
    client.status_headers.update(h)


def sync_once(gate, client: CentralClient, *, now: float | None = None) -> SyncReport:
    """One pass. Each step is tried even when an earlier one failed, so an
    upload still happens when a ticket page is bad, and vice versa."""
    from sync import bus_credential
    rep = SyncReport()
    _report_status(gate, client, now or time.time())

    def clock():
        rep.clock_offset_s = round(client.time() - (now or time.time()), 3)
        client.status_headers["X-Gate-Clock-Offset-Ms"] = str(int(rep.clock_offset_s * 1000))

    steps = [("time", clock),
             ("keys", lambda: setattr(rep, "keys", pull_keys(gate, client))),
             ("tickets", lambda: setattr(rep, "tickets", pull_tickets(gate, client))),
             ("upload", lambda: (setattr(rep, "uploaded", push_scans(gate, client)),
                                 client.status_headers.update({"X-Gate-Outbox": str(outbox_length(gate))}))),
             ("admissions", lambda: setattr(rep, "admissions", pull_admissions(gate, client))),
             ("devices", lambda: pull_devices(gate, client)),
             ("bus", lambda: bus_credential.pull(gate, client, now=now or time.time()))]
    for name, fn in steps:
        try:
            fn()
        except ApiError as exc:
            rep.errors.append(f"{name}: {exc}")
            rep.failures.append(exc)
            if not exc.answered and name == "time":  # unreachable: do not try the rest now
                break
    gate.enforce_retention(time.time())
    with transaction(gate.conn):
        put_setting(gate.conn, "sync.last_attempt", time.time())
        if rep.ok:
            put_setting(gate.conn, "sync.last_ok", time.time())
    return rep


def status(gate) -> dict:
    return {
        "central": get_setting(gate.conn, "sync.central"),
        "enrolled": token_path(gate).exists(),
        "last_ok": get_setting(gate.conn, "sync.last_ok"),
        "last_attempt": get_setting(gate.conn, "sync.last_attempt"),
        "outbox": outbox_length(gate),
        "ledger_updated": get_setting(gate.conn, "ledger_imported_at"),
    }
