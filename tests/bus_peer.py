"""An outsider on the venue network for bus tests: a bare ``zenoh.open`` session
in peer mode with explicit endpoints (not the gate's adapter), driven by JSON
commands on stdin, one JSON answer per command on stdout.

usage: python bus_peer.py EVENT CONFIG.json
CONFIG: {"connect": [...], "listen": [...], "tls": null | {"ca", "cert", "key"} | {"ca"}}

commands:
  {"cmd": "sessions"}                                   -> {"sessions": N}
  {"cmd": "subscribe"}                                  -> {"ok": true}   (collect every record message)
  {"cmd": "received"}                                   -> {"received": [hex, ...]}
  {"cmd": "publish", "file": F, "repeat": N, "wait_s": S}  put each message of F (a CBOR list of byte
        strings) N times as fast as possible -> {"sent": N, "matched": bool}
  {"cmd": "answer", "kind": "sync"|"live", "file": F, "repeat": N}
        answer every query of that kind with the messages of F, N times over -> {"ok": true}
  {"cmd": "query", "kind": K, "payload": hex, "timeout": S}  -> {"replies": [hex, ...]}
  {"cmd": "stats"}                                      -> {"queries": {kind: n}}
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import cbor2
import zenoh


def open_session(conf: dict):
    c = zenoh.Config()
    c.insert_json5("mode", '"peer"')
    c.insert_json5("scouting/multicast/enabled", "false")
    c.insert_json5("connect/endpoints", json.dumps(conf.get("connect", [])))
    c.insert_json5("listen/endpoints", json.dumps(conf.get("listen", [])))
    c.insert_json5("connect/timeout_ms", "-1")
    c.insert_json5("connect/exit_on_failure", "false")
    tls = conf.get("tls")
    if tls:
        c.insert_json5("transport/link/tls/root_ca_certificate", json.dumps(tls["ca"]))
        c.insert_json5("transport/link/tls/verify_name_on_connect", "false")
        if tls.get("cert"):
            for side in ("listen", "connect"):
                c.insert_json5(f"transport/link/tls/{side}_certificate", json.dumps(tls["cert"]))
                c.insert_json5(f"transport/link/tls/{side}_private_key", json.dumps(tls["key"]))
            c.insert_json5("transport/link/tls/enable_mtls", "true")
    return zenoh.open(c)


def main() -> int:
    event, conf = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    s = open_session(conf)
    prefix = f"gate/{event}"
    got: list[bytes] = []
    queries = {"sync": 0, "live": 0}
    keep = []

    def say(doc):
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()

    for line in sys.stdin:
        cmd = json.loads(line)
        c = cmd["cmd"]
        if c == "sessions":
            say({"sessions": sum(1 for _ in s.info.peers_zid())})
        elif c == "subscribe":
            keep.append(s.declare_subscriber(f"{prefix}/rec/**", lambda smp: got.append(smp.payload.to_bytes())))
            say({"ok": True})
        elif c == "received":
            say({"received": [m.hex() for m in got]})
        elif c == "publish":
            msgs = cbor2.loads(Path(cmd["file"]).read_bytes())
            # a put before the gate's subscription reached us is routed nowhere: wait (bounded)
            probe = s.declare_publisher(f"{prefix}/rec/peer/0")
            deadline = time.monotonic() + cmd.get("wait_s", 10)
            while not probe.matching_status.matching and time.monotonic() < deadline:
                time.sleep(0.01)
            matched = probe.matching_status.matching
            n = 0
            for _ in range(cmd.get("repeat", 1)):
                for i, m in enumerate(msgs):
                    s.put(f"{prefix}/rec/peer/{i + 1}", m)
                    n += 1
            say({"sent": n, "matched": matched})
        elif c == "answer":
            msgs = cbor2.loads(Path(cmd["file"]).read_bytes())
            kind, repeat = cmd["kind"], cmd.get("repeat", 1)
            key = f"{prefix}/{kind}/evil"

            def on_query(q, kind=kind, msgs=msgs, repeat=repeat, key=key):
                queries[kind] += 1
                for _ in range(repeat):
                    for m in msgs:
                        q.reply(key, m)
            keep.append(s.declare_queryable(key, on_query))
            say({"ok": True})
        elif c == "query":
            out, done = [], threading.Event()

            def on_reply(r, out=out):
                if r.ok is not None:
                    out.append(r.ok.payload.to_bytes().hex())
            s.get(f"{prefix}/{cmd['kind']}/*", zenoh.handlers.Callback(on_reply, done.set),
                  payload=bytes.fromhex(cmd.get("payload", "")), timeout=cmd.get("timeout", 2.0),
                  consolidation=zenoh.ConsolidationMode.NONE, target=zenoh.QueryTarget.ALL)
            done.wait(cmd.get("timeout", 2.0) + 1)
            say({"replies": out})
        elif c == "stats":
            say({"queries": queries})
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
