"""The issuer side of GT1, as the central sale system uses it: an issuer key,
key ring export, ticket minting and wallet files.

Gates never hold any of this: they only get the public key ring. The reference
central, the wallet simulator, the demo and the tests use it.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from crypto import gt1
from crypto.keyring import IssuerKey, b64url_decode, b64url_encode
from crypto.sealed import write_secret


def private_raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@dataclass
class Wallet:
    """What a holder's phone keeps: the credential and the holder's private key."""

    ticket_id: str
    event: str
    credential: bytes
    holder_key: Ed25519PrivateKey | None = None

    def code(self, now: float) -> str:
        return gt1.present(self.credential, holder_key=self.holder_key, now=now)

    def to_json(self) -> dict:
        return {
            "format": "gt1-wallet/1",
            "ticket_id": self.ticket_id,
            "event": self.event,
            "credential": base64.b64encode(self.credential).decode(),
            "holder_key": None if self.holder_key is None
            else b64url_encode(private_raw(self.holder_key)),
        }

    @classmethod
    def from_json(cls, doc: dict) -> "Wallet":
        if doc.get("format") != "gt1-wallet/1":
            raise ValueError("not a GT1 wallet file (format gt1-wallet/1)")
        hk = doc.get("holder_key")
        return cls(doc["ticket_id"], doc["event"], base64.b64decode(doc["credential"]),
                   None if hk is None else Ed25519PrivateKey.from_private_bytes(b64url_decode(hk)))

    def save(self, path: Path) -> None:
        write_secret(path, json.dumps(self.to_json(), indent=1).encode())

    @classmethod
    def load(cls, path: Path) -> "Wallet":
        return cls.from_json(json.loads(Path(path).read_text()))


@dataclass
class Issuer:
    """An event's issuer: one or more signing keys (the newest signs)."""

    event: str
    keys: list[Ed25519PrivateKey] = field(default_factory=lambda: [Ed25519PrivateKey.generate()])
    revoked: set[bytes] = field(default_factory=set)
    name: str = "central"

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        return self.keys[-1]

    def rotate(self) -> Ed25519PrivateKey:
        self.keys.append(Ed25519PrivateKey.generate())
        return self.keys[-1]

    def keyring(self) -> dict:
        out = []
        for k in self.keys:
            pub = gt1.raw_public(k)
            kid = gt1.kid_for(pub)
            out.append(IssuerKey(kid, pub, None, None,
                                 "revoked" if kid in self.revoked else "active").to_json())
        return {"event": self.event, "keys": out}

    def mint(self, *, ticket_id: bytes | None = None, rotating: bool = True,
             event: str | None = None, **claims) -> Wallet:
        """Mint a ticket; ``claims`` are passed to :func:`crypto.gt1.issue`."""
        tid = ticket_id or os.urandom(16)
        holder = Ed25519PrivateKey.generate() if rotating else None
        cred = gt1.issue(self.signing_key, ticket_id=tid, event=event or self.event,
                         holder_pub=gt1.raw_public(holder) if holder else None,
                         iss=self.name, **claims)
        return Wallet(tid.hex(), event or self.event, cred, holder)


def ticket_record(w: Wallet, *, tier: str = "GA", zone: str | None = None, version: int = 1,
                  status: str = "valid", entries: int = 1, reentry: bool = False,
                  face_required: bool = False, face_template: bytes | None = None,
                  holder: str | None = None) -> dict:
    """A ticket record (docs/formats.md) for a wallet's ticket."""
    return {
        "ticket_id": w.ticket_id, "event": w.event, "tier": tier, "zone": zone,
        "version": version, "status": status, "entries": entries, "reentry": reentry,
        "face_required": face_required,
        "face_template": None if face_template is None else base64.b64encode(face_template).decode(),
        "holder": holder,
    }
