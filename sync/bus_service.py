"""The venue bus in a running lane: a publisher thread fed by a bounded queue
(the lane only appends a seq and never waits; on a flood the oldest gossip is
dropped), a receiver thread that verifies and stores peer records, a
queryable for catch-up, and a monitor that tracks peers and the link state.

Every thread has its own database connection; the lane's connection is never
touched here.
"""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import Callable

from crypto import gt1
from gate import bus
from gate.bus import BusBook, BusPort, LinkState
from gate.db import connect
from gate.keyfiles import load_device_key


PERIODIC_S = 10.0


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
        self._in: collections.deque[bytes] = collections.deque(maxlen=queue_max)
        self._out_ev, self._in_ev, self._stop = threading.Event(), threading.Event(), threading.Event()
        self._rx_lock, self._q_lock = threading.Lock(), threading.Lock()
        self.published = self.dropped_out = self.dropped_in = self.catchups = 0
        self.caught_up = 0  # records learnt through catch-up
        self._peers = 0
        self.port_peers_configured = False  # set by the composer: wait for a peer at start
        self._state: LinkState | None = None
        self.on_state: list[Callable[[LinkState, int], None]] = []
        self.on_stored: list[Callable[[dict], None]] = []  # a peer record is stored (receiver thread)
        self._threads = [threading.Thread(target=f, name=n, daemon=True) for f, n in
                         ((self._publisher, "bus-pub"), (self._receiver, "bus-rx"), (self._monitor, "bus-mon"))]

    # ------------------------------------------------------------ lane side

    def appended(self, seq: int) -> None:
        """Lane hook after a durable append: O(1), never blocks."""
        if len(self._out) == self._out.maxlen:
            self.dropped_out += 1
        self._out.append(seq)
        self._out_ev.set()

    @property
    def peers(self) -> int:
        return self._peers

    def state(self) -> LinkState:
        return bus.link_state(central_ok=self.central_ok(), peers=self._peers)

    # ------------------------------------------------------------ lifecycle

    def start(self, *, wait_peers_s: float = 0.0, catchup_timeout_s: float = 1.0) -> "BusService":
        """Subscribe and answer; then, when peers are configured, wait (bounded) for
        one and catch up before the lane takes its first decision."""
        self.port.subscribe(self._on_message)
        self.port.answer(self._answer)
        deadline = time.monotonic() + wait_peers_s
        while wait_peers_s and self.port.peers() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        self._peers = self.port.peers()
        if self._peers:
            self.catch_up(catchup_timeout_s)
        self._state = self.state()  # the monitor reports changes from here on
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._out_ev.set()
        self._in_ev.set()
        self.port.close()  # first: a publish stuck on a congested link returns
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=3)
        self.save_status()
        for c in (self._pub_conn, self._rx_conn, self._q_conn):
            c.close()

    # ------------------------------------------------------------ threads

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
                        self.port.publish(self.device_id, seq, msg.encode())
                        self.published += 1
                except Exception:  # the bus is gossip: a failed put is caught up later
                    pass

    def _on_message(self, data: bytes) -> None:
        if len(self._in) == self._in.maxlen:
            self.dropped_in += 1
        self._in.append(data)
        self._in_ev.set()

    def _receiver(self) -> None:
        while not self._stop.is_set():
            self._in_ev.wait(0.5)
            self._in_ev.clear()
            while self._in:
                try:
                    data = self._in.popleft()
                except IndexError:
                    break
                with self._rx_lock:
                    try:
                        got = self.book.receive(data)
                    except Exception as exc:  # never let one message stop the receiver
                        self.book.last_ignored, got = f"error: {exc}", "error"
                        self.book.note_error("receive", exc)
                if got in ("accepted", "forked"):
                    for fn in list(self.on_stored):
                        try:
                            fn(self.book.last_record)
                        except Exception as exc:  # a failing hook must not stop the receiver
                            self.book.note_error("on_stored", exc)

    def _answer(self, since: dict[str, int]):
        with self._q_lock:
            return list(bus.answer_since(self._q_conn, self.key, self.device_id, since))

    def catch_up(self, timeout_s: float = 1.0) -> int:
        """Ask the peers for what we miss; store it. Returns records learnt."""
        with self._rx_lock:
            since = self.book.since()
        try:
            msgs = self.port.query(since, timeout_s)
        except Exception:
            return 0
        with self._rx_lock:
            n = self.book.receive_catch_up(msgs)  # per-message errors are counted, not raised
        self.catchups += 1
        self.caught_up += n
        return n

    def _monitor(self) -> None:
        """Peers and link state every 0.1 s. A peer that joins is asked at once and
        again shortly after (its queryable may be declared a moment after its
        session connects); with peers, a catch-up every PERIODIC_S heals what a
        flood dropped."""
        last_save, due = 0.0, []
        next_periodic = time.monotonic() + PERIODIC_S
        while not self._stop.wait(0.1):
            try:
                last_save, due, next_periodic = self._monitor_tick(last_save, due, next_periodic)
            except Exception as exc:  # never let one failure stop the monitor
                self.book.note_error("monitor", exc)

    def _monitor_tick(self, last_save: float, due: list, next_periodic: float) -> tuple[float, list, float]:
        """One pass of the monitor; returns its state for the next."""
        try:
            peers = self.port.peers()
        except Exception:
            peers = 0
        now = time.monotonic()
        if peers > self._peers:
            due = [now, now + 0.3, now + 1.5]
        self._peers = peers
        periodic = now >= next_periodic
        if periodic:  # a device revoked at the last sync stops counting
            next_periodic = now + PERIODIC_S
            with self._rx_lock:
                self.book.reload_trust()
        if peers and (due and due[0] <= now or periodic):
            due = [t for t in due if t > now]
            self.catch_up()
        st = self.state()
        if st != self._state:
            self._state = st
            for fn in list(self.on_state):
                try:
                    fn(st, peers)
                except Exception as exc:  # a failing hook must not stop the monitor
                    self.book.note_error("on_state", exc)
            last_save = 0.0
        if now - last_save > 1.0:
            self.save_status()
            last_save = now
        return last_save, due, next_periodic

    # ------------------------------------------------------------ status

    def status(self) -> dict:
        return {
            "link": self.state().value, "peers": self._peers, "published": self.published,
            "queue": len(self._out), "dropped_out": self.dropped_out, "dropped_in": self.dropped_in,
            "catchups": self.catchups, "caught_up": self.caught_up,
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
    """The bus of one gate (Zenoh adapter)."""
    from sync.bus_zenoh import ZenohBus
    port = ZenohBus(gate.policy.event, listen=listen, peers=peers, scout=scout)
    return BusService(gate.data_dir, port, device_id=gate.config.device_id, event=gate.policy.event,
                      queue_max=queue_max, central_ok=central_ok)
