"""A raw venue-bus peer for tests: connects to a gate, publishes the messages in a
CBOR file (a list of byte strings) REPEAT times as fast as it can, prints
"sent N", then stays connected until its stdin closes.

usage: python bus_peer.py EVENT tcp/127.0.0.1:PORT MESSAGES.cbor REPEAT
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cbor2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sync.bus_zenoh import ZenohBus  # noqa: E402


def main() -> int:
    event, endpoint, path, repeat = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    msgs = cbor2.loads(path.read_bytes())
    bus = ZenohBus(event, peers=[endpoint])
    # wait until the gate's subscription has reached us (connected is not enough:
    # a put before that is routed nowhere)
    probe = bus.session.declare_publisher(f"{bus.prefix}/peer/0")
    deadline = time.monotonic() + 10
    while not probe.matching_status.matching and time.monotonic() < deadline:
        time.sleep(0.01)
    n = 0
    for _ in range(repeat):
        for i, m in enumerate(msgs):
            bus.publish("peer", i + 1, m)
            n += 1
    print(f"sent {n}", flush=True)
    sys.stdin.read()
    bus.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
