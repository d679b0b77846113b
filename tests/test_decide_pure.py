"""``decide()`` on its own: a pure function of the code, the lane policy, the
key ring, an in-memory ledger view and ``now``. Every reason code is reached
by name, with its coded sub-reason where it has one; no database, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import gt1
from crypto.base45 import b45decode, b45encode
from crypto.issuer import Issuer
from crypto.keyring import KeyRing, parse_keyring
from gate.decision import (NO_USAGE, FaceCapture, LanePolicy, Lookup, Mode, Reason, Sub, TicketRecord,
                           Usage, decide)

NOW = 1_807_283_662
EVENT = "evt-pure"


@dataclass
class MemoryLedger:
    """A LedgerView in a dict: what the SQLite ledger answers, without SQLite."""

    tickets: dict[str, TicketRecord] = field(default_factory=dict)
    usage_of: dict[str, Usage] = field(default_factory=dict)
    steps: set[tuple[str, int]] = field(default_factory=set)
    templates: dict[str, list[float]] = field(default_factory=dict)

    def ticket(self, ticket_id):
        return self.tickets.get(ticket_id)

    def usage(self, ticket_id):
        return self.usage_of.get(ticket_id, NO_USAGE)

    def lookup(self, ticket_id, step):
        return Lookup(self.ticket(ticket_id), self.usage(ticket_id), (ticket_id, step) in self.steps)

    def face_template(self, ticket_id):
        return self.templates.get(ticket_id)


ISSUER = Issuer(EVENT, keys=[Ed25519PrivateKey.from_private_bytes(bytes(range(32)))])
KEYS = KeyRing(parse_keyring(ISSUER.keyring())[1])
LANE = LanePolicy(event=EVENT, lane="north-1")


def run(code: str, *, lane: LanePolicy = LANE, ledger: MemoryLedger | None = None, now: float = NOW,
        mode: Mode | None = None, face: FaceCapture | None = None, keys: KeyRing = KEYS):
    return decide(code, now=now, lane=lane, keys=keys, ledger=ledger or MemoryLedger(), mode=mode, face=face)


def test_a_fresh_rotating_code_is_admitted_unlisted():
    w = ISSUER.mint()
    d = run(w.code(NOW))
    assert d.reason is Reason.ACCEPT and d.unlisted and d.consumes_entry and d.sub is None
    assert d.step == gt1.current_step(NOW)


@pytest.mark.parametrize("text, sub", [
    ("GT1:" + "A" * 5000, Sub.TOO_LONG),
    ("HC1:ABC", Sub.PREFIX),
    ("GT1:!!!!", Sub.BASE45),
    ("GT1:" + b45encode(b"\xff\xff"), Sub.CBOR),
    ("GT1:" + b45encode(b"\x83\x41\x00\xf6\xf6"), Sub.COSE),   # [h'00', null, null]: not a COSE_Sign1
    ("GT1:" + b45encode(b"\x82\x41\x00\xf6"), Sub.STRUCTURE),  # an array of 2
], ids=["too-long", "prefix", "base45", "cbor", "cose", "structure"])
def test_malformed_names_the_layer_that_failed(text, sub):
    d = run(text)
    assert (d.reason, d.sub) == (Reason.MALFORMED, sub)


def test_unknown_key_says_whether_it_is_missing_or_unusable():
    other = Issuer(EVENT).mint(rotating=False)
    assert (run(other.code(NOW)).reason, run(other.code(NOW)).sub) == (Reason.UNKNOWN_KEY, Sub.KEY_NOT_IN_RING)
    ring = ISSUER.keyring()
    ring["keys"][0]["status"] = "revoked"
    d = run(ISSUER.mint(rotating=False).code(NOW), keys=KeyRing(parse_keyring(ring)[1]))
    assert (d.reason, d.sub) == (Reason.UNKNOWN_KEY, Sub.KEY_NOT_USABLE)


def test_bad_signature_when_one_signature_byte_changes():
    w = ISSUER.mint(rotating=False)
    body = bytearray(b45decode(w.code(NOW)[4:]))
    body[-10] ^= 0x01  # inside the issuer signature (the static code ends with it, then null, null)
    d = run("GT1:" + b45encode(bytes(body)))
    assert d.reason is Reason.BAD_SIGNATURE and d.ticket_id == w.ticket_id


def test_bad_proof_when_the_holder_proof_is_from_another_key():
    w, thief = ISSUER.mint(), ISSUER.mint()
    cred, step, _ = cbor2.loads(b45decode(w.code(NOW)[4:]))
    _, _, other_proof = cbor2.loads(b45decode(thief.code(NOW)[4:]))
    d = run("GT1:" + b45encode(cbor2.dumps([cred, step, other_proof])))
    assert d.reason is Reason.BAD_PROOF


def test_wrong_event_not_yet_valid_expired():
    assert run(ISSUER.mint(event="evt-other").code(NOW)).reason is Reason.WRONG_EVENT
    assert run(ISSUER.mint(nbf=NOW + 3600).code(NOW)).reason is Reason.NOT_YET_VALID
    assert run(ISSUER.mint(exp=NOW - 3600).code(NOW)).reason is Reason.EXPIRED
    # inside the 30 s skew both ways: admitted
    assert run(ISSUER.mint(nbf=NOW + 20).code(NOW)).reason is Reason.ACCEPT
    assert run(ISSUER.mint(exp=NOW - 20).code(NOW)).reason is Reason.ACCEPT


def test_proof_required_names_why():
    w = ISSUER.mint()
    cred, _, _ = cbor2.loads(b45decode(w.code(NOW)[4:]))
    d = run("GT1:" + b45encode(cbor2.dumps([cred, None, None])))
    assert (d.reason, d.sub) == (Reason.PROOF_REQUIRED, Sub.STATIC_FOR_ROTATING)
    d = run(ISSUER.mint(rotating=False).code(NOW), lane=replace(LANE, require_rotating=True))
    assert (d.reason, d.sub) == (Reason.PROOF_REQUIRED, Sub.LANE_ROTATING_ONLY)


def test_stale_code_beyond_one_step_either_way():
    w = ISSUER.mint()
    assert run(w.code(NOW - 15)).reason is Reason.ACCEPT   # one step old: inside the window
    assert run(w.code(NOW - 45)).reason is Reason.STALE_CODE
    assert run(w.code(NOW + 45)).reason is Reason.STALE_CODE


def test_ledger_states_revoked_superseded_not_in_ledger_wrong_zone():
    w = ISSUER.mint(rotating=False, zone="A")
    led = MemoryLedger({w.ticket_id: TicketRecord(w.ticket_id, status="revoked")})
    assert run(w.code(NOW), ledger=led).reason is Reason.REVOKED
    led = MemoryLedger({w.ticket_id: TicketRecord(w.ticket_id, version=2)})
    assert run(w.code(NOW), ledger=led).reason is Reason.SUPERSEDED
    assert run(w.code(NOW), lane=replace(LANE, require_listed=True)).reason is Reason.NOT_IN_LEDGER
    led = MemoryLedger({w.ticket_id: TicketRecord(w.ticket_id, zone="B")})  # the ledger moved it to zone B
    assert run(w.code(NOW), ledger=led, lane=replace(LANE, zones=("A",))).reason is Reason.WRONG_ZONE
    assert run(w.code(NOW), ledger=led, lane=replace(LANE, zones=("B",))).reason is Reason.ACCEPT


def test_replay_and_already_used_and_reentry():
    w = ISSUER.mint(entries=0)
    step = gt1.current_step(NOW)
    led = MemoryLedger({w.ticket_id: TicketRecord(w.ticket_id, entries=0)}, steps={(w.ticket_id, step)})
    assert run(w.code(NOW), ledger=led).reason is Reason.REPLAY
    s = ISSUER.mint(rotating=False)
    used = MemoryLedger({s.ticket_id: TicketRecord(s.ticket_id, entries=1)},
                        usage_of={s.ticket_id: Usage(1, Mode.ENTRY)})
    assert run(s.code(NOW), ledger=used).reason is Reason.ALREADY_USED
    # an exit lane records the exit whatever the allowance says
    assert run(s.code(NOW), ledger=used, mode=Mode.EXIT).reason is Reason.ACCEPT
    back = MemoryLedger({s.ticket_id: TicketRecord(s.ticket_id, entries=1, reentry=True)},
                        usage_of={s.ticket_id: Usage(1, Mode.EXIT)})
    d = run(s.code(NOW), ledger=back)
    assert d.reason is Reason.ACCEPT and not d.consumes_entry  # a re-entry uses no entry


def test_ledger_fields_override_every_claim():
    # The code claims 5 entries, re-entry, no face, zone A, tier GA; the ledger
    # says 1 entry, no re-entry, face required, zone B, tier VIP. Each ledger
    # field must win: a decide() that read the claims would admit here.
    w = ISSUER.mint(rotating=False, entries=5, reentry=True, zone="A", tier="GA")
    rec = TicketRecord(w.ticket_id, entries=1, reentry=False, zone="B", face_required=True, tier="VIP")
    led = MemoryLedger({w.ticket_id: rec}, usage_of={w.ticket_id: Usage(1, Mode.EXIT)})
    assert run(w.code(NOW), ledger=led).reason is Reason.ALREADY_USED  # entries and reentry from the ledger
    led = MemoryLedger({w.ticket_id: rec})
    d = run(w.code(NOW), ledger=led)
    assert d.reason is Reason.NO_FACE_ENROLLED and d.tier == "VIP" and d.zone == "B"


def test_face_reasons_and_sub_reasons():
    w = ISSUER.mint(rotating=False, face=True)
    led = MemoryLedger({w.ticket_id: TicketRecord(w.ticket_id, face_required=True)},
                       templates={w.ticket_id: [0.1] * 128})
    d = run(w.code(NOW), ledger=led)
    assert (d.reason, d.sub) == (Reason.FACE_REQUIRED, Sub.NO_CAPTURE)
    d = run(w.code(NOW), ledger=led, face=FaceCapture(None, "two faces", Sub.SEVERAL_FACES))
    assert (d.reason, d.sub) == (Reason.FACE_REQUIRED, Sub.SEVERAL_FACES)
    assert run(w.code(NOW), ledger=led, face=FaceCapture([0.3] * 128)).reason is Reason.FACE_MISMATCH
    ok = run(w.code(NOW), ledger=led, face=FaceCapture([0.11] * 128))
    assert ok.reason is Reason.ACCEPT and ok.face_distance is not None


def test_decide_is_pure():
    # The same inputs give the same decision, and decide() changes nothing in
    # the ledger view it was given.
    w = ISSUER.mint()
    led = MemoryLedger({w.ticket_id: TicketRecord(w.ticket_id)})
    before = (dict(led.tickets), dict(led.usage_of), set(led.steps))
    first = run(w.code(NOW), ledger=led)
    assert all(run(w.code(NOW), ledger=led) == first for _ in range(3))
    assert (led.tickets, led.usage_of, led.steps) == before
