"""Supervisor PINs for everything in the staff UI that can let someone through
(manual admit/deny, entry/exit mode, pause/resume): scrypt hashes in the device
database, one per operator name. Every such command is logged with the operator.

A PIN is at least 6 digits. 5 wrong PINs in a row lock that operator name for
5 minutes; the lockout is stored in the database (it survives a restart) and
logged in the scan log.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from gate.db import get_setting, put_setting, transaction
from gate.errors import ConfigError
from gate.i18n import _

MIN_DIGITS = 6
MAX_FAILURES = 5
LOCKOUT_S = 300.0


def _hash(pin: str, salt: bytes) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


def _load(gate) -> dict:
    return get_setting(gate.conn, "operators", {})


def set_pin(gate, operator: str, pin: str) -> None:
    if len(pin) < MIN_DIGITS or not pin.isdigit():
        raise ConfigError(_("a supervisor PIN is at least {n} digits: choose a longer one").format(n=MIN_DIGITS))
    from gate.text import plain
    if not operator.strip() or plain(operator) != operator or len(operator) > 64:
        raise ConfigError(_("name the operator the PIN belongs to: printable text, at most 64 characters"))
    salt = os.urandom(16)
    with transaction(gate.conn):
        ops = _load(gate)
        ops[operator] = {"salt": salt.hex(), "hash": _hash(pin, salt).hex()}
        put_setting(gate.conn, "operators", ops)


@dataclass(frozen=True, slots=True)
class PinCheck:
    ok: bool
    locked_until: float | None = None  # set when the operator is locked out
    tries_left: int = MAX_FAILURES

    def __bool__(self) -> bool:
        return self.ok

    def message(self, operator: str) -> str:
        if self.ok:
            return _("{operator}: PIN accepted").format(operator=operator)
        if self.locked_until is not None:
            return _("{operator} is locked out after {n} wrong PINs: "
                     "another supervisor, or wait {minutes} minutes").format(
                operator=operator, n=MAX_FAILURES, minutes=f"{LOCKOUT_S / 60:.0f}")
        return _("wrong PIN for {operator}: nothing done ({n} tries left)").format(
            operator=operator, n=self.tries_left)


def check_pin(gate, operator: str, pin: str, *, now: float) -> PinCheck:
    """Check OPERATOR's PIN as of ``now``; count failures and lock out after 5."""
    locks = get_setting(gate.conn, "pin_lockout", {})
    until = (locks.get(operator) or {}).get("until")
    if until is not None and now < until:
        return PinCheck(False, locked_until=until, tries_left=0)
    rec = _load(gate).get(operator)
    ok = rec is not None and hmac.compare_digest(
        _hash(pin, bytes.fromhex(rec["salt"])), bytes.fromhex(rec["hash"]))
    with transaction(gate.conn):
        locks = get_setting(gate.conn, "pin_lockout", {})
        st = locks.get(operator) or {}
        if ok:
            if st:
                locks.pop(operator)
                put_setting(gate.conn, "pin_lockout", locks)
            return PinCheck(True)
        failures = (0 if st.get("until") is not None else st.get("failures", 0)) + 1
        if failures >= MAX_FAILURES:
            locks[operator] = {"failures": 0, "until": now + LOCKOUT_S}
            put_setting(gate.conn, "pin_lockout", locks)
            gate.control("pin_lockout", now=now, operator=operator,
                         until_ms=int((now + LOCKOUT_S) * 1000), failures=failures)
            return PinCheck(False, locked_until=now + LOCKOUT_S, tries_left=0)
        locks[operator] = {"failures": failures, "until": None}
        put_setting(gate.conn, "pin_lockout", locks)
        return PinCheck(False, tries_left=MAX_FAILURES - failures)
