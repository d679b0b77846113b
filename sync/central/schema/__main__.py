"""Developer commands for the central's schema (users never need them: the
schema is migrated when a store opens).

    python -m sync.central.schema new NAME -m "what it adds"   # versions/NAME.py after the head
    python -m sync.central.schema history                       # the line of revisions
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from alembic import command

    from sync.central.schema import config

    p = argparse.ArgumentParser(prog="python -m sync.central.schema", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("new", help="write a new revision file after the current head")
    n.add_argument("name", help="the revision id and file name, e.g. ops_2_alerts")
    n.add_argument("-m", "--message", default="", help="one line: what it adds")
    n.add_argument("--into", metavar="DIR", help="write it there instead of the package's versions/ "
                   "(its down_revision is still the package's head)")
    sub.add_parser("history", help="list the revisions, newest first")
    args = p.parse_args(argv)
    into = getattr(args, "into", None)
    cfg = config([into] if into else [])
    if args.cmd == "new":
        command.revision(cfg, message=args.message or args.name, rev_id=args.name, version_path=into)
    else:
        command.history(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
