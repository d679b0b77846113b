"""``gate central ops add|remove NAME``: ops accounts for the ops room and the report API;
``gate central device name DEVICE NAME``: the name the ops room shows for a gate."""

from __future__ import annotations

import sys
import time


def cmd_ops_add(args) -> int:
    import getpass

    from gate.errors import ConfigError
    from sync.central.ops import accounts
    from sync.central.ops.db import OpsDB
    from sync.central.cli import _store
    from sync.cli import _out

    if args.password_stdin:
        pw = sys.stdin.readline(1024).rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise ConfigError("no terminal to ask for the password: pipe it with --password-stdin")
        pw = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != pw:
            raise ConfigError("the two passwords differ; nothing changed")
    store = _store(args)
    try:
        accounts.add(OpsDB(store), args.name, pw, args.role, now=time.time())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        store.close()
    _out(args, {"name": args.name, "role": args.role},
         f"ops account {args.name} ({args.role}) ready: log in at /ops on the central")
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
        raise ConfigError(f"no ops account {args.name!r}: 'gate central ops add NAME' makes one")
    _out(args, {"name": args.name, "removed": True},
         f"ops account {args.name} removed; its sessions are ended")
    return 0


GATE_NAME_MAX = 40


def cmd_device_name(args) -> int:
    from gate.errors import ConfigError
    from sync.central.cli import _store
    from sync.central.ops.db import OpsDB
    from sync.cli import _out

    name = args.name.strip()
    if not name or len(name) > GATE_NAME_MAX or not name.isprintable():
        raise ConfigError(f"a gate name has 1 to {GATE_NAME_MAX} printable characters (no line breaks or tabs): "
                          "choose another one")
    store = _store(args)
    try:
        db = OpsDB(store)
        with db.writer() as w:
            if w.one("SELECT device_id FROM devices WHERE device_id = :d", {"d": args.device_id}) is None:
                raise ConfigError(f"no device {args.device_id!r}: 'gate central device enroll' adds gates")
            w.run("DELETE FROM ops_gate_names WHERE device_id = :d", {"d": args.device_id})
            w.run("INSERT INTO ops_gate_names (device_id, name, named_at) VALUES (:d, :n, :t)",
                  {"d": args.device_id, "n": name, "t": time.time()})
    finally:
        store.close()
    _out(args, {"device_id": args.device_id, "name": name},
         f"gate {args.device_id} is now shown as {name!r} in the ops room")
    return 0


def register_device_name(ds) -> None:
    """Add ``name`` to the ``gate central device`` actions ``ds``."""
    d = ds.add_parser("name", help="give a gate the name the ops room shows",
                      description="Name a gate (\"North door 1\"): the ops room's pages, alerts and reports "
                                  "show the name instead of the device id. Naming it again replaces the name.")
    d.add_argument("device_id", metavar="DEVICE")
    d.add_argument("name", metavar="NAME", help=f"1-{GATE_NAME_MAX} printable characters")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.set_defaults(func=cmd_device_name)


def register(cs) -> None:
    """Add ``ops`` to the ``gate central`` subcommands ``cs``."""
    q = cs.add_parser("ops", help="ops room accounts", description="Accounts for the ops room (/ops) and the "
                      "report API (session cookie, or HTTP basic auth for scripts).")
    os_ = q.add_subparsers(dest="ops_command", metavar="ACTION")
    os_.required = True
    a = os_.add_parser("add", help="add an ops account (or set its password and role)",
                       description="Add an ops account, or reset its password and role. The password is "
                                   "asked on the terminal (twice), or read from the first line of stdin with "
                                   "--password-stdin; it is stored as a salted scrypt hash. Setting a new "
                                   "password ends the account's sessions.")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--role", choices=("viewer", "admin"), default="viewer",
                   help="viewer reads everything; admin may also set the capacity and acknowledge alerts "
                        "(default viewer)")
    a.add_argument("--password-stdin", action="store_true", help="read the password from stdin (scripts)")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=cmd_ops_add)
    r = os_.add_parser("remove", help="remove an ops account and end its sessions",
                       description="Remove an ops account: its sessions end at once and its password stops "
                                   "working (also for basic auth).")
    r.add_argument("name", metavar="NAME")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(func=cmd_ops_remove)
