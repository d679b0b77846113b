"""``gate fault show`` / ``gate fault clear``: a lane fault from the command line,
for a lane that runs without the staff UI (a service lane, stopped first).

Clearing is what the staff UI's ``p`` does (gate.lane.Lane.clear_fault): a
supervisor's name and PIN, the faulted parts checked first (the relay must open
its contact, the sensor must answer: give the lane's own ``--relay`` /
``--relay-exit`` / ``--sensor``), then ``fault_cleared`` is logged with the
operator. A lane that is running while this is done sees the clearing at its
next code and checks its own hardware before it admits again.
"""

from __future__ import annotations

import sys
import time

from gate.errors import ConfigError, HardwareError
from gate.i18n import _


def _kinds(faults: list[dict]) -> list[str]:
    return list(dict.fromkeys(f["action"].removesuffix("_fault") for f in faults))


def _describe(faults: list[dict]) -> str:
    from gate.app.cli import _fmt_ts
    from gate.words import fault_words
    return "\n".join(_("{fault} (seq {seq}, {at}): {detail}").format(
        fault=fault_words(f["action"]), seq=f.get("seq"), at=_fmt_ts(f.get("ts_ms")),
        detail=f.get("detail") or "-") for f in faults)


def cmd_fault_show(args) -> int:
    from gate.app.cli import open_set_up_gate
    gate = open_set_up_gate(args.data)
    faults = gate.open_faults()
    if not faults:
        print(_("no lane fault in force"))
        return 0
    print(_("LANE FAULT in force: the lane admits nothing until a supervisor clears it"))
    print(_describe(faults))
    print(_("clear it: stop the lane, then 'gate fault clear OPERATOR' with the lane's --relay / --sensor"))
    return 1


def _check_parts(kinds: list[str], args) -> list[str]:
    """Check the faulted parts the way the lane would before clearing; the parts
    checked, or HardwareError / ConfigError that say what is wrong."""
    from hardware.registry import open_device
    checked = []
    wanted = []
    if "relay" in kinds:
        if not args.relay:
            raise ConfigError(_("a relay fault is in force: give the lane's relay (--relay SPEC, and "
                                "--relay-exit SPEC if it has one, as in the unit's ExecStart line) so "
                                "that its contact is checked before the lane admits again"))
        wanted += [("relay", args.relay)] + ([("relay", args.relay_exit)] if args.relay_exit else [])
    if "sensor" in kinds:
        if not args.sensor:
            raise ConfigError(_("a sensor fault is in force: give the lane's passage sensor (--sensor SPEC, "
                                "as in the unit's ExecStart line) so that it is checked before the lane "
                                "admits again"))
        wanted.append(("sensor", args.sensor))
    for kind, spec in wanted:
        part = open_device(kind, spec)
        try:
            if hasattr(part, "reset"):
                part.reset()
        finally:
            close = getattr(part, "close", None)
            if close is not None:
                try:
                    close()
                except HardwareError:
                    pass  # reset() said what matters; a relay that cannot open raised there
        checked.append(f"{kind} {spec}")
    return checked


def cmd_fault_clear(args) -> int:
    import getpass

    from gate.app.cli import open_set_up_gate
    from gate.pins import check_pin

    gate = open_set_up_gate(args.data)
    faults = gate.open_faults()
    if not faults:
        print(_("no lane fault in force: nothing to clear"))
        return 0
    kinds = _kinds(faults)
    checked = _check_parts(kinds, args)  # before the PIN: a part that still fails is said first
    pin = sys.stdin.readline().strip() if not sys.stdin.isatty() else getpass.getpass(_("PIN: "))
    now = time.time()
    verdict = check_pin(gate, args.operator, pin, now=now)
    if not verdict:
        raise ConfigError(verdict.message(args.operator))
    gate.control("fault_cleared", now=now, operator=args.operator, faults=",".join(kinds), via="cli")
    print(_describe(faults))
    if checked:
        print(_("checked: {parts}").format(parts=", ".join(checked)))
    print(_("lane fault cleared by {operator}: start the lane again (systemctl start gate-lane); a lane "
            "still running checks its hardware at its next code").format(operator=args.operator))
    return 0


def register(sub) -> None:
    p = sub.add_parser("fault", help=_("show or clear a lane fault (relay, sensor, store) without the staff UI"),
                       description=_("A lane fault stops the lane until a supervisor clears it. 'show' says "
                                     "whether one is in force (exit 1 if so); 'clear' checks the faulted parts "
                                     "and logs the clearing with the operator, after the PIN."))
    ps = p.add_subparsers(dest="fault_command", metavar="ACTION")
    ps.required = True
    q = ps.add_parser("show", help=_("the fault in force, if any (exit 1 if one is)"),
                      description=_("Print the lane fault in force, if any: exit 0 when there is none, 1 when "
                                    "there is."))
    q.set_defaults(func=cmd_fault_show)
    q = ps.add_parser("clear", help=_("clear the fault: operator, PIN, the lane's relay and sensor checked"),
                      description=_("Clear the lane fault as OPERATOR (the PIN is read from the terminal or "
                                    "stdin). The faulted parts are checked first: give the lane's own --relay "
                                    "(and --relay-exit) for a relay fault, --sensor for a sensor fault. Stop "
                                    "the lane first; a lane still running checks its hardware at its next code."))
    q.add_argument("operator", metavar="OPERATOR", help=_("the supervisor's name, as given to 'gate pin set'"))
    from hardware.registry import usage
    q.add_argument("--relay", metavar="SPEC", help=_("the lane's relay: {usage}").format(usage=usage("relay")))
    q.add_argument("--relay-exit", metavar="SPEC", help=_("the lane's exit relay, if it has one"))
    q.add_argument("--sensor", metavar="SPEC", help=_("the lane's passage sensor: {usage}").format(
        usage=usage("sensor")))
    q.set_defaults(func=cmd_fault_clear)

