"""The venue bus in a running lane (docs/bus.md): a publisher thread fed by a
bounded queue (the lane only appends a seq and never waits), a receiver thread
that verifies and stores peer records, an answerer for peers' catch-up and
liveness queries, a monitor for liveness and the link state, and a catch-up
thread. Every queue is bounded, and the queues are split so that traffic from
unknown keys can never push out a trusted device's records:

- received records: one queue per trusted device (each bounded), one small
  queue for everything else; the receiver takes from each device in turn;
- catch-up answers: at most ``REPLIES_PER_PEER`` per answering session and a
  time budget per round (``START_CATCHUP_S`` before the lane's first decision,
  then ``CATCHUP_S`` per round in the background while the lane decides, every
  ``PERIODIC_S`` and within ``GAP_S`` of a live record that shows a gap); a
  session whose replies keep failing verification is cut off;
- queries we answer: only signed by a trusted device, each asker with its own
  token bucket.

A peer counts for the link state only while it answers our liveness challenge
(a fresh random nonce, every ``LIVE_PERIOD_S``) with its device key, and is on
the trust list, active and not quarantined: a bare session proves nothing.

Every thread has its own database connection; the lane's connection is never
touched here.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from pathlib import Path
from typing import Callable

from crypto import gt1
from gate import bus
from gate.bus import BusBook, BusPort, Ignored, LinkState
from gate.db import connect
from gate.keyfiles import load_device_key

PERIODIC_S = 10.0        # a catch-up round this often while peers are live (heals what a flood dropped)
LIVE_PERIOD_S = 2.0      # a liveness challenge this often
LIVE_TIMEOUT_S = 1.0
LIVE_TTL_S = 5.0         # a peer stops counting this long after its last good answer
GAP_S = 1.0              # a live record after a gap starts a catch-up round, at most this often
START_CATCHUP_S = 2.0    # catch-up before the lane's first decision, at most
CATCHUP_S = 1.0          # each background catch-up round, at most
ANSWER_LIMIT = 2000      # records in one catch-up answer (the asker asks again from where it got to)
REPLIES_PER_PEER = ANSWER_LIMIT + 64
LIVE_REPLIES_PER_PEER = 4
BAD_PER_PEER = 32        # refused replies from one session in one round: the rest of its answer is dropped
DEVICE_QUEUE = 2048      # live records waiting, per trusted device
UNKNOWN_QUEUE = 256      # live records waiting from every other sender together
QUERY_QUEUE = 64
SYNC_RATE, SYNC_BURST = 1.0, 6   # catch-up answers per asking device (per second, burst)
LIVE_RATE, LIVE_BURST = 4.0, 8   # liveness answers per asking device
SIGNED_CACHE = 50_000    # our own signed messages kept for catch-up answers
STORED = ("accepted", "forked", "restored", "held")
REFUSED = ("unknown_device", "revoked", "bad_signature", "wrong_event", "malformed", "not_usage")


class Bucket:
    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: float, now: float):
        self.rate, self.burst, self.tokens, self.last = rate, burst, burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class _Replies:
    """Replies to one of our queries, bounded per answering session; filled on the
    network thread, drained by ours."""

    def __init__(self, per_replier: int):
        self.per_replier = per_replier
        self.items: collections.deque = collections.deque()
        self.count: collections.Counter = collections.Counter()
        self.blocked: set = set()
        self.capped = 0
        self.closed = False
        self.done = threading.Event()
        self.more = threading.Event()

    def add(self, replier: str, data: bytes) -> None:
        if self.closed or replier in self.blocked:
            return
        if self.count[replier] >= self.per_replier:
            self.capped += 1
            return
        self.count[replier] += 1
        self.items.append((replier, data))
        self.more.set()

    def finish(self) -> None:
        self.done.set()
        self.more.set()

    def next(self, timeout: float):
        """The next reply, or None when none came within ``timeout`` or all are in."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.items.popleft()
            except IndexError:
                pass
            if self.done.is_set():
                return self.items.popleft() if self.items else None
            self.more.clear()
            if self.items:
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not self.more.wait(left):
                return None


class BusService:
    def __init__(self, data_dir: Path, port: BusPort, *, device_id: str, event: str,
                 queue_max: int = 4096, central_ok: Callable[[], bool | None] = lambda: None):
        self.data_dir = Path(data_dir)
        self.port = port
        self.device_id, self.event = device_id, event
        self.central_ok = central_ok
        self.key = load_device_key(self.data_dir)
        db = self.data_dir / "gate.db"
        self._pub_conn = connect(db)
        self._rx_conn = connect(db)
        # peer records are re-fetched by catch-up after a power cut: no fsync per message
        # (WAL + NORMAL still commits atomically; the lane's own log stays FULL)
        self._rx_conn.execute("PRAGMA synchronous=NORMAL")
        self._q_conn = connect(db)
        self.book = BusBook(self._rx_conn, device_id, event, own_pub=gt1.raw_public(self.key))
        self._out: collections.deque[int] = collections.deque(maxlen=queue_max)
        self._queues: dict[str, collections.deque] = {}
        self._unknown: collections.deque = collections.deque()
        self._live_q: collections.deque = collections.deque()
        self._sync_q: collections.deque = collections.deque()
        self._out_ev, self._in_ev, self._ans_ev = threading.Event(), threading.Event(), threading.Event()
        self._sync_ev, self._stop = threading.Event(), threading.Event()
        self._rx_lock, self._q_lock = threading.Lock(), threading.Lock()
        self._signed: dict[int, bytes] = {}
        self.published = self.dropped_out = self.catchups = 0
        self.dropped_in = self.dropped_in_unknown = 0  # trusted devices' records / everything else
        self.caught_up = 0  # records learnt through catch-up
        self.live_rounds = 0  # liveness challenges sent
        self.gap_catchups = 0  # catch-up rounds started because a live record showed a gap
        self._gap = False
        self.answered = {"sync": 0, "live": 0}
        self.refused_queries: collections.Counter = collections.Counter()
        self.last_catchup: dict = {}
        self.cut_off_total = 0  # sessions cut off for refused answers, over every catch-up round
        self._trust_v: str | None = None
        self._trust = bus.Trust({})
        self._trusted_ids: frozenset = frozenset({device_id})
        self._buckets: dict = {}
        self._live: dict[str, float] = {}          # device -> when it last proved it is alive
        self._live_in: collections.deque = collections.deque()
        self._live_nonces: collections.deque = collections.deque(maxlen=2)
        self._peers = 0
        self.port_peers_configured = False  # set by the composer: wait for a peer at start
        self._state: LinkState | None = None
        self.on_state: list[Callable[[LinkState, int], None]] = []
        # a peer record is stored and counts (receiver or catch-up thread)
        self.on_stored: list[Callable[[dict], None]] = []
        self._reload_trust()
        self._workers = [threading.Thread(target=f, name=n, daemon=True) for f, n in
                         ((self._publisher, "bus-pub"), (self._receiver, "bus-rx"), (self._answerer, "bus-ans"))]
        self._watchers = [threading.Thread(target=f, name=n, daemon=True) for f, n in
                          ((self._monitor, "bus-mon"), (self._syncer, "bus-sync"))]

    # ------------------------------------------------------------ lane side

    def appended(self, seq: int) -> None:
        """Lane hook after a durable append: O(1), never blocks."""
        if len(self._out) == self._out.maxlen:
            self.dropped_out += 1
        self._out.append(seq)
        self._out_ev.set()

    @property
    def peers(self) -> int:
        """Trusted devices that proved they are alive within LIVE_TTL_S."""
        return self._peers

    def live_peers(self) -> list[str]:
        return sorted(self._live)

    def state(self) -> LinkState:
        return bus.link_state(central_ok=self.central_ok(), peers=self._peers)

    # ------------------------------------------------------------ lifecycle

    def start(self, *, wait_peers_s: float = 0.0, catchup_s: float = START_CATCHUP_S) -> "BusService":
        """Subscribe and answer; then, when peers are configured, wait (bounded) for
        a live one and catch up (bounded) before the lane takes its first decision."""
        self.port.subscribe(self._on_message)
        self.port.answer("sync", self._on_sync_query)
        self.port.answer("live", self._on_live_query)
        for t in self._workers:
            t.start()
        deadline = time.monotonic() + wait_peers_s
        while wait_peers_s and not self._stop.is_set():
            if self.port.sessions():
                self._live_round(wait=True)
            if self._peers or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if self._peers:
            self.catch_up(catchup_s)
        self._state = self.state()  # the monitor reports changes from here on
        for t in self._watchers:
            t.start()
        return self

    def close(self) -> None:
        self._stop.set()
        for ev in (self._out_ev, self._in_ev, self._ans_ev, self._sync_ev):
            ev.set()
        self.port.close()  # first: a publish stuck on a congested link returns
        for t in self._workers + self._watchers:
            if t.is_alive():
                t.join(timeout=3)
        for q in (self._live_q, self._sync_q):
            while q:
                q.popleft().close()
        self.save_status()
        for c in (self._pub_conn, self._rx_conn, self._q_conn):
            c.close()

    # ------------------------------------------------------------ trust

    def _reload_trust(self) -> None:
        with self._q_lock:
            v = bus.trust_version(self._q_conn)
            devices = bus.trusted(self._q_conn)
        self._trust_v = v
        self._trust = bus.Trust(devices)
        self._trusted_ids = frozenset([d for d, t in devices.items() if t.status == "active"] + [self.device_id])
        with self._rx_lock:
            self.book.reload_trust()
        for d in list(self._live):
            t = devices.get(d)
            if t is None or not t.counts:
                self._live.pop(d, None)

    # ------------------------------------------------------------ publishing

    def _publisher(self) -> None:
        while not self._stop.is_set():
            self._out_ev.wait(0.5)
            self._out_ev.clear()
            while self._out:
                try:
                    seq = self._out.popleft()
                except IndexError:
                    break
                try:
                    msg = bus.message_for(self._pub_conn, self.key, self.device_id, seq)
                    if msg is not None:
                        data = msg.encode()
                        if len(self._signed) >= SIGNED_CACHE:
                            self._signed.clear()
                        self._signed[seq] = data
                        self.port.publish(self.device_id, seq, data)
                        self.published += 1
                except Exception:  # the bus is gossip: a failed put is caught up later
                    pass

    # ------------------------------------------------------------ receiving

    def _on_message(self, data: bytes) -> None:
        """Network thread: queue by the device the message claims (no decoding)."""
        dev = bus.peek_device(data)
        if dev is not None and dev in self._trusted_ids:
            q = self._queues.get(dev)
            if q is None:
                q = self._queues.setdefault(dev, collections.deque())
            if len(q) >= DEVICE_QUEUE:
                self.dropped_in += 1  # only a flood claiming this device's id fills it
                return
            q.append(data)
        else:
            if len(self._unknown) >= UNKNOWN_QUEUE:
                self.dropped_in_unknown += 1
                return
            self._unknown.append(data)
        self._in_ev.set()

    def _receiver(self) -> None:
        while not self._stop.is_set():
            self._in_ev.wait(0.5)
            self._in_ev.clear()
            busy = True
            while busy and not self._stop.is_set():
                busy = False
                for q in list(self._queues.values()):  # each trusted device in turn
                    for _ in range(64):
                        try:
                            data = q.popleft()
                        except IndexError:
                            break
                        busy = True
                        self._receive_one(data)
                for _ in range(16):  # then a little of the rest
                    try:
                        data = self._unknown.popleft()
                    except IndexError:
                        break
                    busy = True
                    self._receive_one(data)

    def _receive_one(self, data: bytes) -> None:
        with self._rx_lock:
            try:
                got = self.book.receive(data)
            except Exception as exc:  # never let one message stop the receiver
                self.book.last_ignored, got = f"error: {exc}", "error"
                self.book.note_error("receive", exc)
            rec, gap = self.book.last_record, self.book.last_gap
        if got in ("accepted", "forked", "held") and gap:
            self._gap = True  # a live record arrived after a gap (a dropped message): catch up soon
        if got in ("accepted", "forked"):
            self._stored_hooks(rec)

    def _stored_hooks(self, rec: dict) -> None:
        for fn in list(self.on_stored):
            try:
                fn(rec)
            except Exception as exc:  # a failing hook must not stop the receiver
                self.book.note_error("on_stored", exc)

    # ------------------------------------------------------------ answering

    def _queue_query(self, q: collections.deque, inbound) -> None:
        if len(q) >= QUERY_QUEUE:
            self.refused_queries["queue_full"] += 1
            inbound.close()
            return
        q.append(inbound)
        self._ans_ev.set()

    def _on_sync_query(self, inbound) -> None:
        self._queue_query(self._sync_q, inbound)

    def _on_live_query(self, inbound) -> None:
        self._queue_query(self._live_q, inbound)

    def _asker_ok(self, kind: str, q: bus.Query) -> bool:
        """A query is answered only when a trusted device signed it, within its budget."""
        dev = self._trust.get(q.asker)
        if dev is None or dev.status != "active" or q.asker == self.device_id:
            self.refused_queries["unknown_asker"] += 1
            return False
        now = time.monotonic()
        b = self._buckets.get((kind, q.asker))
        if b is None:
            b = self._buckets[(kind, q.asker)] = Bucket(*((SYNC_RATE, SYNC_BURST) if kind == "sync"
                                                          else (LIVE_RATE, LIVE_BURST)), now)
        if not b.take(now):
            self.refused_queries["over_budget"] += 1
            return False
        if not self._trust.verify(q.asker, q.sig, q.signed):
            self.refused_queries["bad_signature"] += 1
            return False
        return True

    def _answerer(self) -> None:
        while not self._stop.is_set():
            self._ans_ev.wait(0.5)
            self._ans_ev.clear()
            while (self._live_q or self._sync_q) and not self._stop.is_set():
                while self._live_q:  # liveness first: it is cheap and time-bound
                    self._answer(self._live_q.popleft(), "live")
                if self._sync_q:
                    self._answer(self._sync_q.popleft(), "sync")

    def _answer(self, inbound, kind: str) -> None:
        try:
            try:
                q = (bus.parse_live_query if kind == "live" else bus.parse_query)(inbound.payload, self.event)
            except Ignored as exc:
                self.refused_queries[exc.why] += 1
                return
            if not self._asker_ok(kind, q):
                return
            if kind == "live":
                inbound.reply(bus.make_live_answer(self.key, self.event, self.device_id, q.asker, q.nonce))
            else:
                with self._q_lock:
                    msgs = list(bus.answer_since(self._q_conn, self.key, self.device_id, q.since,
                                                 limit=ANSWER_LIMIT, signed=self._signed))
                for _, _, m in msgs:
                    inbound.reply(m)
            self.answered[kind] += 1
        except Exception as exc:  # one bad query must not stop the answerer
            self.book.note_error(f"answer {kind}", exc)
        finally:
            inbound.close()

    # ------------------------------------------------------------ liveness

    def _live_round(self, *, wait: bool) -> None:
        """Challenge every peer with a fresh nonce; answers are checked by
        :meth:`_check_live` (now when ``wait``, else at the monitor's next tick)."""
        nonce = os.urandom(bus.NONCE_LEN)
        self._live_nonces.append(nonce)
        self.live_rounds += 1
        seen: collections.Counter = collections.Counter()
        done = threading.Event()

        def on_reply(replier: str, data: bytes) -> None:
            if seen[replier] >= LIVE_REPLIES_PER_PEER or len(self._live_in) >= 256:
                return
            seen[replier] += 1
            self._live_in.append((nonce, data))

        try:
            self.port.query("live", bus.make_live_query(self.key, self.event, self.device_id, nonce),
                            timeout_s=LIVE_TIMEOUT_S, on_reply=on_reply, on_done=done.set)
        except Exception as exc:
            self.book.note_error("liveness", exc)
            return
        if wait:
            done.wait(LIVE_TIMEOUT_S + 0.2)
            self._check_live()

    def _check_live(self) -> None:
        now = time.monotonic()
        confirmed: set = set()
        for _ in range(len(self._live_in)):
            try:
                nonce, data = self._live_in.popleft()
            except IndexError:
                break
            if nonce not in self._live_nonces:
                continue
            try:
                responder, signed, sig = bus.parse_live_answer(data, self.event, self.device_id, nonce)
            except Ignored:
                continue
            if (responder, nonce) in confirmed:
                continue
            dev = self._trust.get(responder)
            if dev is None or not dev.counts or responder == self.device_id:
                continue
            if self._trust.verify(responder, sig, signed):
                confirmed.add((responder, nonce))
                self._live[responder] = now
        for d, t in list(self._live.items()):
            if now - t > LIVE_TTL_S:
                self._live.pop(d, None)
        self._peers = len(self._live)

    # ------------------------------------------------------------ catch-up

    def catch_up(self, budget_s: float = CATCHUP_S) -> int:
        """Ask the peers (a signed query) for what we miss and store it, within
        ``budget_s`` and REPLIES_PER_PEER per answering session. Returns records
        learnt. What does not fit is asked for in the next round: "caught up
        through" only moves over records linked one to the next."""
        with self._rx_lock:
            since = self.book.since()
        replies = _Replies(REPLIES_PER_PEER)
        deadline = time.monotonic() + budget_s
        try:
            self.port.query("sync", bus.make_query(self.key, self.event, self.device_id,
                                                   os.urandom(bus.NONCE_LEN), since),
                            timeout_s=budget_s, on_reply=replies.add, on_done=replies.finish)
        except Exception as exc:
            self.book.note_error("catch-up", exc)
            return 0
        n, got_n, cut = 0, 0, None
        bad: collections.Counter = collections.Counter()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                cut = "time"
                break
            item = replies.next(min(left, 0.1))
            if item is None:
                if replies.done.is_set() and not replies.items:
                    break
                continue
            replier, data = item
            if replier in replies.blocked:
                continue
            got_n += 1
            with self._rx_lock:
                try:
                    got = self.book.receive(data)
                except Exception as exc:  # one bad record must not lose the rest of the answer
                    self.book.note_error("catch-up", exc)
                    got = "error"
                rec = self.book.last_record
            if got in STORED:
                n += 1
            if got in ("accepted", "forked"):
                self._stored_hooks(rec)
            elif got in REFUSED or got == "error":
                bad[replier] += 1
                if bad[replier] >= BAD_PER_PEER:
                    replies.blocked.add(replier)
        replies.closed = True
        if cut is None and replies.capped:
            cut = "count"
        self.catchups += 1
        self.caught_up += n
        self.cut_off_total += len(replies.blocked)
        self.last_catchup = {"replies": got_n, "learnt": n, "cut": cut, "capped": replies.capped,
                             "cut_off_sessions": len(replies.blocked)}
        return n

    def _syncer(self) -> None:
        while not self._stop.is_set():
            self._sync_ev.wait(1.0)
            if self._stop.is_set():
                return
            if self._sync_ev.is_set():
                self._sync_ev.clear()
                try:
                    self.catch_up()
                except Exception as exc:  # never let one failure stop catch-up
                    self.book.note_error("catch-up", exc)

    # ------------------------------------------------------------ monitor

    def _monitor(self) -> None:
        """Every 0.1 s: the trust list (reloaded when it changed), liveness (a
        challenge every LIVE_PERIOD_S), the link state. A peer that becomes live is
        asked at once and again shortly after; with peers, a catch-up every
        PERIODIC_S heals what a flood dropped."""
        st = {"last_save": 0.0, "due": [], "next_periodic": time.monotonic() + PERIODIC_S,
              "next_live": 0.0, "next_trust": 0.0}
        while not self._stop.wait(0.1):
            try:
                self._monitor_tick(st)
            except Exception as exc:  # never let one failure stop the monitor
                self.book.note_error("monitor", exc)

    def _monitor_tick(self, st: dict) -> None:
        now = time.monotonic()
        if now >= st["next_trust"]:
            st["next_trust"] = now + 0.5
            with self._q_lock:
                v = bus.trust_version(self._q_conn)
            if v != self._trust_v:
                self._reload_trust()
        try:
            sessions = self.port.sessions()
        except Exception:
            sessions = 0
        before = set(self._live)
        if not sessions:
            self._live.clear()
        elif now >= st["next_live"]:
            st["next_live"] = now + LIVE_PERIOD_S
            self._live_round(wait=False)
        self._check_live()
        if set(self._live) - before:  # a peer joined or came back
            st["due"] = [now, now + 0.3, now + 1.5]
        periodic = now >= st["next_periodic"]
        if periodic:
            st["next_periodic"] = now + PERIODIC_S
        gap = self._gap and now >= st.get("next_gap", 0.0)
        if gap:  # at most one round a GAP_S for gaps
            self._gap = False
            st["next_gap"] = now + GAP_S
            self.gap_catchups += 1
        if self._peers and (st["due"] and st["due"][0] <= now or periodic or gap):
            st["due"] = [t for t in st["due"] if t > now]
            self._sync_ev.set()
        state = self.state()
        if state != self._state:
            self._state = state
            for fn in list(self.on_state):
                try:
                    fn(state, self._peers)
                except Exception as exc:  # a failing hook must not stop the monitor
                    self.book.note_error("on_state", exc)
            st["last_save"] = 0.0
        if now - st["last_save"] > 1.0:
            self.save_status()
            st["last_save"] = now

    # ------------------------------------------------------------ status

    def status(self) -> dict:
        try:
            sessions = self.port.sessions()
        except Exception:
            sessions = 0
        return {
            "link": self.state().value, "peers": self._peers, "live_peers": self.live_peers(),
            "sessions": sessions, "live_rounds": self.live_rounds,
            "transport": "tls" if getattr(self.port, "tls", False) else "tcp",
            "published": self.published, "queue": len(self._out), "dropped_out": self.dropped_out,
            "dropped_in": self.dropped_in, "dropped_in_unknown": self.dropped_in_unknown,
            "catchups": self.catchups, "gap_catchups": self.gap_catchups, "caught_up": self.caught_up,
            "last_catchup": self.last_catchup, "cut_off_sessions": self.cut_off_total,
            "answered": dict(self.answered), "refused_queries": dict(self.refused_queries),
            "received": dict(self.book.counts), "last_ignored": self.book.last_ignored,
            "errors": self.book.errors, "last_error": self.book.last_error,
            "at": time.time(),
        }

    def save_status(self) -> None:
        try:
            with self._q_lock:
                bus.save_status(self._q_conn, self.status())
        except Exception:
            pass


def open_bus(gate, *, listen: list[str], peers: list[str], scout: bool = False,
             central_ok: Callable[[], bool | None] = lambda: None, queue_max: int = 4096) -> BusService:
    """The bus of one gate (Zenoh adapter); mutual TLS when the gate holds a bus
    credential from central (sync.bus_credential), plain TCP otherwise."""
    from sync import bus_credential
    from sync.bus_zenoh import ZenohBus
    port = ZenohBus(gate.policy.event, device_id=gate.config.device_id, listen=listen, peers=peers, scout=scout,
                    tls=bus_credential.load(gate.data_dir))
    return BusService(gate.data_dir, port, device_id=gate.config.device_id, event=gate.policy.event,
                      queue_max=queue_max, central_ok=central_ok)
