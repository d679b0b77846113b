"""Claim links: how a ticket reaches a holder's phone (docs/wallet.md).

A ticket issued ``--claim`` waits for a holder: it is in the tickets table
(gates learn it at sync) with no holder key, and a **claim** row holds the
SHA-256 of a random token (192 bits) that only the claim link carries. The
wallet page makes the holder's Ed25519 key pair in the browser and sends the
public key with the token; the central then mints the credential bound to it
(``cnf``) and marks the claim used, in one transaction. Nothing else about the
ticket, and nothing about any other ticket, is reachable with the token.

- single use: a second claim of the same link is refused (``CLAIM_USED``),
  except a retry by the same key (a phone whose answer was lost gets the same
  credential again: it is useless without the private key that never left it);
- claims expire (``CLAIM_EXPIRED``); a transfer or reissue replaces the
  ticket's open claims (``CLAIM_REPLACED``);
- every refusal is counted per client address (the TCP peer, as for device
  enrolment); more than :data:`FAILURES_PER_MINUTE` in a minute answer 429;
- optional face binding: the holder consents, the page uploads three frames
  one by one; each is reduced to a face encoding at once (the photo is never
  written anywhere), and the claim fuses them into the ticket's template;
- the holder signs transfer and status requests with the wallet key:
  ``"GT1-wallet/1 " + action + " " + ticket_id + " " + version + " " + unix_time``
  (UTF-8, Ed25519). A transfer bumps the ticket version (older codes become
  ``SUPERSEDED`` at gates after sync) and returns a new claim link for the
  recipient.

Refusals are :class:`CentralError` with a stable ``code`` the wallet maps to
words in the holder's language.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from crypto import gt1
from gate.errors import ConfigError
from sync.central.feeds import reserve
from sync.central.store import CentralError
from sync.central.wallet import CLAIM_DAYS, FACE_POLICIES


CLAIM_PATH = "/wallet/claim"
TOKEN_BYTES = 24                 # 192 bits, base64url: 32 characters
FAILURES_PER_MINUTE = 10         # refusals per client address before 429
REQUEST_SLACK_S = 300            # a signed holder request must be this fresh (phone clocks drift)
FACE_FRAMES = 3                  # frames fused into a template (what reaches FAR 0 / FRR <= 3 % on real faces)
FACE_TRIES = 12                  # frames one claim may upload (each costs a face detection)
FACE_FRAME_TTL_S = 900           # encodings of an unfinished face capture are dropped after this
FACE_RETENTION_DAYS = 30         # face templates are deleted this long after the event ends
MAX_JPEG_BYTES = 44 * 1024       # one frame (the page sends 480 px JPEGs of ~25 KB; base64 fits the 64 KB body limit)
WALLET_CONTEXT = "GT1-wallet/1"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def claim_url(token: str, base_url: str | None) -> str:
    """The link a holder opens. The token is in the fragment: browsers never send
    it to a server (not in requests, logs or Referer); the page reads it."""
    path = f"{CLAIM_PATH}#{token}"
    return (base_url.rstrip("/") + path) if base_url else path


def holder_message(action: str, ticket_id: str, version: int, at: int) -> bytes:
    """What the wallet key signs for a transfer or status request."""
    return f"{WALLET_CONTEXT} {action} {ticket_id} {version} {at}".encode()


def _refuse(status: int, code: str, message: str, **extra) -> CentralError:
    return CentralError(status, message, code=code, **extra)


# refusals counted against the client address (too many in a minute: 429)
COUNTED = {"CLAIM_UNKNOWN": (404, "no such ticket link: check that the whole link was copied"),
           "CLAIM_USED": (410, "this ticket link has already been used: a ticket goes on one phone only"),
           "CLAIM_REPLACED": (410, "this ticket link was replaced: the ticket was transferred or reissued"),
           "CLAIM_EXPIRED": (410, "this ticket link has expired: ask the box office for a new one"),
           "BAD_SIGNATURE": (403, "the request is not signed by this ticket's wallet"),
           "STALE_REQUEST": (403, "the phone's clock is wrong by more than 5 minutes: set it to automatic time")}


class _Refused(Exception):
    """Raised inside a transaction; :meth:`Claims._tx` records it and answers."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Signed:
    """A holder's signed request (transfer or status)."""

    ticket_id: str
    version: int
    at: int
    signature: bytes


class Claims:
    """The claim links of one central store. ``clock`` is the central's clock
    (tests pass their own)."""

    def __init__(self, store, *, clock=time.time):
        self.store = store
        self.clock = clock
        self._purged_at = float("-inf")

    # ------------------------------------------------------------ box office

    def issue(self, event: str, *, count: int, tier: str = "GA", zone: str | None = None, entries: int = 1,
              face: str = "off", days: float = CLAIM_DAYS, base_url: str | None = None) -> list[dict]:
        """Tickets waiting for a holder, each with a claim link (one transaction)."""
        if not 1 <= count <= 100_000:
            raise ConfigError("--count must be 1 to 100000")
        if entries < 0:
            raise ConfigError("--entries must be 0 (unlimited) or more")
        if face not in FACE_POLICIES:
            raise ConfigError(f"--claim-face must be one of {', '.join(FACE_POLICIES)}")
        if not 0 < days <= 3650:
            raise ConfigError("--claim-days must be more than 0 and at most 3650")
        self.store.signing_key(event)  # no key, no tickets: say so before anything is written
        now = self.clock()
        made, tickets, claims = [], [], []
        for _ in range(count):
            tid, token = secrets.token_bytes(16).hex(), secrets.token_urlsafe(TOKEN_BYTES)
            tickets.append({"ticket_id": tid, "event": event, "tier": tier, "zone": zone, "version": 1,
                            "status": "valid", "entries": entries, "reentry": 0, "face_required": 0,
                            "face_template": None, "holder": None, "holder_pub": None})
            claims.append(self._claim_row(token, tid, event, 1, face, now, days))
            made.append({"ticket_id": tid, "claim_url": claim_url(token, base_url)})
        with self.store.writer() as db:
            first = reserve(db, "change", len(tickets)) - len(tickets) + 1
            for i, t in enumerate(tickets):
                t["change_seq"] = first + i
            cols = list(tickets[0])
            db.run(f"INSERT INTO tickets ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})", tickets)
            self._insert_claims(db, claims)
        return made

    def reissue(self, ticket_id: str, *, face: str | None = None, days: float = CLAIM_DAYS,
                base_url: str | None = None) -> dict:
        """Box office, a lost phone: version bump (every older code becomes SUPERSEDED
        at gates after sync) and a new claim link. ``face``: the new claim's face
        policy (default: the ticket's last claim's, else off)."""
        if face is not None and face not in FACE_POLICIES:
            raise ConfigError(f"--claim-face must be one of {', '.join(FACE_POLICIES)}")
        if not 0 < days <= 3650:
            raise ConfigError("--claim-days must be more than 0 and at most 3650")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with self.store.writer() as db:
            row = db.one("SELECT event, version, status FROM tickets WHERE ticket_id = :t", {"t": ticket_id})
            if row is None:
                raise ConfigError(f"no ticket {ticket_id}")
            event, version, status = row
            if status != "valid":
                raise ConfigError(f"ticket {ticket_id} is {status}: a {status} ticket cannot be reissued")
            policy = face or self._last_policy(db, ticket_id)
            self._bump(db, ticket_id, version)
            self._insert_claims(db, [self._claim_row(token, ticket_id, event, version + 1, policy,
                                                     self.clock(), days)])
        return {"ticket_id": ticket_id, "version": version + 1, "claim_url": claim_url(token, base_url)}

    # ------------------------------------------------------------ holder

    def open(self, token: str, *, client: str) -> dict:
        """What a claim link offers, before the holder takes it (no key yet)."""
        now = self.clock()
        with self._tx(client) as db:
            claim = self._usable(db, token, client, now)
            t = self._ticket(db, claim)
        return self._public(claim, t)

    def face_frame(self, token: str, jpeg: bytes, *, client: str) -> dict:
        """One frame of the holder's face: reduced to an encoding here and now (the
        photo is dropped), kept with the claim until it is taken. Returns how many
        usable frames the claim has, or the problem with this one."""
        if not jpeg or len(jpeg) > MAX_JPEG_BYTES:
            raise _refuse(413, "FACE_FRAME_SIZE", f"a face frame must be a JPEG of at most {MAX_JPEG_BYTES} bytes")
        now = self.clock()
        with self._tx(client) as db:
            claim = self._usable(db, token, client, now)
            if claim["face"] == "off":
                raise _refuse(400, "FACE_NOT_OFFERED", "this ticket is not bound to a face")
            if claim["face_tries"] >= FACE_TRIES:
                raise _refuse(429, "FACE_TRIES", "too many face photos for this ticket: ask the box office")
            db.run("UPDATE wallet_claims SET face_tries = face_tries + 1 WHERE token_hash = :h",
                   {"h": claim["token_hash"]})
        capture = _encode_face(jpeg)  # outside the write lock: ~0.1-0.3 s of dlib
        with self._tx(client) as db:
            claim = self._usable(db, token, client, self.clock())
            kept = _fresh_encodings(claim, now)
            if capture.encoding is None:
                return {"frames": len(kept), "needed": FACE_FRAMES, "problem": capture.sub.value
                        if capture.sub is not None else "POOR_CAPTURE"}
            kept = (kept + [list(capture.encoding)])[-FACE_FRAMES:]
            db.run("UPDATE wallet_claims SET face_encodings = :e, face_at = :t WHERE token_hash = :h",
                   {"e": json.dumps(kept), "t": now, "h": claim["token_hash"]})
        return {"frames": len(kept), "needed": FACE_FRAMES, "problem": None}

    def redeem(self, token: str, public_key: bytes, *, face: bool, client: str) -> dict:
        """Take the ticket: bind it to ``public_key`` and return the credential."""
        if len(public_key) != 32:
            raise _refuse(400, "BAD_KEY", "public_key must be a raw 32-byte Ed25519 key (base64url)")
        try:
            Ed25519PublicKey.from_public_bytes(public_key)
        except ValueError:
            raise _refuse(400, "BAD_KEY", "public_key is not an Ed25519 key") from None
        now = self.clock()
        with self.store.reader() as db:  # the event's key first: a missing key file writes nothing
            row = db.one("SELECT event FROM wallet_claims WHERE token_hash = :h", {"h": token_hash(token)})
        try:
            key = self.store.signing_key(row[0]) if row else None
        except ConfigError as exc:  # the box office's problem, not the holder's: say so, write nothing
            raise _refuse(503, "UNAVAILABLE", f"the central cannot sign tickets now ({exc}): try again later",
                          retry_after=60) from None
        with self._tx(client) as db:
            claim = self._usable(db, token, client, now, retry_key=public_key)
            t = self._ticket(db, claim)
            if claim["state"] == "claimed":  # the same phone again: the same credential
                return self._credential(key, claim, t)
            template = None
            if face and claim["face"] == "off":
                raise _refuse(400, "FACE_NOT_OFFERED", "this ticket is not bound to a face")
            if not face and claim["face"] == "require":
                raise _refuse(400, "FACE_REQUIRED", "this ticket needs the holder's face: take the three photos")
            if face:
                kept = _fresh_encodings(claim, now)
                if len(kept) < FACE_FRAMES:
                    raise _refuse(400, "FACE_FRAMES", f"take {FACE_FRAMES} photos of your face first",
                                  frames=len(kept), needed=FACE_FRAMES)
                from gate.ledger import encode_template
                from hardware.face import fuse
                template = base64.b64encode(encode_template(fuse(kept))).decode()
            if db.run("UPDATE wallet_claims SET state = 'claimed', used_at = :t, holder_pub = :p,"
                      " face_encodings = NULL, face_at = NULL WHERE token_hash = :h AND state = 'open'",
                      {"t": now, "p": public_key, "h": claim["token_hash"]}) != 1:
                raise _refuse(410, "CLAIM_USED", "this ticket link has already been used")
            if template is None:  # gates need nothing new: central keeps the key for upload proofs
                db.run("UPDATE tickets SET holder_pub = :p WHERE ticket_id = :t",
                       {"p": public_key, "t": claim["ticket_id"]})
            else:  # gates need the template: a ticket change they pull at sync
                db.run("UPDATE tickets SET holder_pub = :p, face_required = 1, face_template = :f, change_seq = :s"
                       " WHERE ticket_id = :t", {"p": public_key, "f": template, "s": reserve(db, "change"),
                                                 "t": claim["ticket_id"]})
                t["face_required"] = 1
            claim = {**claim, "state": "claimed", "holder_pub": public_key}
        self._purge_faces()
        return self._credential(key, claim, t)

    def transfer(self, req: Signed, *, client: str, base_url: str | None = None) -> dict:
        """The holder gives the ticket away: a new version waiting for the recipient's
        claim. The signed request must come from the current holder's key."""
        now = self.clock()
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with self._tx(client) as db:
            claim = self._signed_claim(db, req, "transfer", client, now)
            row = db.one("SELECT version, status FROM tickets WHERE ticket_id = :t", {"t": req.ticket_id})
            if row[1] != "valid":
                raise _refuse(409, "TICKET_REVOKED", "this ticket was cancelled: it cannot be transferred")
            if row[0] != req.version:
                raise _refuse(409, "TRANSFERRED", "this ticket was already transferred or reissued")
            self._bump(db, req.ticket_id, req.version)
            self._insert_claims(db, [self._claim_row(token, req.ticket_id, claim["event"], req.version + 1,
                                                     claim["face"], now, CLAIM_DAYS)])
        return {"ticket_id": req.ticket_id, "version": req.version + 1, "claim_url": claim_url(token, base_url)}

    def status(self, req: Signed, *, client: str) -> dict:
        """What central knows of the holder's ticket now: valid, revoked or replaced
        (transferred / reissued), and the entries used by the scans uploaded so far."""
        from sync.central.ops.queries import ADMITTED  # the report's "admitted": one definition

        now = self.clock()
        with self._tx(client) as db:  # a refusal is counted, so this is a write
            claim = self._signed_claim(db, req, "status", client, now)
        with self.store.reader() as db:
            version, status, entries = db.one(
                "SELECT version, status, entries FROM tickets WHERE ticket_id = :t", {"t": req.ticket_id})
            used = db.scalar("SELECT count(*)" + ADMITTED + " AND s.ticket_id = :t AND s.consumes = 1"
                             " AND s.mode = 'entry'", {"e": claim["event"], "t": req.ticket_id})
        state = "revoked" if status == "revoked" else ("replaced" if version > req.version else "valid")
        return {"ticket_id": req.ticket_id, "state": state, "entries": entries, "used": int(used or 0),
                "at": now}

    # ------------------------------------------------------------ internals

    @staticmethod
    def _claim_row(token, ticket_id, event, version, face, now, days) -> dict:
        return {"token_hash": token_hash(token), "ticket_id": ticket_id, "event": event, "version": version,
                "face": face, "created": now, "expires": now + days * 86400, "state": "open"}

    @staticmethod
    def _insert_claims(db, rows: list[dict]) -> None:
        db.run("INSERT INTO wallet_claims (token_hash, ticket_id, event, version, face, created, expires, state)"
               " VALUES (:token_hash, :ticket_id, :event, :version, :face, :created, :expires, :state)", rows)

    @staticmethod
    def _last_policy(db, ticket_id: str) -> str:
        row = db.one("SELECT face FROM wallet_claims WHERE ticket_id = :t ORDER BY version DESC, created DESC"
                     " LIMIT 1", {"t": ticket_id})
        return row[0] if row else "off"

    @staticmethod
    def _bump(db, ticket_id: str, version: int) -> None:
        """A new ticket version waiting for its holder: no holder key, no face, a
        ticket change gates pull; the open claims of older versions are replaced."""
        db.run("UPDATE tickets SET version = :v, holder_pub = NULL, face_required = 0, face_template = NULL,"
               " change_seq = :s WHERE ticket_id = :t", {"v": version + 1, "s": reserve(db, "change"), "t": ticket_id})
        db.run("UPDATE wallet_claims SET state = 'replaced', face_encodings = NULL WHERE ticket_id = :t"
               " AND state = 'open'", {"t": ticket_id})

    def _fail(self, db, client: str, code: str) -> None:
        db.run("INSERT INTO wallet_failures (client, at, why) VALUES (:c, :t, :w)",
               {"c": client, "t": self.clock(), "w": code})

    def _limit(self, db, client: str, now: float) -> None:
        bad = db.scalar("SELECT count(*) FROM wallet_failures WHERE client = :c AND at > :since",
                        {"c": client, "since": now - 60})
        if bad >= FAILURES_PER_MINUTE:
            raise _refuse(429, "TOO_MANY", "too many refused wallet requests from this address: wait a minute",
                          retry_after=60)

    def _usable(self, db, token: str, client: str, now: float, *, retry_key: bytes | None = None) -> dict:
        """The claim behind ``token`` if it can still be taken (or, with ``retry_key``,
        was taken by that key); otherwise count the refusal and raise it."""
        self._limit(db, client, now)
        code = None
        row = None
        if isinstance(token, str) and 20 <= len(token) <= 100:
            row = db.one("SELECT token_hash, ticket_id, event, version, face, expires, state, holder_pub,"
                         " face_encodings, face_at, face_tries FROM wallet_claims WHERE token_hash = :h",
                         {"h": token_hash(token)})
        if row is None:
            code = "CLAIM_UNKNOWN"
        else:
            row = dict(row._mapping)
            if row["state"] == "claimed":
                if retry_key is None or row["holder_pub"] is None or bytes(row["holder_pub"]) != retry_key:
                    code = "CLAIM_USED"
            elif row["state"] == "replaced":
                code = "CLAIM_REPLACED"
            elif row["expires"] <= now:
                code = "CLAIM_EXPIRED"
        if code is None:
            return row
        raise _Refused(code)

    @contextmanager
    def _tx(self, client: str):
        """A write transaction whose counted refusals (:class:`_Refused`) are recorded
        in a transaction of their own (the request's is rolled back) and answered."""
        try:
            with self.store.writer() as db:
                yield db
        except _Refused as r:
            with self.store.writer() as db:
                self._fail(db, client, r.code)
            status, message = COUNTED[r.code]
            raise _refuse(status, r.code, message) from None

    def _signed_claim(self, db, req: Signed, action: str, client: str, now: float) -> dict:
        self._limit(db, client, now)
        if abs(req.at - now) > REQUEST_SLACK_S:
            raise _Refused("STALE_REQUEST")
        row = db.one("SELECT token_hash, event, face, holder_pub FROM wallet_claims WHERE ticket_id = :t"
                     " AND version = :v AND state = 'claimed'", {"t": req.ticket_id, "v": req.version})
        ok = row is not None and row[3] is not None
        if ok:
            try:
                Ed25519PublicKey.from_public_bytes(bytes(row[3])).verify(
                    req.signature, holder_message(action, req.ticket_id, req.version, req.at))
            except (InvalidSignature, ValueError):
                ok = False
        if not ok:
            raise _Refused("BAD_SIGNATURE")
        return dict(row._mapping)

    @staticmethod
    def _ticket(db, claim: dict) -> dict:
        row = db.one("SELECT t.tier, t.zone, t.entries, t.status, t.version, t.face_required, e.venue,"
                     " e.starts_at FROM tickets t LEFT JOIN events e ON e.event = t.event WHERE t.ticket_id = :t",
                     {"t": claim["ticket_id"]})
        if row is None or row[4] != claim["version"]:
            raise _refuse(410, "CLAIM_REPLACED", "this ticket link was replaced: the ticket was transferred or reissued")
        if row[3] != "valid":
            raise _refuse(410, "TICKET_REVOKED", "this ticket was cancelled: ask the box office")
        return dict(row._mapping)

    @staticmethod
    def _public(claim: dict, t: dict) -> dict:
        """What the claim page may show: this ticket's own facts, nothing else."""
        return {"event": claim["event"], "venue": t["venue"] or "", "starts_at": t["starts_at"],
                "tier": t["tier"], "zone": t["zone"], "entries": t["entries"], "version": claim["version"],
                "face": claim["face"], "face_frames": FACE_FRAMES, "face_retention_days": FACE_RETENTION_DAYS,
                "expires": claim["expires"]}

    def _credential(self, key, claim: dict, t: dict) -> dict:
        tid = claim["ticket_id"]
        cred = gt1.issue(key, ticket_id=bytes.fromhex(tid), event=claim["event"], tier=t["tier"], zone=t["zone"],
                         entries=t["entries"], version=claim["version"], face=True if t["face_required"] else None,
                         holder_pub=bytes(claim["holder_pub"]))
        return {**self._public(claim, t), "ticket_id": tid, "credential": base64.b64encode(cred).decode(),
                "face_bound": bool(t["face_required"])}

    def _purge_faces(self) -> None:
        """Face templates of events that ended FACE_RETENTION_DAYS ago are deleted
        (gates pull the change). Runs as the wallet is used, at most once an hour."""
        now = self.clock()
        if now - self._purged_at < 3600:
            return
        self._purged_at = now
        cutoff = now - FACE_RETENTION_DAYS * 86400
        with self.store.writer() as db:
            rows = db.all("SELECT t.ticket_id FROM tickets t JOIN events e ON e.event = t.event"
                          " WHERE e.ends_at < :c AND t.face_template IS NOT NULL", {"c": cutoff})
            for (tid,) in rows:
                db.run("UPDATE tickets SET face_template = NULL, change_seq = :s WHERE ticket_id = :t",
                       {"s": reserve(db, "change"), "t": tid})


def _fresh_encodings(claim: dict, now: float) -> list[list[float]]:
    if not claim.get("face_encodings") or claim.get("face_at") is None or now - claim["face_at"] > FACE_FRAME_TTL_S:
        return []
    return json.loads(claim["face_encodings"])


_ENGINE = []


def _encode_face(jpeg: bytes):
    """A JPEG from the phone's front camera to a FaceCapture (encoding, or why not).
    The image lives only in this function's memory."""
    import cv2
    import numpy as np

    from gate.decision import FaceCapture, Sub
    from hardware.face import photo_engine

    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return FaceCapture(None, "not an image", Sub.POOR_CAPTURE)
    if not _ENGINE:
        _ENGINE.append(photo_engine())
    return _ENGINE[0].analyse(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)).capture


def parse_signed(body: dict) -> Signed:
    """A holder request body ``{ticket_id, version, at, signature}`` (signature base64url)."""
    try:
        tid, version, at, sig = body["ticket_id"], body["version"], body["at"], body["signature"]
        if not (isinstance(tid, str) and 16 <= len(tid) <= 64 and all(c in "0123456789abcdef" for c in tid)):
            raise ValueError
        if type(version) is not int or not 1 <= version < 2 ** 31 or type(at) is not int or not 0 <= at < 2 ** 40:
            raise ValueError
        raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
        if len(raw) != 64:
            raise ValueError
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _refuse(400, "BAD_REQUEST", "body needs ticket_id (hex), version, at (unix seconds) and "
                                          "signature (base64url, 64 bytes)") from None
    return Signed(tid, version, at, raw)
