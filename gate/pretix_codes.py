"""Deciding pretix ticket codes offline (for gates whose central is pretix).

pretix codes are its position ``secret``s: random strings, checked against the
ledger, or ``pretix_sig1`` signed secrets — ``reverse(base64(0x01 | u16 len |
u16 siglen | protobuf Ticket | Ed25519 sig))`` — verified with the event's
public keys exactly as pretixSCAN does, then checked against the revoked and
blocked lists (kept in the ledger as revoked tickets). The outcome uses the
reason codes of docs/decision.md. Pure: no clock, no I/O.

The lane's policy holds for pretix codes too: ``--zones`` admits only tickets
whose ledger zone is one of them (a ticket with no zone, or a signed ticket not
in the ledger, is refused ``WRONG_ZONE`` on a zoned lane), and a lane set up with
``--require-rotating`` cannot use pretix at all: pretix secrets are static codes.
Enrolment and every sync refuse that combination (:func:`policy_problem`); a
code reaching such a lane anyway is refused ``PROOF_REQUIRED``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from typing import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gate.decision import (Decision, LanePolicy, LedgerView, Mode, Reason, Sub, TicketRecord, allowance,
                           used_where)

MAX_SECRET = 4096


def ticket_id_for(secret: str) -> str:
    """The ledger key of a pretix secret (the gate never needs it in clear text to decide)."""
    return hashlib.sha256(secret.encode()).digest()[:16].hex()


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def parse_ticket_protobuf(payload: bytes) -> dict:
    """The few fields of pretix's Ticket message: seed(1), item(2), variation(3),
    subevent(4), validFromUnixTime(5), validUntilUnixTime(6)."""
    names = {1: "seed", 2: "item", 3: "variation", 4: "subevent", 5: "valid_from", 6: "valid_until"}
    out: dict = {}
    i = 0
    while i < len(payload):
        key, i = _varint(payload, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(payload, i)
            if value >= 2**63:
                value -= 2**64
        elif wire == 2:
            n, i = _varint(payload, i)
            value, i = payload[i:i + n], i + n
        else:
            raise ValueError(f"unexpected wire type {wire}")
        if field in names:
            out[names[field]] = value
    return out


def split_sig1(secret: str) -> tuple[bytes, bytes] | None:
    """(payload, signature) when the text has the pretix_sig1 shape, else None."""
    try:
        raw = base64.b64decode(secret[::-1], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 5 or raw[0] != 1:
        return None
    plen, slen = struct.unpack(">HH", raw[1:5])
    if slen != 64 or len(raw) != 5 + plen + slen:
        return None
    return raw[5:5 + plen], raw[5 + plen:]


def policy_problem(lane: LanePolicy) -> str | None:
    """Why a lane with this policy cannot take pretix codes (None: it can)."""
    if lane.require_rotating:
        return (f"lane {lane.lane} was set up with --require-rotating, but pretix ticket codes are static: "
                "every one would be refused. Run 'gate init' again without --require-rotating to use "
                "pretix, or keep this lane for GT1 rotating codes")
    return None


def decide_pretix(secret: str, *, now: float, lane: LanePolicy, keys: Sequence[Ed25519PublicKey],
                  ledger: LedgerView, mode: Mode | None = None) -> Decision:
    mode = lane.mode if mode is None else mode
    secret = secret.strip()
    if not secret or len(secret) > MAX_SECRET or not secret.isprintable():
        return Decision(Reason.MALFORMED, mode, sub=Sub.NOT_PRETIX, detail="not a pretix ticket code")
    tid = ticket_id_for(secret)
    if lane.require_rotating:  # enrolment and sync refuse this policy; never admit a static code on it
        return Decision(Reason.PROOF_REQUIRED, mode, ticket_id=tid, sub=Sub.LANE_ROTATING_ONLY,
                        detail="this lane admits rotating codes only (pretix codes are static)")
    signed = split_sig1(secret)
    fields: dict = {}
    if signed is not None:
        payload, sig = signed
        ok = False
        for key in keys:
            try:
                key.verify(sig, payload)
                ok = True
                break
            except InvalidSignature:
                continue
        if not ok:
            return Decision(Reason.BAD_SIGNATURE if keys else Reason.UNKNOWN_KEY, mode, ticket_id=tid)
        try:
            fields = parse_ticket_protobuf(payload)
        except ValueError:
            return Decision(Reason.MALFORMED, mode, ticket_id=tid, sub=Sub.PRETIX_PAYLOAD, detail="signed payload unreadable")
        skew = lane.clock_skew_s
        if fields.get("valid_from") and now + skew < fields["valid_from"]:
            return Decision(Reason.NOT_YET_VALID, mode, ticket_id=tid)
        if fields.get("valid_until") and now - skew >= fields["valid_until"]:
            return Decision(Reason.EXPIRED, mode, ticket_id=tid)
    look = ledger.lookup(tid, None)  # one read: the ticket and its usage
    rec = look.record
    unlisted = rec is None
    if unlisted:
        if signed is None or lane.require_listed:
            return Decision(Reason.NOT_IN_LEDGER, mode, ticket_id=tid)
        rec = TicketRecord(tid)
    if rec.status != "valid":
        return Decision(Reason.REVOKED, mode, ticket_id=tid, unlisted=unlisted, holder=rec.holder)
    if lane.zones and rec.zone not in lane.zones:  # row 12 of docs/decision.md, as for GT1 codes
        return Decision(Reason.WRONG_ZONE, mode, ticket_id=tid, unlisted=unlisted, tier=rec.tier or None,
                        zone=rec.zone, holder=rec.holder)

    def verdict(reason: Reason, consumes: bool = False, detail: str = "") -> Decision:
        return Decision(reason, mode, ticket_id=tid, unlisted=unlisted, tier=rec.tier or None,
                        zone=rec.zone, holder=rec.holder, consumes_entry=consumes, detail=detail)

    if mode is Mode.EXIT:
        return verdict(Reason.ACCEPT)
    usage = look.usage
    exhausted, reentering = allowance(rec, usage)
    if exhausted:
        return verdict(Reason.ALREADY_USED, detail=used_where(usage, now))
    return verdict(Reason.ACCEPT, consumes=not reentering)
