"""The background sync loop of a running lane. It has its own database
connection, keeps its transactions short, and never sits on the decision path:
the lane decides from the local ledger whether or not central answers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sync.client import RetryPolicy, client_for, status, sync_once


class SyncLoop:
    def __init__(self, data_dir: Path, central_url: str | None = None, *, interval_s: float = 10.0,
                 policy: RetryPolicy = RetryPolicy()):
        self.data_dir = Path(data_dir)
        self.central_url = central_url
        self.interval_s = interval_s
        self.policy = policy
        self.failures = 0
        self.online: bool | None = None
        self.last_report = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gate-sync", daemon=True)

    @classmethod
    def for_gate(cls, gate, central_url: str | None = None, **kw) -> "SyncLoop":
        return cls(gate.data_dir, central_url, **kw)

    def start(self) -> "SyncLoop":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        self._thread.join(timeout=20)

    def sync_now(self) -> None:
        self._kick.set()

    def _run(self) -> None:
        from gate.appliance import Gate

        gate = Gate.open(self.data_dir, now=time.time())
        try:
            while not self._stop.is_set():
                try:
                    from sync import pretix
                    if gate.pretix is not None:
                        rep = pretix.sync_once(gate, pretix.client_for(gate))
                    else:
                        rep = sync_once(gate, client_for(gate, self.central_url))
                    self.last_report = rep
                    self.online = rep.ok or all("answered" in e for e in rep.errors)
                    self.last_error = None if rep.ok else rep.errors[0]
                    self.failures = 0 if rep.ok else self.failures + 1
                except Exception as exc:  # the loop must outlive any failure
                    self.online, self.last_error = False, str(exc)
                    self.failures += 1
                retry_after = getattr(self.last_report, "retry_after", None) if self.failures else None
                wait = self.interval_s if self.failures == 0 else self.policy.delay(self.failures,
                                                                                     retry_after=retry_after)
                self._kick.wait(timeout=wait)
                self._kick.clear()
        finally:
            gate.close()

    def snapshot(self, gate) -> dict:
        st = status(gate)
        st.update(online=self.online, last_error=self.last_error, at=time.time())
        return st
