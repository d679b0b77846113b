"""At-rest encryption of small secrets (biometric templates) and key files.

AES-256-GCM with a random 96-bit nonce; the ticket id is bound as associated
data so a template cannot be moved to another ticket's row.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

NONCE_LEN = 12


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_LEN)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Raises cryptography.exceptions.InvalidTag when the blob or key is wrong."""
    return AESGCM(key).decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], aad)


def write_secret(path: Path, data: bytes) -> None:
    """Write a secret file with 0600 permissions from the start (never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class KeyFileError(ValueError):
    """A key file that is missing or unusable. Keys are created once, at setup
    (:func:`create_data_key`, :func:`create_ed25519`); reading never creates one."""


def _read_key(path: Path, what: str) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path} is missing") from None
    except OSError as exc:
        raise KeyFileError(f"{path} cannot be read ({exc.strerror})") from None
    if len(raw) != 32:
        raise KeyFileError(f"{path} is not {what} ({len(raw)} bytes, expected 32)")
    return raw


def load_data_key(path: Path) -> bytes:
    """The 32-byte AES key in ``path``; KeyFileError when missing or damaged."""
    return _read_key(path, "a 32-byte data key")


def load_ed25519(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``path`` (32 raw bytes); KeyFileError when missing or damaged."""
    return Ed25519PrivateKey.from_private_bytes(_read_key(path, "an Ed25519 private key"))


def _create(path: Path, data: bytes) -> None:
    if path.exists():
        raise KeyFileError(f"{path} already exists: a key is never replaced")
    write_secret(path, data)


def create_data_key(path: Path) -> bytes:
    """A new AES-256 key written to ``path`` (setup only: an existing file is never replaced)."""
    key = AESGCM.generate_key(bit_length=256)
    _create(path, key)
    return key


def create_ed25519(path: Path) -> Ed25519PrivateKey:
    """A new Ed25519 key written to ``path`` (setup only: an existing file is never replaced)."""
    key = Ed25519PrivateKey.generate()
    _create(path, key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    return key
