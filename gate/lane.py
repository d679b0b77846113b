"""The lane state machine: idle → decided → (face) → open → passed | rolled_back.

The decision is durable in the scan log before the relay moves. An accepted
entry with no passage within ``passage_timeout_s`` is rolled back (logged, and
the entry is given back). Hardware comes in through the ports in
``hardware.ports``; this module imports no hardware library.

Faults stop the lane safely. A relay that cannot open its contact again (or
cannot close it), a passage sensor that fails, or a device database that cannot
commit puts the lane in :attr:`Lane.fault`: it admits nothing (codes are
ignored and not logged; a manual admit is refused) until a supervisor clears it
with :meth:`Lane.clear_fault` — which first checks the hardware and the store
work again. Each fault is a ``control`` record in the scan log (action
``relay_fault`` / ``sensor_fault`` / ``store_fault``; ``fault_cleared`` names the
operator), so central sees it in the uploaded log, and :attr:`Lane.on_fault`
hooks (the staff UI, ``--json-events``) hear it at once. A lane started on a log
whose last fault was never cleared starts faulted.

Two directions: the lane's relay unlocks the turnstile for entries (unlock A) and
``relay_exit``, when the turnstile has a second input, for exits (unlock B); with
one relay both directions use it.

A fire alarm (:meth:`Lane.fire_alarm`, from the fire-alarm input) holds every relay
closed (the turnstile released both ways) at once, even mid-cycle and even on a
faulted lane; meanwhile codes are ignored and not logged, and a manual admit is
refused: nothing is admitted by code while people leave freely. Its start and end
are ``control`` records (``fire_alarm`` / ``fire_alarm_end``), and
:attr:`Lane.on_fire` hooks (the staff UI, ``--json-events``) hear them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Callable

from gate.appliance import Gate
from gate.bus import LinkState, WhenAlone, apply_when_alone
from gate.db import transaction
from gate.decision import Decision, FaceCapture, Mode, Reason, Usage
from gate.errors import DiskFullError, HardwareError, LogError, StoreError

DEFAULT_PULSE_MS = 200
_NO_LOCK = contextlib.nullcontext()


class State(StrEnum):
    IDLE = "idle"
    DECIDED = "decided"
    FACE = "face"
    OPEN = "open"
    PASSED = "passed"
    ROLLED_BACK = "rolled_back"


class FaultKind(StrEnum):
    RELAY = "relay"    # the contact could not be opened again (or closed)
    SENSOR = "sensor"  # the passage sensor failed: whether anyone passed is unknown
    STORE = "store"    # the device database could not commit: nothing can be recorded


# what a failing device database raises (a failed COMMIT, a full disk, I/O errors)
STORE_ERRORS = (StoreError, DiskFullError, sqlite3.Error)


@dataclass(frozen=True)
class LaneFault:
    kind: FaultKind
    detail: str
    at: float
    seq: int | None = None  # its control record; None: not logged (yet)

    def to_json(self) -> dict:
        return {"fault": self.kind.value, "detail": self.detail, "at": self.at, "seq": self.seq}


@dataclass(frozen=True)
class LaneEvent:
    decision: Decision
    seq: int | None
    outcome: str  # passed | rolled_back | rejected | exit | override | unconfirmed (sensor fault); "open" to Lane.opened
    at: float
    frame_ms: float | None = None
    operator: str | None = None
    # for people (the staff UI): admitted with neither central nor a bus peer, and,
    # for a refused used ticket, where and when it was last used (structured, never parsed
    # from ``detail``: last_where None means this gate)
    alone: bool = False
    last_use: Usage | None = None

    def to_json(self) -> dict:
        out = self.decision.to_json()
        out.update(seq=self.seq, outcome=self.outcome, at=self.at,
                   frame_ms=None if self.frame_ms is None else round(self.frame_ms, 3))
        if self.operator:
            out["operator"] = self.operator
        if self.alone:
            out["alone"] = True
        if self.last_use is not None:
            out["last_use"] = {"where": self.last_use.last_where, "ts_ms": self.last_use.last_ts_ms}
        return out


@dataclass
class Counters:
    admitted: int = 0
    exited: int = 0
    rolled_back: int = 0
    rejected: Counter = field(default_factory=Counter)

    @property
    def inside(self) -> int:
        return max(0, self.admitted - self.exited)


class Lane:
    def __init__(self, gate: Gate, *, relay, sensor, clock, face=None, relay_exit=None,
                 pulse_ms: int = DEFAULT_PULSE_MS, cooldown_s: float = 3.0):
        self.gate = gate
        self.relay = relay
        self.relay_exit = relay_exit  # unlock B (exits); None: the one relay serves both directions
        self.fire = False  # a fire alarm is in force: every relay held released (fire_alarm)
        self.on_fire: list[Callable[[bool, str], None]] = []  # (active, detail) at its start and end
        self.sensor = sensor
        self.clock = clock
        self.face = face  # FaceSource: capture(timeout_s) -> FaceCapture, or None
        self.pulse_ms = pulse_ms
        self.cooldown_s = cooldown_s
        self.state = State.IDLE
        self.paused = False
        self.counters = Counters()
        self.observers: list[Callable[[LaneEvent], None]] = []
        # told when the turnstile opened for an entry and the lane waits for the passage
        # (outcome "open"; the final event follows to ``observers``)
        self.opened: list[Callable[[LaneEvent], None]] = []
        self._alone_seqs: set[int] = set()  # accepts decided ALONE, until their final event
        self._recent: dict[str, float] = {}
        self._paused_seen: tuple[str, float] | None = None
        # _lock guards state, counters and the gate's connection; it is held for a
        # decision and its log record, and for the store's upkeep after a turnstile
        # cycle (Gate.upkeep, under a millisecond). _turn serialises whole turnstile cycles
        # (decide -> face -> relay -> passage) between the lane thread and staff admits.
        self._lock = threading.RLock()
        self._turn = threading.Lock()
        # venue bus (gate.bus): the link state source (None: not tracked), the policy
        # while ALONE, and hooks called with each appended usage seq (they must not block)
        self.link: Callable[[], LinkState] | None = None
        self.when_alone = WhenAlone.ADMIT
        self.appended: list[Callable[[int], None]] = []
        self.bus = None  # the running bus service, for status displays
        # faults (module docstring): by kind, the first of each; hooks hear
        # (fault, None) when one begins and (fault, operator) when it is cleared
        self.faults: dict[FaultKind, LaneFault] = {}
        self.on_fault: list[Callable[[LaneFault, str | None], None]] = []
        self._unannounced: list[tuple[LaneFault, str | None]] = []
        self._resume_fault()

    @property
    def relays(self) -> tuple:
        """Every relay of the lane: unlock A, then unlock B when there is one."""
        return (self.relay,) if self.relay_exit is None else (self.relay, self.relay_exit)

    def relay_for(self, mode: Mode):
        """The relay that unlocks the turnstile for ``mode`` (exit: unlock B when wired)."""
        return self.relay_exit if mode is Mode.EXIT and self.relay_exit is not None else self.relay

    # ---------------------------------------------------------------- fire alarm

    def fire_alarm(self, active: bool, *, detail: str = "") -> None:
        """The fire-alarm input changed (any thread). Active: every relay is held
        released first, then ``fire_alarm`` is logged; inactive: the relays lock again
        (a relay that cannot is a relay fault) and ``fire_alarm_end`` is logged."""
        if active == self.fire:
            return
        failed = []
        with self._lock:
            self.fire = active
            for relay in self.relays:  # people first, the record after
                try:
                    relay.hold() if active else relay.release()
                except Exception as exc:
                    failed.append(f"{type(exc).__name__}: {exc}")
            now = self.clock.now()
            try:
                self.gate.control("fire_alarm" if active else "fire_alarm_end", now=now, operator=None,
                                  detail=detail[:200])
            except STORE_ERRORS as exc:
                self._fault_locked(FaultKind.STORE, f"{type(exc).__name__}: {exc}")
            if failed:  # a relay that cannot hold the turnstile released (or lock it again) is a fault
                self._fault_locked(FaultKind.RELAY, failed[0][:200])
        for fn in list(self.on_fire):
            fn(active, detail)
        self._announce()

    # ---------------------------------------------------------------- faults

    @property
    def fault(self) -> LaneFault | None:
        """The first fault in force (None: the lane may admit)."""
        return next(iter(self.faults.values()), None)

    def report_fault(self, kind: FaultKind | str, detail: str) -> LaneFault:
        """A fault from the hardware (any thread: the relay's timer) or the lane
        itself: the lane stops admitting, logs it and tells the hooks."""
        with self._lock:
            f = self._fault_locked(FaultKind(kind), detail)
        self._announce()
        return f

    def _fault_locked(self, kind: FaultKind, detail: str) -> LaneFault:
        if kind in self.faults:
            return self.faults[kind]
        now = self.clock.now()
        seq = None
        if kind is not FaultKind.STORE:  # a store fault is logged once the store works (clear_fault)
            try:
                seq = self.gate.control(f"{kind.value}_fault", now=now, operator=None,
                                        detail=detail[:200]).seq
            except STORE_ERRORS as exc:
                self._fault_locked(FaultKind.STORE, f"{type(exc).__name__}: {exc}")
        f = self.faults[kind] = LaneFault(kind, detail[:200], now, seq)
        self._unannounced.append((f, None))
        return f

    def _announce(self) -> None:
        """Tell the hooks, never with the lane's lock held (a hook may wait for a UI thread)."""
        if getattr(self._lock, "_is_owned", lambda: False)():
            return  # an outer frame of this thread holds it: it announces when it lets go
        while self._unannounced:
            try:
                f, operator = self._unannounced.pop(0)
            except IndexError:  # another thread announced it
                break
            for fn in list(self.on_fault):
                fn(f, operator)

    def _resume_fault(self) -> None:
        """A fault logged and never cleared (the process stopped meanwhile) is still in force."""
        for rec in self.gate.open_faults():  # every kind in force, each part checked when cleared
            kind = FaultKind(rec["action"].removesuffix("_fault"))
            if kind not in self.faults:
                self.faults[kind] = LaneFault(kind, str(rec.get("detail") or "")[:200],
                                              rec.get("ts_ms", 0) / 1000, rec.get("seq"))

    def clear_fault(self, *, operator: str) -> list[LaneFault]:
        """A supervisor clears the faults (the caller has checked the PIN): the hardware
        is checked first (a relay that still cannot open, a sensor that still fails,
        raise HardwareError and the fault stays), then ``fault_cleared`` is logged with
        the operator (a store that still cannot commit raises, and the fault stays)."""
        with self._turn:
            with self._lock:
                if not self.faults:
                    return []
                for _kind, part in self._faulted_parts():
                    part.reset()
                now = self.clock.now()
                cleared = list(self.faults.values())
                with transaction(self.gate.conn):
                    for f in cleared:
                        if f.seq is None:  # not logged when it happened (the store was failing)
                            self.gate.control(f"{f.kind.value}_fault", now=f.at, operator=None, detail=f.detail)
                    self.gate.control("fault_cleared", now=now, operator=operator,
                                      faults=",".join(f.kind.value for f in cleared))
                self.faults.clear()
                self._unannounced.extend((f, operator) for f in cleared)
        self._announce()
        return cleared

    def _faulted_parts(self) -> list[tuple[FaultKind, object]]:
        """The relays and the sensor whose kind is in fault and that can be checked (``reset``)."""
        parts = [(FaultKind.RELAY, r) for r in self.relays] + [(FaultKind.SENSOR, self.sensor)]
        return [(kind, part) for kind, part in parts if kind in self.faults and hasattr(part, "reset")]

    def _cleared_elsewhere(self) -> bool:
        """Whether a supervisor cleared the faults from another process (``gate fault
        clear``): the log has no fault in force while this lane still holds some. The
        faulted parts are checked here as :meth:`clear_fault` checks them; a part that
        still fails is a fault again (logged again). Called with the lane's lock held."""
        if any(f.seq is None for f in self.faults.values()):
            return False  # not logged (the store was failing): only clear_fault() clears it
        try:
            if self.gate.open_fault() is not None:
                return False
            operator = self._last_clearer()
        except (*STORE_ERRORS, LogError):  # unreadable: the fault stays
            return False
        failing: dict[FaultKind, str] = {}
        for kind, part in self._faulted_parts():
            try:
                part.reset()
            except HardwareError as exc:
                failing.setdefault(kind, str(exc))
        if failing:  # each part still failing is a fault again, logged again; the others are cleared
            self.faults.clear()
            for kind, why in failing.items():
                self._fault_locked(kind, f"still failing after {operator or 'a supervisor'} cleared "
                                         f"it from the command line: {why}")
            return False
        cleared = list(self.faults.values())
        self.faults.clear()
        self._unannounced.extend((f, operator or "?") for f in cleared)
        return True

    def _last_clearer(self) -> str | None:
        import cbor2
        for (raw,) in self.gate.conn.execute(
                "SELECT record FROM scans WHERE kind = 'control' ORDER BY seq DESC LIMIT 50"):
            try:
                rec = cbor2.loads(raw)
            except (cbor2.CBORDecodeError, ValueError):
                continue
            if isinstance(rec, dict) and rec.get("action") == "fault_cleared":
                return rec.get("operator")
        return None

    def relay_fault(self, detail: str) -> None:
        """The relay's ``on_fault`` hook (wired by the composition root)."""
        self.report_fault(FaultKind.RELAY, detail)

    def _notify(self, seq: int) -> None:
        for fn in self.appended:
            fn(seq)

    def _alone(self) -> bool:
        return self.link is not None and self.link() is LinkState.ALONE

    @property
    def mode(self) -> Mode:
        return self.gate.policy.mode

    def _emit(self, ev: LaneEvent | None, *, final: bool = True) -> LaneEvent | None:
        if ev is not None:
            ev = self._annotate(ev, final=final)
            for fn in list(self.observers if final else self.opened):
                fn(ev)
        if final:
            self._announce()
        return ev

    def _annotate(self, ev: LaneEvent, *, final: bool) -> LaneEvent:
        """Add what people need to read an event: ALONE, and where/when a refused
        ticket was used (one ledger read, only for those refusals)."""
        alone = ev.seq in self._alone_seqs
        if final:
            self._alone_seqs.discard(ev.seq)
        d, used = ev.decision, None
        if d.ticket_id and d.reason in (Reason.ALREADY_USED, Reason.REPLAY):
            with self._lock:
                used = self.gate.view.usage(d.ticket_id)
            if used.last_ts_ms is None:
                used = None
        return replace(ev, alone=alone, last_use=used) if alone or used else ev

    def _in_cooldown(self, d: Decision, now: float) -> bool:
        """The holder of a just-admitted ticket is still in front of the camera."""
        if d.ticket_id is None or d.reason not in (Reason.REPLAY, Reason.ALREADY_USED):
            return False
        t = self._recent.get(d.ticket_id)
        return t is not None and now - t < self.cooldown_s

    def submit(self, qr: str, captured_ns: int | None = None) -> LaneEvent | None:
        """One code read by the camera or a scanner. Returns the lane event, or
        None when the read was ignored (a faulted lane, a re-read while paused, a duplicate read).

        Decisions are serialised (one holder at a time through the turnstile),
        but the state lock is held only while deciding and logging, never while
        waiting for a face or a passage: the staff UI keeps answering. No code
        can stop the lane: an unexpected fault in one decision is logged as a
        rejection with reason ERROR and the lane goes on."""
        with self._turn:
            with self._lock:
                # a faulted lane, or one released by a fire alarm, admits nothing and records
                # nothing (paused: refused, logged)
                blocked = self.fire or (self.faults and not self._cleared_elsewhere())
            if blocked:
                self._announce()  # a fault found again by _cleared_elsewhere()
                return None
            with self._lock:
                if self.faults or self.fire:  # faulted meanwhile (the relay's timer thread)
                    return None
                now = self.clock.now()
                d, entry, failed, face_first = self._decide_and_log(qr, now, None, captured_ns)
                if face_first:
                    self.state = State.FACE
            if face_first:  # capture the face with no lock and no transaction held
                capture = self._capture()
                with self._lock:  # paused meanwhile: refused LANE_PAUSED, like any code now
                    if self.faults or self.fire:  # faulted (or a fire alarm) while the face was captured
                        self.state = State.IDLE
                        return None
                    now = self.clock.now()
                    d, entry, failed, _ = self._decide_and_log(qr, now, capture, captured_ns)
            if failed is not None:
                return self._emit(failed)
            if entry is None:
                return self._emit(None)  # nothing to show (a store fault is announced)
            return self._effect(d, entry.seq, now, captured_ns)

    def _decide_and_log(self, qr: str, now: float, capture, captured_ns):
        """(decision, entry, failed event, face needed first), with the lock held.
        Decide and log in one transaction (durable before any effect); nothing is
        logged for a camera re-read in the cooldown, or when the face must be
        captured first (then the code is decided again with the face)."""
        wants_face = False
        paused = self.paused

        def skip(d: Decision) -> bool:
            nonlocal wants_face
            if paused:  # a camera re-reading the code shown to a paused lane: one record
                return self._paused_reread(qr, now)
            if self._in_cooldown(d, now):
                return True
            wants_face = capture is None and d.reason is Reason.FACE_REQUIRED and self.face is not None
            return wants_face

        alone = self._alone()
        policy = (lambda d: apply_when_alone(d, self.when_alone)) if alone else None
        if paused:  # staff paused the lane: every code is refused, and logged
            policy = _refuse_paused
        try:
            d, entry = self.gate.scan(qr, now=now, face=capture, skip=skip, adjust=policy, alone=alone,
                                      defer_upkeep=True)  # run by _effect, after the cycle
        except STORE_ERRORS as exc:  # nothing was recorded, so nothing may happen
            self._fault_locked(FaultKind.STORE, f"{type(exc).__name__}: {exc}")
            self.state = State.IDLE
            return None, None, None, False
        except Exception as exc:
            return None, None, self._failed(qr, now, exc, captured_ns), False
        if entry is not None:
            self._notify(entry.seq)
            if alone and d.accepted:
                self._alone_seqs.add(entry.seq)
        self.state = State.IDLE if entry is None else State.DECIDED
        return d, entry, None, wants_face

    def _paused_reread(self, qr: str, now: float) -> bool:
        """The same code again within the cooldown while paused (a camera sees it in
        many frames): not a new scan."""
        last = self._paused_seen
        self._paused_seen = (qr, now)
        return last is not None and last[0] == qr and now - last[1] < self.cooldown_s

    def _capture(self):
        try:
            return self.face.capture(self.gate.config.face_timeout_s)
        except Exception as exc:  # a camera fault is no face, not a stopped lane
            return FaceCapture(None, f"face camera failed: {type(exc).__name__}")

    def _failed(self, qr: str, now: float, exc: Exception, captured_ns: int | None) -> LaneEvent | None:
        """Log an undecidable code as an ERROR rejection (called with the lock held;
        the caller emits the event once it has let go of the lock). When the log
        itself fails the lane stops admitting (a store fault) and there is no event."""
        d = Decision(Reason.ERROR, self.mode, detail=f"{type(exc).__name__}: {exc}"[:200])
        try:
            entry = self.gate.record(d, now=now, qr=qr)
        except STORE_ERRORS as store_exc:
            self._fault_locked(FaultKind.STORE, f"{type(store_exc).__name__}: {store_exc}")
            self.state = State.IDLE
            return None
        self.counters.rejected[d.reason.value] += 1
        self.state = State.IDLE
        return LaneEvent(d, entry.seq, "rejected", now, self._ms(captured_ns))

    def _effect(self, d: Decision, seq: int, now: float, captured_ns: int | None,
                operator: str | None = None) -> LaneEvent:
        """Drive the relay and wait for the passage (the caller holds ``_turn``,
        not ``_lock``), then the store's upkeep the scan left (Gate.upkeep): after the
        turnstile cycle, never between the decision and the relay nor while the
        passage is watched. It raises nothing (a failed checkpoint copy loses
        nothing). Events are emitted with no lock held."""
        try:
            return self._cycle(d, seq, now, captured_ns, operator)
        finally:
            with self._lock:
                self.gate.upkeep()

    def _cycle(self, d: Decision, seq: int, now: float, captured_ns: int | None,
               operator: str | None) -> LaneEvent:
        frame_ms = self._ms(captured_ns)
        with self._lock:
            ev = self._open(d, seq, now, frame_ms, operator)
        if ev is not None:  # rejected, exit, or the relay failed
            return self._emit(ev)
        self._emit(LaneEvent(d, seq, "open", now, frame_ms, operator), final=False)
        sensor_fault = None
        try:
            passed = self.sensor.wait_passage(self.gate.config.passage_timeout_s)  # unlocked
        except Exception as exc:  # a fault, not "no passage": whether anyone passed is unknown
            passed, sensor_fault = False, f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.state = State.IDLE
            if sensor_fault is not None:
                # the turnstile was released: the admission stands (giving it back could let
                # the ticket in twice); staff see the fault and the lane admits nothing more
                self._fault_locked(FaultKind.SENSOR, sensor_fault)
                self.counters.admitted += 1
                ev = LaneEvent(d, seq, "unconfirmed", now, frame_ms, operator)
            elif not passed:
                ev = self._give_back(d, seq, now, frame_ms, operator, "no passage")
            else:
                if getattr(self.sensor, "present", False):
                    self._store_write(lambda: self.gate.passed(seq, now=self.clock.now()))
                self.counters.admitted += 1
                ev = LaneEvent(d, seq, "passed", now, frame_ms, operator)
        return self._emit(ev)

    def _store_write(self, fn: Callable[[], object]):
        """A log write after the decision (rollback, passage): when the store fails the
        lane faults (and the result is None) instead of stopping mid-cycle."""
        try:
            return fn()
        except STORE_ERRORS as exc:
            self._fault_locked(FaultKind.STORE, f"{type(exc).__name__}: {exc}")
            return None

    def _open(self, d: Decision, seq: int, now: float, frame_ms, operator) -> LaneEvent | None:
        """The part of an effect that needs no waiting; None: wait for the passage."""
        if not d.accepted:
            self.counters.rejected[d.reason.value] += 1
            self.state = State.IDLE
            return LaneEvent(d, seq, "rejected", now, frame_ms, operator)
        relay = self.relay_for(d.mode)
        try:
            relay.pulse(self.pulse_ms, tag=f"seq={seq} ticket={d.ticket_id}")
        except Exception as exc:  # the turnstile did not open: give the entry back, and stop
            ev = self._give_back(d, seq, now, frame_ms, operator, f"relay failed: {type(exc).__name__}")
            self._fault_locked(FaultKind.RELAY, str(getattr(relay, "fault", None) or
                                                    f"{type(exc).__name__}: {exc}"))
            return ev
        self.state = State.OPEN
        if d.ticket_id:
            self._recent[d.ticket_id] = now
        if d.mode is Mode.EXIT:
            self.counters.exited += 1
            self.state = State.IDLE
            return LaneEvent(d, seq, "exit", now, frame_ms, operator)
        return None

    def _give_back(self, d: Decision, seq: int, now: float, frame_ms, operator, why: str) -> LaneEvent:
        entry = self._store_write(lambda: self.gate.rollback(seq, now=self.clock.now(), why=why))
        if entry is not None:
            self._notify(entry.seq)
        self.counters.rolled_back += 1
        self.state = State.IDLE
        return LaneEvent(d, seq, "rolled_back", now, frame_ms, operator)

    def _ms(self, captured_ns: int | None) -> float | None:
        if captured_ns is None:
            return None
        return (self.clock.monotonic_ns() - captured_ns) / 1e6

    def override(self, *, admit: bool, operator: str, ticket_id: str | None = None,
                 note: str = "") -> LaneEvent:
        """Manual admit / deny by staff: logged with the operator, never silent.
        An admit waits for the turnstile like a scan does (call it off the UI's loop)."""
        try:
            return self._override(admit=admit, operator=operator, ticket_id=ticket_id, note=note)
        finally:
            self._announce()  # a store fault met on the way is heard even though this raised

    def _override(self, *, admit: bool, operator: str, ticket_id: str | None, note: str) -> LaneEvent:
        with self._turn if admit else _NO_LOCK:
            with self._lock:
                if admit and self.fire:
                    raise HardwareError("a fire alarm is in force: every turnstile is released, "
                                        "nothing is admitted by code until it ends")
                if admit and self.faults:
                    raise HardwareError(f"the lane is faulted ({self.fault.kind.value}: {self.fault.detail}): "
                                        "nothing is admitted until a supervisor clears the fault")
                now = self.clock.now()
                reason = Reason.MANUAL_ADMIT if admit else Reason.MANUAL_DENY
                d = Decision(reason, self.mode, ticket_id=ticket_id, detail=note,
                             consumes_entry=admit and ticket_id is not None and self.mode is Mode.ENTRY)
                try:
                    entry = self.gate.record(d, now=now, qr=None, kind="override", operator=operator)
                except STORE_ERRORS as exc:  # not recorded, so not done: and the lane stops admitting
                    self._fault_locked(FaultKind.STORE, f"{type(exc).__name__}: {exc}")
                    raise
                self._notify(entry.seq)
                if not admit:
                    self.counters.rejected[reason.value] += 1
                    ev = LaneEvent(d, entry.seq, "override", now, None, operator)
            if not admit:
                return self._emit(ev)
            return self._effect(d, entry.seq, now, None, operator)

    def set_mode(self, mode: Mode, *, operator: str | None = None) -> None:
        """Switch entry/exit; persisted and logged (with the operator) in one transaction."""
        with self._lock:
            if mode is not self.mode:
                self.gate.set_mode(mode, now=self.clock.now(), operator=operator)

    def pause(self, paused: bool = True, *, operator: str | None = None) -> None:
        """Pause (every code is refused LANE_PAUSED, and logged) or resume the lane;
        logged with the operator."""
        with self._lock:
            if paused != self.paused:
                self.gate.control("pause" if paused else "resume", now=self.clock.now(), operator=operator)
            self.paused = paused
            self._paused_seen = None


def _refuse_paused(d: Decision) -> Decision:
    """A code shown to a paused lane: refused, whatever it is (what it was stays
    in the record for people: ticket, holder; no entry is consumed)."""
    return replace(d, reason=Reason.LANE_PAUSED, consumes_entry=False, sub=None,
                   detail="lane paused by staff")
