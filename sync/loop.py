"""The background sync loop of a running lane. It has its own database
connection, keeps its transactions short, and never sits on the decision path:
the lane decides from the local ledger whether or not central answers.

Its state is typed (:class:`SyncState`) and decided from what central answered
(HTTP status, through :class:`sync.client.RetryPolicy`), never from the wording
of an error message.
"""

from __future__ import annotations

import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import Callable

from gate.errors import SyncError
from sync.client import ApiError, RetryPolicy, client_for, status, sync_once


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


def classify(rep, policy: RetryPolicy, *, max_offset_s: float) -> tuple[SyncState, bool]:
    """(state, retry soon) for one pass's report."""
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


class SyncLoop:
    def __init__(self, data_dir: Path, central_url: str | None = None, *, interval_s: float = 10.0,
                 policy: RetryPolicy = RetryPolicy(), max_clock_offset_s: float = 30.0,
                 reopen: Callable[[], object] | None = None):
        self.data_dir = Path(data_dir)
        self.reopen = reopen  # the loop's own connection to the gate (Gate.reopen): needed to start
        self.central_url = central_url
        self.interval_s = interval_s
        self.policy = policy
        self.max_clock_offset_s = max_clock_offset_s
        self.failures = 0
        self.state = SyncState.CONNECTING
        self.last_report = None
        self.last_error: str | None = None
        self.next_wait: float | None = None  # None: waiting for sync_now (no retries)
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._flush = False
        # what each pass tells central's ops room about the running lane (its link state,
        # a fault): set by the composition root, read at each pass (never via the database)
        self.headers: Callable[[], dict[str, str]] | None = None
        self._thread = threading.Thread(target=self._run, name="gate-sync", daemon=True)

    @classmethod
    def for_gate(cls, gate, central_url: str | None = None, **kw) -> "SyncLoop":
        """The loop for an open gate; it works on its own connection (``gate.reopen()``)."""
        return cls(gate.data_dir, central_url, reopen=gate.reopen, **kw)

    @property
    def online(self) -> bool | None:
        return self.state.online

    def start(self) -> "SyncLoop":
        if self.reopen is None:
            raise TypeError("SyncLoop.start needs the gate: build it with SyncLoop.for_gate(gate)")
        self._thread.start()
        return self

    def stop(self, *, flush: bool = True) -> None:
        """Stop the loop. With ``flush`` (the default) it first tries one last
        upload, so scans decided just before a lane stops reach central when it
        answers; an unreachable central costs one connect timeout, nothing more."""
        self._flush = flush
        self._stop.set()
        self._kick.set()
        self._thread.join(timeout=20)

    def sync_now(self) -> None:
        self._kick.set()

    def step(self, gate) -> SyncState:
        """One pass on ``gate`` (the loop's own connection); sets state and next_wait."""
        try:
            from sync import pretix
            if gate.pretix is not None:
                rep = pretix.sync_once(gate, pretix.client_for(gate))
            else:
                client = client_for(gate, self.central_url)
                if self.headers is not None:  # the lane's link state (and fault) for the ops room
                    client.status_headers.update(self.headers())
                rep = sync_once(gate, client)
        except ApiError as exc:  # a failure outside the pass's own steps
            from sync.client import SyncReport
            rep = SyncReport(errors=[str(exc)], failures=[exc])
        except SyncError as exc:  # not enrolled: retrying cannot help
            self.last_report, self.last_error = None, str(exc)
            self.state, self.next_wait = SyncState.UNAUTHORISED, None
            return self.state
        self.last_report = rep
        state, retry = classify(rep, self.policy, max_offset_s=self.max_clock_offset_s)
        self.last_error = None if rep.ok else rep.errors[0]
        if state is SyncState.CLOCK_WRONG:
            self.last_error = (f"this gate's clock is {rep.clock_offset_s:+.0f} s off central's: "
                               "set the time (rotating codes depend on it)")
        self.failures = 0 if rep.ok else self.failures + 1
        if state is SyncState.UNAUTHORISED:
            self.next_wait = None
        elif retry:  # never sooner than central's Retry-After (503 when its pool is exhausted)
            self.next_wait = self.policy.delay(self.failures, retry_after=getattr(rep, "retry_after", None))
        else:
            self.next_wait = self.interval_s
        self.state = state
        return state

    def _run(self) -> None:
        gate = self.reopen()
        try:
            while not self._stop.is_set():
                try:
                    self.step(gate)
                except Exception as exc:  # the loop must outlive any failure
                    self.state, self.last_error = SyncState.DEGRADED, f"{type(exc).__name__}: {exc}"
                    self.failures += 1
                    self.next_wait = self.policy.delay(self.failures)
                self._kick.wait(timeout=self.next_wait)  # None: only sync_now or stop wakes it
                self._kick.clear()
            if self._flush and self.state is not SyncState.UNAUTHORISED \
                    and gate.pretix is None:
                self._final_upload(gate)
        finally:
            gate.close()

    def _final_upload(self, gate) -> None:
        from sync.client import push_scans

        try:
            push_scans(gate, client_for(gate, self.central_url))
        except Exception as exc:  # stopping must not fail: the outbox keeps them for next time
            self.last_error = f"final upload: {exc}"

    def snapshot(self, gate) -> dict:
        """What the UI shows; ``gate`` is anything with ``conn`` and ``data_dir``
        (the UI passes its own read connection, never the lane's)."""
        st = status(gate)
        st.update(online=self.online, state=self.state, last_error=self.last_error, at=time.time())
        return st
