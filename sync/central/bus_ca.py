"""Venue-bus credentials (docs/bus.md, "Transport"): one certificate authority
per event, and an X.509 certificate for each enrolled device's bus TLS key, so
gates accept on the bus only sessions that central enrolled for that event
(mutual TLS in ``sync.bus_zenoh``).

The CA is made on first use: its Ed25519 private key is a file (0600) under
``DIR/keys`` like the issuer keys, its certificate a row of ``bus_ca`` (several
serve processes racing to make it: the first row wins, the loser's key file is
never used). Each certificate issued is recorded in ``bus_certificates``
(serial, device, expiry) for the audit trail. A device gets a certificate only
with its own token, for its own event (the auth dependency), with subject CN =
its device id, valid from an hour ago (clock skew) to the event's end plus two
days, at most 30 days and at least one day; the gate asks again when a third of
that is left. Revocation is not checked by TLS (Zenoh has no CRL): a revoked
device gets no new certificate, its current one runs out, and meanwhile the
gates void what it publishes and ignore its liveness (gate/bus.py).

Tables: the schema revision ``bus_1_ca_certificates`` (sync/central/schema/versions).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import threading
import time

from sync.central.store import CentralError

CA_DAYS = 730
MAX_DAYS, MIN_DAYS, AFTER_END_DAYS = 30, 1, 2
SKEW_S = 3600


def _name(cn: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _utc(t: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc)


class BusCA:
    def __init__(self, store):
        self.store = store
        self._lock = threading.Lock()
        self._cache: dict = {}

    def ca(self, event: str):
        """(private key, certificate) of the event's bus CA, made on first use."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from crypto.sealed import write_secret

        with self._lock:
            got = self._cache.get(event)
            if got is not None:
                return got
            with self.store.reader() as db:
                row = db.one("SELECT cert, key_file FROM bus_ca WHERE event = :e", {"e": event})
            if row is None:
                key = Ed25519PrivateKey.generate()
                pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
                key_file = f"bus-ca-{hashlib.sha256(pub).hexdigest()[:16]}.key"
                write_secret(self.store.dir / "keys" / key_file, key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
                now = time.time()
                name = _name(f"GT1 venue bus CA, event {event}")
                cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                        .serial_number(x509.random_serial_number())
                        .not_valid_before(_utc(now - SKEW_S)).not_valid_after(_utc(now + CA_DAYS * 86400))
                        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                     content_commitment=False, key_encipherment=False,
                                                     data_encipherment=False, key_agreement=False,
                                                     encipher_only=False, decipher_only=False), critical=True)
                        .sign(key, None))
                with self.store.writer() as db:
                    db.run("INSERT INTO bus_ca (event, cert, key_file, created) VALUES (:e, :c, :k, :t)"
                           " ON CONFLICT (event) DO NOTHING",
                           {"e": event, "c": cert.public_bytes(serialization.Encoding.PEM).decode(),
                            "k": key_file, "t": now})
                with self.store.reader() as db:
                    row = db.one("SELECT cert, key_file FROM bus_ca WHERE event = :e", {"e": event})
            try:
                key = serialization.load_pem_private_key((self.store.dir / "keys" / row[1]).read_bytes(), None)
            except OSError:
                raise CentralError(500, f"the bus CA key of event {event} ({row[1]}) is missing from the central's "
                                        "keys directory: restore it from a backup") from None
            got = self._cache[event] = (key, x509.load_pem_x509_certificate(row[0].encode()))
            return got

    def issue(self, event: str, device_id: str, body: object) -> dict:
        """A certificate for the device's bus TLS key (``{"public_key": base64url
        of a raw Ed25519 key}``), for the event its token is bound to."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.x509.oid import ExtendedKeyUsageOID

        raw = body.get("public_key") if isinstance(body, dict) else None
        try:
            pub = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except (TypeError, ValueError):
            raise CentralError(400, "body needs public_key: base64url of a raw 32-byte Ed25519 key") from None
        ca_key, ca_cert = self.ca(event)
        now = time.time()
        info = self.store.event_info(event) or {}
        until = now + MAX_DAYS * 86400
        if info.get("ends_at"):
            until = min(until, info["ends_at"] + AFTER_END_DAYS * 86400)
        until = min(max(until, now + MIN_DAYS * 86400), ca_cert.not_valid_after_utc.timestamp())
        serial = x509.random_serial_number()
        cert = (x509.CertificateBuilder().subject_name(_name(device_id)).issuer_name(ca_cert.subject)
                .public_key(pub).serial_number(serial)
                .not_valid_before(_utc(now - SKEW_S)).not_valid_after(_utc(until))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, None))
        with self.store.writer() as db:
            db.run("INSERT INTO bus_certificates (serial, event, device_id, not_after, issued_at)"
                   " VALUES (:s, :e, :d, :n, :t)",
                   {"s": format(serial, "x"), "e": event, "d": device_id, "n": until, "t": now})
        pem = serialization.Encoding.PEM
        return {"device_id": device_id, "event": event, "not_after": until,
                "certificate": cert.public_bytes(pem).decode(), "ca": ca_cert.public_bytes(pem).decode()}
