"""GT1 credentials (docs/gt1.md): COSE_Sign1 / EdDSA over CWT claims, shown as
``"GT1:" + base45(CBOR [credential, step, proof])``.

Both sides live here: the issuer and holder sides (``issue``, ``present``) for
the reference central, the wallet simulator, tests and the demo, and the
verifier side (``parse_qr``, ``verify_issuer``, ``verify_proof``) for the gate.

Decoding is strict and bounded: the QR text is size-checked before anything is
decoded, CBOR is read with a depth limit, no indefinite lengths, no duplicate
keys and no trailing bytes, and every claim is type-checked. Any violation
raises :class:`Malformed`; nothing else escapes ``parse_qr``.
No function here reads a clock: time is always passed in.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crypto.base45 import Base45Error, b45decode, b45encode

PREFIX = "GT1:"
MAX_QR_CHARS = 4096
STEP_SECONDS = 15
COSE_SIGN1_TAG = 18
ALG_EDDSA = -8
PROOF_CONTEXT = "GT1-proof"
MAX_DEPTH = 6  # outer array > tag > Sign1 array > ... ; claims: map > cnf > COSE_Key

# CWT / GT1 claim keys
C_ISS, C_EXP, C_NBF, C_IAT, C_CTI, C_CNF = 1, 4, 5, 6, 7, 8
C_EVT, C_TIER, C_ZONE, C_ENT, C_VER, C_FCE, C_REX = (
    -70001, -70002, -70003, -70004, -70005, -70006, -70007,
)
_INT64 = (-(2**63), 2**63 - 1)


class Malformed(ValueError):
    """The QR text is not a well-formed GT1 code. ``code`` names the layer that
    failed (TOO_LONG, PREFIX, BASE45, CBOR, STRUCTURE, COSE, CLAIMS, NOT_TEXT);
    ``str()`` says which part, for people."""

    def __init__(self, message: str, *, code: str = "STRUCTURE"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Claims:
    cti: bytes
    evt: str
    tier: str = ""
    iss: str | None = None
    exp: int | None = None
    nbf: int | None = None
    iat: int | None = None
    holder_pub: bytes | None = None  # cnf: the holder's raw Ed25519 key
    zone: str | None = None
    ent: int = 1
    ver: int = 1
    fce: bool = False
    rex: bool = False

    @property
    def ticket_id(self) -> str:
        return self.cti.hex()


@dataclass(frozen=True, slots=True)
class Presented:
    """A parsed (not yet verified) GT1 code."""

    credential: bytes  # the COSE_Sign1 bytes, as in the QR
    kid: bytes
    signed: bytes = field(repr=False)  # COSE Sig_structure the issuer signed
    signature: bytes = field(repr=False)
    claims: Claims
    step: int | None
    proof: bytes | None = field(repr=False)

    @property
    def rotating(self) -> bool:
        return self.step is not None


# ---------------------------------------------------------------- helpers


def kid_for(public_raw: bytes) -> bytes:
    """Key id: first 8 bytes of SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(public_raw).digest()[:8]


def raw_public(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def current_step(now: float) -> int:
    return int(now // STEP_SECONDS)


def _bstr_head(n: int) -> bytes:
    """CBOR major type 2 (byte string) header for length ``n``, shortest form."""
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    if n < 0x10000:
        return b"\x59" + n.to_bytes(2, "big")
    return b"\x5a" + n.to_bytes(4, "big")


_SIG1_PREFIX = b"\x84\x6aSignature1"  # array(4), text(10) "Signature1"


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    """CBOR(["Signature1", protected, h'', payload]) (RFC 9052 Sig_structure),
    built directly: the same bytes cbor2.dumps gives, without the encoder."""
    return b"".join((_SIG1_PREFIX, _bstr_head(len(protected)), protected, b"\x40",
                     _bstr_head(len(payload)), payload))


def _proof_message(credential: bytes, step: int) -> bytes:
    return proof_message(hashlib.sha256(credential).digest(), step)


def proof_message(credential_sha256: bytes, step: int) -> bytes:
    """What the holder key signs for a rotating code (the central re-checks it
    from a scan record's ``cred_sha`` and ``proof``)."""
    return cbor2.dumps([PROOF_CONTEXT, credential_sha256, step])


_local = threading.local()


def _decoder() -> cbor2.CBORDecoder:
    """One strict decoder per thread, re-pointed at each input (building one
    per call cost a third of the decode)."""
    dec = getattr(_local, "decoder", None)
    if dec is None:
        dec = _local.decoder = cbor2.CBORDecoder(io.BytesIO(b""), max_depth=MAX_DEPTH, allow_indefinite=False,
                                                 allow_duplicate_keys=False)
    return dec


def _strict_loads(data: bytes, what: str):
    fp = io.BytesIO(data)
    dec = _decoder()
    try:
        dec.fp = fp
        obj = dec.decode()
    except Exception as exc:  # cbor2 raises several types for hostile input
        _local.decoder = None  # never reuse a decoder left mid-item
        raise Malformed(f"{what}: invalid CBOR ({type(exc).__name__})", code="CBOR") from None
    if fp.tell() != len(data):
        raise Malformed(f"{what}: trailing bytes after CBOR item", code="CBOR")
    return obj


# ---------------------------------------------------------------- issuing


def issue(
    issuer_key: Ed25519PrivateKey,
    *,
    ticket_id: bytes,
    event: str,
    tier: str = "GA",
    holder_pub: bytes | None = None,
    iss: str = "central",
    zone: str | None = None,
    entries: int | None = None,
    version: int | None = None,
    face: bool | None = None,
    reentry: bool | None = None,
    nbf: int | None = None,
    exp: int | None = None,
    iat: int | None = None,
) -> bytes:
    """Mint a credential (COSE_Sign1 bytes). Optional claims are left out when None."""
    if not 8 <= len(ticket_id) <= 32:
        raise ValueError("ticket_id must be 8 to 32 bytes")
    claims: dict = {C_ISS: iss, C_CTI: ticket_id, C_EVT: event, C_TIER: tier}
    optional = {
        C_ZONE: zone, C_ENT: entries, C_VER: version, C_FCE: face, C_REX: reentry,
        C_NBF: nbf, C_EXP: exp, C_IAT: iat,
    }
    claims.update({k: v for k, v in optional.items() if v is not None})
    if holder_pub is not None:
        claims[C_CNF] = {1: {1: 1, -1: 6, -2: holder_pub}}
    protected = cbor2.dumps({1: ALG_EDDSA, 4: kid_for(raw_public(issuer_key))})
    payload = cbor2.dumps(claims)
    signature = issuer_key.sign(_sig_structure(protected, payload))
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature]))


def present(
    credential: bytes,
    *,
    holder_key: Ed25519PrivateKey | None = None,
    now: float | None = None,
    step: int | None = None,
) -> str:
    """The QR text a wallet shows: static without a holder key, else rotating
    for ``step`` (or the step of ``now``)."""
    if holder_key is None:
        body = [credential, None, None]
    else:
        if step is None:
            if now is None:
                raise ValueError("a rotating code needs now or step")
            step = current_step(now)
        body = [credential, step, holder_key.sign(_proof_message(credential, step))]
    return PREFIX + b45encode(cbor2.dumps(body))


# ---------------------------------------------------------------- verifying


def _opt_int(claims: dict, key: int, name: str) -> int | None:
    v = claims.get(key)
    if v is None:
        return None
    if type(v) is not int or not _INT64[0] <= v <= _INT64[1]:
        raise Malformed(f"claim {name} must be an integer", code="CLAIMS")
    return v


def _opt_uint(claims: dict, key: int, name: str, default: int) -> int:
    v = claims.get(key, default)
    if type(v) is not int or not 0 <= v <= _INT64[1]:
        raise Malformed(f"claim {name} must be an unsigned integer", code="CLAIMS")
    return v


def _opt_text(claims: dict, key: int, name: str) -> str | None:
    v = claims.get(key)
    if v is not None and type(v) is not str:
        raise Malformed(f"claim {name} must be text", code="CLAIMS")
    return v


def _opt_bool(claims: dict, key: int, name: str) -> bool:
    v = claims.get(key, False)
    if type(v) is not bool:
        raise Malformed(f"claim {name} must be a boolean", code="CLAIMS")
    return v


def _holder_key(cnf) -> bytes:
    if not isinstance(cnf, Mapping) or not isinstance(cnf.get(1), Mapping):
        raise Malformed("claim cnf must be {1: COSE_Key}", code="CLAIMS")
    ck = cnf[1]
    x = ck.get(-2)
    if ck.get(1) != 1 or ck.get(-1) != 6 or type(x) is not bytes or len(x) != 32:
        raise Malformed("cnf key must be an OKP Ed25519 COSE_Key", code="CLAIMS")
    return x


def parse_claims(payload: bytes) -> Claims:
    claims = _strict_loads(payload, "claims")
    if type(claims) is not dict and not isinstance(claims, Mapping):
        raise Malformed("claims must be a CBOR map", code="CLAIMS")
    get = claims.get
    cti, evt, cnf = get(C_CTI), get(C_EVT), get(C_CNF)
    if type(cti) is not bytes or not 8 <= len(cti) <= 32:
        raise Malformed("claim cti must be 8 to 32 bytes", code="CLAIMS")
    if type(evt) is not str:
        raise Malformed("claim evt must be text", code="CLAIMS")
    # Positional, in Claims' field order: this runs for every code a lane sees.
    return Claims(
        cti, evt,
        _opt_text(claims, C_TIER, "tier") or "",
        _opt_text(claims, C_ISS, "iss"),
        _opt_int(claims, C_EXP, "exp"),
        _opt_int(claims, C_NBF, "nbf"),
        _opt_int(claims, C_IAT, "iat"),
        None if cnf is None else _holder_key(cnf),
        _opt_text(claims, C_ZONE, "zone"),
        _opt_uint(claims, C_ENT, "ent", 1),
        _opt_uint(claims, C_VER, "ver", 1),
        _opt_bool(claims, C_FCE, "fce"),
        _opt_bool(claims, C_REX, "rex"),
    )


def parse_credential(credential: bytes) -> tuple[bytes, bytes, bytes, Claims]:
    """Split a COSE_Sign1 credential into (kid, signed bytes, signature, claims)."""
    msg = _strict_loads(credential, "credential")
    if not isinstance(msg, cbor2.CBORTag) or msg.tag != COSE_SIGN1_TAG:
        raise Malformed("credential must be a tagged COSE_Sign1 (tag 18)", code="COSE")
    parts = msg.value
    if not isinstance(parts, (list, tuple)) or len(parts) != 4:
        raise Malformed("COSE_Sign1 must be an array of 4", code="COSE")
    protected, unprotected, payload, signature = parts
    if type(protected) is not bytes or type(payload) is not bytes:
        raise Malformed("COSE_Sign1 protected header and payload must be byte strings", code="COSE")
    if not isinstance(unprotected, Mapping) or unprotected:
        raise Malformed("COSE_Sign1 unprotected header must be an empty map", code="COSE")
    if type(signature) is not bytes or len(signature) != 64:
        raise Malformed("COSE_Sign1 signature must be 64 bytes", code="COSE")
    header = _strict_loads(protected, "protected header")
    if not isinstance(header, Mapping) or header.get(1) != ALG_EDDSA or type(header.get(1)) is not int:
        raise Malformed("protected header must name alg EdDSA (-8)", code="COSE")
    kid = header.get(4)
    if type(kid) is not bytes or len(kid) != 8:
        raise Malformed("protected header kid must be 8 bytes", code="COSE")
    return kid, _sig_structure(protected, payload), signature, parse_claims(payload)


def parse_qr(text: str) -> Presented:
    """Parse QR text into a :class:`Presented`; raises :class:`Malformed` only."""
    if not isinstance(text, str):
        raise Malformed("QR text must be a string", code="NOT_TEXT")
    if len(text) > MAX_QR_CHARS:
        raise Malformed(f"QR text longer than {MAX_QR_CHARS} characters", code="TOO_LONG")
    if not text.startswith(PREFIX):
        raise Malformed("not a GT1 code (prefix)", code="PREFIX")
    try:
        raw = b45decode(text[len(PREFIX):])
    except Base45Error as exc:
        raise Malformed(f"base45: {exc}", code="BASE45") from None
    body = _strict_loads(raw, "code")
    if not isinstance(body, list) or len(body) != 3:
        raise Malformed("code must be a CBOR array [credential, step, proof]", code="STRUCTURE")
    credential, step, proof = body
    if type(credential) is not bytes:
        raise Malformed("credential must be a byte string", code="STRUCTURE")
    if step is not None and (type(step) is not int or not 0 <= step <= _INT64[1]):
        raise Malformed("step must be null or an unsigned integer", code="STRUCTURE")
    if proof is not None and (type(proof) is not bytes or len(proof) != 64):
        raise Malformed("proof must be null or a 64-byte signature", code="STRUCTURE")
    if (step is None) != (proof is None):
        raise Malformed("step and proof must both be null or both be set", code="STRUCTURE")
    kid, signed, signature, claims = parse_credential(credential)
    return Presented(credential, kid, signed, signature, claims, step, proof)


def verify_issuer(p: Presented, issuer_pub: Ed25519PublicKey) -> bool:
    try:
        issuer_pub.verify(p.signature, p.signed)
    except InvalidSignature:
        return False
    return True


def verify_proof(p: Presented) -> bool:
    """Holder proof of possession for a rotating code (requires cnf and step)."""
    if p.claims.holder_pub is None or p.step is None or p.proof is None:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(p.claims.holder_pub).verify(
            p.proof, _proof_message(p.credential, p.step)
        )
    except (InvalidSignature, ValueError):
        return False
    return True
