"""The venue bus over Zenoh in peer mode (``eclipse-zenoh``): no broker, explicit
endpoints, multicast scouting only when asked. Implements ``gate.bus.BusPort``.

Key expressions (docs/bus.md):
  ``gate/<event>/rec/<device>/<seq>``  one record message (put)
  ``gate/<event>/rec/**``              what a gate subscribes to
  ``gate/<event>/sync/<device>``       each gate's catch-up queryable (queries go to ``sync/*``)
  ``gate/<event>/live/<device>``       each gate's liveness queryable (queries go to ``live/*``)

With a bus credential (``sync.bus_credential``: an X.509 certificate from the
event's CA at central and its key) the session speaks TLS only, with mutual
authentication: every ``tcp/`` endpoint is used as ``tls/`` on the same address,
plain TCP is not accepted, and a session without a certificate from the same CA
is refused before it can subscribe, query or publish.

Every callback runs on Zenoh's network thread (``indirect=False``): the
handlers only queue, so a flood costs the attacker's bandwidth, not a queue
that grows.
"""

from __future__ import annotations

import json
from typing import Callable

import zenoh

from gate.errors import ConfigError

KINDS = ("sync", "live")


def _check_endpoint(ep: str) -> str:
    if not isinstance(ep, str) or not ep.startswith(("tcp/", "udp/", "tls/", "quic/")) or ":" not in ep:
        raise ConfigError(f"bus endpoint {ep!r} must look like tcp/IP:PORT (e.g. tcp/192.168.1.20:7447)")
    return ep


def _as_tls(ep: str) -> str:
    if ep.startswith(("tcp/", "tls/")):
        return "tls/" + ep[4:]
    raise ConfigError(f"bus endpoint {ep!r}: with a bus credential the bus speaks TLS only; "
                      "give tcp/IP:PORT or tls/IP:PORT")


def _safe(part: str) -> str:
    # key-expression chunks may not hold these; device ids and events are plain words
    for ch in "/*$?#":
        part = part.replace(ch, "_")
    return part or "_"


class _Inbound:
    """A query, held until answered (dropping it tells the asker we are done)."""

    __slots__ = ("_q", "_key", "payload")

    def __init__(self, query, key: str):
        self._q, self._key = query, key
        self.payload = query.payload.to_bytes() if query.payload is not None else b""

    def reply(self, data: bytes) -> None:
        if self._q is not None:
            self._q.reply(self._key, data)

    def close(self) -> None:
        q, self._q = self._q, None
        if q is not None:
            try:
                q.drop()
            except Exception:
                pass


class ZenohBus:
    """One Zenoh session for one gate. ``tls``: a ``sync.bus_credential.TlsFiles``
    (mutual TLS only) or None (plain TCP, as before a central issued one)."""

    def __init__(self, event: str, *, device_id: str = "peer", listen: list[str] = (), peers: list[str] = (),
                 scout: bool = False, tls=None):
        listen = [_check_endpoint(e) for e in listen]
        peers = [_check_endpoint(e) for e in peers]
        conf = zenoh.Config()
        conf.insert_json5("mode", '"peer"')
        if tls is not None:
            listen, peers = [_as_tls(e) for e in listen], [_as_tls(e) for e in peers]
            for k, v in (("root_ca_certificate", tls.ca), ("listen_private_key", tls.key),
                         ("listen_certificate", tls.cert), ("connect_private_key", tls.key),
                         ("connect_certificate", tls.cert)):
                conf.insert_json5(f"transport/link/tls/{k}", json.dumps(str(v)))
            conf.insert_json5("transport/link/tls/enable_mtls", "true")
            # gates are reached by address and certified by device id: the CA is the check
            conf.insert_json5("transport/link/tls/verify_name_on_connect", "false")
            conf.insert_json5("transport/link/tls/close_link_on_expiration", "true")
            conf.insert_json5("transport/link/protocols", '["tls"]')
        # a put waits up to 20 ms for room in a congested link before it is dropped (default 1 ms:
        # a loaded 2-core gate would drop records on a scheduling hiccup); a drop is a gap the
        # receiver sees at the next record, and catch-up fills within a second
        conf.insert_json5("transport/link/tx/queue/congestion_control/drop/wait_before_drop", "20000")
        conf.insert_json5("listen/endpoints", json.dumps(listen))
        conf.insert_json5("connect/endpoints", json.dumps(peers))
        conf.insert_json5("scouting/multicast/enabled", "true" if scout else "false")
        # keep retrying a peer that is not listening yet (it may start later)
        conf.insert_json5("connect/timeout_ms", "-1")
        conf.insert_json5("connect/exit_on_failure", "false")
        conf.insert_json5("listen/exit_on_failure", "true")
        try:
            self.session = zenoh.open(conf)
        except Exception as exc:  # ZError: address in use, bad endpoint, unreadable certificate
            raise ConfigError(f"cannot start the venue bus on {', '.join(listen) or 'no listen endpoint'}: "
                              f"{exc}; choose a free --bus-listen port"
                              + ("; or renew the bus credential (gate sync)" if tls is not None else "")) from None
        self.tls = tls is not None
        self.listen, self.peers_configured = listen, peers
        self.prefix = f"gate/{_safe(event)}"
        self.me = _safe(device_id)
        self._decls: list = []

    def publish(self, device_id: str, seq: int, message: bytes) -> None:
        self.session.put(f"{self.prefix}/rec/{_safe(device_id)}/{seq}", message,
                         congestion_control=zenoh.CongestionControl.DROP, express=True)

    def subscribe(self, handler: Callable[[bytes], None]) -> None:
        def on_sample(sample) -> None:
            handler(sample.payload.to_bytes())
        self._decls.append(self.session.declare_subscriber(  # never our own puts
            f"{self.prefix}/rec/**", zenoh.handlers.Callback(on_sample, indirect=False),
            allowed_origin=zenoh.Locality.REMOTE))

    def answer(self, kind: str, handler: Callable[[_Inbound], None]) -> None:
        assert kind in KINDS
        key = f"{self.prefix}/{kind}/{self.me}"

        def on_query(query) -> None:
            try:
                handler(_Inbound(query, key))
            except Exception:  # a bad query must not take the queryable down
                pass
        self._decls.append(self.session.declare_queryable(  # never our own queries
            key, zenoh.handlers.Callback(on_query, indirect=False), allowed_origin=zenoh.Locality.REMOTE))

    def query(self, kind: str, payload: bytes, *, timeout_s: float,
              on_reply: Callable[[str, bytes], None], on_done: Callable[[], None]) -> None:
        assert kind in KINDS

        def on(reply) -> None:
            ok = reply.ok
            if ok is None:
                return
            rid = reply.replier_id
            on_reply(str(rid.zid) if rid is not None else "?", ok.payload.to_bytes())
        self.session.get(f"{self.prefix}/{kind}/*", zenoh.handlers.Callback(on, on_done, indirect=False),
                         payload=payload, timeout=timeout_s, consolidation=zenoh.ConsolidationMode.NONE,
                         target=zenoh.QueryTarget.ALL)

    def sessions(self) -> int:
        return sum(1 for _ in self.session.info.peers_zid())

    peers = sessions  # transport sessions: what 'gate doctor' calls reachable endpoints

    def close(self) -> None:
        try:
            self.session.close()
        except Exception:
            pass
