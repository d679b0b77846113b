"""``gate pin set``: supervisor PINs the staff UI asks for."""

from __future__ import annotations

from gate.pins import set_pin


def cmd_pin_set(args) -> int:
    import getpass
    import sys

    from gate.app.compose import open_gate

    gate = open_gate(args.data)
    pin = sys.stdin.readline().strip() if not sys.stdin.isatty() else getpass.getpass("PIN: ")
    set_pin(gate, args.operator, pin)
    print(f"supervisor PIN set for {args.operator}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("pin", help="supervisor PINs for manual overrides",
                       description="Manage the supervisor PINs the staff UI asks for on manual admit/deny.")
    ps = p.add_subparsers(dest="pin_command", metavar="ACTION")
    ps.required = True
    q = ps.add_parser("set", help="set an operator's PIN (read from the terminal or stdin)",
                      description="Set OPERATOR's supervisor PIN (at least 4 digits).")
    q.add_argument("operator", metavar="OPERATOR")
    q.set_defaults(func=cmd_pin_set)
