"""Gate devices: enrolment codes, registration, tokens, status and quarantine.

A device is its id and its Ed25519 public key (the key that signs its chain
heads); its bearer token is what it authenticates with. Rules:

- An enrolment code is single-use and bound to its event. A plain code enrols
  a *new* device id only: it never replaces an existing device, so an active
  gate cannot be taken over and a revoked one cannot come back with it.
- A code made for one device (``gate central device enroll --device ID``)
  re-admits that device: same id, same key (its scan chain simply goes on), a
  new token; its old token stops working and it is active again. That is how a
  revoked gate comes back, or a gate that lost its token. A gate with a new
  key is a new device (``gate init`` gives it a new id).
- Wrong codes are counted per client address; more than
  :data:`BAD_CODES_PER_MINUTE` a minute answer 429.
- Quarantine (set by :mod:`.ingest` for implausible uploads) is lifted by ops
  with :func:`release_device`; a revoked device cannot be released (it has to
  be re-admitted first).

Each function takes the :class:`~sync.central.store.CentralStore` first (the
store binds them as its methods).
"""

from __future__ import annotations

import hashlib
import secrets
import time

from gate.errors import ConfigError
from sync.central.errors import CentralError

BAD_CODES_PER_MINUTE = 10


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def enrol_code(store, event: str | None = None, *, device_id: str | None = None) -> str:
    """A single-use enrolment code for ``event`` (a new gate), or, with
    ``device_id``, one that re-admits that enrolled device (its event's)."""
    code = "-".join(secrets.token_hex(2).upper() for _ in range(4))
    with store.writer() as db:
        if device_id is not None:
            row = db.one("SELECT event FROM devices WHERE device_id = :d", {"d": device_id})
            if row is None:
                raise ConfigError(f"no device {device_id}: a new gate needs a plain code "
                                  "('gate central device enroll --event E')")
            if event is not None and event != row[0]:
                raise ConfigError(f"device {device_id} is enrolled for event {row[0]!r}, not {event!r}")
            event = row[0]
        if event is None:
            raise ConfigError("name the event with --event")
        db.run("INSERT INTO enrol_codes (code_hash, event, created, device_id) VALUES (:h, :e, :t, :d)",
               {"h": hash_token(code), "e": event, "t": time.time(), "d": device_id})
    return code


def _refusal(code_row, device_row, device_id: str, pub: bytes, event: str | None) -> str | None:
    """Why this enrolment is refused, or None (the checks in order, see the module docstring)."""
    if code_row is None:
        return "unknown enrolment code"
    code_event, used_by, bound = code_row
    if used_by is not None:
        return "enrolment code already used (codes are single-use): make a new one"
    if event is not None and event != code_event:
        return "this enrolment code is for another event"
    if bound is not None and bound != device_id:
        return f"this enrolment code re-admits device {bound!r}, not {device_id!r}"
    if device_row is None:
        return None
    status, stored_pub = device_row[0], bytes(device_row[1])
    if bound is None:
        if status == "revoked":
            return (f"device {device_id!r} was revoked: ops can re-admit it with a code made for it "
                    f"('gate central device enroll --device {device_id}')")
        return f"device {device_id!r} is already enrolled: a new gate needs its own device id"
    if stored_pub != pub:
        return (f"device {device_id!r} is registered with another key: a gate with a new key is a new "
                "device (set it up with 'gate init' and enrol it with a plain code)")
    return None


def register(store, code: str, device_id: str, pub: bytes, *, event: str | None = None,
             client: str = "-") -> dict:
    """Enrol a device with a single-use code bound to its event (or re-admit the
    device a code was made for). Wrong codes answer 403 and are counted per
    client; more than 10 in a minute answer 429."""
    if len(pub) != 32:
        raise CentralError(400, "public_key must be a raw 32-byte Ed25519 key (base64url)")
    if not device_id or len(device_id) > 128:
        raise CentralError(400, "device_id must be 1-128 characters")
    now = time.time()
    with store.writer() as db:
        bad = db.scalar("SELECT count(*) FROM enrol_failures WHERE client = :c AND at > :since",
                        {"c": client, "since": now - 60})
        if bad >= BAD_CODES_PER_MINUTE:
            raise CentralError(429, "too many wrong enrolment codes from this address: wait a minute",
                               retry_after=60)
        code_row = db.one("SELECT event, used_by, device_id FROM enrol_codes WHERE code_hash = :h",
                          {"h": hash_token(code)})
        device_row = db.one("SELECT status, pub FROM devices WHERE device_id = :d", {"d": device_id})
        refusal = _refusal(code_row, device_row, device_id, pub, event)
        if refusal is None:
            token = secrets.token_urlsafe(32)
            ev = code_row[0]
            venue = db.scalar("SELECT venue FROM events WHERE event = :e", {"e": ev}) or ""
            if db.run("UPDATE enrol_codes SET used_by = :d, used_at = :t WHERE code_hash = :h AND used_by IS NULL",
                      {"d": device_id, "t": now, "h": hash_token(code)}) != 1:
                refusal = "enrolment code already used (codes are single-use): make a new one"
            elif device_row is None:
                db.run("INSERT INTO devices (device_id, event, venue, pub, token_hash, status, enrolled_at)"
                       " VALUES (:d, :e, :v, :p, :th, 'active', :t)",
                       {"d": device_id, "e": ev, "v": venue, "p": pub, "th": hash_token(token), "t": now})
            else:  # re-admitted: a new token, active again; quarantine and stored scans stay as they are
                db.run("UPDATE devices SET token_hash = :th, status = 'active' WHERE device_id = :d",
                       {"th": hash_token(token), "d": device_id})
        if refusal is not None:
            db.run("INSERT INTO enrol_failures (client, at, why) VALUES (:c, :t, :w)",
                   {"c": client, "t": now, "w": refusal})
    if refusal is not None:
        raise CentralError(403, refusal)
    return {"token": token, "event": ev, "venue": venue, "device_id": device_id}


def device_for_token(store, token: str, event: str | None = None) -> tuple[str, str, bytes]:
    """The device behind a token; with ``event``, also check it is the event the
    device is enrolled for (one device, one event: 403 on any other event's path,
    also another event of the same venue)."""
    with store.reader() as db:
        row = db.one("SELECT device_id, event, pub, status FROM devices WHERE token_hash = :h",
                     {"h": hash_token(token)})
    if row is None or row[3] != "active":
        raise CentralError(401, "unknown or revoked device token")
    if event is not None and event != row[1]:
        raise CentralError(403, f"this device is enrolled for event {row[1]!r}, not {event!r}")
    return row[0], row[1], bytes(row[2])


def revoke_device(store, device_id: str) -> None:
    """The device's token stops working at once; a code made for it re-admits it."""
    with store.writer() as db:
        if db.run("UPDATE devices SET status = 'revoked' WHERE device_id = :d", {"d": device_id}) != 1:
            raise ConfigError(f"no device {device_id}")


def release_device(store, device_id: str) -> bool:
    """Lift a quarantine (ops looked at the evidence). Admissions stored while
    quarantined stay unpropagated; new ones flow again. Returns False when the
    device was not quarantined (nothing changed). A revoked device is refused:
    its token does not work, so releasing it would change nothing."""
    with store.writer() as db:
        row = db.one("SELECT status, quarantined_at FROM devices WHERE device_id = :d", {"d": device_id})
        if row is None:
            raise ConfigError(f"no device {device_id}")
        if row[0] == "revoked":
            raise ConfigError(f"device {device_id} is revoked, not just quarantined: releasing it changes "
                              f"nothing. To bring it back, make a code for it ('gate central device enroll "
                              f"--device {device_id}'), enrol the gate with it, then release it")
        if row[1] is None:
            return False
        db.run("UPDATE devices SET quarantined_at = NULL, quarantine_reason = NULL WHERE device_id = :d",
               {"d": device_id})
        db.run("DELETE FROM lane_buckets WHERE device_id = :d", {"d": device_id})
    return True


def device_status(store, device_id: str) -> dict | None:
    with store.reader() as db:
        r = db.one("SELECT device_id, event, venue, status, quarantined_at, quarantine_reason FROM devices"
                   " WHERE device_id = :d", {"d": device_id})
    return None if r is None else {"device_id": r[0], "event": r[1], "venue": r[2], "status": r[3],
                                   "quarantined": r[4] is not None, "quarantine_reason": r[5]}
