"""Issuer key rings (key ring JSON, docs/formats.md): public keys only.

A ring holds several keys at once (rotation: old and new keys both active for a
while). A key is usable when its status is ``active`` and ``now`` lies inside its
``nbf``–``exp`` window.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from crypto.gt1 import kid_for


class KeyRingError(ValueError):
    """A key ring document is invalid; the message says which key and why."""


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class IssuerKey:
    kid: bytes
    pub: bytes  # raw 32 bytes
    nbf: int | None = None
    exp: int | None = None
    status: str = "active"

    def usable(self, now: float) -> bool:
        if self.status != "active":
            return False
        if self.nbf is not None and now < self.nbf:
            return False
        if self.exp is not None and now >= self.exp:
            return False
        return True

    def to_json(self) -> dict:
        return {
            "kid": self.kid.hex(), "alg": "EdDSA", "pub": b64url_encode(self.pub),
            "nbf": self.nbf, "exp": self.exp, "status": self.status,
        }


class KeyRing:
    """Issuer public keys by kid, with verified-key objects cached."""

    def __init__(self, keys: list[IssuerKey] = ()):  # type: ignore[assignment]
        self._keys = {k.kid: k for k in keys}
        self._loaded: dict[bytes, Ed25519PublicKey] = {}

    def __iter__(self):
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, kid: bytes) -> IssuerKey | None:
        return self._keys.get(kid)

    def usable_key(self, kid: bytes, now: float) -> Ed25519PublicKey | None:
        """The verifier for ``kid`` if it is known, active and valid at ``now``."""
        entry = self._keys.get(kid)
        if entry is None or not entry.usable(now):
            return None
        key = self._loaded.get(kid)
        if key is None:
            key = self._loaded[kid] = Ed25519PublicKey.from_public_bytes(entry.pub)
        return key


def _opt_time(item: dict, name: str, where: str) -> int | None:
    v = item.get(name)
    if v is not None and (type(v) is not int):
        raise KeyRingError(f"{where}: {name} must be an integer or null")
    if v is not None and not -(2 ** 63) < v < 2 ** 63:
        raise KeyRingError(f"{where}: {name} is out of range (unix seconds)")
    return v


def parse_keyring(doc: object) -> tuple[str, list[IssuerKey]]:
    """Validate a key ring JSON document; returns (event, keys)."""
    if not isinstance(doc, dict):
        raise KeyRingError("key ring must be a JSON object with 'event' and 'keys'")
    event = doc.get("event")
    if not isinstance(event, str) or not event:
        raise KeyRingError("key ring 'event' must be a non-empty string")
    items = doc.get("keys")
    if not isinstance(items, list):
        raise KeyRingError("key ring 'keys' must be a list")
    keys = []
    for i, item in enumerate(items):
        where = f"keys[{i}]"
        if not isinstance(item, dict):
            raise KeyRingError(f"{where}: must be an object")
        if item.get("alg") != "EdDSA":
            raise KeyRingError(f"{where}: alg must be 'EdDSA'")
        try:
            pub = b64url_decode(str(item.get("pub", "")))
            kid = bytes.fromhex(str(item.get("kid", "")))
        except (binascii.Error, ValueError):
            raise KeyRingError(f"{where}: pub must be base64url and kid hex") from None
        if len(pub) != 32:
            raise KeyRingError(f"{where}: pub must be a raw 32-byte Ed25519 key")
        if kid != kid_for(pub):
            raise KeyRingError(f"{where}: kid {kid.hex()} does not match its public key")
        status = item.get("status", "active")
        if status not in ("active", "revoked"):
            raise KeyRingError(f"{where}: status must be 'active' or 'revoked'")
        keys.append(IssuerKey(kid, pub, _opt_time(item, "nbf", where),
                              _opt_time(item, "exp", where), status))
    return event, keys
