"""docs/sync.md as an outside integrator reads it: a plain HTTP client (requests,
cbor2, hashlib; none of the gate's sync code) against the reference central on
127.0.0.1. Each assertion is a sentence of the spec; a server that drifts from
the document fails here."""

from __future__ import annotations

import base64
import hashlib
import re
import time

import cbor2
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sync.central import models
from sync.central.app import ServerThread, create_app
from sync.central.store import CentralStore
from conftest import ROOT

EVENT = "evt-proto"
DEVICE = "gate-proto"


@pytest.fixture
def central(tmp_path, central_db):  # on SQLite and PostgreSQL
    store = CentralStore(tmp_path / "central", central_db)
    store.create_event(EVENT)
    store.create_event("evt-other")
    server = ServerThread(create_app(store)).start()
    yield store, server.url
    server.stop()
    store.close()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _record(seq: int, tid: str, *, kind: str = "scan", ref: int | None = None) -> bytes:
    rec = {"kind": kind, "seq": seq, "ts_ms": 1767225600000 + seq, "device": DEVICE, "lane": "l1",
           "event": EVENT}
    if kind == "rollback":
        rec.update(ref=ref, why="no passage")
    else:
        rec.update(mode="entry", decision="accept", reason="ACCEPT", ticket_id=tid, step=None, version=1,
                   unlisted=False, consumes=True, face_e4=None, qr_sha=None)
    return cbor2.dumps(rec, canonical=True)


def _chain(records: list[bytes]) -> list[bytes]:
    h, out = bytes(32), []
    for r in records:  # hash_n = SHA-256(hash_{n-1} || record_n), hash_0 = 32 zero bytes
        h = hashlib.sha256(h + r).digest()
        out.append(h)
    return out


def _batch(key, records: list[bytes], hashes: list[bytes], from_seq: int) -> dict:
    part = records[from_seq - 1:]
    last = from_seq + len(part) - 1
    head = hashes[last - 1]
    msg = cbor2.dumps(["GT1-chain-head", DEVICE, last, head])
    return {"device_id": DEVICE, "from_seq": from_seq, "records": [base64.b64encode(r).decode() for r in part],
            "head_hash": head.hex(), "head_sig": base64.b64encode(key.sign(msg)).decode()}


def _is(model, doc):
    """The answer is exactly what /openapi.json says (the answer models forbid extra fields)."""
    model.model_validate(doc)
    return doc


def test_the_sync_protocol_as_documented(central):
    store, url = central
    # GET /v1/time needs no token
    r = requests.get(f"{url}/v1/time", timeout=10)
    assert r.status_code == 200 and isinstance(_is(models.TimeAnswer, r.json())["time"], float)

    # POST /v1/devices: 400 for a missing field, 403 for an unknown code, 201 with token/event/device_id
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    code = store.enrol_code(EVENT)
    assert requests.post(f"{url}/v1/devices", json={"device_id": DEVICE}, timeout=10).status_code == 400
    r = requests.post(f"{url}/v1/devices", json={"enrolment_code": "NOPE", "device_id": DEVICE,
                                                 "public_key": _b64url(pub)}, timeout=10)
    assert r.status_code == 403 and "error" in _is(models.ErrorAnswer, r.json())
    r = requests.post(f"{url}/v1/devices", json={"enrolment_code": code, "device_id": DEVICE,
                                                 "public_key": _b64url(pub)}, timeout=10)
    assert r.status_code == 201
    doc = _is(models.EnrolAnswer, r.json())
    assert doc["event"] == EVENT and doc["device_id"] == DEVICE
    # single-use: the same code again is refused, even from the device that used it (docs/README.md)
    assert requests.post(f"{url}/v1/devices", json={"enrolment_code": code, "device_id": DEVICE,
                                                    "public_key": _b64url(pub)}, timeout=10).status_code == 403
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {doc['token']}"

    # 401 without a token, 403 for another event's path, 200 with the key ring
    r = requests.get(f"{url}/v1/events/{EVENT}/keyring", timeout=10)
    assert r.status_code == 401 and "error" in r.json()
    assert s.get(f"{url}/v1/events/evt-other/keyring", timeout=10).status_code == 403
    ring = _is(models.KeyRingAnswer, s.get(f"{url}/v1/events/{EVENT}/keyring", timeout=10).json())
    assert ring["event"] == EVENT and ring["keys"][0]["alg"] == "EdDSA"

    # ticket pages: cursor from "", `more` until the end, an empty page keeps the position
    made = store.issue(EVENT, count=3, out=store.dir / "wallets")
    seen, cursor = [], ""
    for _ in range(3):
        page = _is(models.TicketPage, s.get(f"{url}/v1/events/{EVENT}/tickets", params={"cursor": cursor, "limit": 2},
                                            timeout=10).json())
        seen += [t["ticket_id"] for t in page["items"]]
        cursor = page["cursor"]
        if not page["more"]:
            break
    assert seen == [m["ticket_id"] for m in made] and isinstance(cursor, str)
    empty = s.get(f"{url}/v1/events/{EVENT}/tickets", params={"cursor": cursor}, timeout=10).json()
    assert empty == {"items": [], "cursor": cursor, "more": False}
    assert s.get(f"{url}/v1/events/{EVENT}/tickets", params={"cursor": "x"}, timeout=10).status_code == 400

    # uploads: exact CBOR bytes base64'd, the head signed over ["GT1-chain-head", device, seq, hash]
    tid = made[0]["ticket_id"]
    records = [_record(1, tid), _record(2, tid), _record(3, tid, kind="rollback", ref=2)]
    hashes = _chain(records)
    scans = f"{url}/v1/events/{EVENT}/scans"
    r = s.post(scans, json=_batch(key, records[:2], hashes, 2), timeout=10)  # starts after a gap
    assert r.status_code == 409 and _is(models.ErrorAnswer, r.json())["stored_through"] == 0
    assert _is(models.UploadAnswer, s.post(scans, json=_batch(key, records[:2], hashes, 1), timeout=10).json()) \
        == {"stored_through": 2}
    assert s.post(scans, json=_batch(key, records[:2], hashes, 1), timeout=10).json() == {"stored_through": 2}
    assert s.post(scans, json=_batch(key, records, hashes, 2), timeout=10).json() == {"stored_through": 3}
    other = dict(_batch(key, records, hashes, 1), device_id="gate-someone-else")
    assert s.post(scans, json=other, timeout=10).status_code == 403
    forged = _batch(Ed25519PrivateKey.generate(), records, hashes, 1)
    assert s.post(scans, json=forged, timeout=10).status_code == 403
    reordered = dict(_batch(key, records, hashes, 1))
    reordered["records"] = [reordered["records"][i] for i in (1, 0, 2)]
    assert s.post(scans, json=reordered, timeout=10).status_code == 422

    # the admissions feed: accepted scans and the rollback that voids one
    items = _is(models.AdmissionPage, s.get(f"{url}/v1/events/{EVENT}/admissions", params={"cursor": ""},
                                           timeout=10).json())["items"]
    _is(models.DeviceListAnswer, s.get(f"{url}/v1/events/{EVENT}/devices", timeout=10).json())
    assert [(i["seq"], i["kind"], i["ref"]) for i in items] == [(1, "scan", None), (2, "scan", None),
                                                                (3, "rollback", 2)]
    assert items[0]["device_id"] == DEVICE and items[0]["mode"] == "entry" and items[0]["consumes"] is True

    # the report, JSON and text: ops credentials only (a device token gets 401)
    assert s.get(f"{url}/v1/events/{EVENT}/reconciliation", timeout=10).status_code == 401
    from sync.central.ops import accounts
    from sync.central.ops.db import OpsDB
    accounts.add(OpsDB(store), "ops", "ops password", "viewer", now=time.time())
    s = requests.Session()
    s.auth = ("ops", "ops password")
    rep = s.get(f"{url}/v1/events/{EVENT}/reconciliation", timeout=10).json()
    assert rep["devices"][0]["chain_ok"] and rep["devices"][0]["stored_through"] == 3
    assert [p["kind"] for p in rep["problems"]] == ["wrong_device", "bad_signature", "broken_chain"]
    text = s.get(f"{url}/v1/events/{EVENT}/reconciliation", params={"format": "text"}, timeout=10)
    assert text.headers["content-type"].startswith("text/plain") and "DOUBLE ADMISSIONS" in text.text


def test_openapi_documents_every_endpoint_with_its_body_parameters_and_answer(central):
    """docs/sync.md points integrators at /openapi.json: every endpoint of its table is there,
    with the request body's fields, the query parameters, the device token and the answer.
    (On main the document listed the paths with no body and no parameter at all.)"""
    store, url = central
    doc = requests.get(f"{url}/openapi.json", timeout=10).json()
    table = re.findall(r"^\| `(GET|POST) (/v1/[^`?\[]+)[^`]*` \| (\w[\w ]*) \|", (ROOT / "docs" / "sync.md").read_text(),
                       re.M)
    assert len(table) == 9, table
    schemas = doc["components"]["schemas"]
    for method, path, auth in table:
        path = path.replace("{e}", "{event}")
        op = doc["paths"][path][method.lower()]
        ok = op["responses"]["201" if path == "/v1/devices" else "200"]
        assert ok.get("content") or ok.get("description"), (method, path)
        if path != "/v1/events/{event}/reconciliation":  # (JSON or text: described in words)
            ref = ok["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            assert ref in schemas, (path, ref)
        assert all(s in op["responses"] for s in ("400", "422")), (path, list(op["responses"]))
        params = {(p["in"], p["name"]) for p in op.get("parameters", [])}
        if auth == "device":
            assert op["security"] == [{"device token": []}], path
            assert ("header", "x-gate-link") in params and ("header", "x-gate-outbox") in params
        if path.endswith(("/tickets", "/admissions")):
            assert {("query", "cursor"), ("query", "limit")} <= params, params
    body = doc["paths"]["/v1/devices"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"enrolment_code", "device_id", "public_key"} and "event" in body["properties"]
    body = doc["paths"]["/v1/events/{event}/scans"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"device_id", "from_seq", "records", "head_hash", "head_sig"}
    assert body["properties"]["records"]["maxItems"] == 10_000 and body["properties"]["from_seq"]["minimum"] == 1
    report = doc["paths"]["/v1/events/{event}/reconciliation"]["get"]
    assert ("query", "format") in {(p["in"], p["name"]) for p in report["parameters"]}
    assert {"ops account", "ops session"} <= {k for sec in report["security"] for k in sec}


@pytest.mark.parametrize("query, status", [
    ({"limit": "x"}, 400), ({"limit": "1e5"}, 400), ({"limit": str(2 ** 63)}, 422), ({"cursor": "x"}, 400),
    ({"cursor": str(2 ** 63)}, 422), ({"cursor": "-1"}, 422), ({"limit": ""}, 200), ({"limit": "-5"}, 200),
])
def test_parameters_validated_by_the_models_answer_in_the_protocols_error_shape(central, query, status):
    store, url = central
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    token = store.register(store.enrol_code(EVENT), DEVICE, pub)["token"]
    r = requests.get(f"{url}/v1/events/{EVENT}/tickets", params=query, timeout=10,
                     headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == status, r.text
    if status != 200:
        assert set(r.json()) == {"error"} and r.json()["error"], r.text  # never FastAPI's {"detail": [...]}
