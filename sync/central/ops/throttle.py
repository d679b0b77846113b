"""Login throttling for the ops room and the report API's basic auth.

Two counters, both taken *before* a password is evaluated (so forty guesses
sent at once count as forty, not as the five that finished first):

- per client address: ``ADDRESS_MAX`` attempts that did not succeed within
  ``WINDOW_S``, then that address waits;
- per (account, client address): ``PAIR_MAX`` failures, then that address
  waits for that name.

An account is never locked as such: another address (the ops manager's own
laptop) with the right password gets in while one address hammers the name.
The answer is the same whether or not the name exists. A KDF slot
(:data:`KDF_SLOTS` scrypt checks at once per process) keeps a flood from
starving the threadpool that gate uploads use: a request that finds no free
slot within ``KDF_WAIT_S`` is told to retry, without computing anything.

State is per process (``gate central serve`` runs one); a restart forgets it.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager

WINDOW_S = 300.0
ADDRESS_MAX = 20     # failed or pending attempts per address per window
PAIR_MAX = 5         # ... per (name, address)
KDF_SLOTS = 2
KDF_WAIT_S = 2.0


class Throttled(Exception):
    """Too many attempts: ``retry_after`` seconds; the message is safe to show."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many login attempts from this address: wait {retry_after} s and try again")
        self.retry_after = retry_after


class Busy(Exception):
    """Every KDF slot is taken: try again shortly."""


class Throttle:
    def __init__(self, *, window_s: float = WINDOW_S, address_max: int = ADDRESS_MAX, pair_max: int = PAIR_MAX,
                 kdf_slots: int = KDF_SLOTS):
        self.window_s, self.address_max, self.pair_max = window_s, address_max, pair_max
        self.lock = threading.Lock()
        self.by_address: dict[str, deque] = {}
        self.by_pair: dict[tuple[str, str], deque] = {}
        self.kdf = threading.BoundedSemaphore(kdf_slots)

    def _trim(self, d: dict, key, now: float) -> deque:
        q = d.get(key)
        if q is None:
            q = d[key] = deque()
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def _gc(self, now: float) -> None:
        if len(self.by_address) + len(self.by_pair) < 10_000:
            return
        for d in (self.by_address, self.by_pair):
            for k in [k for k, q in d.items() if not q or q[-1] <= now - self.window_s]:
                del d[k]

    @contextmanager
    def attempt(self, address: str, name: str, *, now: float):
        """Reserve one attempt for (address, name) or raise :class:`Throttled`. The body
        checks the password; if it returns normally, the attempt succeeded and is released;
        if it raises, the attempt stays counted as a failure."""
        with self.lock:
            self._gc(now)
            qa = self._trim(self.by_address, address, now)
            qp = self._trim(self.by_pair, (name, address), now)
            for q, most in ((qa, self.address_max), (qp, self.pair_max)):
                if len(q) >= most:
                    raise Throttled(max(1, int(q[0] + self.window_s - now) + 1))
            qa.append(now)
            qp.append(now)
        ok = False
        try:
            yield
            ok = True
        finally:
            if ok:
                with self.lock:
                    for q in (qa, qp):
                        try:
                            q.remove(now)
                        except ValueError:
                            pass
                    qp.clear()  # the right password: this address starts afresh for this name

    @contextmanager
    def kdf_slot(self):
        if not self.kdf.acquire(timeout=KDF_WAIT_S):
            raise Busy("the server is busy checking passwords: try again in a few seconds")
        try:
            yield
        finally:
            self.kdf.release()
