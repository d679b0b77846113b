"""Hostile input: >= 100,000 mutated codes through the real decision path.
Nothing may raise and nothing may be accepted."""

from __future__ import annotations

import random

import cbor2

from crypto.base45 import ALPHABET, b45decode, b45encode
from crypto.issuer import ticket_record
from gate import ledger
from gate.decision import Mode, Reason
from conftest import write_jsonl

NOW = 1_807_283_662
TOTAL = 100_000


def _random_cbor(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.randrange(-2**64 + 1, 2**64)
    if kind == 1:
        return rng.randbytes(rng.randrange(80))
    if kind == 2:
        return "".join(rng.choice("abcGT1:é") for _ in range(rng.randrange(20)))
    if kind == 3:
        return rng.choice([None, True, False, 1.5, float("nan")])
    if kind == 4:
        return cbor2.CBORTag(rng.choice([18, 2, 24, 1, 99999]), rng.randbytes(8))
    if kind == 5:
        return rng.randbytes(64)
    if kind == 6:
        return [_random_cbor(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == 7:
        return {rng.randrange(-9, 9): _random_cbor(rng, depth + 1) for _ in range(rng.randrange(5))}
    return cbor2.CBORTag(18, [_random_cbor(rng, depth + 1) for _ in range(4)])


def _mutants(rng: random.Random, base: list[str], creds: list[bytes]):
    raws = [b45decode(q[4:]) for q in base]
    while True:
        q = rng.choice(base)
        i = rng.randrange(len(base))
        raw = raws[i]
        op = rng.randrange(9)
        if op == 0:  # change one character of the text
            pos = rng.randrange(len(q))
            yield q[:pos] + rng.choice(ALPHABET + "!a\x00é") + q[pos + 1:]
        elif op == 1:  # flip one bit of the decoded bytes
            b = bytearray(raw)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            yield "GT1:" + b45encode(bytes(b))
        elif op == 2:  # truncate the text or the bytes
            yield q[: rng.randrange(len(q))] if rng.random() < 0.5 else "GT1:" + b45encode(raw[: rng.randrange(len(raw))])
        elif op == 3:  # splice: another credential's signature onto this one
            body = cbor2.loads(raw)
            a = cbor2.loads(body[0])
            b = cbor2.loads(rng.choice(creds))
            parts = list(a.value)
            parts[3] = b.value[3]
            body[0] = cbor2.dumps(cbor2.CBORTag(18, parts))
            yield "GT1:" + b45encode(cbor2.dumps(body))
        elif op == 4:  # splice: another ticket's claims under this signature
            body = cbor2.loads(raw)
            a, b = cbor2.loads(body[0]), cbor2.loads(rng.choice(creds))
            parts = list(a.value)
            parts[2] = b.value[2]
            body[0] = cbor2.dumps(cbor2.CBORTag(18, parts))
            yield "GT1:" + b45encode(cbor2.dumps(body))
        elif op == 5:  # swap step / proof between codes
            body, other = cbor2.loads(raw), cbor2.loads(rng.choice(raws))
            body[rng.choice([1, 2])] = other[rng.choice([1, 2])]
            yield "GT1:" + b45encode(cbor2.dumps(body))
        elif op == 6:  # random CBOR
            yield "GT1:" + b45encode(cbor2.dumps(_random_cbor(rng)))
        elif op == 7:  # random bytes
            yield "GT1:" + b45encode(rng.randbytes(rng.randrange(1, 400)))
        else:  # oversized or duplicated
            yield q * rng.randrange(2, 20)


def test_hundred_thousand_mutants_never_raise_never_accept(gate, issuer, tmp_path):
    wallets = [issuer.mint(rotating=True, entries=0) for _ in range(3)]
    wallets += [issuer.mint(rotating=False, entries=0) for _ in range(3)]
    ledger.import_tickets(gate.conn, write_jsonl(tmp_path / "t.jsonl", [ticket_record(w, entries=0) for w in wallets]),
                          event=gate.policy.event, data_key=gate.data_key, now=0)
    base = [w.code(NOW) for w in wallets]
    # the originals are acceptable, so a mutant accepted would be a real hole
    assert all(gate.decide(q, now=NOW).reason is Reason.ACCEPT for q in base)
    rng = random.Random(20261123)
    seen = {}
    distinct = set()
    gen = _mutants(rng, base, [w.credential for w in wallets])
    count = 0
    while count < TOTAL:
        q = next(gen)
        if q in base or q in distinct:  # 100,000 different mutants, not a few repeated
            continue
        d = gate.decide(q, now=NOW, mode=Mode.ENTRY if count % 2 else Mode.EXIT)
        assert not d.accepted, f"mutant accepted: {q!r}"
        seen[d.reason] = seen.get(d.reason, 0) + 1
        distinct.add(q)
        count += 1
    # the mutants reached deep into the checks, not just the prefix test
    for reason in (Reason.MALFORMED, Reason.BAD_SIGNATURE, Reason.BAD_PROOF, Reason.UNKNOWN_KEY):
        assert seen.get(reason, 0) > 100, seen
