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


def cmd_pin_set(args) -> int:
    import getpass
    import sys
    from pathlib import Path

    from gate.appliance import Gate

    gate = Gate.open(Path(args.data))
    pin = sys.stdin.readline().strip() if not sys.stdin.isatty() else getpass.getpass("PIN: ")
    set_pin(gate, args.operator, pin)
    print(f"supervisor PIN set for {args.operator}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("pin", help="supervisor PINs for manual overrides",
                       description="Manage the supervisor PINs the staff UI asks for on manual admit/deny.")
    ps = p.add_subparsers(dest="pin_command", metavar="ACTION")
    ps.required = True
    q = ps.add_parser("set", help="set an operator's PIN (read from the terminal or stdin)",
                      description="Set OPERATOR's supervisor PIN (at least 4 digits).")
    q.add_argument("operator", metavar="OPERATOR")
    q.set_defaults(func=cmd_pin_set)
