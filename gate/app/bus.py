"""``gate bus``: the venue bus's status and its trusted devices (docs/bus.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gate.errors import ConfigError
from gate.i18n import N_, _

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
        return {"kind": "tcp", "detail": N_("plain TCP: no bus credential (sync with central to get one); "
                                            "only the signed-record and liveness rules protect this bus")}
    now = time.time()
    return {"kind": "tls", "device_id": tls.device_id, "issuer": tls.issuer, "not_after": tls.not_after,
            "expired": tls.expired(now), "detail": tls.describe(now)}


def cmd_status(args) -> int:
    from gate.app.cli import open_set_up_gate as open_gate
    doc = status_doc(open_gate(args.data))
    if args.json:
        print(json.dumps(doc, separators=(",", ":")))
        return 0
    from gate.words import link_words
    link = link_words(doc["link"]).word if doc["link"] else _("not running")
    print(_("device   {device}  key {key}").format(device=doc["device_id"], key=doc["public_key"]))
    print(_("link     {link}").format(link=link)
          + ("  " + _("({n} peer(s))").format(n=doc["last_run"]["peers"]) if doc["running"] else ""))
    print(_("listen   {listen}   peers {peers}").format(
        listen=", ".join(doc["listen"]) or "-", peers=", ".join(doc["peers_configured"]) or "-"))
    t = doc["transport"]
    print(_("transport {detail}").format(detail=t.get("problem") or _(t["detail"])))
    print(_("trusted  {n} device(s) ({quarantined} more quarantined); peer records {records} ({held} held), "
            "admissions from the bus {admissions}").format(
        n=doc["trusted_devices"], quarantined=doc["quarantined_devices"], records=doc["peer_records"],
        held=doc["held_records"], admissions=doc["admissions_from_bus"]))
    if "last_run" in doc:
        r = doc["last_run"]
        ign = {k: v for k, v in r.get("received", {}).items() if v and k not in ("accepted", "duplicate")}
        print(_("traffic  published {published}, received {received}, dropped {out}/{inn}/{unknown} "
                "(out/in from trusted/in from others)").format(
            published=r.get("published", 0), received=r.get("received", {}).get("accepted", 0),
            out=r.get("dropped_out", 0), inn=r.get("dropped_in", 0), unknown=r.get("dropped_in_unknown", 0))
              + (_("; ignored {counts}").format(counts=ign) if ign else ""))
    return 0


def cmd_trust(args) -> int:
    from gate import bus
    from gate.app.cli import open_set_up_gate as open_gate
    gate = open_gate(args.data)
    try:
        doc = json.loads(Path(args.file).read_text())
    except OSError as exc:
        raise ConfigError(_("cannot read {file}: {problem}").format(file=args.file, problem=exc.strerror)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(_("{file} is not JSON (line {line}): fix it").format(
            file=args.file, line=exc.lineno)) from None
    try:
        devices = bus.parse_trust(doc, gate.policy.event)
    except ValueError as exc:
        raise ConfigError(_("{file}: {problem}; nothing was trusted").format(file=args.file, problem=exc)) from None
    bus.store_trust(gate.conn, devices, "file")
    active = sum(d.status == "active" for d in devices)
    print(_("trusted {n} device(s) on the venue bus ({active} active)").format(n=len(devices), active=active))
    return 0


def register(sub) -> None:
    p = sub.add_parser("bus", help=_("the venue bus between gates (status, trusted devices)"),
                       description=_("Gates on one venue network tell each other about admissions, so a "
                                   "ticket used at one lane is refused at the others while central is "
                                   "unreachable. See docs/bus.md."))
    bs = p.add_subparsers(dest="bus_command", metavar="ACTION")
    bs.required = True
    q = bs.add_parser("status", help=_("link state, peers, counters of ignored messages"),
                      description=_("Show this gate's bus identity, endpoints, link state (ONLINE, VENUE, "
                                  "ALONE, from the running lane) and message counters."))
    q.add_argument("--json", action="store_true", help=_("print one JSON object"))
    q.set_defaults(func=cmd_status)
    q = bs.add_parser("trust", help=_("trust the devices in a device list JSON file"),
                      description=_("Add or update the devices whose bus records this gate accepts: "
                                  '{"event": E, "devices": [{"device_id", "public_key" (hex), "status", '
                                  '"quarantined"}]}. '
                                  "For sites without the reference central (which sends this list at "
                                  "sync). A revoked device stays revoked."))
    q.add_argument("file", metavar="DEVICES.json")
    q.set_defaults(func=cmd_trust)
