"""The gate's venue-bus credential (docs/bus.md, "Transport"): an X.509
certificate issued by the event's bus CA at central for a TLS key made on this
gate, used by ``sync.bus_zenoh`` for mutual TLS between gates.

Files under ``DATA/keys`` (0600): ``bus-tls.key`` (PKCS#8 PEM, Ed25519, made
here and never sent), ``bus-tls.pem`` (the certificate, subject CN = device id)
and ``bus-ca.pem`` (the event's bus CA: the only issuer this gate accepts on the
bus). The sync pass asks for one when the gate has none, when less than a third
of its lifetime is left, or when it is for another device; a new key each time.
A gate without them (no central: ``gate init`` + ``gate bus trust``) speaks plain
TCP, and the application-level rules of gate/bus.py hold on their own.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from pathlib import Path

from crypto.sealed import write_secret
from gate.errors import ConfigError

KEY, CERT, CA = "bus-tls.key", "bus-tls.pem", "bus-ca.pem"
RENEW_FRACTION = 1 / 3  # ask for a new one when less than this part of the lifetime is left


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    device_id: str     # the certificate's subject CN
    not_before: float
    not_after: float
    issuer: str

    def expired(self, now: float) -> bool:
        return now >= self.not_after

    def due(self, now: float) -> bool:
        """Time to ask central for a new one."""
        return now >= self.not_after - (self.not_after - self.not_before) * RENEW_FRACTION

    def describe(self, now: float) -> str:
        until = datetime.datetime.fromtimestamp(self.not_after, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        state = "EXPIRED" if self.expired(now) else "valid"
        return f"mutual TLS, certificate for {self.device_id} from {self.issuer!r}, {state} until {until}"


def _paths(data_dir: Path) -> tuple[Path, Path, Path]:
    k = Path(data_dir) / "keys"
    return k / KEY, k / CERT, k / CA


def _check(key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> tuple[str, float, float, str]:
    """(device id, not before, not after, issuer) of a matching key, certificate and CA; ValueError otherwise."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key(key_pem, None)
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    if not isinstance(key, Ed25519PrivateKey) or not isinstance(cert.public_key(), Ed25519PublicKey):
        raise ValueError("the bus key and certificate must be Ed25519")
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    if key.public_key().public_bytes(*raw) != cert.public_key().public_bytes(*raw):
        raise ValueError("the certificate is not for this gate's bus key")
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:
        raise ValueError("the certificate is not issued by the bus CA") from None
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    issuer = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return (cn[0].value if cn else "", cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp(),
            issuer[0].value if issuer else "")


def load(data_dir: Path) -> TlsFiles | None:
    """This gate's bus credential, or None when it has none. Damaged files are a
    ConfigError that says what to do (the bus never falls back to plain TCP
    silently: its peers speak TLS only)."""
    kp, cp, ap = _paths(data_dir)
    present = [p.exists() for p in (kp, cp, ap)]
    if not any(present):
        return None
    try:
        dev, nb, na, issuer = _check(kp.read_bytes(), cp.read_bytes(), ap.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the venue bus credential in {kp.parent} is incomplete or damaged ({exc}): "
                          "run 'gate sync --once' to get a new one from central, or delete "
                          f"{KEY}, {CERT} and {CA} there to run the bus on plain TCP") from None
    return TlsFiles(ap, cp, kp, dev, nb, na, issuer)


def store(data_dir: Path, key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> TlsFiles:
    """Check and keep a credential (each file replaced atomically; a mismatch left
    by a crash between them is found by :func:`load` and renewed at the next sync)."""
    _check(key_pem, cert_pem, ca_pem)
    kp, cp, ap = _paths(data_dir)
    write_secret(ap, ca_pem)
    write_secret(kp, key_pem)
    write_secret(cp, cert_pem)
    got = load(data_dir)
    assert got is not None
    return got


def pull(gate, client, *, now: float) -> bool:
    """The sync step: ask central for a bus credential when due. True when a new
    one was stored. A central without bus credentials (404) is not an error: the
    bus then stays on plain TCP."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sync.engine import ApiError

    try:
        have = load(gate.data_dir)
    except ConfigError:
        have = None  # damaged: replace it
    if have is not None and have.device_id == gate.config.device_id and not have.due(now):
        return False
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        doc = client.bus_credential(gate.policy.event, base64.urlsafe_b64encode(pub).rstrip(b"=").decode())
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise
    cert, ca = doc.get("certificate"), doc.get("ca")
    if not isinstance(cert, str) or not isinstance(ca, str):
        raise ApiError("central sent a malformed bus credential (no certificate or CA)")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        dev = _check(key_pem, cert.encode(), ca.encode())[0]
    except ValueError as exc:
        raise ApiError(f"central sent an unusable bus credential: {exc}") from None
    if dev != gate.config.device_id:
        raise ApiError(f"central sent a bus certificate for {dev!r}, this gate is {gate.config.device_id!r}")
    store(gate.data_dir, key_pem, cert.encode(), ca.encode())
    return True
