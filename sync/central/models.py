"""The sync API's bodies and parameters (docs/sync.md) as pydantic models, so
``/openapi.json`` documents them.

Request bodies are read by the routes themselves, after authentication and
under the body limits of :mod:`.limits` (size, depth, NUL), then validated
with :func:`validate`; the schema reaches the OpenAPI document through
:func:`body_doc`. Answers are documented with the ``*Answer`` models; the
routes write their JSON directly, and tests/test_sync_protocol.py checks the
real answers against these models (``extra="forbid"``), so the description
cannot drift from what is sent.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from sync.central.errors import CentralError
from sync.central.limits import INT64, MAX_RECORDS

INT64_MIN, INT64_MAX = INT64
RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_long"}


class _Request(BaseModel):
    """A request body: JSON types exactly (no "1" for 1, no 1 for "1"); unknown fields ignored."""
    model_config = ConfigDict(strict=True, extra="ignore")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ requests


class EnrolRequest(_Request):
    """POST /v1/devices: register a device with a one-time enrolment code."""
    enrolment_code: str = Field(description="the single-use code ops made (gate central device enroll)",
                                examples=["1A2B-3C4D-5E6F-7A8B"])
    device_id: str = Field(min_length=1, max_length=128, examples=["gate-bc466ddd"])
    public_key: str = Field(description="base64url (no padding) of the device's raw 32-byte Ed25519 public key")
    event: str | None = Field(None, description="the event the gate admits to; a code for another event is refused")


class UploadBatch(_Request):
    """POST /v1/events/{e}/scans: a run of the device's scan log with its signed chain head."""
    device_id: str = Field(description="must be the token's device")
    from_seq: int = Field(ge=1, lt=INT64_MAX - MAX_RECORDS, description="seq of the first record")
    records: list[str] = Field(min_length=1, max_length=MAX_RECORDS,
                               description="standard base64 (padded) of each record's exact CBOR bytes, in seq order")
    head_hash: str = Field(description="lowercase hex of the chain hash after the last record")
    head_sig: str = Field(description='base64 Ed25519 signature by the device key over CBOR ["GT1-chain-head", '
                                      "device_id, last seq, head_hash bytes]")


class BusCredentialRequest(_Request):
    """POST /v1/events/{e}/bus-credential: a venue-bus certificate for the device's bus TLS key."""
    public_key: str = Field(description="base64url (no padding) of the raw 32-byte Ed25519 public key of the "
                                        "gate's bus TLS key (not its device key)")


def _blank_is_absent(v: Any) -> Any:
    return None if v == "" else v


class PageQuery(BaseModel):
    """The query of the paged feeds (tickets, admissions)."""
    cursor: str | None = Field(None, description="opaque cursor from the previous page; empty or absent = from "
                                                 "the start (the reference central's is a decimal change number)")
    limit: Annotated[int | None, BeforeValidator(_blank_is_absent)] = Field(
        None, ge=INT64_MIN + 1, le=INT64_MAX - 1,
        description="items per page: 1-5000, default 1000 (values outside are taken as the nearest bound)")


class TicketPageQuery(PageQuery):
    """The query of the ticket feed: a page query and the layout."""
    layout: Literal["items", "rows"] | None = Field(
        None, description="'rows': each record as an array in the order of 'columns' (docs/sync.md); "
                          "absent or 'items': each record as an object")


class ReportQuery(BaseModel):
    format: str | None = Field(None, description="'text': the human-readable report (text/plain) instead of JSON")


class GateHeaders(BaseModel):
    """Optional headers a gate describes itself with on any device request (the ops
    room's Gates page); a value that does not parse is ignored."""
    x_gate_link: str | None = Field(None, description="ONLINE, VENUE or ALONE")
    x_gate_outbox: str | None = Field(None, description="records not yet acknowledged by central")
    x_gate_clock_offset_ms: str | None = Field(None, description="central's clock minus the gate's, ms")
    x_gate_ledger_age_s: str | None = Field(None, description="seconds since the ticket ledger was last updated")


# ------------------------------------------------------------------ answers


class ErrorAnswer(BaseModel):
    """Every refusal: error says what is wrong; some carry more fields."""
    model_config = ConfigDict(extra="allow")
    error: str
    stored_through: int | None = Field(None, description="409 gap on upload: resend from here")
    retry_after: int | None = Field(None, description="429/503: seconds to wait (also the Retry-After header)")


class EnrolAnswer(_Answer):
    token: str = Field(description="the device's bearer token (store it 0600)")
    event: str
    venue: str
    device_id: str


class TimeAnswer(_Answer):
    time: float = Field(description="central's clock, unix seconds")


class KeyEntry(_Answer):
    """An issuer key as in the key ring of docs/formats.md."""
    kid: str = Field(description="hex key id")
    alg: Literal["EdDSA"]
    pub: str = Field(description="base64url raw Ed25519 public key")
    nbf: int | float | None
    exp: int | float | None
    status: str = Field(description="active or revoked")


class KeyRingAnswer(_Answer):
    event: str
    keys: list[KeyEntry]


class TicketRecord(_Answer):
    """A ticket record exactly as in docs/formats.md."""
    ticket_id: str
    event: str
    tier: str
    zone: str | None
    version: int
    status: str
    entries: int
    reentry: bool
    face_required: bool
    face_template: str | None = Field(description="base64, or null")
    holder: str | None


class TicketPage(_Answer):
    items: list[TicketRecord] | None = Field(None, description="the records (layout 'items', the default)")
    columns: list[str] | None = Field(None, description="layout 'rows': the order of each row's values")
    rows: list[list[Any]] | None = Field(None, description="layout 'rows': one array per record")
    cursor: str
    more: bool


class Admission(_Answer):
    device_id: str
    seq: int
    ticket_id: str | None
    mode: str | None
    consumes: bool
    ts_ms: int | None
    kind: str | None = Field(description="scan, override or rollback")
    ref: int | None = Field(description="a rollback: the seq of the scan it voids on that device")
    proven: bool = Field(description="a holder proof backs it (a quarantined device's admissions need one)")
    lane: str | None


class AdmissionPage(_Answer):
    items: list[Admission]
    cursor: str
    more: bool


class UploadAnswer(_Answer):
    stored_through: int = Field(description="the highest seq of this device central now holds")
    quarantined: Literal[True] | None = Field(None, description="present when central holds the device's "
                                                                "admissions back (implausible uploads)")
    quarantine_reason: str | None = None


class DeviceEntry(_Answer):
    device_id: str
    public_key: str = Field(description="hex of the raw Ed25519 public key")
    status: str = Field(description="active or revoked")
    quarantined: bool


class DeviceListAnswer(_Answer):
    event: str
    devices: list[DeviceEntry]


class BusCredentialAnswer(_Answer):
    device_id: str
    event: str
    certificate: str = Field(description="PEM X.509 certificate for the key, subject CN = the device id")
    ca: str = Field(description="PEM certificate of the event's venue-bus CA (the only CA the bus trusts)")
    not_after: float = Field(description="the certificate's expiry, Unix seconds")


# ------------------------------------------------------------------ helpers


def body_doc(model: type[BaseModel]) -> dict:
    """``openapi_extra`` documenting a JSON request body the route reads itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema(ref_template="#/components/schemas/{model}")}}}}


def validate(model: type[BaseModel], doc: object, messages: dict | None = None):
    """``doc`` (parsed JSON) as ``model``, or CentralError: 400 when a field is
    missing or of the wrong type, 422 when a value is out of range. The first
    failing field in the model's order is reported; ``messages`` gives its text
    by ``"field:error_type"``, ``"field[]"`` (an element of a list field) or
    ``"field"``, as a string, as ``f(error, doc) -> str``, or as ``(status, text)``
    to answer with another status than the rule above."""
    if not isinstance(doc, dict):
        raise CentralError(400, "body must be a JSON object")
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise _refusal(exc.errors(include_url=False), doc, list(model.model_fields), messages or {}) from None


def _refusal(errors: list[dict], doc: dict, order: list[str], messages: dict) -> CentralError:
    def rank(e):
        name = str(e["loc"][0]) if e["loc"] else ""
        return (order.index(name) if name in order else len(order), len(e["loc"]))

    e = min(errors, key=rank)
    field = str(e["loc"][0]) if e["loc"] else ""
    status = 422 if e["type"] in RANGE_ERRORS else 400
    keys = [f"{field}:{e['type']}", f"{field}[]" if len(e["loc"]) > 1 else field, field]
    text = next((messages[k] for k in keys if k in messages), None)
    if isinstance(text, tuple):
        status, text = text
    if callable(text):
        text = text(e, doc)
    return CentralError(status, text or f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}")


def query_refusal(errors: list[dict]) -> CentralError:
    """A RequestValidationError (query, path or header) as our error shape."""
    e = errors[0]
    where = ".".join(str(x) for x in e.get("loc", ())[1:]) or "request"
    status = 422 if all(x.get("type") in RANGE_ERRORS for x in errors) else 400
    msg = f"{where} must be an integer" if e.get("type", "").startswith("int_") else f"{where}: {e.get('msg')}"
    if status == 422:
        msg = f"{where} is out of range"
    return CentralError(status, msg)
