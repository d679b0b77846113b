"""Supervisor PINs for manual overrides: scrypt hashes in the device database,
one per operator name. Every override is logged with the operator."""

from __future__ import annotations

import hashlib
import hmac
import os

from gate.db import get_setting, put_setting, transaction
from gate.errors import ConfigError


def _hash(pin: str, salt: bytes) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


def _load(gate) -> dict:
    return get_setting(gate.conn, "operators", {})


def set_pin(gate, operator: str, pin: str) -> None:
    if len(pin) < 4 or not pin.isdigit():
        raise ConfigError("a supervisor PIN is at least 4 digits")
    salt = os.urandom(16)
    ops = _load(gate)
    ops[operator] = {"salt": salt.hex(), "hash": _hash(pin, salt).hex()}
    with transaction(gate.conn):
        put_setting(gate.conn, "operators", ops)


def check_pin(gate, operator: str, pin: str) -> bool:
    rec = _load(gate).get(operator)
    if rec is None:
        return False
    return hmac.compare_digest(_hash(pin, bytes.fromhex(rec["salt"])), bytes.fromhex(rec["hash"]))
