"""``gate pin set``: supervisor PINs the staff UI asks for."""

from __future__ import annotations

from gate.pins import set_pin
from gate.i18n import _


def cmd_pin_set(args) -> int:
    import getpass
    import sys

    from gate.app.cli import open_set_up_gate as open_gate

    gate = open_gate(args.data)
    pin = sys.stdin.readline().strip() if not sys.stdin.isatty() else getpass.getpass("PIN: ")
    set_pin(gate, args.operator, pin)
    print(_("supervisor PIN set for {operator}").format(operator=args.operator))
    return 0


def register(sub) -> None:
    p = sub.add_parser("pin", help=_("supervisor PINs for the staff UI (admit, deny, mode, pause)"),
                       description=_("Manage the supervisor PINs the staff UI asks for on manual admit/deny."))
    ps = p.add_subparsers(dest="pin_command", metavar="ACTION")
    ps.required = True
    q = ps.add_parser("set", help=_("set an operator's PIN (read from the terminal or stdin)"),
                      description=_("Set OPERATOR's supervisor PIN (at least 6 digits; 5 wrong PINs lock the operator out for 5 minutes)."))
    q.add_argument("operator", metavar="OPERATOR")
    q.set_defaults(func=cmd_pin_set)
