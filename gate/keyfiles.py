"""The gate's two secret files, spelled once: ``keys/device.key`` (its identity:
the Ed25519 key central and the venue bus know it by) and ``keys/data.key``
(the AES-256 key the face templates are sealed with).

They are created once, by ``gate init`` (:func:`create_missing`). Everywhere
else a missing or damaged key is an operational error (:class:`ConfigError`,
exit 2) that names the file and what to do: a new key would silently give the
gate a new identity (central and peers refuse it) or make every stored face
template unreadable.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import sealed
from gate.errors import ConfigError
from gate.i18n import _

DEVICE_KEY = Path("keys") / "device.key"
DATA_KEY = Path("keys") / "data.key"
_CHECK_SETTING = "keys.data_check"  # sealed known text: proves data.key is the key this database was set up with
_CHECK_TEXT, _CHECK_AAD = b"gate data key check", b"keys.data_check"


def device_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / DEVICE_KEY


def data_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / DATA_KEY


def _restore(data_dir: Path) -> str:
    return _("restore it from this gate's backup; or set the gate up again in an empty directory "
             "(gate --data NEWDIR init --event EVENT) and enrol it with central. Nothing was changed in {data}").format(
        data=data_dir)


def _missing(path: Path, exc: Exception) -> str:
    """The key file's problem in the process language when it is simply missing
    (the common case); the crypto layer's own words otherwise."""
    return _("{file} is missing").format(file=path) if not path.exists() and not path.is_symlink() else str(exc)


def load_device_key(data_dir: Path) -> Ed25519PrivateKey:
    """This gate's signing key; ConfigError (exit 2) naming the file when it is missing or damaged."""
    try:
        return sealed.load_ed25519(device_key_path(data_dir))
    except sealed.KeyFileError as exc:
        exc = _missing(device_key_path(data_dir), exc)
        raise ConfigError(_("{problem}: it is this gate's identity (central and the venue bus know its "
                            "public key); {what_to_do}").format(problem=exc, what_to_do=_restore(data_dir))) from None


def load_data_key(data_dir: Path) -> bytes:
    """The key the face templates are sealed with; ConfigError (exit 2) naming the file when
    it is missing or damaged."""
    try:
        return sealed.load_data_key(data_key_path(data_dir))
    except sealed.KeyFileError as exc:
        exc = _missing(data_key_path(data_dir), exc)
        raise ConfigError(_("{problem}: it encrypts the face templates stored on this gate; {what_to_do}").format(
            problem=exc, what_to_do=_restore(data_dir))) from None


def create_missing(data_dir: Path) -> None:
    """``gate init`` only: create the keys that do not exist yet (an existing key is kept)."""
    if not device_key_path(data_dir).exists():
        sealed.create_ed25519(device_key_path(data_dir))
    if not data_key_path(data_dir).exists():
        sealed.create_data_key(data_key_path(data_dir))


def remember_data_key(conn: sqlite3.Connection, key: bytes) -> None:
    """Store a check value sealed with ``key`` (setup), so a later open can tell a
    replaced data.key from the right one (call inside a transaction)."""
    from gate.db import get_setting, put_setting

    if get_setting(conn, _CHECK_SETTING) is None:
        put_setting(conn, _CHECK_SETTING, sealed.seal(key, _CHECK_TEXT, _CHECK_AAD).hex())


def check_data_key(conn: sqlite3.Connection, key: bytes, data_dir: Path) -> None:
    """ConfigError when ``key`` is not the key this database's templates were sealed with
    (its check value, else one stored template, does not open)."""
    from gate.db import get_setting

    check = get_setting(conn, _CHECK_SETTING)
    try:
        if isinstance(check, str):
            sealed.unseal(key, bytes.fromhex(check), _CHECK_AAD)
            return
        row = conn.execute("SELECT ticket_id, face_template FROM tickets"
                           " WHERE face_template IS NOT NULL LIMIT 1").fetchone()
        if row is not None:
            sealed.unseal(key, row[1], row[0].encode())
    except (InvalidTag, ValueError):
        raise ConfigError(_("{file} is not the key this gate's face templates were "
                            "sealed with (a different file): {what_to_do}").format(
            file=data_key_path(data_dir), what_to_do=_restore(data_dir))) from None
