"""Mint GT1 conformance scenarios of the same shape as gt1-scenarios.json, with
fresh keys and tickets (see README.md in this folder for the shape).

    python tests/vectors/generate.py --out FILE [--seed N]

The same seed gives the same file byte for byte (keys, ticket ids and times are
derived from it; Ed25519 signatures are deterministic). Without --seed a random
seed is used and written into the file (``generator.seed``), so a failing run can
be reproduced. Codes are minted with crypto.issuer / crypto.gt1; the deliberately
broken ones (tampered claims, a rogue key claiming a real kid, bad headers) are
built from raw CBOR here.

Every reason code that ``gate verify`` can answer without a camera is expected
at least once, on entry and exit lanes, including the checking order where two
rules fail at once. (FACE_MISMATCH needs a photo: tests/test_face.py covers it.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cbor2  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from crypto import gt1  # noqa: E402
from crypto.base45 import b45encode  # noqa: E402
from crypto.issuer import Wallet, ticket_record  # noqa: E402
from crypto.keyring import IssuerKey  # noqa: E402

STEP = gt1.STEP_SECONDS
FORMAT = "gt1-scenarios/1"


class Minter:
    """Keys, tickets and codes for one generated set, all derived from the seed."""

    def __init__(self, seed: int):
        self.seed = seed
        self.rng = random.Random(seed)
        self.event = f"evt-gen-{seed % 1_000_000:06d}"
        # a time inside a 15 s step, early enough that now + 2 s is the same step
        step = 120_000_000 + self.rng.randrange(1_000_000)
        self.now = step * STEP + self.rng.randrange(0, 10)
        self.tickets: dict[str, dict] = {}
        self.ring: list[dict] = []
        self.active = self.key("issuer-1")
        self.older = self.key("issuer-0")
        self.revoked = self.key("issuer-revoked")
        self.future = self.key("issuer-not-yet")
        self.past = self.key("issuer-expired")
        self._trust(self.older)
        self._trust(self.active)
        self._trust(self.revoked, status="revoked")
        self._trust(self.future, nbf=self.now + 3600)
        self._trust(self.past, exp=self.now - 3600)

    # ------------------------------------------------------------ material

    def _bytes(self, label: str, n: int = 32) -> bytes:
        return hashlib.sha256(f"gt1-vectors:{self.seed}:{label}".encode()).digest()[:n]

    def key(self, label: str) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self._bytes("key:" + label))

    def _trust(self, key, *, status="active", nbf=None, exp=None) -> None:
        pub = gt1.raw_public(key)
        self.ring.append(IssuerKey(gt1.kid_for(pub), pub, nbf, exp, status).to_json())

    def keyring(self) -> dict:
        return {"event": self.event, "keys": self.ring}

    def ticket(self, label: str, *, listed: bool = True, rotating: bool = True, size: int = 16,
               key=None, event: str | None = None, record: dict | None = None, **claims) -> Wallet:
        """Mint one ticket; unless ``listed`` is False its ledger record goes into the set.
        ``record`` overrides ledger fields; ``claims`` go into the credential."""
        tid = self._bytes("ticket:" + label, size)
        holder = self.key("holder:" + label) if rotating else None
        cred = gt1.issue(key or self.active, ticket_id=tid, event=event or self.event,
                         holder_pub=gt1.raw_public(holder) if holder else None, **claims)
        w = Wallet(tid.hex(), event or self.event, cred, holder)
        if listed:
            fields = {"tier": claims.get("tier", "GA"), "zone": claims.get("zone"),
                      "version": claims.get("version") or 1, "entries": 1 if claims.get("entries") is None
                      else claims["entries"], "reentry": bool(claims.get("reentry")),
                      "face_required": bool(claims.get("face"))}
            fields.update(record or {})
            self.tickets[w.ticket_id] = ticket_record(w, **fields)
        return w

    def code(self, w: Wallet, *, at: float | None = None, step: int | None = None) -> str:
        """The wallet's QR text: rotating at ``at``/``step`` (default now), or static."""
        if w.holder_key is None:
            return gt1.present(w.credential)
        if step is None:
            step = gt1.current_step(self.now if at is None else at)
        return gt1.present(w.credential, holder_key=w.holder_key, step=step)

    @property
    def step(self) -> int:
        return gt1.current_step(self.now)


# ---------------------------------------------------------------- raw builders


def _qr(body: list) -> str:
    return gt1.PREFIX + b45encode(cbor2.dumps(body))


def _proof(holder: Ed25519PrivateKey, credential: bytes, step: int) -> bytes:
    return holder.sign(cbor2.dumps([gt1.PROOF_CONTEXT, hashlib.sha256(credential).digest(), step]))


def _sign1(signer: Ed25519PrivateKey, claims: dict, *, kid: bytes | None = None,
           header: dict | None = None, unprotected: dict | None = None) -> bytes:
    """A COSE_Sign1 over ``claims`` built by hand (for the broken cases)."""
    protected = cbor2.dumps(header if header is not None
                            else {1: gt1.ALG_EDDSA, 4: kid or gt1.kid_for(gt1.raw_public(signer))})
    payload = cbor2.dumps(claims)
    sig = signer.sign(cbor2.dumps(["Signature1", protected, b"", payload]))
    return cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected or {}, payload, sig]))


def _split(credential: bytes) -> tuple[bytes, dict, bytes, bytes]:
    protected, unprotected, payload, sig = cbor2.loads(credential).value
    return protected, unprotected, payload, sig


def _rebuild(protected: bytes, payload: bytes, sig: bytes) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, sig]))


def _rotating(holder: Ed25519PrivateKey, credential: bytes, step: int) -> str:
    return _qr([credential, step, _proof(holder, credential, step)])


# ---------------------------------------------------------------- scenarios


def generate(seed: int) -> dict:
    m = Minter(seed)
    now, step, ev = m.now, m.step, m.event
    scenarios: list[dict] = []

    def add(name: str, steps: list[tuple], **lane) -> None:
        """steps: (qr, now, expect) or (qr, now, expect, step_mode)."""
        out = []
        for s in steps:
            st = {"qr": s[0], "now": s[1], "expect": s[2]}
            if len(s) > 3:
                st["lane"] = {"mode": s[3]}
            out.append(st)
        scenarios.append({"name": name, "lane": {"mode": lane.pop("mode", "entry"), **lane}, "steps": out})

    # --- admissions and allowance (row 13)
    w = m.ticket("basic")
    add("rotating-accept-then-already-used",
        [(m.code(w), now, "ACCEPT"), (m.code(w, at=now + STEP), now + STEP, "ALREADY_USED")])
    w = m.ticket("static", rotating=False)
    add("static-accept-then-already-used", [(m.code(w), now, "ACCEPT"), (m.code(w), now + 2, "ALREADY_USED")])
    w = m.ticket("two-entries", entries=2)
    add("two-entries-with-exits", [
        (m.code(w), now, "ACCEPT"), (m.code(w, at=now + 60), now + 60, "ACCEPT", "exit"),
        (m.code(w, at=now + 120), now + 120, "ACCEPT"), (m.code(w, at=now + 180), now + 180, "ACCEPT", "exit"),
        (m.code(w, at=now + 240), now + 240, "ALREADY_USED")])
    w = m.ticket("unlimited", entries=0)
    add("unlimited-entries", [(m.code(w, at=now + k * 30), now + k * 30, "ACCEPT") for k in range(3)])
    w = m.ticket("reentry", reentry=True)
    add("reentry-after-exit", [
        (m.code(w), now, "ACCEPT"), (m.code(w, at=now + 30), now + 30, "ALREADY_USED"),
        (m.code(w, at=now + 60), now + 60, "ACCEPT", "exit"), (m.code(w, at=now + 90), now + 90, "ACCEPT"),
        (m.code(w, at=now + 120), now + 120, "ALREADY_USED")])
    w = m.ticket("no-reentry")
    add("no-reentry-without-rex", [
        (m.code(w), now, "ACCEPT"), (m.code(w, at=now + 60), now + 60, "ACCEPT", "exit"),
        (m.code(w, at=now + 120), now + 120, "ALREADY_USED")])
    # ledger fields override the credential's claims when the ticket is listed
    w = m.ticket("ledger-entries", entries=5, record={"entries": 1})
    add("ledger-entries-override-claim",
        [(m.code(w), now, "ACCEPT"), (m.code(w, at=now + 30), now + 30, "ALREADY_USED")])
    w = m.ticket("ledger-zone", zone="B", record={"zone": "A"})
    add("ledger-zone-overrides-claim", [(m.code(w), now, "ACCEPT")], zones=["A"])

    # --- rotation, proof (rows 6-8) and replay (row 12)
    w = m.ticket("drift")
    add("one-step-behind-ok", [(m.code(w, step=step - 1), now, "ACCEPT")])
    w = m.ticket("drift-ahead")
    add("one-step-ahead-ok", [(m.code(w, step=step + 1), now, "ACCEPT")])
    behind, ahead = m.ticket("stale"), m.ticket("stale-ahead")
    add("stale-two-steps-behind-and-ahead", [(m.code(behind, step=step - 2), now, "STALE_CODE"),
                                             (m.code(ahead, step=step + 2), now, "STALE_CODE")])
    w = m.ticket("screenshot-later")
    shot = m.code(w)
    add("screenshot-shown-three-minutes-later", [(shot, now + 180, "STALE_CODE")])
    w = m.ticket("replay")
    add("replay-same-step", [(m.code(w), now, "ACCEPT"), (m.code(w), now + 2, "REPLAY"),
                             (m.code(w, at=now + STEP), now + STEP, "ALREADY_USED")])
    w = m.ticket("static-rot", rotating=False)
    add("static-on-rotating-lane", [(m.code(w), now, "PROOF_REQUIRED")], require_rotating=True)
    w = m.ticket("rot-on-rot")
    add("rotating-on-rotating-lane", [(m.code(w), now, "ACCEPT")], require_rotating=True)
    w = m.ticket("no-proof")
    add("rotating-credential-shown-static", [(gt1.present(w.credential), now, "PROOF_REQUIRED")])
    a, b, c, other = (m.ticket(n) for n in ("wrong-holder", "proof-step", "proof-cred", "proof-cred-other"))
    add("bad-proof-wrong-holder-other-step-other-credential", [
        (_rotating(m.key("thief"), a.credential, step), now, "BAD_PROOF"),
        (_qr([b.credential, step, _proof(b.holder_key, b.credential, step - 1)]), now, "BAD_PROOF"),
        (_qr([c.credential, step, _proof(c.holder_key, other.credential, step)]), now, "BAD_PROOF")])

    # --- issuer key and signature (rows 2-3)
    w = m.ticket("older-key", key=m.older)
    add("older-active-key-accepted", [(m.code(w), now, "ACCEPT")])
    # rejections change no state, so one scenario can hold several (each its own ticket)
    unknown = m.ticket("unknown-key", key=m.key("stranger"), listed=False)
    revoked_key = m.ticket("revoked-key", key=m.revoked)
    future_key = m.ticket("future-key", key=m.future)
    past_key = m.ticket("past-key", key=m.past)
    add("issuer-key-unknown-revoked-not-yet-valid-expired",
        [(m.code(w), now, "UNKNOWN_KEY") for w in (unknown, revoked_key, future_key, past_key)])
    w = m.ticket("tamper", entries=1)
    protected, _u, payload, sig = _split(w.credential)
    claims = cbor2.loads(payload)
    claims[gt1.C_ENT] = 0  # unlimited entries
    tampered = _rotating(w.holder_key, _rebuild(protected, cbor2.dumps(claims), sig), step)
    w = m.ticket("rogue")
    rogue_claims = cbor2.loads(_split(w.credential)[2])
    rogue = _rotating(w.holder_key, _sign1(m.key("rogue"), rogue_claims,
                                           kid=gt1.kid_for(gt1.raw_public(m.active))), step)
    w = m.ticket("bitflip")
    protected, _u, payload, sig = _split(w.credential)
    flipped = _rotating(w.holder_key, _rebuild(protected, payload, sig[:-1] + bytes([sig[-1] ^ 1])), step)
    add("bad-signature-tampered-claims-rogue-key-bit-flip",
        [(qr, now, "BAD_SIGNATURE") for qr in (tampered, rogue, flipped)])

    # --- event and validity window (rows 4-5), clock skew 30 s
    w = m.ticket("other-event", event=ev + "-other", listed=False)
    add("wrong-event", [(m.code(w), now, "WRONG_EVENT")])
    exp, nbf = m.ticket("expired", exp=now - 30), m.ticket("nyv", nbf=now + 31)
    add("expired-and-not-yet-valid-beyond-skew", [(m.code(exp), now, "EXPIRED"),
                                                  (m.code(nbf), now, "NOT_YET_VALID")])
    exp, nbf = m.ticket("expired-skew", exp=now - 29), m.ticket("nyv-skew", nbf=now + 30)
    add("expired-and-not-yet-valid-within-skew", [(m.code(exp), now, "ACCEPT"), (m.code(nbf), now, "ACCEPT")])

    # --- ledger state (rows 9-11)
    w = m.ticket("revoked", record={"status": "revoked"})
    add("revoked-ticket", [(m.code(w), now, "REVOKED")])
    old = m.ticket("transfer", record={"version": 2})
    new = Wallet(old.ticket_id, ev, gt1.issue(m.active, ticket_id=bytes.fromhex(old.ticket_id), event=ev,
                                              version=2, holder_pub=gt1.raw_public(m.key("buyer"))),
                 m.key("buyer"))
    add("transfer-old-code-superseded", [(m.code(old), now, "SUPERSEDED"), (m.code(new), now + 1, "ACCEPT")])
    w = m.ticket("newer-code", version=3, record={"version": 2})
    add("code-newer-than-ledger-accepted", [(m.code(w), now, "ACCEPT")])
    zone_b, zone_none = m.ticket("zone-b", zone="B"), m.ticket("zone-none")
    add("wrong-zone-and-no-zone", [(m.code(zone_b), now, "WRONG_ZONE"), (m.code(zone_none), now, "WRONG_ZONE")],
        zones=["A", "C"])
    w = m.ticket("zone-c", zone="C")
    add("zone-in-lane-list", [(m.code(w), now, "ACCEPT")], zones=["A", "C"])

    # --- tickets missing from the ledger
    w = m.ticket("unlisted", listed=False)
    add("unlisted-signed-admitted-once",
        [(m.code(w), now, "ACCEPT"), (m.code(w, at=now + 30), now + 30, "ALREADY_USED")])
    w = m.ticket("unlisted-two", listed=False, entries=2)
    add("unlisted-claims-give-the-allowance", [(m.code(w, at=now + k * 30), now + k * 30, e)
                                              for k, e in enumerate(["ACCEPT", "ACCEPT", "ALREADY_USED"])])
    w = m.ticket("unlisted-listed-lane", listed=False)
    add("unlisted-on-require-listed-lane", [(m.code(w), now, "NOT_IN_LEDGER")], require_listed=True)
    w = m.ticket("listed-listed-lane")
    add("listed-on-require-listed-lane", [(m.code(w), now, "ACCEPT")], require_listed=True)
    w = m.ticket("unlisted-exit", listed=False)
    add("unlisted-on-require-listed-exit-lane", [(m.code(w), now, "NOT_IN_LEDGER")],
        mode="exit", require_listed=True)

    # --- face (row 14), without a camera
    w = m.ticket("face-none", record={"face_required": True})
    add("face-required-but-none-enrolled", [(m.code(w), now, "NO_FACE_ENROLLED")])
    w = m.ticket("face-unlisted", listed=False, face=True)
    add("unlisted-face-claim-none-enrolled", [(m.code(w), now, "NO_FACE_ENROLLED")])
    template = struct.pack("<128d", *(m.rng.uniform(-0.2, 0.2) for _ in range(128)))
    w = m.ticket("face-enrolled", record={"face_required": True, "face_template": template})
    add("face-enrolled-but-no-face-captured", [(m.code(w), now, "FACE_REQUIRED")])
    w = m.ticket("face-exit", record={"face_required": True, "face_template": template})
    add("exit-lane-does-not-check-faces", [(m.code(w), now, "ACCEPT")], mode="exit")

    # --- exit lanes
    w = m.ticket("exit")
    add("exit-lane-records-exits", [(m.code(w), now, "ACCEPT"), (m.code(w), now + 2, "REPLAY"),
                                    (m.code(w, at=now + STEP), now + STEP, "ACCEPT")], mode="exit")
    w = m.ticket("exit-allowance")
    add("exit-lane-ignores-the-allowance", [
        (m.code(w), now, "ACCEPT", "entry"), (m.code(w, at=now + 30), now + 30, "ALREADY_USED", "entry"),
        (m.code(w, at=now + 60), now + 60, "ACCEPT")], mode="exit")
    w = m.ticket("exit-revoked", record={"status": "revoked"})
    add("exit-lane-revoked", [(m.code(w), now, "REVOKED")], mode="exit")
    w = m.ticket("exit-zone", zone="B")
    add("exit-lane-wrong-zone", [(m.code(w), now, "WRONG_ZONE")], mode="exit", zones=["A"])
    w = m.ticket("exit-stale")
    add("exit-lane-stale", [(m.code(w, step=step - 3), now, "STALE_CODE")], mode="exit")

    # --- ticket id sizes (cti 8 and 32 bytes)
    short, long_ = m.ticket("cti-8", size=8), m.ticket("cti-32", size=32)
    add("ticket-ids-of-8-and-32-bytes", [(m.code(short), now, "ACCEPT"), (m.code(long_), now, "ACCEPT")])

    # --- checking order: two rules fail, the earlier row wins
    o_exp = m.ticket("order-exp-stale", exp=now - 600)
    o_evt = m.ticket("order-event-proof", event=ev + "-other", listed=False)
    o_rev = m.ticket("order-revoked-zone", zone="B", record={"status": "revoked"})
    o_key = m.ticket("order-key-tamper", key=m.revoked)
    protected, _u, payload, _sig = _split(o_key.credential)
    o_stale = m.ticket("order-stale-proof")
    o_sup = m.ticket("order-superseded-zone", zone="B", record={"version": 2})
    add("checking-order-earlier-row-wins", [
        (m.code(o_exp, step=step - 40), now, "EXPIRED"),                                 # 5 before 7
        (_rotating(m.key("thief2"), o_evt.credential, step), now, "WRONG_EVENT"),       # 4 before 8
        (m.code(o_rev), now, "REVOKED"),                                                  # 9 before 11
        (_rotating(o_key.holder_key, _rebuild(protected, payload, bytes(64)), step), now,
         "UNKNOWN_KEY"),                                                                  # 2 before 3
        (_rotating(m.key("thief3"), o_stale.credential, step - 5), now, "STALE_CODE"),  # 7 before 8
        (m.code(o_sup), now, "SUPERSEDED"),                                               # 10 before 11
    ], zones=["A"])

    # --- malformed (row 1)
    w = m.ticket("malformed-base")
    good = m.code(w)
    body = gt1.b45decode(good[4:])
    cred, s, proof = cbor2.loads(body)
    claims = cbor2.loads(_split(cred)[2])
    bad: list[tuple[str, str]] = [
        ("wrong-prefix", "GT2:" + good[4:]),
        ("lowercase-base45", "GT1:" + good[4:].lower()),
        ("dangling-base45-char", good + "A" * ((1 - (len(good) - 4)) % 3 or 3)),
        ("base45-group-out-of-range", "GT1:GGW"),
        ("too-long", "GT1:" + "0" * (gt1.MAX_QR_CHARS - 3)),
        ("not-cbor", "GT1:" + b45encode(b"\xff\xfe\xfd")),
        ("trailing-bytes", "GT1:" + b45encode(body + b"\x00")),
        ("array-of-two", _qr([cred, s])),
        ("untagged-credential", _qr([cbor2.dumps(list(cbor2.loads(cred).value)), s, proof])),
        ("step-without-proof", _qr([cred, s, None])),
        ("proof-too-short", _qr([cred, s, proof[:32]])),
        ("negative-step", _qr([cred, -1, proof])),
        ("alg-es256", _qr([_sign1(m.active, claims, header={1: -7, 4: gt1.kid_for(gt1.raw_public(m.active))}),
                           None, None])),
        ("unprotected-header-not-empty", _qr([_sign1(m.active, claims, unprotected={4: b"x"}), None, None])),
        ("cti-too-short", _qr([_sign1(m.active, {**claims, gt1.C_CTI: b"1234567"}), None, None])),
        ("entries-as-text", _qr([_sign1(m.active, {**claims, gt1.C_ENT: "two"}), None, None])),
        ("event-missing", _qr([_sign1(m.active, {k: v for k, v in claims.items() if k != gt1.C_EVT}),
                               None, None])),
        ("cnf-not-ed25519", _qr([_sign1(m.active, {**claims, gt1.C_CNF: {1: {1: 2, -1: 1, -2: b"x" * 32}}}),
                                 None, None])),
    ]
    # the names document the cases; the scenario holds them as steps, in this order
    add(f"malformed-{len(bad)}-kinds", [(qr, now, "MALFORMED") for _name, qr in bad])

    return {
        "format": FORMAT,
        "generator": {"by": "tests/vectors/generate.py", "seed": seed},
        "event": ev,
        "keyring": m.keyring(),
        "tickets": list(m.tickets.values()),
        "step_seconds": STEP,
        "defaults": {"window_steps": 1, "clock_skew_s": 30},
        "scenarios": scenarios,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Mint GT1 conformance scenarios with fresh keys.")
    ap.add_argument("--out", required=True, metavar="FILE", help="write the scenarios JSON here ('-': stdout)")
    ap.add_argument("--seed", type=int, help="derive keys, tickets and times from this seed (default: random)")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(6), "big")
    text = json.dumps(generate(seed), indent=1) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        doc = json.loads(text)
        print(f"wrote {len(doc['scenarios'])} scenarios (seed {seed}) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
