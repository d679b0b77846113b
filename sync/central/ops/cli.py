"""``gate central ops add|remove NAME``: ops accounts for the ops room and the report API;
``gate central device name DEVICE NAME``: the name the ops room shows for a gate."""

from __future__ import annotations

import sys
import time

from gate import i18n


def _(message: str) -> str:
    """The process language (--lang, like every gate command), from the ``ops`` catalogue:
    scripts/i18n.py extracts everything under sync/central/ops/ into that domain."""
    return i18n.translations(i18n.current(), "ops").gettext(message)


def cmd_ops_add(args) -> int:
    import getpass

    from gate.errors import ConfigError
    from sync.central.ops import accounts
    from sync.central.ops.db import OpsDB
    from sync.central.cli import _store
    from sync.cli import _out

    # the rules accounts.add enforces, said in the operator's language (and the name before the password)
    if not accounts.NAME_RE.match(args.name):
        raise ConfigError(_("an ops account name is 1-64 letters, digits or _ . @ -"))
    if args.password_stdin:
        pw = sys.stdin.readline(1024).rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise ConfigError(_("no terminal to ask for the password: pipe it with --password-stdin"))
        pw = getpass.getpass(_("password for {name}: ").format(name=args.name))
        if getpass.getpass(_("again: ")) != pw:
            raise ConfigError(_("the two passwords differ; nothing changed"))
    if len(pw) < 8:
        raise ConfigError(_("the password must have at least 8 characters"))
    store = _store(args)
    try:
        accounts.add(OpsDB(store), args.name, pw, args.role, now=time.time())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        store.close()
    _out(args, {"name": args.name, "role": args.role},
         _("ops account {name} ({role}) ready: log in at /ops on the central").format(name=args.name, role=args.role))
    return 0


def cmd_ops_remove(args) -> int:
    from gate.errors import ConfigError
    from sync.central.cli import _store
    from sync.central.ops import accounts
    from sync.central.ops.db import OpsDB
    from sync.cli import _out

    store = _store(args)
    try:
        gone = accounts.remove(OpsDB(store), args.name)
    finally:
        store.close()
    if not gone:
        raise ConfigError(_("no ops account {name}: 'gate central ops add NAME' makes one").format(name=repr(args.name)))
    _out(args, {"name": args.name, "removed": True},
         _("ops account {name} removed; its sessions are ended").format(name=args.name))
    return 0


GATE_NAME_MAX = 40


def cmd_device_name(args) -> int:
    from gate.errors import ConfigError
    from sync.central.cli import _store
    from sync.central.ops.db import OpsDB
    from sync.cli import _out

    name = args.name.strip()
    if not name or len(name) > GATE_NAME_MAX or not name.isprintable():
        raise ConfigError(_("a gate name has 1 to {max} printable characters (no line breaks or tabs): "
                            "choose another one").format(max=GATE_NAME_MAX))
    store = _store(args)
    try:
        db = OpsDB(store)
        with db.writer() as w:
            if w.one("SELECT device_id FROM devices WHERE device_id = :d", {"d": args.device_id}) is None:
                raise ConfigError(_("no device {device}: 'gate central device enroll' adds gates").format(
                    device=repr(args.device_id)))
            w.run("DELETE FROM ops_gate_names WHERE device_id = :d", {"d": args.device_id})
            w.run("INSERT INTO ops_gate_names (device_id, name, named_at) VALUES (:d, :n, :t)",
                  {"d": args.device_id, "n": name, "t": time.time()})
    finally:
        store.close()
    _out(args, {"device_id": args.device_id, "name": name},
         _("gate {device} is now shown as {name} in the ops room").format(device=args.device_id, name=repr(name)))
    return 0


def register_device_name(ds) -> None:
    """Add ``name`` to the ``gate central device`` actions ``ds``."""
    d = ds.add_parser("name", help=_("give a gate the name the ops room shows"),
                      description=_("Name a gate (\"North door 1\"): the ops room's pages, alerts and reports "
                                    "show the name instead of the device id. Naming it again replaces the name."))
    d.add_argument("device_id", metavar="DEVICE", help=_("the device id of the gate"))
    d.add_argument("name", metavar="NAME", help=_("{min}-{max} printable characters").format(min=1, max=GATE_NAME_MAX))
    d.add_argument("--json", action="store_true", help=_("print one JSON object"))
    d.set_defaults(func=cmd_device_name)


def register(cs) -> None:
    """Add ``ops`` to the ``gate central`` subcommands ``cs``."""
    q = cs.add_parser("ops", help=_("ops room accounts"),
                      description=_("Accounts for the ops room (/ops) and the report API (session cookie, "
                                    "or HTTP basic auth for scripts)."))
    os_ = q.add_subparsers(dest="ops_command", metavar="ACTION")
    os_.required = True
    a = os_.add_parser("add", help=_("add an ops account (or set its password and role)"),
                       description=_("Add an ops account, or reset its password and role. The password is "
                                     "asked on the terminal (twice), or read from the first line of stdin with "
                                     "--password-stdin; it is stored as a salted scrypt hash. Setting a new "
                                     "password ends the account's sessions."))
    a.add_argument("name", metavar="NAME", help=_("the account name"))
    a.add_argument("--role", choices=("viewer", "admin"), default="viewer",
                   help=_("viewer reads everything; admin may also set the capacity and acknowledge alerts "
                          "(default viewer)"))
    a.add_argument("--password-stdin", action="store_true", help=_("read the password from stdin (scripts)"))
    a.add_argument("--json", action="store_true", help=_("print one JSON object"))
    a.set_defaults(func=cmd_ops_add)
    r = os_.add_parser("remove", help=_("remove an ops account and end its sessions"),
                       description=_("Remove an ops account: its sessions end at once and its password stops "
                                     "working (also for basic auth)."))
    r.add_argument("name", metavar="NAME", help=_("the account name"))
    r.add_argument("--json", action="store_true", help=_("print one JSON object"))
    r.set_defaults(func=cmd_ops_remove)
