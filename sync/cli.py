"""``gate sync`` (the device side), ``gate wallet ...`` (the holder app simulator)
and ``gate pretix report``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gate.argtypes import seconds
from gate.errors import ConfigError, SyncError
from gate.i18n import _


def _out(args, obj: dict, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(obj, separators=(",", ":")))
    else:
        print(text)


# ------------------------------------------------------------------ gate sync


def cmd_sync(args) -> int:
    from gate.db import get_setting
    from sync import client as sc
    from sync import pretix

    gate = args.open_gate()  # the composition root's helper (gate.app.compose.open_gate)
    url = args.central or get_setting(gate.conn, "sync.central")
    if args.ca and not args.enroll:
        raise SyncError(_("--ca is pinned at enrolment: give it together with --enroll CODE"))
    if args.enroll:
        if not args.central:
            raise SyncError(_("--enroll needs --central URL"))
        if pretix.is_pretix(args.central):
            pretix.enroll(gate, args.central, args.enroll)
        else:
            sc.enroll(gate, args.central, args.enroll, ca=args.ca)
        print(_("enrolled {device} with {central} (token stored 0600)").format(
            device=gate.config.device_id, central=args.central), file=sys.stderr)
    elif not sc.token_path(gate).exists():
        raise SyncError(_("first contact needs an enrolment code: gate --data {data} sync "
                          "--central {central} --enroll CODE (from 'gate central device enroll')").format(
            data=args.data, central=args.central or "URL"))
    if url and (warning := sc.plain_http_warning(url)):
        print(_("gate: {message}").format(message=warning), file=sys.stderr)
    # the same engine, retry policy and waits as a running lane's background sync
    loop = args.sync_loop(gate, args.central, interval_s=args.interval)  # gate.app.compose.sync_loop

    def show(rep) -> None:
        wait = loop.next_wait
        if args.json:
            print(json.dumps({**rep.to_json(), "outbox": sc.outbox_length(gate), "state": loop.state.value,
                              "next_sync_s": None if wait is None else round(wait, 3)}), flush=True)
            return
        state = _("sync ok") if rep.ok else _("sync PARTIAL") if rep.uploaded or rep.tickets else _("sync FAILED")
        line = _("{state}: {keys} key(s), {tickets} ticket change(s), {up} scan(s) up, "
                 "{admissions} admission(s) from other gates, outbox {outbox}").format(
            state=state, keys=rep.keys, tickets=rep.tickets, up=rep.uploaded, admissions=rep.admissions,
            outbox=sc.outbox_length(gate))
        if rep.clock_offset_s is not None:
            line += _(", clock offset {s} s").format(s=f"{rep.clock_offset_s:+.1f}")
        if not args.once:
            line += (_("; next pass in {s} s").format(s=f"{wait:.1f}") if wait is not None
                     else _("; stopped: enrol again"))
        print(line, flush=True)
        for e in rep.errors:
            print(f"  {e}", file=sys.stderr)
        if rep.ok and loop.last_error:  # synced, but something needs a person (the clock)
            print(f"  {loop.last_error}", file=sys.stderr)

    if args.once:
        rep = loop.run_pass(gate)
        show(rep)
        return 0 if rep.ok else 5
    loop.run(gate, on_pass=show, foreground=True)
    return 5  # parked: central refused this device (the pass said why); enrol again


# ------------------------------------------------------------------ wallet


def _wallet(path: str):
    from crypto.issuer import Wallet
    try:
        return Wallet.load(Path(path))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(_("{file} is not a readable ticket file: {problem}").format(file=path, problem=exc)) from None


def cmd_wallet_code(args) -> int:
    w = _wallet(args.ticket_file)
    print(w.code(args.now if args.now is not None else time.time()))
    return 0


def cmd_wallet_show(args) -> int:
    import segno

    w = _wallet(args.ticket_file)
    now = time.time()
    code = w.code(now)
    qr = segno.make(code, error="m", micro=False)
    if args.png:
        qr.save(args.png, scale=6, border=4)
        print(_("wrote {file} (valid for this 15 s step only)").format(file=args.png) if w.holder_key
              else _("wrote {file}").format(file=args.png))
        return 0
    qr.terminal(compact=True)
    if w.holder_key:
        print(_("ticket {ticket} ({event}), rotating: redraws every 15 s").format(ticket=w.ticket_id, event=w.event))
    else:
        print(_("ticket {ticket} ({event}), static").format(ticket=w.ticket_id, event=w.event))
    return 0


def cmd_report(args) -> int:
    from sync.pretix import report

    rep = report(args.central, args.token)
    if args.json:
        print(json.dumps(rep))
        return 0
    print(_("pretix {event} list {list}: {checkins} check-ins, {ok} successful").format(
        event=rep["event"], list=rep["list"], checkins=rep["checkins"], ok=rep["successful"]))
    print(_("failed: {counts}").format(
        counts=", ".join(f"{k} {v}" for k, v in sorted(rep["failed_by_reason"].items())) or _("none")))
    print(_("DOUBLE ENTRIES ({n})").format(n=len(rep["double_entries"])))
    for d in rep["double_entries"]:
        print("  " + _("position {position}: {entries}").format(
            position=d["position"], entries="; ".join(
                _("device {device} at {time}").format(device=e["device"], time=e["datetime"])
                for e in d["entries"])))
    return 0


def register_pretix(sub) -> None:
    p = sub.add_parser("pretix", help=_("reports against a pretix event"),
                       description=_("Work with a pretix event as the central system (see README, Using pretix)."))
    ps = p.add_subparsers(dest="pretix_command", metavar="ACTION")
    ps.required = True
    q = ps.add_parser("report", help=_("reconciliation: double entries across gates, failed check-ins"),
                      description=_("Read the check-in list back with an organizer team token and name the "
                                  "tickets that entered more than once without an exit."))
    q.add_argument("--central", required=True, metavar="URL", help=_("pretix+https://HOST/ORGANIZER/EVENT?list=ID"))
    q.add_argument("--token", required=True, help=_("an organizer team API token that may read check-ins"))
    q.add_argument("--json", action="store_true", help=_("print one JSON object"))
    q.set_defaults(func=cmd_report)


def register(sub) -> None:
    p = sub.add_parser("sync", help=_("sync this gate with the central system"),
                       description=_("Pull issuer keys, ticket changes and other gates' admissions; push "
                                   "the scan log (the reference central, or pretix for a pretix+https:// URL). "
                                   "First contact registers with --enroll CODE; later runs reuse the stored "
                                   "token. Loops until interrupted unless --once: after a failed pass it "
                                   "retries with backoff (never sooner than central's Retry-After), the same "
                                   "way a running lane's background sync does, and stops (exit 5) when "
                                   "central refuses this device's token."))
    p.add_argument("--central", metavar="URL", help=_("central base URL (remembered after enrolment)"))
    p.add_argument("--enroll", metavar="CODE", help=_("one-time enrolment code from central ops "
                                                    "(pretix: the device's initialisation token)"))
    p.add_argument("--ca", metavar="FILE", help=_("with --enroll: trust this PEM CA/certificate for the "
                                                "central from now on (default: the system CA store)"))
    p.add_argument("--once", action="store_true", help=_("one pass, exit 0 when it fully succeeded, else 5"))
    p.add_argument("--interval", type=seconds, default=10.0, metavar="S",
                   help=_("seconds between successful passes (default 10); failed ones are retried with backoff"))
    p.add_argument("--json", action="store_true",
                   help=_("one JSON object per pass (with 'state' and 'next_sync_s', the wait before the next)"))
    p.set_defaults(func=cmd_sync)


    p = sub.add_parser("wallet", help=_("the holder app simulator"),
                       description=_("Show a ticket file's current code, as a holder's phone would."))
    ws = p.add_subparsers(dest="wallet_command", metavar="ACTION")
    ws.required = True
    q = ws.add_parser("show", help=_("draw the current code in the terminal or to a PNG"),
                      description=_("Draw the current (rotating) QR code."))
    q.add_argument("ticket_file", metavar="TICKET_FILE")
    q.add_argument("--png", metavar="OUT", help=_("write a PNG instead of drawing in the terminal"))
    q.set_defaults(func=cmd_wallet_show)
    q = ws.add_parser("code", help=_("print the current QR text"), description=_("Print the current QR text."))
    q.add_argument("ticket_file", metavar="TICKET_FILE")
    from gate.argtypes import unix_time
    q.add_argument("--now", type=unix_time, help=_("as of this unix time"))
    q.set_defaults(func=cmd_wallet_code)
