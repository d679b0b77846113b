"""The venue bus over Zenoh in peer mode (``eclipse-zenoh``): no broker, explicit
endpoints, multicast scouting only when asked. Implements ``gate.bus.BusPort``.

Key expressions (docs/bus.md):
  ``gate/<event>/rec/<device>/<seq>``  one record (put; catch-up replies)
  ``gate/<event>/rec/**``              what a gate subscribes to and answers queries on
A catch-up query carries CBOR ``{device: after_seq}`` as its payload.
"""

from __future__ import annotations

import json
from typing import Callable, Iterable

import cbor2
import zenoh

from gate.errors import ConfigError


def _check_endpoint(ep: str) -> str:
    if not isinstance(ep, str) or not ep.startswith(("tcp/", "udp/", "tls/", "quic/")) or ":" not in ep:
        raise ConfigError(f"bus endpoint {ep!r} must look like tcp/IP:PORT (e.g. tcp/192.168.1.20:7447)")
    return ep


def _safe(part: str) -> str:
    # key-expression chunks may not hold these; device ids and events are plain words
    for ch in "/*$?#":
        part = part.replace(ch, "_")
    return part or "_"


class ZenohBus:
    """One Zenoh session for one gate."""

    def __init__(self, event: str, *, listen: list[str] = (), peers: list[str] = (), scout: bool = False):
        conf = zenoh.Config()
        conf.insert_json5("mode", '"peer"')
        conf.insert_json5("listen/endpoints", json.dumps([_check_endpoint(e) for e in listen]))
        conf.insert_json5("connect/endpoints", json.dumps([_check_endpoint(e) for e in peers]))
        conf.insert_json5("scouting/multicast/enabled", "true" if scout else "false")
        # keep retrying a peer that is not listening yet (it may start later)
        conf.insert_json5("connect/timeout_ms", "-1")
        conf.insert_json5("connect/exit_on_failure", "false")
        conf.insert_json5("listen/exit_on_failure", "true")
        try:
            self.session = zenoh.open(conf)
        except Exception as exc:  # ZError: address in use, bad endpoint
            raise ConfigError(f"cannot start the venue bus on {', '.join(listen) or 'no listen endpoint'}: "
                              f"{exc}; choose a free --bus-listen port") from None
        self.prefix = f"gate/{_safe(event)}/rec"
        self._decls: list = []

    def publish(self, device_id: str, seq: int, message: bytes) -> None:
        self.session.put(f"{self.prefix}/{_safe(device_id)}/{seq}", message,
                         congestion_control=zenoh.CongestionControl.DROP, express=True)

    def subscribe(self, handler: Callable[[bytes], None]) -> None:
        def on_sample(sample) -> None:
            handler(sample.payload.to_bytes())
        self._decls.append(self.session.declare_subscriber(f"{self.prefix}/**", on_sample))

    def answer(self, handler: Callable[[dict[str, int]], Iterable[tuple[str, int, bytes]]]) -> None:
        def on_query(query) -> None:
            try:
                since = cbor2.loads(query.payload.to_bytes()) if query.payload is not None else {}
                if not isinstance(since, dict):
                    since = {}
                since = {k: v for k, v in since.items() if isinstance(k, str) and type(v) is int}
                for device, seq, msg in handler(since):
                    query.reply(f"{self.prefix}/{_safe(device)}/{seq}", msg)
            except Exception:  # a bad query must not take the queryable down
                pass
        self._decls.append(self.session.declare_queryable(f"{self.prefix}/**", on_query))

    def query(self, since: dict[str, int], timeout_s: float) -> list[bytes]:
        out = []
        replies = self.session.get(f"{self.prefix}/**", payload=cbor2.dumps(since), timeout=timeout_s,
                                   consolidation=zenoh.ConsolidationMode.NONE,
                                   target=zenoh.QueryTarget.ALL)
        for reply in replies:
            if reply.ok is not None:
                out.append(reply.ok.payload.to_bytes())
        return out

    def peers(self) -> int:
        return sum(1 for _ in self.session.info.peers_zid())

    def close(self) -> None:
        try:
            self.session.close()
        except Exception:
            pass
