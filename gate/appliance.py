"""The composition root for one gate's state: data directory, database, keys,
lane policy, and the scan operation (decide, then log, before any effect).

Who opens a gate: the composition root (``gate.app.compose.open_gate`` /
``init_gate``), for the CLI, the lane runner and the demo; tests may call
:meth:`Gate.open` / :meth:`Gate.init` themselves. A worker that needs its own
connection to a gate that is already open (the sync loop, the staff UI's reads)
asks that gate: :meth:`Gate.reopen`, with the keys it already checked.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto.keyring import KeyRing
from gate import keyfiles, ledger, scanlog
from gate.db import Checkpointer, connect, get_setting, put_setting, transaction
from gate.decision import Decision, FaceCapture, LanePolicy, Mode, decide
from gate.errors import ConfigError, LogError
from gate.i18n import _

DB_NAME = "gate.db"


@dataclass(frozen=True, slots=True)
class GateConfig:
    device_id: str
    policy: LanePolicy
    passage_timeout_s: float = 5.0
    face_timeout_s: float = 3.0

    def to_json(self) -> dict:
        p = asdict(self.policy)
        p["mode"] = self.policy.mode.value
        p["zones"] = list(self.policy.zones)
        return {"device_id": self.device_id, "policy": p,
                "passage_timeout_s": self.passage_timeout_s, "face_timeout_s": self.face_timeout_s}

    @classmethod
    def from_json(cls, doc: dict) -> "GateConfig":
        p = dict(doc["policy"])
        p["mode"] = Mode(p["mode"])
        p["zones"] = tuple(p.get("zones") or ())
        return cls(doc["device_id"], LanePolicy(**p),
                   doc.get("passage_timeout_s", 5.0), doc.get("face_timeout_s", 3.0))


class Gate:
    def __init__(self, data_dir: Path, conn: sqlite3.Connection, config: GateConfig, *,
                 data_key: bytes, device_key: Ed25519PrivateKey):
        self.data_dir = data_dir
        self.conn = conn
        self.config = config
        self.data_key = data_key  # keys/data.key: seals the face templates
        self.device_key = device_key  # keys/device.key: this gate's identity (uploads, bus)
        self.view = ledger.SqliteLedgerView(conn, self.data_key)
        self._keys: KeyRing | None = None
        self._seen: tuple[int, object] = (-1, None)  # (PRAGMA data_version, keys.version) the caches are from
        self._pretix: tuple | None = None
        self._checkpointer: Checkpointer | None = None  # started by the first durable scan

    # ------------------------------------------------------------ lifecycle

    @staticmethod
    def exists(data_dir: Path) -> bool:
        return (Path(data_dir) / DB_NAME).exists()

    @classmethod
    def init(cls, data_dir: Path, *, event: str, lane: str = "lane-1", mode: Mode = Mode.ENTRY,
             zones: tuple[str, ...] = (), require_rotating: bool = False,
             require_listed: bool = False) -> "Gate":
        data_dir = Path(data_dir)
        if not event:
            raise ConfigError(_("--event must name the event this gate admits to"))
        for what, value in (("--event", event), ("--lane", lane)):
            # other gates and central carry these names: the venue bus refuses records whose
            # names are not printable text, so a gate with such a name would be unheard
            if not (0 < len(value) <= 128 and value.isprintable() and "#" not in value):
                raise ConfigError(_("{option} must be 1-128 printable characters without '#' "
                                    "(no control characters or line breaks): {value}").format(
                    option=what, value=repr(value)))
        existing = None
        if cls.exists(data_dir):
            existing = cls.open(data_dir, now=0)
            if existing.config.policy.event != event:
                existing.close()
                raise ConfigError(_("{dir} is already set up for event {event}; use a new --data directory "
                                    "for another event").format(dir=data_dir,
                                                                 event=repr(existing.config.policy.event)))
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(data_dir, 0o700)
        policy = LanePolicy(event=event, lane=lane, mode=mode, zones=tuple(zones),
                            require_rotating=require_rotating, require_listed=require_listed)
        if existing:
            if existing.pretix is not None:
                from gate.pretix_codes import policy_problem
                if problem := policy_problem(policy):
                    existing.close()
                    raise ConfigError(problem)
            existing.close()
        else:
            keyfiles.create_missing(data_dir)  # the only place keys are created
        data_key, device_key = keyfiles.load_data_key(data_dir), keyfiles.load_device_key(data_dir)
        device_id = existing.config.device_id if existing else "gate-" + secrets.token_hex(4)
        conn = connect(data_dir / DB_NAME)
        config = GateConfig(device_id, policy)
        with transaction(conn):
            put_setting(conn, "config", config.to_json())
            keyfiles.remember_data_key(conn, data_key)
        return cls(data_dir, conn, config, data_key=data_key, device_key=device_key)

    @classmethod
    def open(cls, data_dir: Path, *, now: float) -> "Gate":
        """Open an initialised gate; ``now`` enforces the biometric retention deadline."""
        data_dir = Path(data_dir)
        if not cls.exists(data_dir):
            raise ConfigError(_("no gate set up in {dir}: run 'gate --data {dir} init --event EVENT' first").format(
                dir=data_dir))
        data_key, device_key = keyfiles.load_data_key(data_dir), keyfiles.load_device_key(data_dir)
        gate = cls._connect(data_dir, data_key=data_key, device_key=device_key)
        try:
            keyfiles.check_data_key(gate.conn, data_key, data_dir)
            gate.enforce_retention(now)
        except BaseException:
            gate.close()
            raise
        return gate

    @classmethod
    def _connect(cls, data_dir: Path, *, data_key: bytes, device_key: Ed25519PrivateKey) -> "Gate":
        conn = connect(data_dir / DB_NAME)
        doc = get_setting(conn, "config")
        if doc is None:
            conn.close()
            raise ConfigError(_("{dir} has no lane configuration: run 'gate --data {dir} init'").format(dir=data_dir))
        return cls(data_dir, conn, GateConfig.from_json(doc), data_key=data_key, device_key=device_key)

    def reopen(self) -> "Gate":
        """Another connection to this gate (a worker thread's own: the sync loop, the
        staff UI's reads), with the keys this one already loaded and checked."""
        return self._connect(self.data_dir, data_key=self.data_key, device_key=self.device_key)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        self.conn.close()

    # ------------------------------------------------------------ biometrics

    def retention_until(self) -> float | None:
        return get_setting(self.conn, "biometric_retention_until")

    def set_retention(self, until: float) -> None:
        with transaction(self.conn):
            put_setting(self.conn, "biometric_retention_until", until)

    def enforce_retention(self, now: float) -> int:
        """Once the event's retention deadline has passed: delete all templates and
        store no more (until an operator re-enables them with a later deadline)."""
        until = self.retention_until()
        if until is None or now < until:
            return 0
        if not self.conn.execute("SELECT 1 FROM tickets WHERE face_template IS NOT NULL LIMIT 1").fetchone():
            if ledger.biometrics_allowed(self.conn):
                ledger.disable_biometrics(self.conn, now=now, why="retention")
            return 0
        return ledger.wipe_biometrics(self.conn, now=now, why="retention")

    def save_config(self, config: GateConfig) -> None:
        with transaction(self.conn):
            put_setting(self.conn, "config", config.to_json())
        self.config = config

    def set_mode(self, mode: Mode, *, now: float | None = None, operator: str | None = None) -> None:
        """Persist the lane's mode; with ``now``, the change is logged (with its operator)
        in the same transaction."""
        config = replace(self.config, policy=replace(self.config.policy, mode=mode))
        with transaction(self.conn):
            put_setting(self.conn, "config", config.to_json())
            if now is not None:
                self.control("mode", now=now, operator=operator, mode=mode.value)
        self.config = config

    # ------------------------------------------------------------ keys

    @property
    def keys(self) -> KeyRing:
        if self._keys is None:
            self._keys = ledger.load_keyring(self.conn)
        return self._keys

    @property
    def pretix(self) -> dict | None:
        """The pretix connection of a gate whose central is pretix (sync.pretix), else None."""
        if self._pretix is None:
            cfg = get_setting(self.conn, "pretix")
            keys = []
            if cfg:
                import base64

                from cryptography.hazmat.primitives.serialization import load_pem_public_key
                for pem in cfg.get("keys", []):
                    try:
                        keys.append(load_pem_public_key(base64.b64decode(pem)))
                    except ValueError:
                        continue
            self._pretix = (cfg, keys)
        return self._pretix[0]

    @property
    def pretix_keys(self) -> list:
        """The event's pretix_sig1 public keys (loaded with :attr:`pretix`)."""
        return self._pretix[1] if self.pretix is not None else []

    def set_pretix(self, cfg: dict) -> None:
        """Store the pretix connection (enrolment, each sync). Refused while the lane's
        policy is one pretix codes cannot meet (``--require-rotating``)."""
        from gate.pretix_codes import policy_problem
        if problem := policy_problem(self.policy):
            raise ConfigError(problem)
        with transaction(self.conn):
            put_setting(self.conn, "pretix", cfg)
            ledger.bump_keys_version(self.conn)
        self._pretix = None

    def _fresh_keys(self) -> None:
        """Drop the cached key rings when another connection changed them (the
        sync loop pulls keys on its own connection; a revoked issuer key must
        stop admitting at once). One cheap PRAGMA per decision; the setting is
        read only when the database changed at all."""
        dv = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if dv == self._seen[0]:
            return
        kv = get_setting(self.conn, "keys.version")
        if kv != self._seen[1]:
            self._keys, self._pretix = None, None
        self._seen = (dv, kv)

    def trust(self, doc: object):
        added = ledger.trust_keyring(self.conn, doc, self.config.policy.event)
        self._keys = None
        return added

    # ------------------------------------------------------------ scanning

    @property
    def policy(self) -> LanePolicy:
        return self.config.policy

    def decide(self, qr: str, *, now: float, mode: Mode | None = None,
               face: FaceCapture | None = None) -> Decision:
        self._fresh_keys()
        if self.pretix is not None and not qr.startswith("GT1:"):
            from gate.pretix_codes import decide_pretix
            return decide_pretix(qr, now=now, lane=self.policy, keys=self.pretix_keys, ledger=self.view, mode=mode)
        return decide(qr, now=now, lane=self.policy, keys=self.keys, ledger=self.view,
                      mode=mode, face=face)

    def record(self, decision: Decision, *, now: float, qr: str | None,
               kind: str = scanlog.SCAN, operator: str | None = None, alone: bool = False) -> scanlog.Entry:
        rec = scanlog.scan_record(
            decision, ts_ms=int(now * 1000), device=self.config.device_id,
            lane=self.policy.lane, event=self.policy.event,
            qr_sha=None if qr is None else hashlib.sha256(qr.encode("utf-8", "replace")).digest()[:16],
            operator=operator, kind=kind)
        if alone:
            rec["alone"] = True  # admitted with neither central nor a bus peer (gate.bus)
        if qr is not None and self.pretix is not None:
            rec["code"] = qr  # pretix check-ins are uploaded by secret
        elif qr is not None and decision.accepted and decision.step is not None:
            # one parse per scan: the decision carries what it parsed (a decision made
            # elsewhere, e.g. rebuilt by the lane, falls back to parsing the QR)
            rec.update(scanlog.proof_fields(*decision.proof) if decision.proof is not None
                       else scanlog.holder_proof(qr))
        return scanlog.append(self.conn, rec)

    def scan(self, qr: str, *, now: float, mode: Mode | None = None,
             face: FaceCapture | None = None, dry_run: bool = False,
             skip: Callable[[Decision], bool] | None = None,
             adjust: Callable[[Decision], Decision] | None = None, alone: bool = False,
             defer_upkeep: bool = False) -> tuple[Decision, scanlog.Entry | None]:
        """Decide and (unless dry_run) append to the scan log. The record is
        durable when this returns: only then may a relay be driven.

        Decision and append are one ``BEGIN IMMEDIATE`` transaction: the usage the
        decision reads is re-read under the write lock, so any number of processes
        deciding on one data directory (``gate run`` and ``gate verify``) never admit
        a ticket more often than it allows. ``skip(decision)`` true: record nothing.
        ``adjust`` is the lane's policy while ALONE (gate.bus.apply_when_alone);
        ``alone`` flags an accept made with neither central nor a bus peer.
        ``defer_upkeep``: WAL upkeep that can wait (the follow-up checkpoint copy,
        ~0.5-1 ms once per ~200 scans) is left for :meth:`upkeep`, which a lane calls
        after the turnstile cycle: not between the decision and the relay, nor while
        the passage is watched."""
        if dry_run:
            return self.decide(qr, now=now, mode=mode, face=face), None
        if self._checkpointer is None and not self.conn.tx_depth:
            # the WAL is copied back on another thread: no scan's commit waits for it
            self._checkpointer = Checkpointer(self.data_dir / DB_NAME)
            self._checkpointer.attach(self.conn)
        with transaction(self.conn):
            d = self.decide(qr, now=now, mode=mode, face=face)
            if adjust is not None:
                d = adjust(d)
            if skip is not None and skip(d):
                return d, None
            entry = self.record(d, now=now, qr=qr, alone=alone and d.accepted)
        if self._checkpointer is not None:
            self._checkpointer.committed(defer_tail=defer_upkeep)
        return d, entry

    def upkeep(self) -> None:
        """WAL upkeep a ``scan(defer_upkeep=True)`` left (see :meth:`scan`)."""
        if self._checkpointer is not None:
            self._checkpointer.idle()

    def control(self, action: str, *, now: float, operator: str | None, **fields) -> scanlog.Entry:
        """Log a staff command that changes what the lane lets through (scanlog.CONTROL),
        or a lane fault / its clearing (then the open fault is noted in the same transaction)."""
        rec = {"kind": scanlog.CONTROL, "ts_ms": int(now * 1000), "device": self.config.device_id,
               "lane": self.policy.lane, "event": self.policy.event, "action": action,
               "operator": operator, **fields}
        if action not in self.FAULT_ACTIONS and action != "fault_cleared":
            return scanlog.append(self.conn, rec)
        with transaction(self.conn):
            entry = scanlog.append(self.conn, rec)
            opened = get_setting(self.conn, "fault.open")
            if action == "fault_cleared":
                put_setting(self.conn, "fault.open", None)
            elif opened is None:
                put_setting(self.conn, "fault.open", entry.seq)
        return entry

    FAULT_ACTIONS = ("relay_fault", "sensor_fault", "store_fault")

    def open_fault(self) -> dict | None:
        """The first fault logged on this gate since the last ``fault_cleared`` (a
        ``control`` record, see gate.lane), else None: a restart does not clear a fault."""
        seq = get_setting(self.conn, "fault.open")
        if not isinstance(seq, int):
            return None
        row = self.conn.execute("SELECT record FROM scans WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            return None
        rec = _logged(seq, row[0], " (the open fault)")
        if rec.get("action") not in self.FAULT_ACTIONS:
            raise _damaged(seq, " (the open fault)")
        return rec

    def open_faults(self) -> list[dict]:
        """Every fault logged since the last ``fault_cleared`` (the first is
        :meth:`open_fault`), oldest first; [] when none is in force."""
        first = self.open_fault()
        if first is None:
            return []
        out = []
        for seq, raw in self.conn.execute("SELECT seq, record FROM scans WHERE seq >= ? AND kind = ? ORDER BY seq",
                                          (first["seq"], scanlog.CONTROL)):
            rec = _logged(seq, raw)
            if rec.get("action") in self.FAULT_ACTIONS:
                out.append(rec)
        return out or [first]

    def rollback(self, seq: int, *, now: float, why: str = "no passage") -> scanlog.Entry:
        return scanlog.append(self.conn, {
            "kind": scanlog.ROLLBACK, "ts_ms": int(now * 1000), "device": self.config.device_id,
            "lane": self.policy.lane, "event": self.policy.event, "ref": seq, "why": why,
        })

    def passed(self, seq: int, *, now: float) -> scanlog.Entry:
        return scanlog.append(self.conn, {
            "kind": scanlog.PASSED, "ts_ms": int(now * 1000), "device": self.config.device_id,
            "lane": self.policy.lane, "event": self.policy.event, "ref": seq,
        })


def _damaged(seq: int, what: str = "") -> LogError:
    return LogError(f"scan log record {seq}{what} is damaged: run 'gate log verify' and keep this database "
                    "file as evidence")


def _logged(seq: int, raw: bytes, what: str = "") -> dict:
    """A stored record's map (scanlog.decode_logged: any decoder failure, deep
    nesting included, is "unreadable"), or the LogError that says what to do."""
    try:
        return scanlog.decode_logged(raw)
    except ValueError:
        raise _damaged(seq, what) from None
