"""The decision core (docs/decision.md): a pure function of the QR text, the time, the
lane policy, the key ring and a read-only view of the ledger.

It never reads a clock, a camera or a socket, never writes, and never raises
for a "deny": every outcome is a :class:`Decision` with a stable
:class:`Reason` code. Effects (scan log, relay) belong to the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, Sequence

from crypto import gt1
from crypto.keyring import KeyRing


class Reason(StrEnum):
    ACCEPT = "ACCEPT"
    MALFORMED = "MALFORMED"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    WRONG_EVENT = "WRONG_EVENT"
    NOT_YET_VALID = "NOT_YET_VALID"
    EXPIRED = "EXPIRED"
    PROOF_REQUIRED = "PROOF_REQUIRED"
    STALE_CODE = "STALE_CODE"
    BAD_PROOF = "BAD_PROOF"
    REVOKED = "REVOKED"
    SUPERSEDED = "SUPERSEDED"
    NOT_IN_LEDGER = "NOT_IN_LEDGER"
    WRONG_ZONE = "WRONG_ZONE"
    REPLAY = "REPLAY"
    ALREADY_USED = "ALREADY_USED"
    FACE_REQUIRED = "FACE_REQUIRED"
    FACE_MISMATCH = "FACE_MISMATCH"
    NO_FACE_ENROLLED = "NO_FACE_ENROLLED"
    # the lane has neither central nor a bus peer and its policy refuses (gate.bus)
    LANE_ALONE = "LANE_ALONE"
    # staff paused the lane: the code is refused and logged, nothing else is checked (gate.lane)
    LANE_PAUSED = "LANE_PAUSED"
    # staff overrides (never returned by decide(); logged with the operator)
    MANUAL_ADMIT = "MANUAL_ADMIT"
    MANUAL_DENY = "MANUAL_DENY"
    # the lane could not decide (an unexpected fault with this one code): refused, logged
    ERROR = "ERROR"


class Sub(StrEnum):
    """A coded sub-reason: which check inside a reason failed, for scripts and
    tests (pretix's ``CheckInError.code`` is the model). ``detail`` stays free
    text for people; never match on it."""

    # MALFORMED: the layer that failed (crypto.gt1.Malformed.code)
    TOO_LONG = "TOO_LONG"
    PREFIX = "PREFIX"
    BASE45 = "BASE45"
    CBOR = "CBOR"
    STRUCTURE = "STRUCTURE"
    COSE = "COSE"
    CLAIMS = "CLAIMS"
    NOT_TEXT = "NOT_TEXT"
    NOT_PRETIX = "NOT_PRETIX"
    PRETIX_PAYLOAD = "PRETIX_PAYLOAD"
    # UNKNOWN_KEY
    KEY_NOT_IN_RING = "KEY_NOT_IN_RING"
    KEY_NOT_USABLE = "KEY_NOT_USABLE"  # revoked, or outside its nbf-exp window
    # PROOF_REQUIRED
    STATIC_FOR_ROTATING = "STATIC_FOR_ROTATING"  # the ticket rotates, a static code was shown
    LANE_ROTATING_ONLY = "LANE_ROTATING_ONLY"
    # FACE_REQUIRED
    NO_FACE = "NO_FACE"
    SEVERAL_FACES = "SEVERAL_FACES"
    NOT_LIVE = "NOT_LIVE"
    NO_CAPTURE = "NO_CAPTURE"  # the lane has no face camera
    POOR_CAPTURE = "POOR_CAPTURE"  # a face, but too small, blurred or turned away


class Mode(StrEnum):
    ENTRY = "entry"
    EXIT = "exit"


@dataclass(frozen=True, slots=True)
class LanePolicy:
    event: str
    lane: str = "lane-1"
    mode: Mode = Mode.ENTRY
    zones: tuple[str, ...] = ()
    require_rotating: bool = False
    require_listed: bool = False
    window_steps: int = 1
    clock_skew_s: int = 30
    face_tolerance: float = 0.52  # measured: README "Faces", bench/face.py


@dataclass(frozen=True, slots=True)
class TicketRecord:
    """What the ledger knows of one ticket (docs/formats.md, tickets)."""

    ticket_id: str
    version: int = 1
    status: str = "valid"
    entries: int = 1
    reentry: bool = False
    zone: str | None = None
    face_required: bool = False
    tier: str = ""
    holder: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Accepted history of one ticket at this gate (rolled-back scans excluded)."""

    admissions: int = 0  # entries that consumed an allowance
    last_kind: Mode | None = None  # kind of the last accepted scan
    last_where: str | None = None  # the other lane that made the last admission (None: this one)
    last_ts_ms: int | None = None  # when the last accepted scan was made


NO_USAGE = Usage()


@dataclass(frozen=True, slots=True)
class Lookup:
    """Everything the ledger knows that one decision needs, read at once."""

    record: TicketRecord | None  # None: not in the ledger
    usage: Usage = NO_USAGE
    step_accepted: bool = False  # this (ticket, step) already accepted here


class LedgerView(Protocol):
    def ticket(self, ticket_id: str) -> TicketRecord | None: ...
    def usage(self, ticket_id: str) -> Usage: ...
    def lookup(self, ticket_id: str, step: int | None) -> Lookup:
        """The ticket, its usage and whether ``step`` was accepted: one read on
        the decision path."""
    def face_template(self, ticket_id: str) -> Sequence[float] | None: ...


@dataclass(frozen=True, slots=True)
class FaceCapture:
    """What the camera saw of the holder: an encoding, or None when no usable
    face was found in time."""

    encoding: Sequence[float] | None
    detail: str = ""  # why there is no encoding (no face, two faces, liveness), for people
    sub: Sub | None = None  # the same, coded


@dataclass(frozen=True, slots=True)
class Decision:
    reason: Reason
    mode: Mode
    ticket_id: str | None = None
    unlisted: bool = False
    step: int | None = None
    version: int | None = None
    kid: str | None = None
    tier: str | None = None
    zone: str | None = None
    holder: str | None = None
    face_distance: float | None = None
    consumes_entry: bool = False  # an accepted entry that uses an allowance
    sub: Sub | None = None  # which check inside ``reason`` failed (coded)
    detail: str = field(default="", compare=False)  # the same for people: never match on it
    # a rotating code's (credential, holder proof) as parsed for this decision: its log
    # record carries them (scanlog.proof_fields) without parsing the QR a second time
    proof: tuple[bytes, bytes] | None = field(default=None, compare=False, repr=False)

    @property
    def accepted(self) -> bool:
        return self.reason is Reason.ACCEPT or self.reason is Reason.MANUAL_ADMIT

    def to_json(self) -> dict:
        return {
            "decision": "accept" if self.accepted else "reject",
            "reason": self.reason.value,
            "ticket_id": self.ticket_id,
            "unlisted": self.unlisted,
            "mode": self.mode.value,
            "step": self.step,
            "version": self.version,
            "kid": self.kid,
            "tier": self.tier,
            "zone": self.zone,
            "face_distance": self.face_distance,
            "consumes_entry": self.consumes_entry,
            "sub": None if self.sub is None else self.sub.value,
            "detail": self.detail,
        }


def allowance(rec: TicketRecord, usage: Usage) -> tuple[bool, bool]:
    """Row 14 of docs/decision.md for an entry: (exhausted, reentering). A re-entry after an
    exit, where the ticket allows it, does not consume an entry."""
    reentering = rec.reentry and usage.last_kind is Mode.EXIT
    exhausted = not reentering and rec.entries != 0 and usage.admissions >= rec.entries
    return exhausted, reentering


def used_where(usage: Usage, now: float) -> str:
    if usage.last_where is None or usage.last_ts_ms is None:
        return ""
    ago = max(0, round(now - usage.last_ts_ms / 1000))
    return f"admitted at {usage.last_where} {ago} s ago"


def face_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Euclidean distance between two 128-d encodings (what face_recognition uses)."""
    return math.sqrt(sum((x - y) * (x - y) for x, y in zip(a, b, strict=True)))


def decide(
    qr_text: str,
    *,
    now: float,
    lane: LanePolicy,
    keys: KeyRing,
    ledger: LedgerView,
    mode: Mode | None = None,
    face: FaceCapture | None = None,
) -> Decision:
    """Decide one scan. ``mode`` overrides the lane's mode for this scan;
    ``face`` is what the camera captured (None: no face capture attempted)."""
    mode = lane.mode if mode is None else mode

    # 1: the QR text itself (docs/gt1.md)
    try:
        p = gt1.parse_qr(qr_text)
    except gt1.Malformed as exc:
        return Decision(Reason.MALFORMED, mode, sub=Sub(exc.code), detail=str(exc))

    c = p.claims
    tid = c.ticket_id

    def deny(reason: Reason, detail: str = "", sub: Sub | None = None, **extra) -> Decision:
        return Decision(reason, mode, ticket_id=tid, step=p.step, version=c.ver,
                        kid=p.kid.hex(), tier=c.tier, zone=c.zone, sub=sub, detail=detail, **extra)

    # 2-3: issuer key and signature
    key = keys.usable_key(p.kid, now)
    if key is None:
        known = keys.get(p.kid)
        if known is None:
            return deny(Reason.UNKNOWN_KEY, "issuer key not in the key ring", Sub.KEY_NOT_IN_RING)
        return deny(Reason.UNKNOWN_KEY, f"issuer key is {known.status} or outside its validity window",
                    Sub.KEY_NOT_USABLE)
    if not gt1.verify_issuer(p, key):
        return deny(Reason.BAD_SIGNATURE)
    # 4: event
    if c.evt != lane.event:
        return deny(Reason.WRONG_EVENT, f"code is for event {c.evt!r}")
    # 5: validity window, with clock skew allowance
    skew = lane.clock_skew_s
    if c.nbf is not None and now + skew < c.nbf:
        return deny(Reason.NOT_YET_VALID)
    if c.exp is not None and now - skew >= c.exp:
        return deny(Reason.EXPIRED)
    # 6-8: holder proof of possession (rotating codes)
    if c.holder_pub is not None:
        if not p.rotating:
            return deny(Reason.PROOF_REQUIRED, "rotating code expected, static code shown",
                        Sub.STATIC_FOR_ROTATING)
        if abs(p.step - gt1.current_step(now)) > lane.window_steps:
            return deny(Reason.STALE_CODE)
        if not gt1.verify_proof(p):
            return deny(Reason.BAD_PROOF)
    elif lane.require_rotating:
        return deny(Reason.PROOF_REQUIRED, "this lane admits rotating codes only", Sub.LANE_ROTATING_ONLY)
    step = p.step if c.holder_pub is not None else None
    proof = (p.credential, p.proof) if step is not None else None

    # 9-12: ledger state (ledger fields override the credential's claims)
    look = ledger.lookup(tid, step)
    rec = look.record
    unlisted = rec is None
    if unlisted:
        if lane.require_listed:
            return deny(Reason.NOT_IN_LEDGER)
        rec = TicketRecord(tid, version=c.ver, entries=c.ent, reentry=c.rex,
                           zone=c.zone, face_required=c.fce, tier=c.tier)
    if rec.status != "valid":
        return deny(Reason.REVOKED, unlisted=unlisted)
    if c.ver < rec.version:
        return deny(Reason.SUPERSEDED, f"code version {c.ver}, ledger version {rec.version}")
    zone = rec.zone
    if lane.zones and zone not in lane.zones:
        return deny(Reason.WRONG_ZONE, unlisted=unlisted)

    def verdict(reason: Reason, *, consumes: bool = False, distance: float | None = None,
                sub: Sub | None = None, detail: str = "") -> Decision:
        return Decision(reason, mode, ticket_id=tid, unlisted=unlisted, step=step,
                        version=c.ver, kid=p.kid.hex(), tier=rec.tier or c.tier, zone=zone,
                        holder=rec.holder, face_distance=distance, consumes_entry=consumes,
                        sub=sub, detail=detail, proof=proof)

    # 13: the same rotation step already accepted here
    if step is not None and look.step_accepted:
        return verdict(Reason.REPLAY)
    if mode is Mode.EXIT:
        return verdict(Reason.ACCEPT)
    # 14: allowance
    exhausted, reentering = allowance(rec, look.usage)
    if exhausted:
        return verdict(Reason.ALREADY_USED, detail=used_where(look.usage, now))
    # 15: face
    distance = None
    if rec.face_required or c.fce:
        template = ledger.face_template(tid)
        if template is None:
            return verdict(Reason.NO_FACE_ENROLLED)
        if face is None or face.encoding is None:
            if face is None:
                return verdict(Reason.FACE_REQUIRED, sub=Sub.NO_CAPTURE, detail="no face captured")
            return verdict(Reason.FACE_REQUIRED, sub=face.sub or Sub.NO_FACE, detail=face.detail)
        distance = face_distance(template, face.encoding)
        if not math.isfinite(distance):  # a damaged template or capture: never a match
            return verdict(Reason.FACE_MISMATCH, detail="face distance is not a number")
        distance = round(distance, 4)
        if not (distance <= lane.face_tolerance):  # written so that NaN could never admit
            return verdict(Reason.FACE_MISMATCH, distance=distance)
    return verdict(Reason.ACCEPT, consumes=not reentering, distance=distance)
