"""``gate central ops add NAME``: ops accounts for the ops room and the report API."""

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


def register(cs) -> None:
    """Add ``ops`` to the ``gate central`` subcommands ``cs``."""
    q = cs.add_parser("ops", help="ops room accounts", description="Accounts for the ops room (/ops) and the "
                      "report API (session cookie, or HTTP basic auth for scripts).")
    os_ = q.add_subparsers(dest="ops_command", metavar="ACTION")
    os_.required = True
    a = os_.add_parser("add", help="add an ops account (or set its password and role)",
                       description="Add an ops account, or reset its password and role. The password is "
                                   "asked on the terminal (twice), or read from the first line of stdin with "
                                   "--password-stdin; it is stored as a salted scrypt hash.")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--role", choices=("viewer", "admin"), default="viewer",
                   help="viewer reads everything; admin may also set the capacity (default viewer)")
    a.add_argument("--password-stdin", action="store_true", help="read the password from stdin (scripts)")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=cmd_ops_add)
