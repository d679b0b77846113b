"""The ``gate`` command line. Operator scripts depend on the commands and flags
here (see README): keep them stable.

Heavy libraries (cv2, face_recognition, textual, fastapi) are imported inside
the commands that need them, so ``gate verify`` starts fast.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sqlite3
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from gate.argtypes import unix_time
from gate.errors import ConfigError, GateError, LogError
from gate.i18n import _

DEFAULT_DATA = os.environ.get("GATE_DATA", "gate-data")


def _now(args) -> float:
    return time.time() if getattr(args, "now", None) is None else args.now


def _open(args):
    """Every one-shot command opens its gate here: the composition root's helper."""
    return open_set_up_gate(args.data)


def open_set_up_gate(data):
    """The composition root's ``open_gate``, after saying in the process language
    when there is no gate in ``data`` (the commonest operator mistake)."""
    from gate.app.compose import open_gate
    from gate.appliance import Gate
    if not Gate.exists(Path(data)):
        raise ConfigError(_("no gate set up in {data}: run 'gate --data {data} init --event EVENT' first").format(
            data=data))
    return open_gate(data)


def _fmt_ts(ts_ms: int | None) -> str:
    """Any stored time renders: a clock that said year 11476 shows as '?<ms>'."""
    if ts_ms is None:
        return "-"
    try:
        return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError, TypeError):
        return f"?{ts_ms}"


def _jsonable(obj):
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _print_json(obj) -> None:
    print(json.dumps(_jsonable(obj), separators=(",", ":")), flush=True)


# ------------------------------------------------------------------ commands


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, label: str, *, stream=None):
        self.total, self.label = max(total, 1), label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self._last = -1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        pct = min(100, done * 100 // self.total)
        if pct != self._last:
            self._last = pct
            bar = "#" * (pct // 4)
            self.stream.write(f"\r{self.label} [{bar:<25}] {pct:3d}%")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()



def cmd_init(args) -> int:
    from gate.app.compose import init_gate
    from gate.decision import Mode
    zones = tuple(z.strip() for z in args.zones.split(",") if z.strip()) if args.zones else ()
    gate = init_gate(args.data, event=args.event, lane=args.lane, mode=Mode(args.mode),
                     zones=zones, require_rotating=args.require_rotating,
                     require_listed=args.require_listed)
    if args.bus_listen or args.bus_peer:
        from gate import bus
        bus.save_settings(gate.conn, args.bus_listen or [], args.bus_peer or [])
    p = gate.policy
    mode = _("entry") if p.mode.value == "entry" else _("exit")
    extras = ([_("zones {zones}").format(zones=",".join(p.zones))] if p.zones else []) \
        + ([_("rotating codes only")] if p.require_rotating else []) \
        + ([_("listed tickets only")] if p.require_listed else [])
    print(_("gate {device} ready in {data}: event {event}, lane {lane}, {mode}").format(
        device=gate.config.device_id, data=args.data, event=p.event, lane=p.lane, mode=mode)
        + "".join(_(", {item}").format(item=x) for x in extras))
    print(_("next: gate --data {data} sync --central URL --enroll CODE, or without a central: "
            "keys trust RING.json, then ledger import TICKETS.jsonl").format(data=args.data))
    return 0


def cmd_keys_trust(args) -> int:
    from crypto.keyring import KeyRingError
    gate = _open(args)
    try:
        raw = Path(args.ring).read_bytes()
        doc = json.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise ConfigError(_("cannot read key ring {file}: {problem}").format(
            file=args.ring, problem=exc.strerror)) from None
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(_("{file}: line {line}: not UTF-8 text (byte {byte}); "
                            "re-export the key ring from central").format(
            file=args.ring, line=line, byte=exc.start)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(_("{file}: line {line}: not JSON ({problem}): fix or re-export it").format(
            file=args.ring, line=exc.lineno, problem=exc.msg)) from None
    except RecursionError:
        raise ConfigError(_("{file}: JSON nested too deeply: not a key ring; re-export it").format(
            file=args.ring)) from None
    try:
        keys = gate.trust(doc)
    except KeyRingError as exc:
        raise ConfigError(_("{file}: {problem}; nothing was trusted").format(file=args.ring, problem=exc)) from None
    # what the gate now holds, not what the file says: a key revoked here stays revoked
    now = time.time()
    held = [gate.keys.get(k.kid) for k in keys]
    active = sum(1 for k in held if k is not None and k.usable(now))
    revoked = sum(1 for k in held if k is not None and k.status == "revoked")
    rest = len(keys) - active - revoked
    parts = [_("{n} active").format(n=active)] + ([_("{n} revoked").format(n=revoked)] if revoked else []) \
        + ([_("{n} outside their validity window").format(n=rest)] if rest else [])
    print(_("trusted {n} issuer key(s) for {event} ({counts})").format(
        n=len(keys), event=gate.policy.event, counts=_(", ").join(parts)))
    return 0


def cmd_keys_list(args) -> int:
    gate = _open(args)
    keys = sorted(gate.keys, key=lambda k: k.kid)
    if args.json:
        for k in keys:
            _print_json(k.to_json())
        return 0
    if not keys:
        print(_("no issuer keys: run 'gate --data {data} keys trust RING.json'").format(data=args.data))
        return 0
    print(f"{'kid':<18}{'status':<9}{'nbf':<22}{'exp':<22}")
    for k in keys:
        nbf = _fmt_ts(k.nbf * 1000) if k.nbf is not None else "-"
        exp = _fmt_ts(k.exp * 1000) if k.exp is not None else "-"
        print(f"{k.kid.hex():<18}{k.status:<9}{nbf:<22}{exp:<22}")
    return 0


def cmd_ledger_import(args) -> int:
    from gate import ledger
    gate = _open(args)
    path = Path(args.file)
    bar = Progress(ledger.file_size(path), _("importing {file}").format(file=path.name))
    t0 = time.perf_counter()
    try:
        res = ledger.import_tickets(gate.conn, path, event=gate.policy.event,
                                    data_key=gate.data_key, skip_bad=args.skip_bad,
                                    now=time.time(), progress=bar.update)
    finally:
        bar.close()
    for lineno, msg in res.bad[:20]:
        print(_("skipped line {line}: {problem}").format(line=lineno, problem=msg), file=sys.stderr)
    if res.templates_refused:
        print(_("{n} face template(s) not stored: {why}").format(
            n=res.templates_refused, why=_(ledger.BIOMETRICS_OFF_MESSAGE)), file=sys.stderr)
    took = f"{time.perf_counter() - t0:.1f}"
    if res.bad:
        print(_("imported {n} ticket(s) in {s} s; skipped {bad} bad line(s)").format(
            n=res.imported, s=took, bad=len(res.bad)))
    else:
        print(_("imported {n} ticket(s) in {s} s").format(n=res.imported, s=took))
    return 0


def cmd_ledger_stats(args) -> int:
    from gate import ledger
    gate = _open(args)
    st = ledger.stats(gate.conn)
    if args.json:
        _print_json(st)
        return 0
    age = (_("never") if st["ledger_imported_at"] is None
           else _("{n} min ago").format(n=f"{(time.time() - st['ledger_imported_at']) / 60:.0f}"))
    mode = _("entry") if gate.policy.mode.value == "entry" else _("exit")
    print(_("event     {event}   lane {lane} ({mode})").format(
        event=gate.policy.event, lane=gate.policy.lane, mode=mode))
    print(_("tickets   {n}").format(n=st["tickets"]) + "  "
          + "  ".join(f"{k}: {v}" for k, v in sorted(st["by_status"].items())))
    print(_("faces     {n} enrolled (encrypted)").format(n=st["face_templates"]))
    print(_("keys      {n} ({active} active)").format(n=st["keys"], active=st["keys_active"]))
    print(_("scans     {n}  tickets used: {used}").format(n=st["scans"], used=st["tickets_used"]))
    for reason, n in sorted(st["scans_by_reason"].items()):
        print(f"          {reason:<16}{n}")
    print(_("imported  {age}").format(age=age))
    return 0


def _qr_inputs(args):
    """``(qr, more_buffered)``: the arguments, else the lines of stdin."""
    if args.qr:
        for i, q in enumerate(args.qr):
            yield q, i < len(args.qr) - 1
        return
    from crypto.gt1 import MAX_QR_CHARS
    from gate.lines import text_lines_more

    # bounded lines: a 300 MB line or a stray byte is one MALFORMED scan, nothing more
    for _, text, _, more in text_lines_more(sys.stdin.buffer, MAX_QR_CHARS):
        text = text.rstrip("\r")
        if text.strip():
            yield text, more


def _verdict_line(d) -> str:
    """``gate verify``'s line for people: the code (stable), the words in the
    process language, and the facts. Text that came from outside (a lane name
    another gate sent, in ``detail``) is plain: no terminal escape gets through."""
    from gate.i18n import _
    from gate.text import plain
    from gate.words import reason_words

    parts = [reason_words(d.reason.value).headline]
    if d.ticket_id:
        parts.append(_("ticket {ticket}").format(ticket=plain(d.ticket_id)))
    if d.unlisted and d.accepted:
        parts.append(_("unlisted: sold after last sync"))
    if d.face_distance is not None:
        parts.append(_("face {distance:.3f}").format(distance=d.face_distance))
    line = f"{d.reason.value:<16}" + " · ".join(parts)
    return line + (f"  [{plain(d.detail, limit=300)}]" if d.detail else "")


def cmd_verify(args) -> int:
    from gate.decision import Mode
    gate = _open(args)
    mode = Mode(args.mode) if args.mode else None
    face = None
    if getattr(args, "face", None):
        from hardware.face import capture_from_photo
        face = capture_from_photo(Path(args.face))
    encode = json.JSONEncoder(separators=(",", ":")).encode  # one encoder: this loop is the hot path
    gc.freeze()  # start-up objects out of the collector's way: a gen-2 pass would rescan them all
    pending: list[str] = []  # our own buffer: one write per batch even when Python runs unbuffered

    def flush() -> None:
        sys.stdout.write("".join(pending))
        sys.stdout.flush()
        pending.clear()
    fixed_now = args.now
    for qr, more in _qr_inputs(args):
        now = time.time() if fixed_now is None else fixed_now
        d, entry = gate.scan(qr, now=now, mode=mode, face=face, dry_run=args.dry_run)
        if args.json:
            out = d.to_json()  # JSON types only: no _jsonable walk needed
            out["seq"] = entry.seq if entry else None
            pending.append(encode(out) + "\n")
            if not more:  # answer now unless the next line is already here
                flush()
        else:
            print(_verdict_line(d), flush=True)
    return 0


def cmd_log(args) -> int:
    from gate import scanlog
    gate = _open(args)
    if args.action == "verify":
        rep = scanlog.verify_chain(gate.conn)
        if rep.ok:
            print(_("chain ok: {n} record(s), head seq {seq}, hash {hash}").format(
                n=rep.records, seq=rep.head_seq, hash=rep.head_hash.hex()))
            return 0
        raise LogError(_("chain BROKEN after seq {seq}: {problem}. "
                         "Keep this database file as evidence and tell central ops.").format(
            seq=rep.head_seq, problem=rep.problem))
    for e in scanlog.entries(gate.conn, after=args.after, limit=args.limit):
        if args.json:
            _print_json({**e.record, "hash": e.hash})
            continue
        r = e.record
        what = r.get("reason") or r.get("action") or (f"ref {r.get('ref')}" if "ref" in r else "")
        op = _(" by {operator}").format(operator=r["operator"]) if r.get("operator") else ""
        print(f"{e.seq:>7} {_fmt_ts(r.get('ts_ms'))} {r['kind']:<8} {r.get('mode', ''):<5} "
              f"{what:<16} {r.get('ticket_id') or '-'}{op}")
    return 0


# ------------------------------------------------------------------ parser


class _Formatter(argparse.HelpFormatter):
    """Help text wrapped by terminal cells, not characters: a Chinese character
    takes two cells and a line may break between any two of them (argparse's
    own wrapping breaks only at spaces, so a Chinese paragraph ran off the screen)."""

    def _split_lines(self, text, width):
        from gate.text import wrap
        return wrap(self._whitespace_matcher.sub(" ", text).strip(), width)

    def _fill_text(self, text, width, indent):
        from gate.text import wrap
        return "\n".join(indent + line for line in wrap(self._whitespace_matcher.sub(" ", text).strip(),
                                                          width - len(indent)))


class _Parser(argparse.ArgumentParser):
    """Every command's parser (subcommands inherit the class) formats its help with :class:`_Formatter`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gate",
        description=_("Ticket-gate appliance: verify signed GT1 codes offline, drive the "
                    "turnstile, sync with central."),
        epilog=_("Start: gate --data DIR init --event E; keys trust RING.json; "
               "ledger import TICKETS.jsonl; verify QR."))
    parser.add_argument("--data", default=DEFAULT_DATA, metavar="DIR",
                        help=_("the gate's data directory (default: $GATE_DATA or ./gate-data)"))
    _lang_option(parser, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("init", help=_("set up this gate for an event and lane"),
                       description=_("Create the data directory, device keys and lane settings. "
                                   "Re-running it for the same event updates the lane settings."))
    p.add_argument("--event", required=True, help=_("event id the lane admits to"))
    p.add_argument("--lane", default="lane-1", help=_("lane name shown in logs and reports"))
    p.add_argument("--mode", choices=["entry", "exit"], default="entry", help=_("lane direction"))
    p.add_argument("--zones", help=_("comma-separated zones this lane admits (default: all)"))
    p.add_argument("--require-rotating", action="store_true",
                   help=_("refuse static codes (screenshots and paper)"))
    p.add_argument("--require-listed", action="store_true",
                   help=_("refuse signed tickets missing from the ledger (NOT_IN_LEDGER)"))
    p.add_argument("--bus-listen", action="append", metavar="tcp/IP:PORT",
                   help=_("venue bus: where 'gate run' accepts peer gates (repeatable; docs/bus.md)"))
    p.add_argument("--bus-peer", action="append", metavar="tcp/IP:PORT",
                   help=_("venue bus: a peer gate 'gate run' connects to (repeatable)"))
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("keys", help=_("issuer public keys"), description=_("Manage trusted issuer public keys."))
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION")
    ks.required = True
    q = ks.add_parser("trust", help=_("trust the keys in a key ring JSON file"),
                      description=_("Add or update issuer public keys from a key ring JSON file "
                                  "(format: docs/formats.md). A revoked key stays revoked."))
    q.add_argument("ring", metavar="RING.json")
    q.set_defaults(func=cmd_keys_trust)
    q = ks.add_parser("list", help=_("list trusted issuer keys"), description=_("List trusted issuer keys."))
    q.add_argument("--json", action="store_true", help=_("one JSON object per key"))
    q.set_defaults(func=cmd_keys_list)

    p = sub.add_parser("ledger", help=_("the local ticket ledger"), description=_("Import and inspect tickets."))
    ls = p.add_subparsers(dest="ledger_command", metavar="ACTION")
    ls.required = True
    q = ls.add_parser("import", help=_("import tickets from a JSON Lines file"),
                      description=_("Import ticket records (JSON Lines, format: docs/formats.md). All or nothing: a bad line is "
                                  "reported with its number and nothing is imported unless "
                                  "--skip-bad. Re-importing updates tickets in place; a ticket's "
                                  "version never goes down."))
    q.add_argument("file", metavar="TICKETS.jsonl")
    q.add_argument("--skip-bad", action="store_true", help=_("import the good lines, report the bad ones"))
    q.set_defaults(func=cmd_ledger_import)
    q = ls.add_parser("stats", help=_("ticket, key and scan counts"), description=_("Show ledger statistics."))
    q.add_argument("--json", action="store_true", help=_("print one JSON object"))
    q.set_defaults(func=cmd_ledger_stats)

    p = sub.add_parser("verify", help=_("decide QR codes and record them as scans"),
                       description=_("Decide each QR argument (or each stdin line when none) and "
                                   "record it in the scan log. A rejection is an answer (exit 0); "
                                   "only operational errors exit non-zero."))
    p.add_argument("--now", type=unix_time, help=_("decide as of this unix time (default: the clock)"))
    p.add_argument("--mode", choices=["entry", "exit"], help=_("override the lane mode for this call"))
    p.add_argument("--dry-run", action="store_true", help=_("decide only; record nothing"))
    p.add_argument("--json", action="store_true", help=_("one JSON object per decision"))
    p.add_argument("--face", metavar="PHOTO", help=_("use PHOTO as the holder's captured face"))
    p.add_argument("qr", nargs="*", metavar="QR", help=_("QR text (use -- before codes starting with -)"))
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("log", help=_("show or verify the scan log"),
                       description=_("Print the scan log, or 'log verify' to re-hash the chain."))
    p.add_argument("action", nargs="?", choices=["verify"], help=_("verify the hash chain"))
    p.add_argument("--json", action="store_true", help=_("one JSON object per record"))
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help=_("records after this seq"))
    p.add_argument("--limit", type=int, help=_("at most this many records"))
    p.set_defaults(func=cmd_log)

    for register in _extensions():
        register(sub)
    for _path, command in _subcommands(parser):  # --lang also after the command: gate tui --lang zh_CN
        _lang_option(command, argparse.SUPPRESS)
    return parser


def _lang_option(parser: argparse.ArgumentParser, default) -> None:
    from gate.i18n import SUPPORTED
    parser.add_argument("--lang", choices=SUPPORTED, default=default, metavar="|".join(SUPPORTED),
                        help=_("language of messages and the staff UI (default: from LANGUAGE, LC_ALL, "
                             "LC_MESSAGES, LANG); --json output, codes and logs never change"))


def _subcommands(parser: argparse.ArgumentParser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield prefix + (name,), command
                yield from _subcommands(command, prefix + (name,))


def _lang_in(argv: list[str]) -> str | None:
    """The --lang given on the command line (the last one, before any '--'), read
    before the parser exists: its help and errors are in that language too."""
    lang = None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--lang" and i + 1 < len(argv):
            lang = argv[i + 1]
        elif arg.startswith("--lang="):
            lang = arg.partition("=")[2]
    return lang


def _extensions():
    """Command groups defined next to the code they drive; their heavy imports
    stay inside the handlers, so building the parser stays cheap."""
    from gate.app import bus, decode, demo, face, fault, pins, run, service
    from sync import cli as sync_cli
    from sync.central import cli as central_cli
    return [run.register, face.register, sync_cli.register, central_cli.register,
            sync_cli.register_pretix, pins.register, fault.register, demo.register, decode.register,
            bus.register, service.register]  # service last: it adds 'central service'



def main(argv: list[str] | None = None) -> int:
    from gate import i18n
    from gate.i18n import _
    from gate.text import plain

    argv = sys.argv[1:] if argv is None else list(argv)
    # the language first: argparse's own words ("usage:", "error:") and every message after
    lang = _lang_in(argv)
    i18n.set_language(lang if i18n.normalise(lang) in i18n.SUPPORTED else None)
    i18n.install_argparse()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print(_("gate: interrupted"), file=sys.stderr)
        return 130
    # the composition root's helpers for command groups outside gate.app (sync/cli.py)
    from gate.app.compose import sync_loop
    args.open_gate = lambda: _open(args)
    args.sync_loop = sync_loop
    try:
        return args.func(args) or 0
    except GateError as exc:
        print(_("gate: error: {message}").format(message=plain(exc)), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(_("gate: interrupted"), file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except sqlite3.OperationalError as exc:
        if "full" not in str(exc):
            raise
        print(_("gate: error: the disk is full: free space on the data disk; every scan recorded "
                "before this one is safe"), file=sys.stderr)
        return 7
    except OSError as exc:
        if exc.errno == 28:  # ENOSPC
            print(_("gate: error: the disk is full: free space on the data disk, nothing was lost "
                    "that was already recorded"), file=sys.stderr)
            return 7
        raise


if __name__ == "__main__":
    sys.exit(main())
