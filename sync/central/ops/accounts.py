"""Ops accounts: scrypt-hashed passwords with a per-user salt, and sessions.
Nothing here locks an account: wrong passwords are throttled per client
address and per (name, address) before they are checked (:mod:`.throttle`),
so nobody can lock the ops manager out from another address. Setting a new
password or removing an account ends its sessions."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

ROLES = ("viewer", "admin")
SESSION_S = 12 * 3600
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
# scrypt cost: ~50 ms and 16 MB per check on this class of machine
SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}


class AuthError(Exception):
    """Refused credentials; the message is safe to show."""


def _kdf(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add(db, name: str, password: str, role: str, *, now: float) -> None:
    if not NAME_RE.match(name):
        raise ValueError("an ops account name is 1-64 letters, digits or _ . @ -")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise ValueError("the password must have at least 8 characters")
    salt = secrets.token_bytes(16)
    params = {"n": name, "r": role, "s": salt.hex(), "h": _kdf(password, salt).hex(), "c": now}
    with db.writer() as w:
        if w.one("SELECT name FROM ops_accounts WHERE name = :n", {"n": name}):
            w.run("UPDATE ops_accounts SET role = :r, salt = :s, pwhash = :h, failed = 0, locked_until = 0"
                  " WHERE name = :n", params)
            w.run("DELETE FROM ops_sessions WHERE name = :n", params)  # a reset ends every session
        else:
            w.run("INSERT INTO ops_accounts (name, role, salt, pwhash, failed, locked_until, created)"
                  " VALUES (:n, :r, :s, :h, 0, 0, :c)", params)


def remove(db, name: str) -> bool:
    """Remove an account and end its sessions; False when there was none."""
    with db.writer() as w:
        w.run("DELETE FROM ops_sessions WHERE name = :n", {"n": name})
        return w.run("DELETE FROM ops_accounts WHERE name = :n", {"n": name}) > 0


_DUMMY_SALT = secrets.token_bytes(16)


def check(db, name: str, password: str) -> str:
    """Return the account's role, or raise AuthError. Costs one scrypt whether or not
    the name exists, and says the same thing either way."""
    acc = None
    if NAME_RE.match(name):
        with db.reader() as r:
            acc = r.one("SELECT name, role, salt, pwhash FROM ops_accounts WHERE name = :n", {"n": name})
    if acc is None:
        _kdf(password, _DUMMY_SALT)
        raise AuthError("wrong name or password")
    if hmac.compare_digest(_kdf(password, bytes.fromhex(acc["salt"])).hex(), acc["pwhash"]):
        return acc["role"]
    raise AuthError("wrong name or password")


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived from it, so it is bound to that session
    and changes with it (never accepted for another one)."""
    return hmac.new(session_token.encode(), b"ops-csrf", hashlib.sha256).hexdigest()[:43]


def open_session(db, name: str, *, now: float) -> str:
    token = secrets.token_urlsafe(32)
    with db.writer() as w:
        w.run("DELETE FROM ops_sessions WHERE expires < :now", {"now": now})
        w.run("INSERT INTO ops_sessions (token_hash, name, created, expires) VALUES (:t, :n, :c, :e)",
              {"t": token_hash(token), "n": name, "c": now, "e": now + SESSION_S})
    return token


def session_user(db, token: str, *, now: float) -> dict | None:
    with db.reader() as r:
        return r.one("SELECT a.name AS name, a.role AS role FROM ops_sessions s"
                     " JOIN ops_accounts a ON a.name = s.name WHERE s.token_hash = :t AND s.expires > :now",
                     {"t": token_hash(token), "now": now})


def close_session(db, token: str) -> None:
    with db.writer() as w:
        w.run("DELETE FROM ops_sessions WHERE token_hash = :t", {"t": token_hash(token)})
