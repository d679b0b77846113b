"""The sync loop: the one sync engine (:mod:`sync.engine`) driven pass after
pass, in a running lane's background thread (:meth:`SyncLoop.start`) or in the
foreground of ``gate sync`` (:meth:`SyncLoop.run`). Both wait exactly what the
engine decided (the interval, or the retry policy's backoff, never sooner than
a server's ``Retry-After``).

In a lane it has its own database connection, keeps its transactions short,
and never sits on the decision path: the lane decides from the local ledger
whether or not central answers. Its state is typed (:class:`SyncState`) and
decided from what central answered (HTTP status), never from the wording of an
error message; callers read it from :attr:`SyncLoop.state` /
:attr:`SyncLoop.online` or hear it through :attr:`SyncLoop.listeners`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from gate.db import get_setting
from sync import pretix
from sync.client import CentralStrategy, client_for, status
from sync.engine import RetryPolicy, Strategy, SyncEngine, SyncReport, SyncState, classify

__all__ = ["SyncLoop", "SyncState", "classify", "strategy_for"]


def strategy_for(gate, central_url: str | None = None) -> Strategy:
    """The strategy for this gate's central: pretix for a ``pretix+http(s)://`` URL,
    else the reference central. ``central_url`` (None: the one stored at enrolment)."""
    url = central_url or get_setting(gate.conn, "sync.central")
    if pretix.is_pretix(url):
        return pretix.PretixStrategy(pretix.client_for(gate))
    return CentralStrategy(client_for(gate, url))


class SyncLoop(SyncEngine):
    """The sync engine with a clock: passes, then waits :attr:`next_wait` (None:
    parked until :meth:`sync_now`, e.g. after enrolling again)."""

    def __init__(self, data_dir: Path, central_url: str | None = None, *, interval_s: float = 10.0,
                 policy: RetryPolicy = RetryPolicy(), max_clock_offset_s: float = 30.0,
                 reopen: Callable[[], object] | None = None):
        super().__init__(lambda gate: strategy_for(gate, central_url), interval_s=interval_s, policy=policy,
                         max_clock_offset_s=max_clock_offset_s)
        self.data_dir = Path(data_dir)
        self.reopen = reopen  # the loop's own connection to the gate (Gate.reopen): needed to start
        self.central_url = central_url
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._flush = False
        self._thread = threading.Thread(target=self._run, name="gate-sync", daemon=True)

    @classmethod
    def for_gate(cls, gate, central_url: str | None = None, **kw) -> "SyncLoop":
        """The loop for an open gate; it works on its own connection (``gate.reopen()``)."""
        return cls(gate.data_dir, central_url, reopen=gate.reopen, **kw)

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
        if self._thread.is_alive():
            self._thread.join(timeout=20)

    def sync_now(self) -> None:
        self._kick.set()

    def run(self, gate, *, on_pass: Callable[[SyncReport], None] | None = None, foreground: bool = False) -> None:
        """Pass, wait, pass... until :meth:`stop`. In the background (a lane) a
        failure outside the steps is retried with backoff, and when the engine
        parks (token refused, not enrolled) it waits for :meth:`sync_now`. In the
        ``foreground`` (``gate sync``) such a failure reaches the operator, and a
        parked engine returns: nobody could wake it."""
        while not self._stop.is_set():
            try:
                rep = self.run_pass(gate)
            except Exception as exc:
                if foreground:
                    raise
                self.crashed(exc)  # the lane's loop must outlive any failure
            else:
                if on_pass is not None:
                    on_pass(rep)
            if self.next_wait is None and foreground:
                return
            self._kick.wait(timeout=self.next_wait)  # None: only sync_now or stop wakes it
            self._kick.clear()

    def _run(self) -> None:
        try:
            gate = self.reopen()
        except Exception as exc:  # shown as the loop's error; the lane goes on deciding from its ledger
            self.crashed(exc)
            return
        try:
            self.run(gate)
            if self._flush:
                self.flush(gate)
        finally:
            gate.close()

    def snapshot(self, gate) -> dict:
        """What the UI shows; ``gate`` is anything with ``conn`` and ``data_dir``
        (the UI passes its own read connection, never the lane's)."""
        st = status(gate)
        st.update(online=self.online, state=self.state, last_error=self.last_error, at=time.time())
        return st
