"""pretix codes decided offline, with no pretix server: pretix_sig1 signed
secrets (minted here with pretix's layout) and random secrets, through a real
gate on SQLite. These run wherever the test suite runs, even where pretix
itself cannot be installed."""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gate import ledger
from gate.appliance import Gate
from gate.decision import Mode, Reason, Sub
from gate.pretix_codes import parse_ticket_protobuf, split_sig1, ticket_id_for
from conftest import write_jsonl

NOW = 1_807_283_662
EVENT = "democon"


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ticket_protobuf(seed: str, item: int, *, valid_from: int | None = None, valid_until: int | None = None) -> bytes:
    """pretix's Ticket message: seed(1) string, item(2), variation(3), subevent(4), validFrom(5), validUntil(6)."""
    s = seed.encode()
    msg = b"\x0a" + _varint(len(s)) + s + b"\x10" + _varint(item)
    if valid_from is not None:
        msg += b"\x28" + _varint(valid_from)
    if valid_until is not None:
        msg += b"\x30" + _varint(valid_until)
    return msg


def sig1(key: Ed25519PrivateKey, payload: bytes) -> str:
    """reverse(base64(0x01 | u16 payload_len | u16 sig_len | payload | sig)), as pretix mints it."""
    sig = key.sign(payload)
    raw = b"\x01" + struct.pack(">HH", len(payload), len(sig)) + payload + sig
    return base64.b64encode(raw).decode()[::-1]


@pytest.fixture
def key():
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture
def pgate(tmp_path, key):
    g = Gate.init(tmp_path / "gate", event=EVENT)
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    g.set_pretix({"url": "https://pretix.example/democon", "keys": [base64.b64encode(pem).decode()]})
    yield g
    g.close()


def _list(g, tmp_path, secrets: dict[str, str]) -> None:
    """Put secrets in the ledger as sync.pretix does (keyed by ticket_id_for)."""
    ledger.import_tickets(g.conn, write_jsonl(tmp_path / "t.jsonl", [
        {"ticket_id": ticket_id_for(s), "event": EVENT, "tier": "GA", "zone": None, "version": 1,
         "status": st, "entries": 1, "reentry": False, "face_required": False, "face_template": None,
         "holder": None} for s, st in secrets.items()]), event=EVENT, data_key=g.data_key, now=NOW)


def test_signed_secret_round_trips_through_the_parser(key):
    payload = ticket_protobuf("a1b2c3", 17, valid_from=NOW - 10, valid_until=NOW + 10)
    got_payload, sig = split_sig1(sig1(key, payload))
    assert got_payload == payload and len(sig) == 64
    assert parse_ticket_protobuf(payload) == {"seed": b"a1b2c3", "item": 17, "valid_from": NOW - 10,
                                              "valid_until": NOW + 10}
    assert split_sig1("not-a-signed-secret") is None


def test_a_signed_secret_sold_after_the_last_sync_is_admitted_once(pgate, key):
    code = sig1(key, ticket_protobuf("seed-1", 5))
    d, _ = pgate.scan(code, now=NOW)
    assert d.reason is Reason.ACCEPT and d.unlisted and d.ticket_id == ticket_id_for(code)
    assert pgate.scan(code, now=NOW + 5)[0].reason is Reason.ALREADY_USED
    assert pgate.decide(code, now=NOW + 6, mode=Mode.EXIT).reason is Reason.ACCEPT


def test_signed_secret_checks(pgate, key, tmp_path):
    other = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    assert pgate.decide(sig1(other, ticket_protobuf("x", 1)), now=NOW).reason is Reason.BAD_SIGNATURE
    future = sig1(key, ticket_protobuf("f", 1, valid_from=NOW + 3600))
    assert pgate.decide(future, now=NOW).reason is Reason.NOT_YET_VALID
    past = sig1(key, ticket_protobuf("p", 1, valid_until=NOW - 3600))
    assert pgate.decide(past, now=NOW).reason is Reason.EXPIRED
    garbled = sig1(key, b"\x0a\xff")  # signed, but the protobuf inside is truncated
    d = pgate.decide(garbled, now=NOW)
    assert (d.reason, d.sub) == (Reason.MALFORMED, Sub.PRETIX_PAYLOAD)
    # a revoked (reissued) or blocked secret still verifies: the lists decide
    revoked = sig1(key, ticket_protobuf("r", 1))
    _list(pgate, tmp_path, {revoked: "revoked"})
    assert pgate.decide(revoked, now=NOW).reason is Reason.REVOKED


def test_random_secrets_need_the_ledger(pgate, tmp_path):
    _list(pgate, tmp_path, {"k7mq2xv9": "valid"})
    assert pgate.decide("k7mq2xv9", now=NOW).reason is Reason.ACCEPT
    assert pgate.decide("zz99unknown", now=NOW).reason is Reason.NOT_IN_LEDGER
    d = pgate.decide("\x00\x01 control", now=NOW)
    assert (d.reason, d.sub) == (Reason.MALFORMED, Sub.NOT_PRETIX)
    # a GT1 code at a pretix gate still goes through the GT1 path
    assert pgate.decide("GT1:garbage", now=NOW).reason is Reason.MALFORMED


def test_require_listed_refuses_unlisted_signed_secrets(tmp_path, key):
    g = Gate.init(tmp_path / "strict", event=EVENT, require_listed=True)
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    g.set_pretix({"keys": [base64.b64encode(pem).decode()]})
    assert g.decide(sig1(key, ticket_protobuf("s", 1)), now=NOW).reason is Reason.NOT_IN_LEDGER
    g.close()
