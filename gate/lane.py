"""The lane state machine: idle → decided → (face) → open → passed | rolled_back.

The decision is durable in the scan log before the relay moves. An accepted
entry with no passage within ``passage_timeout_s`` is rolled back (logged, and
the entry is given back). Hardware comes in through the ports in
``hardware.ports``; this module imports no hardware library.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable

from gate.appliance import Gate
from gate.bus import LinkState, WhenAlone, apply_when_alone
from gate.decision import Decision, Mode, Reason

DEFAULT_PULSE_MS = 200


class State(StrEnum):
    IDLE = "idle"
    DECIDED = "decided"
    FACE = "face"
    OPEN = "open"
    PASSED = "passed"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class LaneEvent:
    decision: Decision
    seq: int | None
    outcome: str  # passed | rolled_back | rejected | exit | override
    at: float
    frame_ms: float | None = None
    operator: str | None = None

    def to_json(self) -> dict:
        out = self.decision.to_json()
        out.update(seq=self.seq, outcome=self.outcome, at=self.at,
                   frame_ms=None if self.frame_ms is None else round(self.frame_ms, 3))
        if self.operator:
            out["operator"] = self.operator
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
    def __init__(self, gate: Gate, *, relay, sensor, clock, face=None,
                 pulse_ms: int = DEFAULT_PULSE_MS, cooldown_s: float = 3.0):
        self.gate = gate
        self.relay = relay
        self.sensor = sensor
        self.clock = clock
        self.face = face  # FaceSource: capture(timeout_s) -> FaceCapture, or None
        self.pulse_ms = pulse_ms
        self.cooldown_s = cooldown_s
        self.state = State.IDLE
        self.paused = False
        self.counters = Counters()
        self.observers: list[Callable[[LaneEvent], None]] = []
        self._recent: dict[str, float] = {}
        self._lock = threading.RLock()  # the TUI commands the lane from another thread
        # venue bus (gate.bus): the link state source (None: not tracked), the policy
        # while ALONE, and hooks called with each appended seq (they must not block)
        self.link: Callable[[], LinkState] | None = None
        self.when_alone = WhenAlone.ADMIT
        self.appended: list[Callable[[int], None]] = []
        self.bus = None  # the running bus service, for status displays

    def _notify(self, seq: int) -> None:
        for fn in self.appended:
            fn(seq)

    def _alone(self) -> bool:
        return self.link is not None and self.link() is LinkState.ALONE

    @property
    def mode(self) -> Mode:
        return self.gate.policy.mode

    def _emit(self, ev: LaneEvent) -> LaneEvent:
        for fn in list(self.observers):
            fn(ev)
        return ev

    def _in_cooldown(self, d: Decision, now: float) -> bool:
        """The holder of a just-admitted ticket is still in front of the camera."""
        if d.ticket_id is None or d.reason not in (Reason.REPLAY, Reason.ALREADY_USED):
            return False
        t = self._recent.get(d.ticket_id)
        return t is not None and now - t < self.cooldown_s

    def submit(self, qr: str, captured_ns: int | None = None) -> LaneEvent | None:
        """One code read by the camera or a scanner. Returns the lane event, or
        None when the read was ignored (paused lane, or a duplicate read)."""
        with self._lock:
            if self.paused:
                return None
            now = self.clock.now()
            d = self.gate.decide(qr, now=now)
            if self._in_cooldown(d, now):
                return None
            if d.reason is Reason.FACE_REQUIRED and self.face is not None:
                self.state = State.FACE
                capture = self.face.capture(self.gate.config.face_timeout_s)
                now = self.clock.now()
                d = self.gate.decide(qr, now=now, face=capture)
            self.state = State.DECIDED
            alone = self._alone()
            if alone:
                d = apply_when_alone(d, self.when_alone)
            entry = self.gate.record(d, now=now, qr=qr, alone=alone and d.accepted)  # durable before any effect
            self._notify(entry.seq)
            return self._effect(d, entry.seq, now, captured_ns)

    def _effect(self, d: Decision, seq: int, now: float, captured_ns: int | None,
                operator: str | None = None) -> LaneEvent:
        if not d.accepted:
            self.counters.rejected[d.reason.value] += 1
            self.state = State.IDLE
            return self._emit(LaneEvent(d, seq, "rejected", now, self._ms(captured_ns), operator))
        self.relay.pulse(self.pulse_ms, tag=f"seq={seq} ticket={d.ticket_id}")
        frame_ms = self._ms(captured_ns)
        self.state = State.OPEN
        if d.ticket_id:
            self._recent[d.ticket_id] = now
        if d.mode is Mode.EXIT:
            self.counters.exited += 1
            self.state = State.IDLE
            return self._emit(LaneEvent(d, seq, "exit", now, frame_ms, operator))
        passed = self.sensor.wait_passage(self.gate.config.passage_timeout_s)
        if passed:
            if getattr(self.sensor, "present", False):
                self.gate.passed(seq, now=self.clock.now())
            self.counters.admitted += 1
            self.state = State.IDLE
            return self._emit(LaneEvent(d, seq, "passed", now, frame_ms, operator))
        self._notify(self.gate.rollback(seq, now=self.clock.now(), why="no passage").seq)
        self.counters.rolled_back += 1
        self.state = State.IDLE
        return self._emit(LaneEvent(d, seq, "rolled_back", now, frame_ms, operator))

    def _ms(self, captured_ns: int | None) -> float | None:
        if captured_ns is None:
            return None
        return (self.clock.monotonic_ns() - captured_ns) / 1e6

    def override(self, *, admit: bool, operator: str, ticket_id: str | None = None,
                 note: str = "") -> LaneEvent:
        """Manual admit / deny by staff: logged with the operator, never silent."""
        with self._lock:
            now = self.clock.now()
            reason = Reason.MANUAL_ADMIT if admit else Reason.MANUAL_DENY
            d = Decision(reason, self.mode, ticket_id=ticket_id, detail=note,
                         consumes_entry=admit and ticket_id is not None and self.mode is Mode.ENTRY)
            entry = self.gate.record(d, now=now, qr=None, kind="override", operator=operator)
            self._notify(entry.seq)
            if not admit:
                self.counters.rejected["OVERRIDE_DENY"] += 1
                return self._emit(LaneEvent(d, entry.seq, "override", now, None, operator))
            return self._effect(d, entry.seq, now, None, operator)

    def set_mode(self, mode: Mode) -> None:
        with self._lock:
            self.gate.set_mode(mode)

    def pause(self, paused: bool = True) -> None:
        self.paused = paused
