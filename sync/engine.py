"""One sync engine: the step runner every way of syncing drives.

``gate sync --once``, ``gate sync`` (looping) and a running lane's background
loop (:class:`sync.loop.SyncLoop`) all run passes through :class:`SyncEngine`;
what a pass does comes from a *strategy* (the reference central,
:class:`sync.client.CentralStrategy`, or pretix, :class:`sync.pretix.PretixStrategy`),
which lists its steps. The engine owns everything the strategies share:

- **the step runner** (:func:`run_pass`): each step in order, each even when an
  earlier one failed, except that when nothing answered the first step the rest
  is not tried. A step keeps its own cursor (``Step.cursor``, a settings key);
  what a step applies moves together with its cursor in one transaction
  (:func:`advance`), so a step that fails applies nothing of the unit that
  failed and leaves its cursor where the last applied unit left it;
- **the retry policy** (:class:`RetryPolicy`), a value object in the manner of
  urllib3's ``Retry``: it classifies a failure by HTTP status and computes the
  next delay (exponential backoff with jitter, never sooner than a server's
  ``Retry-After``); it never sleeps. The driver (the CLI or the lane's thread)
  waits;
- **the state** (:class:`SyncState`), decided from what was answered (status
  codes), never from an error's wording, and told to callers through
  :attr:`SyncEngine.state`, :attr:`SyncEngine.online` and the
  :attr:`SyncEngine.listeners` callbacks, not through the database.

This module never sleeps and never starts a thread; the strategies do the I/O.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable, Mapping, Protocol, Sequence

from gate.db import get_setting, put_setting, transaction
from gate.errors import SyncError


# ------------------------------------------------------------------ failures and the retry policy


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again and how long to wait (exponential backoff with jitter);
    computes, never sleeps. Modelled on urllib3's ``Retry.is_retry``: a failure is
    retried when nothing answered (network down, timeout) or when the status is
    in ``status_forcelist``; an answer in ``stop_statuses`` (the token is refused)
    means retrying cannot help until someone acts."""

    base_s: float = 1.0
    cap_s: float = 60.0
    jitter: float = 0.2
    status_forcelist: frozenset = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
    stop_statuses: frozenset = frozenset({401, 403})

    def is_retry(self, status: int | None) -> bool:
        """Retry after a failure with this HTTP status (None: central did not answer)."""
        if status is None:
            return True
        return status in self.status_forcelist or status >= 500

    def is_stop(self, status: int | None) -> bool:
        """This answer means: stop retrying until an operator acts (enrol again)."""
        return status is not None and status in self.stop_statuses

    def delay(self, failures: int, rng: random.Random | None = None, *, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` failures in a row; a server's
        ``Retry-After`` is honoured (never retry sooner than it asks, up to the cap)."""
        if failures <= 0:
            return 0.0
        d = min(self.cap_s, self.base_s * 2 ** (failures - 1))
        r = (rng or random).uniform(-self.jitter, self.jitter)
        d = max(0.0, d * (1 + r))
        if retry_after is not None and retry_after > 0:
            d = max(d, min(self.cap_s, float(retry_after)))
        return d

    @staticmethod
    def retryable_status(status: int) -> bool:
        """:meth:`is_retry` of the default policy (for errors raised before a policy is known)."""
        return _DEFAULT_POLICY.is_retry(status)


_DEFAULT_POLICY = RetryPolicy()


class ApiError(SyncError):
    """A sync step failed on what the other side answered (``status``) or did not
    answer (``answered`` False: unreachable, timeout)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True,
                 body: dict | None = None, answered: bool = True, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retryable, self.body = status, retryable, body or {}
        self.answered = answered  # False: no answer at all (unreachable, timeout)
        self.retry_after = retry_after  # seconds the server asked us to wait (Retry-After)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (the delta form; an HTTP date is rare from central)."""
    try:
        v = float(headers.get("Retry-After", ""))
    except ValueError:
        return None
    return v if 0 <= v < 86400 else None


# ------------------------------------------------------------------ steps, strategies, one pass


@dataclass
class SyncReport:
    keys: int = 0
    tickets: int = 0
    uploaded: int = 0
    admissions: int = 0
    devices: int = 0
    clock_offset_s: float | None = None
    errors: list[str] = field(default_factory=list)
    failures: list[ApiError] = field(default_factory=list)  # the errors, with their status
    needs_enrolment: bool = False  # no token (or no central) to sync with: enrol first

    @property
    def retry_after(self) -> float | None:
        """The longest Retry-After central sent in this pass (None: it sent none)."""
        waits = [f.retry_after for f in self.failures if getattr(f, "retry_after", None) is not None]
        return max(waits) if waits else None

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict:
        return {"ok": self.ok, "keys": self.keys, "tickets": self.tickets, "uploaded": self.uploaded,
                "admissions": self.admissions, "clock_offset_s": self.clock_offset_s, "errors": self.errors}


@dataclass(frozen=True)
class Step:
    """One step of a pass. ``run`` returns a count (added to the report's
    ``counter`` field) and raises :class:`ApiError` when it fails; ``cursor`` names
    the settings key where the step keeps its position (None: the step pulls a
    whole snapshot each time)."""

    name: str
    run: Callable[[], int | None]
    counter: str | None = None
    cursor: str | None = None


class Strategy(Protocol):
    """What a central system (the reference central, pretix) gives the engine."""

    name: str

    def begin(self, gate, *, now: float, report: Mapping[str, str]) -> None:
        """Before a pass: what this gate tells central about itself. ``report`` is
        what the running lane adds (``X-Gate-Link``, a fault), empty without a lane."""
        ...

    def steps(self, gate, rep: SyncReport, *, now: float) -> Sequence[Step]:
        """The pass's steps, in order; each one fills ``rep`` as it runs."""
        ...

    def upload(self, gate) -> int:
        """Push the outbox once (the last upload when a lane stops)."""
        ...


def advance(gate, cursor: str, value, apply: Callable | None = None) -> None:
    """Apply a unit of a step (``apply(conn)``) and move its cursor, in one
    transaction: either both happen or neither."""
    with transaction(gate.conn):
        if apply is not None:
            apply(gate.conn)
        put_setting(gate.conn, cursor, value)


def run_pass(gate, strategy: Strategy, *, now: float | None = None,
             report: Mapping[str, str] | None = None) -> SyncReport:
    """One pass of ``strategy``'s steps on ``gate`` (the step runner). Each step is
    tried even when an earlier one failed, so an upload still happens when a
    ticket page is bad, and vice versa; when nothing answered the first step (the
    central is unreachable) the rest is not tried now."""
    rep = SyncReport()
    t = time.time() if now is None else now
    strategy.begin(gate, now=t, report=dict(report or {}))
    for i, step in enumerate(strategy.steps(gate, rep, now=t)):
        try:
            n = step.run()
        except ApiError as exc:
            rep.errors.append(f"{step.name}: {exc}")
            rep.failures.append(exc)
            if i == 0 and not exc.answered:
                break
            continue
        if step.counter is not None and n:
            setattr(rep, step.counter, getattr(rep, step.counter) + n)
    gate.enforce_retention(time.time())
    with transaction(gate.conn):
        put_setting(gate.conn, "sync.last_attempt", time.time())
        if rep.ok:
            put_setting(gate.conn, "sync.last_ok", time.time())
    return rep


# ------------------------------------------------------------------ state


class SyncState(StrEnum):
    CONNECTING = "connecting"      # no pass finished yet
    ONLINE = "online"              # the last pass went through
    DEGRADED = "degraded"          # central answered, but with an error (retried)
    OFFLINE = "offline"            # central did not answer (retried with backoff)
    CLOCK_WRONG = "clock_wrong"    # synced, but this gate's clock is far from central's
    UNAUTHORISED = "unauthorised"  # token refused (revoked) or never enrolled: enrol again

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def online(self) -> bool | None:
        """Central answering usefully (None: not known yet). An error answer
        (DEGRADED: 5xx, a refused certificate) or a refused token teaches the gate
        nothing about other lanes, so it counts as central gone for the link state."""
        return None if self is SyncState.CONNECTING else self in (SyncState.ONLINE, SyncState.CLOCK_WRONG)


_LABELS = {
    SyncState.CONNECTING: "connecting",
    SyncState.ONLINE: "ONLINE",
    SyncState.DEGRADED: "CENTRAL ERROR",
    SyncState.OFFLINE: "OFFLINE",
    SyncState.CLOCK_WRONG: "CLOCK WRONG",
    SyncState.UNAUTHORISED: "NOT ENROLLED: enrol again",
}


def classify(rep: SyncReport, policy: RetryPolicy, *, max_offset_s: float) -> tuple[SyncState, bool]:
    """(state, retry soon) for one pass's report."""
    if rep.needs_enrolment:
        return SyncState.UNAUTHORISED, False
    if rep.ok:
        off = rep.clock_offset_s
        wrong = off is not None and abs(off) > max_offset_s
        return (SyncState.CLOCK_WRONG if wrong else SyncState.ONLINE), False
    statuses = [getattr(f, "status", None) for f in rep.failures]
    if any(policy.is_stop(s) for s in statuses):
        return SyncState.UNAUTHORISED, False
    if rep.failures and all(not getattr(f, "answered", True) for f in rep.failures):
        return SyncState.OFFLINE, True
    return SyncState.DEGRADED, any(policy.is_retry(s) for s in statuses) or not statuses


# ------------------------------------------------------------------ the engine


class SyncEngine:
    """Runs passes of the strategy ``connect(gate)`` returns, and after each one
    decides the state and how long to wait before the next (:attr:`next_wait`;
    None: not until :meth:`run_pass` is called by someone who acted, e.g. after
    enrolling again). It never waits itself: its drivers do."""

    def __init__(self, connect: Callable[..., Strategy], *, interval_s: float = 10.0,
                 policy: RetryPolicy = RetryPolicy(), max_clock_offset_s: float = 30.0):
        self.connect = connect
        self.interval_s = interval_s
        self.policy = policy
        self.max_clock_offset_s = max_clock_offset_s
        self.failures = 0
        self.state = SyncState.CONNECTING
        self.last_report: SyncReport | None = None
        self.last_error: str | None = None
        self.next_wait: float | None = None
        # what each pass tells central's ops room about the running lane, read at each pass (never
        # through the database); set by the composition root: ``headers`` gives X-Gate-* headers (the
        # link state, a fault), ``link`` the link state alone (ONLINE/VENUE/ALONE) as X-Gate-Link
        self.headers: Callable[[], Mapping[str, str]] | None = None
        self.link: Callable[[], str] | None = None
        # called with the new state whenever it changes (from the thread that ran the pass)
        self.listeners: list[Callable[[SyncState], None]] = []

    @property
    def online(self) -> bool | None:
        """Central answering usefully (None: no pass finished yet)."""
        return self.state.online

    def run_pass(self, gate, *, now: float | None = None) -> SyncReport:
        """One pass on ``gate``; sets :attr:`state`, :attr:`next_wait`, :attr:`last_report`."""
        try:
            strategy = self.connect(gate)
        except ApiError as exc:  # e.g. a stored configuration it cannot use
            rep = SyncReport(errors=[str(exc)], failures=[exc])
        except SyncError as exc:  # not enrolled: retrying cannot help
            rep = SyncReport(errors=[str(exc)], needs_enrolment=True)
        else:
            rep = run_pass(gate, strategy, now=now, report=self.lane_report())
        self.settle(rep)
        return rep

    def lane_report(self) -> dict[str, str]:
        """The running lane's self-report for this pass (:attr:`headers`, :attr:`link`)."""
        out = dict(self.headers()) if self.headers is not None else {}
        if self.link is not None:
            out.setdefault("X-Gate-Link", str(self.link()))
        return out

    def step(self, gate, *, now: float | None = None) -> SyncState:
        """:meth:`run_pass`, answering the state it left."""
        self.run_pass(gate, now=now)
        return self.state

    def settle(self, rep: SyncReport) -> None:
        """Take one pass's report: state, failures in a row, the next wait."""
        state, retry = classify(rep, self.policy, max_offset_s=self.max_clock_offset_s)
        self.last_report = rep
        self.last_error = None if rep.ok else rep.errors[0]
        if state is SyncState.CLOCK_WRONG:
            self.last_error = (f"this gate's clock is {rep.clock_offset_s:+.0f} s off central's: "
                               "set the time (rotating codes depend on it)")
        self.failures = 0 if rep.ok else self.failures + 1
        if state is SyncState.UNAUTHORISED:
            self.next_wait = None
        elif retry:  # never sooner than central's Retry-After (503 when its pool is exhausted)
            self.next_wait = self.policy.delay(self.failures, retry_after=rep.retry_after)
        else:
            self.next_wait = self.interval_s
        self._set_state(state)

    def crashed(self, exc: BaseException) -> None:
        """A pass failed outside its steps (a bug, a full disk): degraded, retried with backoff."""
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.failures += 1
        self.next_wait = self.policy.delay(self.failures)
        self._set_state(SyncState.DEGRADED)

    def flush(self, gate) -> int:
        """One last upload of the outbox (a lane stopping); an unreachable central
        costs one connect timeout, and whatever is not sent stays in the outbox."""
        if self.state is SyncState.UNAUTHORISED:
            return 0
        try:
            return self.connect(gate).upload(gate)
        except Exception as exc:  # stopping must not fail: the outbox keeps them for next time
            self.last_error = f"final upload: {exc}"
            return 0

    def _set_state(self, state: SyncState) -> None:
        changed, self.state = state is not self.state, state
        if changed:
            for listener in list(self.listeners):
                try:
                    listener(state)
                except Exception as exc:  # a listener's bug must not stop syncing; it is shown
                    self.last_error = f"state listener {listener!r}: {type(exc).__name__}: {exc}"


def cursors(gate, strategy: Strategy) -> dict[str, object]:
    """Where each step of ``strategy`` stands (step name -> its cursor's value)."""
    return {s.name: get_setting(gate.conn, s.cursor) for s in strategy.steps(gate, SyncReport(), now=0.0)
            if s.cursor is not None}
