"""The gate's side of the sync protocol (docs/sync.md): an HTTP client with
timeouts, and the reference central as a sync strategy (:class:`CentralStrategy`:
clock, key ring, ticket pages, upload, other gates' admissions, the device list)
for the one sync engine (:mod:`sync.engine`).

Nothing a server says is trusted blindly: every response is shape-checked and
every ticket validated exactly like a file import; a page that fails is not
applied and its cursor is not advanced. Scans leave the outbox only when the
server acknowledged them (``stored_through``); the local log itself is kept.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import requests

from crypto.keyring import b64url_encode
from crypto.sealed import write_secret
from gate import ledger, scanlog
from gate.db import get_setting, put_setting, transaction
from gate.errors import LedgerError, SyncError
from gate.i18n import _
from sync.engine import ApiError, RetryPolicy, Step, SyncReport, advance, retry_after_s, run_pass

__all__ = ["ApiError", "RetryPolicy", "SyncReport", "Answer", "HttpClient", "CentralClient", "CentralStrategy",
           "enroll", "client_for", "sync_once", "push_scans", "pull_keys", "pull_tickets", "pull_admissions",
           "pull_devices", "outbox_length", "status", "token_path", "ca_path", "plain_http_warning"]

TIMEOUT = (3.05, 15)  # connect, read
TICKET_PAGE = 5000
UPLOAD_BATCH = 2000
# where each step keeps its position (settings keys)
TICKETS_CURSOR = "sync.tickets_cursor"
ADMISSIONS_CURSOR = "sync.admissions_cursor"
UPLOADED_THROUGH = "sync.uploaded_through"  # the outbox is everything after it


@dataclass(frozen=True)
class Answer:
    """A successful answer: its status, its JSON object and its headers."""

    status: int
    doc: dict
    headers: Mapping[str, str]


class HttpClient:
    """JSON over HTTP with timeouts, the gate's TLS trust, one way of turning a
    failure into an :class:`ApiError` (status, Retry-After, retryable by the
    policy) for every central the gate syncs with."""

    auth_scheme = "Bearer"

    def __init__(self, base_url: str, token: str | None = None, *, timeout=TIMEOUT,
                 session: requests.Session | None = None, verify: bool | str = True,
                 policy: RetryPolicy = RetryPolicy()):
        self.base = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = session or requests.Session()
        self.verify = verify  # True: the system CA store; a path: the CA pinned at enrolment
        self.policy = policy
        self.status_headers: dict[str, str] = {}  # X-Gate-* self-report for the ops room (CentralStrategy)

    def request(self, method: str, path: str, *, body=None, params=None) -> Answer:
        """One request; an :class:`Answer` for 2xx/3xx with a JSON object, else :class:`ApiError`."""
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
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            doc = None
        if resp.status_code == 401:
            raise ApiError("central refused this device's token (unknown or revoked): re-enrol with "
                           "'gate sync --central URL --enroll CODE'", status=401, retryable=False)
        if resp.status_code >= 400:
            msg = doc.get("error") if isinstance(doc, dict) else None
            raise ApiError(f"central answered {resp.status_code} on {path}: {msg or 'no details'}",
                           status=resp.status_code, retryable=self.policy.is_retry(resp.status_code),
                           body=doc if isinstance(doc, dict) else None, retry_after=retry_after_s(resp.headers))
        if not isinstance(doc, dict):
            raise ApiError(f"central sent a malformed answer on {path} (not a JSON object)")
        return Answer(resp.status_code, doc, resp.headers)

    def call(self, method: str, path: str, *, body=None, params=None) -> dict:
        """:meth:`request`, answering the JSON object only."""
        return self.request(method, path, body=body, params=params).doc


class CentralClient(HttpClient):
    """The reference central's endpoints (docs/sync.md)."""

    def register(self, code: str, device_id: str, public_key: bytes, event: str | None = None) -> dict:
        body = {"enrolment_code": code, "device_id": device_id, "public_key": b64url_encode(public_key)}
        if event is not None:
            body["event"] = event  # central refuses a code made for another event
        return self.call("POST", "/v1/devices", body=body)

    def time(self) -> float:
        t = self.call("GET", "/v1/time").get("time")
        if not isinstance(t, (int, float)):
            raise ApiError("central sent a malformed time")
        return float(t)

    def keyring(self, event: str) -> dict:
        return self.call("GET", f"/v1/events/{event}/keyring")

    def page(self, path: str, cursor: str, limit: int) -> tuple[list, str, bool]:
        doc = self.call("GET", path, params={"cursor": cursor, "limit": limit})
        items, nxt, more = doc.get("items"), doc.get("cursor"), doc.get("more")
        if not isinstance(items, list) or not isinstance(nxt, str) or not isinstance(more, bool):
            raise ApiError(f"central sent a malformed page on {path}")
        return items, nxt, more

    def ticket_page(self, path: str, cursor: str, limit: int) -> tuple[list, tuple | None, str, bool]:
        """A ticket page in the rows layout (docs/sync.md): (rows, columns, cursor, more).
        A central that answers with items instead (one from before the rows layout)
        gives (items, None, cursor, more)."""
        doc = self.call("GET", path, params={"cursor": cursor, "limit": limit, "layout": "rows"})
        nxt, more = doc.get("cursor"), doc.get("more")
        rows, columns = doc.get("rows"), doc.get("columns")
        if rows is None and columns is None:
            rows = doc.get("items")
        elif not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ApiError(f"central sent a malformed page on {path} (rows without a list of columns)")
        else:
            columns = tuple(columns)
        if not isinstance(rows, list) or not isinstance(nxt, str) or not isinstance(more, bool):
            raise ApiError(f"central sent a malformed page on {path}")
        return rows, columns, nxt, more

    def devices(self, event: str) -> dict:
        return self.call("GET", f"/v1/events/{event}/devices")

    def upload(self, event: str, batch: dict) -> dict:
        return self.call("POST", f"/v1/events/{event}/scans", body=batch)

    def bus_credential(self, event: str, public_key: str) -> dict:
        """A venue-bus certificate for this TLS key (sync.bus_credential)."""
        return self.call("POST", f"/v1/events/{event}/bus-credential", body={"public_key": public_key})


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
        return _("warning: {url} is plain HTTP: the device token and scans cross the network "
                 "unencrypted; serve central over https (gate central serve --tls-cert/--tls-key)").format(url=url)
    return None


def _read_ca(path: str) -> bytes:
    from cryptography import x509

    try:
        pem = Path(path).read_bytes()
        x509.load_pem_x509_certificates(pem)
    except OSError as exc:
        raise SyncError(_("cannot read --ca {file}: {problem}").format(file=path, problem=exc.strerror)) from None
    except ValueError:
        raise SyncError(_("--ca {file} is not a PEM certificate (give the central's CA or certificate)").format(
            file=path)) from None
    return pem


def enroll(gate, central_url: str, code: str, ca: str | None = None) -> str:
    """First contact: register the device key with a one-time code; store the token 0600.
    ``ca`` (a PEM file) is the certificate authority to trust for this central from
    now on: it is copied to keys/central-ca.pem (0600) and used for every later call."""
    from crypto import gt1

    pem = _read_ca(ca) if ca else None
    device_key = gate.device_key
    client = CentralClient(central_url, verify=ca or _verify(gate))
    doc = client.register(code, gate.config.device_id, gt1.raw_public(device_key), gate.policy.event)
    token, event = doc.get("token"), doc.get("event")
    if not isinstance(token, str) or not token:
        raise SyncError(_("central did not return a device token"))
    if event != gate.policy.event:
        raise SyncError(_("that enrolment code is for event {code_event}; this gate admits to {event}").format(
            code_event=repr(event), event=repr(gate.policy.event)))
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
        raise SyncError(_("this gate is not enrolled: run 'gate --data DIR sync --central URL --enroll CODE'"))
    return CentralClient(url, path.read_text().strip(), verify=_verify(gate))


def outbox_length(gate) -> int:
    head, _ = scanlog.head(gate.conn)
    return head - get_setting(gate.conn, UPLOADED_THROUGH, 0)


def pull_keys(gate, client: CentralClient) -> int:
    doc = client.keyring(gate.policy.event)
    try:
        return len(gate.trust(doc))
    except (ValueError, LedgerError) as exc:  # an invalid ring, or one for another event
        raise ApiError(f"central sent an invalid key ring: {exc}") from None


def pull_tickets(gate, client: CentralClient, *, page: int = TICKET_PAGE, progress=None) -> int:
    """Ticket pages after the stored cursor; each page is validated whole, then
    applied together with its cursor (an invalid ticket: that page applies nothing).

    The next page is fetched while this one is validated and written (its cursor is
    the one this page's answer gave): central's and the gate's work overlap. The
    stored cursor still moves only with the page it belongs to."""
    path = f"/v1/events/{gate.policy.event}/tickets"
    cursor = get_setting(gate.conn, TICKETS_CURSOR, "")
    cache = gate.conn.execute("PRAGMA cache_size").fetchone()[0]
    gate.conn.execute("PRAGMA cache_size=-65536")  # 64 MiB while pages land: a million-ticket ledger's tree
    try:
        return _pull_ticket_pages(gate, client, path, cursor, page, progress)
    finally:
        gate.conn.execute(f"PRAGMA cache_size={int(cache)}")


TICKET_GROUP = 100_000  # tickets written per transaction in a first sync (pages grouped)


def _pull_ticket_pages(gate, client, path: str, cursor: str, page: int, progress) -> int:
    """Pages are validated one by one as they come; valid pages are written in groups
    of up to :data:`TICKET_GROUP` tickets, each group in one transaction with the
    cursor of its last page (a group is some whole pages: all applied or none). With
    random ticket ids every transaction rewrites most leaves of the ledger's tree,
    so fewer, larger transactions write the WAL far less. A bad page, or a page
    that does not come, first writes the good pages before it, as page by page did."""
    from concurrent.futures import ThreadPoolExecutor

    total = 0
    group: list = []
    group_cursor = cursor

    pending = False  # pages received and validated, not written yet

    def flush() -> None:
        nonlocal total, group, pending
        if not pending:
            return
        rows = sorted(group, key=_ticket_key)  # stable: a ticket seen twice keeps its feed order

        def apply(conn, rows=rows):
            if not ledger.biometrics_allowed(conn):  # wiped while these pages were on their way
                rows = ledger.strip_templates(rows)
            ledger.upsert_tickets(conn, rows)
            put_setting(conn, "ledger_imported_at", time.time())

        advance(gate, TICKETS_CURSOR, group_cursor, apply)
        pending = False
        total += len(rows)
        group = []
        if progress:
            progress(total)

    with ThreadPoolExecutor(1, thread_name_prefix="ticket-pages") as fetcher:
        ahead = fetcher.submit(client.ticket_page, path, cursor, page)
        event, data_key = gate.policy.event, gate.data_key
        while True:
            try:
                items, columns, nxt, more = ahead.result()
            except BaseException:
                flush()
                raise
            if columns is None:
                check = ledger.ticket_row
            elif columns == ledger.TICKET_COLUMNS:
                check = ledger.ticket_row_from_array
            else:  # before asking for the next page: nothing is left waiting for an answer
                flush()
                shown = ", ".join(columns[:12])[:300] + (", …" if len(columns) > 12 else "")
                raise ApiError(f"central sent ticket rows with columns [{shown}]; this gate reads "
                               f"[{', '.join(ledger.TICKET_COLUMNS)}] (docs/sync.md); page not applied")
            ahead = fetcher.submit(client.ticket_page, path, nxt, page) if more and items else None
            keep = ledger.biometrics_allowed(gate.conn)
            rows = []
            for i, item in enumerate(items):
                try:
                    rows.append(check(item, event, data_key, keep_template=keep))
                except ValueError as exc:
                    if ahead is not None:
                        ahead.cancel()
                    flush()
                    raise ApiError(f"central sent an invalid ticket (item {i} of page after cursor "
                                   f"{cursor!r}): {exc}; page not applied") from None
            group.extend(rows)
            group_cursor = cursor = nxt
            pending = True
            if ahead is None or len(group) >= TICKET_GROUP:
                flush()
            if ahead is None:
                return total


def _ticket_key(row) -> str:
    return row[0]


def push_scans(gate, client: CentralClient, *, batch_size: int = UPLOAD_BATCH) -> int:
    """The outbox in signed batches; it shrinks only by what central acknowledged."""
    device_key = gate.device_key
    sent = 0
    while True:
        through = get_setting(gate.conn, UPLOADED_THROUGH, 0)
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
                advance(gate, UPLOADED_THROUGH, stored)  # central lost some of ours: send them again
                continue
            raise
        if not isinstance(ack, int) or not rows[0][0] - 1 <= ack <= last_seq:
            raise ApiError(f"central acknowledged an impossible seq {ack!r} for {rows[0][0]}-{last_seq}")
        advance(gate, UPLOADED_THROUGH, ack)
        sent += ack - through
        if ack < last_seq:
            return sent


def pull_admissions(gate, client: CentralClient) -> int:
    """Other gates' admissions and rollbacks, page by page, each page with its cursor."""
    total = 0
    path = f"/v1/events/{gate.policy.event}/admissions"
    me = gate.config.device_id
    while True:
        cursor = get_setting(gate.conn, ADMISSIONS_CURSOR, "")
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

        def apply(conn, admits=admits, voids=voids):
            # the same admission may already have come over the venue bus: (device, seq) dedups
            # and its rollback may have come over the bus first (bus_voids): store it voided
            conn.executemany("INSERT OR IGNORE INTO remote_admissions (device_id, seq, ticket_id, mode,"
                             " consumes, ts_ms, lane, via, voided) VALUES (?1,?2,?3,?4,?5,?6,?7,'central',"
                             " EXISTS (SELECT 1 FROM bus_voids WHERE device_id = ?1 AND ref = ?2))", admits)
            conn.executemany("UPDATE remote_admissions SET voided = 1 WHERE device_id = ? AND seq = ?", voids)

        advance(gate, ADMISSIONS_CURSOR, nxt, apply)
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


class CentralStrategy:
    """The reference central (docs/sync.md) as a strategy of the sync engine:
    clock, key ring, ticket pages, upload, other gates' admissions, the device list."""

    name = "central"

    def __init__(self, client: CentralClient):
        self.client = client

    def begin(self, gate, *, now: float, report: Mapping[str, str]) -> None:
        """What the ops room shows about this gate: outbox depth, ledger age, and what
        the running lane reports (its link state, a fault); sent as X-Gate-* headers
        with every request of the pass."""
        h = {**report, "X-Gate-Outbox": str(outbox_length(gate))}
        imported = get_setting(gate.conn, "ledger_imported_at")
        if isinstance(imported, (int, float)):
            h["X-Gate-Ledger-Age-S"] = str(max(0, int(now - imported)))
        self.client.status_headers.update(h)

    def steps(self, gate, rep: SyncReport, *, now: float) -> list[Step]:
        from sync import bus_credential
        c = self.client

        def clock() -> None:
            rep.clock_offset_s = round(c.time() - now, 3)
            c.status_headers["X-Gate-Clock-Offset-Ms"] = str(int(rep.clock_offset_s * 1000))

        def upload() -> int:
            n = push_scans(gate, c)
            c.status_headers["X-Gate-Outbox"] = str(outbox_length(gate))
            return n

        return [Step("time", clock),
                Step("keys", lambda: pull_keys(gate, c), counter="keys"),
                Step("tickets", lambda: pull_tickets(gate, c), counter="tickets", cursor=TICKETS_CURSOR),
                Step("upload", upload, counter="uploaded", cursor=UPLOADED_THROUGH),
                Step("admissions", lambda: pull_admissions(gate, c), counter="admissions",
                     cursor=ADMISSIONS_CURSOR),
                Step("devices", lambda: pull_devices(gate, c), counter="devices"),
                Step("bus", lambda: bus_credential.pull(gate, c, now=now))]

    def upload(self, gate) -> int:
        return push_scans(gate, self.client)


def sync_once(gate, client: CentralClient, *, now: float | None = None) -> SyncReport:
    """One pass against the reference central through the sync engine's step runner
    (:func:`sync.engine.run_pass`)."""
    return run_pass(gate, CentralStrategy(client), now=now)


def status(gate) -> dict:
    return {
        "central": get_setting(gate.conn, "sync.central"),
        "enrolled": token_path(gate).exists(),
        "last_ok": get_setting(gate.conn, "sync.last_ok"),
        "last_attempt": get_setting(gate.conn, "sync.last_attempt"),
        "outbox": outbox_length(gate),
        "ledger_updated": get_setting(gate.conn, "ledger_imported_at"),
    }
