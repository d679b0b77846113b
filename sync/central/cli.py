"""``gate central ...``: the reference central (issuer, devices, server, report)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gate.argtypes import days, listen_address, seconds
from gate.errors import ConfigError
from sync.cli import _out
from gate.i18n import _

# ------------------------------------------------------------------ central


def _store(args, **kw):
    from sync.central.store import CentralStore
    return CentralStore(Path(args.data), getattr(args, "db", None), **kw)


def _when(text: str | None) -> float | None:
    if text is None:
        return None
    from datetime import datetime, timezone
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(_("not a date and time: {value} (use ISO 8601, e.g. 2026-11-25T18:00+00:00)").format(
            value=repr(text))) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def cmd_central_serve(args) -> int:
    import uvicorn

    from sync.central import limits
    from sync.central.app import create_app

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError(_("give both --tls-cert and --tls-key (or neither, on 127.0.0.1 only)"))
    for f in filter(None, (args.tls_cert, args.tls_key)):
        if not Path(f).is_file():
            raise ConfigError(_("cannot read {file}: give the PEM file of the server certificate / key").format(file=f))
    metrics_at = args.metrics_listen
    store = _store(args, pool_size=args.pool_size, pool_timeout=args.pool_timeout)
    where = Path(args.data) if store.dialect == "sqlite" else "PostgreSQL"
    limits.BODY_TIMEOUT_S = args.body_timeout
    scheme = "https" if args.tls_cert else "http"
    print(_("central serving {where} on {url} (OpenAPI at /docs)").format(
        where=where, url=f"{scheme}://{args.host}:{args.port}"), file=sys.stderr)
    if scheme == "http" and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(_("central: warning: plain HTTP on a non-loopback address: device tokens and scans cross the "
                "network unencrypted; use --tls-cert/--tls-key"), file=sys.stderr)
    app = create_app(store)
    if metrics_at is not None:
        try:
            app.state.metrics.serve(*metrics_at)
        except OSError as exc:
            raise ConfigError(_("--metrics-listen {address}: cannot listen there ({problem})").format(
                address=f"{metrics_at[0]}:{metrics_at[1]}", problem=exc.strerror or exc)) from None
        print(_("central metrics on {url}").format(url=f"http://{metrics_at[0]}:{metrics_at[1]}/metrics"),
              file=sys.stderr)
    notify = _service_notify()
    try:
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                http=limits.guarded_protocol(args.header_timeout), timeout_keep_alive=5,
                                ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key,
                                proxy_headers=False,  # the client address is the peer's, never X-Forwarded-For
                                **notify)
        uvicorn.Server(config).run()
    except OSError as exc:  # includes ssl.SSLError: a key that does not match, a bad PEM
        raise ConfigError(_("cannot serve on {address}: {problem}").format(
            address=f"{args.host}:{args.port}", problem=exc)) from None
    return 0


def _service_notify() -> dict:
    """Under systemd (``$NOTIFY_SOCKET``): READY=1 at the server loop's first tick, then
    WATCHDOG=1 from the loop itself every half of ``$WATCHDOG_USEC`` (a blocked event
    loop stops the pings). Uvicorn calls ``callback_notify`` from its main loop."""
    import os
    import socket

    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return {}
    address = "\0" + address[1:] if address.startswith("@") else address
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    usec = os.environ.get("WATCHDOG_USEC", "")
    every = max(1, int(int(usec) / 2e6)) if usec.isdigit() and int(usec) > 0 else 30
    ready = []

    async def tick() -> None:
        lines = ["WATCHDOG=1"] if ready else ["READY=1", "STATUS=serving"]
        ready.append(True)
        try:
            sock.sendto("\n".join(lines).encode(), address)
        except OSError:
            pass

    return {"callback_notify": tick, "timeout_notify": every}


def cmd_central_event(args) -> int:
    res = _store(args).create_event(args.event, venue=args.venue or "", starts_at=_when(args.starts),
                                     ends_at=_when(args.ends))
    _out(args, res, (_("event {event} created at venue {venue}; issuer key {kid}") if res["venue"]
                     else _("event {event} created; issuer key {kid}")).format(
        event=res["event"], venue=res["venue"], kid=res["kid"]))
    return 0


def cmd_central_keys_rotate(args) -> int:
    store = _store(args)
    event = store.require_event(args.event)
    kid = store.rotate_key(event)
    _out(args, {"event": event, "kid": kid}, _("new issuer key {kid} for {event}; older keys stay active").format(kid=kid, event=event))
    return 0


def cmd_central_keyring(args) -> int:
    store = _store(args)
    ring = store.keyring(store.require_event(args.event))
    text = json.dumps(ring, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


def _claims(store):
    from sync.central.wallet.claims import Claims
    return Claims(store)


def cmd_central_issue(args) -> int:
    if args.claim:
        return _issue_claims(args)
    _no_claim_options(args)
    if not args.out:
        raise ConfigError(_("give --out DIR for the wallet files, or --claim for claim links (holders' phones)"))
    store = _store(args)
    event = store.require_event(args.event)
    template = None
    if args.face_photo:
        from gate.ledger import encode_template
        from hardware.face import fewer_photos_warning, template_from_photos
        template = encode_template(template_from_photos([Path(p) for p in args.face_photo]))
        warn = fewer_photos_warning(len(args.face_photo))
        if warn:
            print(_("central issue: {warning} (--face-photo P1 --face-photo P2 --face-photo P3)").format(warning=warn),
                  file=sys.stderr, flush=True)
    made = store.issue(event, count=args.count, out=Path(args.out), tier=args.tier, zone=args.zone,
                       entries=args.entries, face_template=template, rotating=not args.static)
    _out(args, {"event": event, "tickets": made},
         _("issued {n} ticket(s) for {event} into {dir}").format(n=len(made), event=event, dir=args.out))
    return 0


def cmd_central_revoke(args) -> int:
    res = _store(args).revoke(args.ticket)
    _out(args, res, _("ticket {ticket} revoked; gates learn it at their next sync").format(ticket=args.ticket))
    return 0


def _issue_claims(args) -> int:
    """``issue --claim``: tickets waiting for a holder, one claim link each (docs/wallet.md)."""
    bad = [o for o, v in (("--out", args.out), ("--face-photo", args.face_photo), ("--static", args.static)) if v]
    if bad:
        raise ConfigError(_("{options} cannot go with --claim: the holder's phone makes the key "
                            "(use --claim-face to bind the ticket to the holder's face at claim)").format(
            options=", ".join(bad)))
    store = _store(args)
    event = store.require_event(args.event)
    made = _claims(store).issue(event, count=args.count, tier=args.tier, zone=args.zone, entries=args.entries,
                                face=args.claim_face or "off", days=args.claim_days, base_url=args.base_url)
    _out(args, {"event": event, "tickets": made},
         _("issued {n} ticket(s) for {event}, waiting for their holders (claim links, single use, "
           "valid {days} days):").format(n=len(made), event=event, days=f"{args.claim_days:g}")
         + "\n" + "\n".join(f"{m['ticket_id']}  {m['claim_url']}" for m in made))
    return 0


def cmd_central_reissue(args) -> int:
    if args.claim:
        res = _claims(_store(args)).reissue(args.ticket, face=args.claim_face, days=args.claim_days,
                                            base_url=args.base_url)
        _out(args, res, _("ticket {ticket} reissued as version {version}; older codes stop at the "
                          "gates' next sync. New claim link: {url}").format(
            ticket=args.ticket, version=res["version"], url=res["claim_url"]))
        return 0
    _no_claim_options(args)
    res = _store(args).reissue(args.ticket, Path(args.out))
    _out(args, res, _("ticket {ticket} reissued as version {version}: {file}").format(
        ticket=args.ticket, version=res["version"], file=res["file"]))
    return 0


def cmd_central_device_enroll(args) -> int:
    store = _store(args)
    if args.device:
        code = store.enrol_code(args.event, device_id=args.device)
        event = store.device_status(args.device)["event"]
        _out(args, {"code": code, "event": event, "device_id": args.device},
             _("enrolment code re-admitting device {device} ({event}): {code} (single use; the gate "
               "keeps its id and key and gets a new token, its old token stops working)").format(
                 device=args.device, event=event, code=code))
        return 0
    event = store.require_event(args.event)
    code = store.enrol_code(event)
    _out(args, {"code": code, "event": event}, _("enrolment code for {event}: {code} (single use)").format(event=event, code=code))
    return 0


def cmd_central_device_revoke(args) -> int:
    _store(args).revoke_device(args.device_id)
    _out(args, {"device_id": args.device_id, "status": "revoked"}, _("device {device} revoked").format(device=args.device_id))
    return 0


def cmd_central_device_release(args) -> int:
    changed = _store(args).release_device(args.device_id)  # a revoked device: ConfigError (exit 2)
    _out(args, {"device_id": args.device_id, "quarantined": False, "released": changed},
         (_("device {device} released from quarantine; its new admissions reach other gates again")
          if changed else _("device {device} was not quarantined: nothing changed")).format(device=args.device_id))
    return 0


def cmd_central_report(args) -> int:
    from sync.central.reconcile import build_report, build_venue_report, render_text, render_venue_text

    store = _store(args)
    if args.venue:
        rep = build_venue_report(store, args.venue)
        print(json.dumps(rep) if args.json else render_venue_text(rep), end="\n" if args.json else "")
        return 0
    rep = build_report(store, store.require_event(args.event), verify_chains=args.verify_chains)
    if args.json:
        print(json.dumps(rep))
    else:
        print(render_text(rep, _=_), end="")
    return 0




def _no_claim_options(args) -> None:
    if args.base_url or args.claim_face:
        raise ConfigError(_("--base-url and --claim-face go with --claim"))


def _claim_options(q, claim_help: str) -> None:
    from sync.central.wallet import CLAIM_DAYS, FACE_POLICIES  # light: no store, no crypto
    q.add_argument("--claim", action="store_true", help=claim_help)
    q.add_argument("--base-url", metavar="URL",
                   help=_("with --claim: the central's public URL, to print absolute claim links "
                        "(default: paths under it, /wallet/claim#TOKEN)"))
    q.add_argument("--claim-days", type=days, default=CLAIM_DAYS, metavar="D",
                   help=_("with --claim: days a claim link stays valid (default {days})").format(days=f"{CLAIM_DAYS:g}"))
    q.add_argument("--claim-face", choices=FACE_POLICIES, default=None,
                   help=_("with --claim: bind to the holder's face at claim, with consent: 'offer' lets the "
                        "holder choose, 'require' makes it a condition (default: off; reissue: as before)"))


def register(sub) -> None:
    p = sub.add_parser("central", help=_("the reference central server and issuer"),
                       description=_("The reference central system: events, issuer keys, tickets, devices, "
                                   "the sync server and the reconciliation report. --data is central's "
                                   "own directory (issuer keys; the SQLite database unless --db names "
                                   "another). Every command takes --json."))
    p.add_argument("--db", metavar="URL", help=_("database: sqlite:///PATH (default: DATA/central.db) or "
                   "postgresql://USER@HOST/DB (several serve processes, venue groups)"))
    cs = p.add_subparsers(dest="central_command", metavar="ACTION")
    cs.required = True

    def add(name, func, help_, **kw):
        q = cs.add_parser(name, help=help_, description=kw.pop("description", help_))
        q.add_argument("--json", action="store_true", help=_("print one JSON object"))
        q.set_defaults(func=func)
        return q

    q = add("serve", cmd_central_serve, _("serve the sync API (protocol: docs/sync.md)"))
    q.add_argument("--host", default="127.0.0.1", help=_("address to listen on (default 127.0.0.1)"))
    q.add_argument("--port", type=int, default=8080, help=_("port (default 8080)"))
    q.add_argument("--pool-size", type=int, default=8, help=_("database connections per process (default 8)"))
    q.add_argument("--pool-timeout", type=seconds, default=10.0,
                   help=_("seconds a request waits for a free connection before 503 + Retry-After (default 10)"))
    q.add_argument("--tls-cert", metavar="FILE", help=_("serve HTTPS with this PEM certificate (chain)"))
    q.add_argument("--tls-key", metavar="FILE", help=_("the PEM private key of --tls-cert"))
    q.add_argument("--header-timeout", type=seconds, default=10.0, metavar="S",
                   help=_("drop a client whose request headers take longer (default 10)"))
    q.add_argument("--body-timeout", type=seconds, default=30.0, metavar="S",
                   help=_("answer 408 to a request body that takes longer (default 30)"))
    q.add_argument("--metrics-listen", metavar="IP:PORT", type=listen_address,
                   help=_("also serve Prometheus /metrics here without credentials (a monitoring network); "
                          "on the API's address /metrics needs ops credentials"))
    q = add("event", None, _("events"))
    es = q.add_subparsers(dest="event_command", metavar="ACTION")
    es.required = True
    e = es.add_parser("create", help=_("create an event with its first issuer key"), description=_("Create an event."))
    e.add_argument("event", metavar="E")
    e.add_argument("--venue", help=_("the venue it takes place at (for venue reports; a device serves one event only)"))
    e.add_argument("--starts", metavar="ISO", help=_("doors open (ISO 8601); admissions a day outside are implausible"))
    e.add_argument("--ends", metavar="ISO", help=_("event ends (ISO 8601)"))
    e.add_argument("--json", action="store_true", help=_("print one JSON object"))
    e.set_defaults(func=cmd_central_event)
    q = add("keys", None, _("issuer keys"))
    ks = q.add_subparsers(dest="keys_command", metavar="ACTION")
    ks.required = True
    k = ks.add_parser("rotate", help=_("add a new signing key (older ones stay active)"),
                      description=_("Add a new issuer signing key for the event."))
    k.add_argument("--event", help=_("event (default: the only one)"))
    k.add_argument("--json", action="store_true", help=_("print one JSON object"))
    k.set_defaults(func=cmd_central_keys_rotate)
    k = ks.add_parser("export", help=_("write the public key ring JSON (for gates without sync)"),
                      description=_("Print (and with --out write) the event's public key ring."))
    k.add_argument("--event", help=_("event (default: the only one)"))
    k.add_argument("--out", help=_("also write it to this file"))
    k.add_argument("--json", action="store_true", help=_("(the output is JSON already)"))
    k.set_defaults(func=cmd_central_keyring)
    q = add("issue", cmd_central_issue, _("issue tickets and write their wallet files"),
            description=_("Issue tickets; each wallet file (credential + holder key) goes to --out."))
    q.add_argument("--event", help=_("event (default: the only one)"))
    q.add_argument("--count", type=int, required=True, help=_("how many tickets"))
    q.add_argument("--tier", default="GA", help=_("ticket tier (default GA)"))
    q.add_argument("--zone", help=_("zone claim"))
    q.add_argument("--entries", type=int, default=1, help=_("entries allowed (0 = unlimited)"))
    q.add_argument("--face-photo", metavar="P", action="append",
                   help=_("bind the tickets to the face in photo P; give it three times, three photos of "
                        "the holder (the normal enrolment; fewer warn)"))
    q.add_argument("--static", action="store_true", help=_("static (paper) codes instead of rotating ones"))
    q.add_argument("--out", metavar="DIR", help=_("folder for the wallet files (not with --claim)"))
    _claim_options(q, _("issue the tickets waiting for their holders: one single-use claim link each, "
                      "opened on the holder's phone (the wallet at /wallet makes the holder key there)"))
    q = add("revoke", cmd_central_revoke, _("revoke a ticket (refund, fraud)"))
    q.add_argument("ticket", metavar="TICKET")
    q = add("reissue", cmd_central_reissue, _("reissue a ticket: version bump and a new holder key"))
    q.add_argument("ticket", metavar="TICKET")
    q.add_argument("--out", default=".", metavar="DIR", help=_("folder for the new wallet file"))
    _claim_options(q, _("a lost phone: a new claim link for the holder instead of a wallet file "
                      "(codes of the old phone become SUPERSEDED at the gates' next sync)"))
    q = add("device", None, _("gate devices"))
    ds = q.add_subparsers(dest="device_command", metavar="ACTION")
    ds.required = True
    d = ds.add_parser("enroll", help=_("make a one-time enrolment code for a gate"),
                      description=_("Make a single-use enrolment code for a new gate, or with --device one that "
                                  "re-admits an enrolled (e.g. revoked) gate: same id and key, a new token."))
    d.add_argument("--event", help=_("event (default: the only one)"))
    d.add_argument("--device", metavar="DEVICE_ID",
                   help=_("re-admit this enrolled device (revoked, or its token lost) instead of a new one"))
    d.add_argument("--json", action="store_true", help=_("print one JSON object"))
    d.set_defaults(func=cmd_central_device_enroll)
    d = ds.add_parser("revoke", help=_("revoke a gate's token"), description=_("Revoke a device's token."))
    d.add_argument("device_id", metavar="DEVICE_ID")
    d.add_argument("--json", action="store_true", help=_("print one JSON object"))
    d.set_defaults(func=cmd_central_device_revoke)
    d = ds.add_parser("release", help=_("lift a device's quarantine after checking the evidence"),
                      description=_("Lift the quarantine of a device whose uploads were implausible. A revoked "
                                  "device is refused (exit 2): re-admit it first (device enroll --device)."))
    d.add_argument("device_id", metavar="DEVICE_ID")
    d.add_argument("--json", action="store_true", help=_("print one JSON object"))
    d.set_defaults(func=cmd_central_device_release)
    from sync.central.ops.cli import register as register_ops, register_device_name
    register_device_name(ds)
    register_ops(cs)
    q = add("report", cmd_central_report, _("the reconciliation report"),
            description=_("Double admissions, revoked and unlisted admissions, quarantined devices, chains, "
                        "counts; per event, or per venue with --venue."))
    q.add_argument("--event", help=_("event (default: the only one)"))
    q.add_argument("--venue", help=_("summarise every event of this venue instead"))
    q.add_argument("--verify-chains", action="store_true", help=_("also re-hash every stored record"))

