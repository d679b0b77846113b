"""``gate bus``: the venue bus's status and its trusted devices (docs/bus.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gate.errors import ConfigError

STALE_S = 5.0  # a running lane saves its bus status every second


def status_doc(gate) -> dict:
    from crypto import gt1
    from gate import bus
    from gate.db import get_setting

    listen, peers = bus.endpoints(gate.conn)
    live = bus.load_status(gate.conn) or {}
    running = bool(live) and time.time() - live.get("at", 0) < STALE_S
    central_ok = get_setting(gate.conn, "sync.last_ok")
    doc = {
        "device_id": gate.config.device_id,
        "public_key": gt1.raw_public(gate.device_key).hex(),
        "event": gate.policy.event, "listen": listen, "peers_configured": peers,
        "running": running,
        "link": live.get("link") if running else None,
        **bus.stored_counts(gate.conn),
    }
    if live:
        doc["last_run"] = {k: v for k, v in live.items() if k != "link"}
    doc["central_last_ok"] = central_ok
    doc["transport"] = transport(gate)
    return doc


def transport(gate) -> dict:
    """How the bus connects: mutual TLS with the credential central issued, or plain TCP."""
    from sync import bus_credential
    try:
        tls = bus_credential.load(gate.data_dir)
    except ConfigError as exc:
        return {"kind": "tls", "problem": str(exc)}
    if tls is None:
        return {"kind": "tcp", "detail": "plain TCP: no bus credential (sync with central to get one); "
                                         "only the signed-record and liveness rules protect this bus"}
    now = time.time()
    return {"kind": "tls", "device_id": tls.device_id, "issuer": tls.issuer, "not_after": tls.not_after,
            "expired": tls.expired(now), "detail": tls.describe(now)}


def cmd_status(args) -> int:
    from gate.app.compose import open_gate
    doc = status_doc(open_gate(args.data))
    if args.json:
        print(json.dumps(doc, separators=(",", ":")))
        return 0
    link = doc["link"] or "not running"
    print(f"device   {doc['device_id']}  key {doc['public_key']}")
    print(f"link     {link}" + (f"  ({doc['last_run']['peers']} peer(s))" if doc["running"] else ""))
    print(f"listen   {', '.join(doc['listen']) or '-'}   peers {', '.join(doc['peers_configured']) or '-'}")
    t = doc["transport"]
    print(f"transport {t.get('problem') or t['detail']}")
    print(f"trusted  {doc['trusted_devices']} device(s) ({doc['quarantined_devices']} more quarantined); "
          f"peer records {doc['peer_records']} ({doc['held_records']} held), "
          f"admissions from the bus {doc['admissions_from_bus']}")
    if "last_run" in doc:
        r = doc["last_run"]
        ign = {k: v for k, v in r.get("received", {}).items() if v and k not in ("accepted", "duplicate")}
        print(f"traffic  published {r.get('published', 0)}, received {r.get('received', {}).get('accepted', 0)}, "
              f"dropped {r.get('dropped_out', 0)}/{r.get('dropped_in', 0)}/{r.get('dropped_in_unknown', 0)} "
              "(out/in from trusted/in from others)"
              + (f"; ignored {ign}" if ign else ""))
    return 0


def cmd_trust(args) -> int:
    from gate import bus
    from gate.app.compose import open_gate
    gate = open_gate(args.data)
    try:
        doc = json.loads(Path(args.file).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {args.file}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{args.file} is not JSON (line {exc.lineno}): fix it") from None
    try:
        devices = bus.parse_trust(doc, gate.policy.event)
    except ValueError as exc:
        raise ConfigError(f"{args.file}: {exc}; nothing was trusted") from None
    bus.store_trust(gate.conn, devices, "file")
    active = sum(d.status == "active" for d in devices)
    print(f"trusted {len(devices)} device(s) on the venue bus ({active} active)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("bus", help="the venue bus between gates (status, trusted devices)",
                       description="Gates on one venue network tell each other about admissions, so a "
                                   "ticket used at one lane is refused at the others while central is "
                                   "unreachable. See docs/bus.md.")
    bs = p.add_subparsers(dest="bus_command", metavar="ACTION")
    bs.required = True
    q = bs.add_parser("status", help="link state, peers, counters of ignored messages",
                      description="Show this gate's bus identity, endpoints, link state (ONLINE, VENUE, "
                                  "ALONE, from the running lane) and message counters.")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=cmd_status)
    q = bs.add_parser("trust", help="trust the devices in a device list JSON file",
                      description="Add or update the devices whose bus records this gate accepts: "
                                  '{"event": E, "devices": [{"device_id", "public_key" (hex), "status", '
                                  '"quarantined"}]}. '
                                  "For sites without the reference central (which sends this list at "
                                  "sync). A revoked device stays revoked.")
    q.add_argument("file", metavar="DEVICES.json")
    q.set_defaults(func=cmd_trust)
