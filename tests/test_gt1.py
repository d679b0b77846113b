"""GT1 encode/verify: round trips (hypothesis) and strict decoding."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings, strategies as st

from crypto import gt1
from crypto.base45 import Base45Error, b45decode, b45encode

ISSUER = Ed25519PrivateKey.generate()
HOLDER = Ed25519PrivateKey.generate()

opt_int = st.none() | st.integers(min_value=0, max_value=2**40)
text = st.text(max_size=20)


@given(st.binary(max_size=300))
def test_base45_round_trip(data):
    assert b45decode(b45encode(data)) == data


def _b45decode_reference(text: str) -> bytes:
    """RFC 9285 section 4.2, one group at a time: what the big-integer decoder must equal."""
    from crypto.base45 import ALPHABET
    vals = [ALPHABET.index(c) for c in text]  # ValueError for a character outside the alphabet
    if len(vals) % 3 == 1:
        raise ValueError("dangling character")
    out = bytearray()
    for i in range(0, len(vals), 3):
        group = vals[i:i + 3]
        n = sum(v * 45 ** k for k, v in enumerate(group))
        if n > (0xFFFF if len(group) == 3 else 0xFF):
            raise ValueError("group out of range")
        out += n.to_bytes(2 if len(group) == 3 else 1, "big")
    return bytes(out)


@settings(deadline=None)  # a busy CI machine is no reason to fail a correctness property
@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:", max_size=60)
       | st.binary(max_size=40).map(b45encode))
def test_base45_decoder_agrees_with_a_group_at_a_time_reference(text):
    # random text over the alphabet is mostly out of range somewhere: both must refuse the same
    # inputs and agree on the rest (the C big-integer stripes must never carry across a group)
    try:
        want = _b45decode_reference(text)
    except ValueError:
        with pytest.raises(Base45Error):
            b45decode(text)
    else:
        assert b45decode(text) == want


@pytest.mark.parametrize("n", [0, 1, 23, 24, 255, 256, 65535, 65536, 70000])
def test_sig_structure_is_what_cbor2_encodes_for_every_length_header(n):
    # crypto.gt1 builds the COSE Sig_structure by hand (no encoder on the hot path); every CBOR
    # byte-string length form (inline < 24, 1, 2 and 4 length bytes) must give cbor2's exact
    # bytes, or every signature over it would be made and checked over the wrong message
    protected, payload = bytes(range(256)) * (n // 256) + bytes(n % 256), b"\xa1" * (n // 2)
    for p_, q in ((protected, payload), (payload, protected), (b"", protected), (protected, b"")):
        assert gt1._sig_structure(p_, q) == cbor2.dumps(["Signature1", p_, b"", q])


@pytest.mark.parametrize("bad", ["A", "GGW", ":::", "ab", "A!"])
def test_base45_rejects_bad_text(bad):
    with pytest.raises(Base45Error):
        b45decode(bad)


@settings(max_examples=200, deadline=None)
@given(
    tid=st.binary(min_size=8, max_size=32),
    event=text, tier=text, zone=st.none() | text,
    entries=st.none() | st.integers(0, 100), version=st.none() | st.integers(1, 1000),
    face=st.none() | st.booleans(), reentry=st.none() | st.booleans(),
    nbf=opt_int, exp=opt_int, rotating=st.booleans(), step=st.integers(0, 2**32),
)
def test_issue_present_parse_verify_round_trip(tid, event, tier, zone, entries, version, face,
                                               reentry, nbf, exp, rotating, step):
    cred = gt1.issue(ISSUER, ticket_id=tid, event=event, tier=tier, zone=zone, entries=entries,
                     version=version, face=face, reentry=reentry, nbf=nbf, exp=exp,
                     holder_pub=gt1.raw_public(HOLDER) if rotating else None)
    qr = gt1.present(cred, holder_key=HOLDER if rotating else None, step=step)
    assert qr.startswith("GT1:") and len(qr) <= gt1.MAX_QR_CHARS
    p = gt1.parse_qr(qr)
    c = p.claims
    assert (c.cti, c.evt, c.tier, c.zone) == (tid, event, tier, zone)
    assert (c.ent, c.ver, c.fce, c.rex) == (1 if entries is None else entries,
                                            1 if version is None else version,
                                            bool(face), bool(reentry))
    assert (c.nbf, c.exp) == (nbf, exp)
    assert p.kid == gt1.kid_for(gt1.raw_public(ISSUER))
    assert gt1.verify_issuer(p, ISSUER.public_key())
    assert not gt1.verify_issuer(p, HOLDER.public_key())
    if rotating:
        assert p.step == step and gt1.verify_proof(p)
    else:
        assert p.step is None and not gt1.verify_proof(p)


def test_proof_is_bound_to_step_and_credential():
    cred = gt1.issue(ISSUER, ticket_id=b"x" * 16, event="e", holder_pub=gt1.raw_public(HOLDER))
    other = gt1.issue(ISSUER, ticket_id=b"y" * 16, event="e", holder_pub=gt1.raw_public(HOLDER))
    good = gt1.parse_qr(gt1.present(cred, holder_key=HOLDER, step=100))
    body = [cred, 101, good.proof]  # the proof of step 100 shown at step 101
    moved = gt1.parse_qr("GT1:" + b45encode(cbor2.dumps(body)))
    spliced = gt1.parse_qr("GT1:" + b45encode(cbor2.dumps([other, 100, good.proof])))
    assert gt1.verify_proof(good)
    assert not gt1.verify_proof(moved)
    assert not gt1.verify_proof(spliced)


def _qr(obj) -> str:
    return "GT1:" + b45encode(cbor2.dumps(obj))


@pytest.mark.parametrize("make", [
    lambda c: _qr([c, None]),                       # wrong arity
    lambda c: _qr({"c": c}),                        # not an array
    lambda c: _qr([c, 5, None]),                    # step without proof
    lambda c: _qr([c, None, b"x" * 64]),            # proof without step
    lambda c: _qr([c, -1, b"x" * 64]),              # negative step
    lambda c: _qr([c, 1, b"x" * 10]),               # short proof
    lambda c: _qr([c.decode("latin1"), None, None]),  # credential as text
    lambda c: "GT1:" + b45encode(cbor2.dumps([c, None, None]) + b"\x00"),  # trailing bytes
    lambda c: _qr([cbor2.dumps(cbor2.CBORTag(98, [1])), None, None]),      # wrong tag
    lambda c: "GT1:" + b45encode(b"\x81" * 50 + b"\x01"),                  # deep nesting
    lambda c: "GT1:" + b45encode(b"\x9f\x01\xff"),                        # indefinite array
    lambda c: "GT1:" + "A" * 5000,                                         # oversized
])
def test_malformed_structures_raise_malformed_only(make):
    cred = gt1.issue(ISSUER, ticket_id=b"z" * 16, event="e")
    with pytest.raises(gt1.Malformed):
        gt1.parse_qr(make(cred))


def _cred_with_claims(claims: dict) -> bytes:
    protected = cbor2.dumps({1: -8, 4: gt1.kid_for(gt1.raw_public(ISSUER))})
    payload = cbor2.dumps(claims)
    sig = ISSUER.sign(cbor2.dumps(["Signature1", protected, b"", payload]))
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, sig]))


@pytest.mark.parametrize("claims", [
    {7: b"short", -70001: "e"},                       # cti too short
    {7: b"x" * 16},                                   # no event
    {7: b"x" * 16, -70001: 5},                        # event not text
    {7: b"x" * 16, -70001: "e", 4: "tomorrow"},       # exp not int
    {7: b"x" * 16, -70001: "e", -70004: -1},          # negative entries
    {7: b"x" * 16, -70001: "e", -70006: 1},           # fce not bool
    {7: b"x" * 16, -70001: "e", 8: {1: {1: 2, -1: 6, -2: b"k" * 32}}},  # not OKP
    {7: b"x" * 16, -70001: "e", 8: {1: {1: 1, -1: 6, -2: b"k" * 31}}},  # short key
])
def test_claim_types_are_checked_even_when_signed(claims):
    with pytest.raises(gt1.Malformed):
        gt1.parse_qr(_qr([_cred_with_claims(claims), None, None]))


def test_unknown_claims_are_ignored():
    cred = _cred_with_claims({7: b"x" * 16, -70001: "e", 99: "future", -70099: [1, 2]})
    p = gt1.parse_qr(_qr([cred, None, None]))
    assert p.claims.evt == "e" and gt1.verify_issuer(p, ISSUER.public_key())
