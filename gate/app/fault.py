"""``gate fault show`` / ``gate fault clear``: a lane fault from the command line,
for a lane that runs without the staff UI (a service lane, stopped first).

Clearing is what the staff UI's ``p`` does (gate.lane.Lane.clear_fault): a
supervisor's name and PIN, the faulted parts checked first (the relay must open
its contact, the sensor must answer: the parts the lane last ran with, noted by
gate.app.compose.remember_parts, or the same ones named with ``--relay`` /
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
    from gate.text import plain
    from gate.words import fault_words
    return "\n".join(_("{fault} (seq {seq}, {at}): {detail}").format(
        fault=fault_words(f["action"]), seq=f.get("seq"), at=_fmt_ts(f.get("ts_ms")),
        detail=plain(f.get("detail"), limit=200) or "-") for f in faults)


def cmd_fault_show(args) -> int:
    from gate.app.cli import open_set_up_gate
    gate = open_set_up_gate(args.data)
    faults = gate.open_faults()
    if not faults:
        print(_("no lane fault in force"))
        return 0
    print(_("LANE FAULT in force: the lane admits nothing until a supervisor clears it"))
    print(_describe(faults))
    print(_("clear it: stop the lane, then 'gate fault clear OPERATOR' (the lane's relay and sensor are checked)"))
    return 1


def _parts(gate, kinds: list[str], args) -> list[tuple[str, str]]:
    """The (kind, spec) pairs to check: the lane's own, as it last ran
    (compose.remember_parts); an option given must name the same part."""
    from gate.app.compose import LANE_PARTS
    from gate.db import get_setting
    ran = get_setting(gate.conn, LANE_PARTS) or {}
    chosen = {}
    for name, given in (("relay", args.relay), ("relay_exit", args.relay_exit), ("sensor", args.sensor)):
        known = ran.get(name)
        if given and known and given != known:
            raise ConfigError(_("the lane last ran with --{option} {known}; this would check {given}: check the "
                                "lane's own part (leave the option out to use it)").format(
                option=name.replace("_", "-"), known=known, given=given))
        chosen[name] = given or known
    wanted = []
    if "relay" in kinds:
        if not chosen["relay"]:
            raise ConfigError(_("a relay fault is in force: give the lane's relay (--relay SPEC, and "
                                "--relay-exit SPEC if it has one, as in the unit's ExecStart line) so "
                                "that its contact is checked before the lane admits again"))
        wanted += [("relay", chosen["relay"])] + ([("relay", chosen["relay_exit"])] if chosen["relay_exit"] else [])
    if "sensor" in kinds:
        if not chosen["sensor"]:
            raise ConfigError(_("a sensor fault is in force: give the lane's passage sensor (--sensor SPEC, "
                                "as in the unit's ExecStart line) so that it is checked before the lane "
                                "admits again"))
        wanted.append(("sensor", chosen["sensor"]))
    return wanted


def _check_parts(wanted: list[tuple[str, str]]) -> list[str]:
    """Check each part as the lane does before a clear; the parts checked, or
    HardwareError / ConfigError that say what is wrong (the fault stays)."""
    from hardware.registry import open_device
    checked = []
    for kind, spec in wanted:
        part = open_device(kind, spec)
        try:
            if not hasattr(part, "reset"):
                raise ConfigError(_("{kind} {spec} has nothing to check: give the lane's own {kind}").format(
                    kind=kind, spec=spec))
            try:
                part.reset()
            except HardwareError as exc:
                raise HardwareError(_("{error}: the fault stays; fix the part, then clear again").format(
                    error=exc)) from None
        finally:
            close = getattr(part, "close", None)
            if close is not None:
                try:
                    close()
                except HardwareError:
                    pass  # reset() said what matters; a relay that cannot open raised there
        checked.append(f"{kind} {spec}")
    return checked


def _operator(name: str) -> str:
    from gate.text import plain
    if not name.strip() or plain(name) != name or len(name) > 64:
        raise ConfigError(_("name the operator: printable text, at most 64 characters"))
    return name


def cmd_fault_clear(args) -> int:
    import getpass

    from gate.app.cli import open_set_up_gate
    from gate.db import transaction
    from gate.pins import check_pin

    operator = _operator(args.operator)
    gate = open_set_up_gate(args.data)
    faults = gate.open_faults()
    if not faults:
        print(_("no lane fault in force: nothing to clear"))
        return 0
    kinds = _kinds(faults)
    checked = _check_parts(_parts(gate, kinds, args))  # before the PIN: a part that still fails is said first
    pin = sys.stdin.readline().strip() if not sys.stdin.isatty() else getpass.getpass(_("PIN: "))
    if not pin:
        raise ConfigError(_("no PIN given: nothing done"))
    now = time.time()
    verdict = check_pin(gate, operator, pin, now=now)
    if not verdict:
        raise ConfigError(verdict.message(operator))
    with transaction(gate.conn):  # what is cleared is what was checked: nothing logged meanwhile
        if [f.get("seq") for f in gate.open_faults()] != [f.get("seq") for f in faults]:
            raise ConfigError(_("another fault was logged while the PIN was asked for: nothing done; "
                                "run 'gate fault show', then clear again"))
        gate.control("fault_cleared", now=now, operator=operator, faults=",".join(kinds), via="cli")
    print(_describe(faults))
    if checked:
        print(_("checked: {parts}").format(parts=", ".join(checked)))
    print(_("lane fault cleared by {operator}: start the lane again (systemctl start gate-lane); a lane "
            "still running checks its hardware at its next code").format(operator=operator))
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
                                    "stdin). The faulted parts are checked first: the relay and sensor the lane "
                                    "last ran with, or the ones given (they must be the same). Stop the lane "
                                    "first; a lane still running checks its faulted parts at its next code."))
    q.add_argument("operator", metavar="OPERATOR", help=_("the supervisor's name, as given to 'gate pin set'"))
    from hardware.registry import usage
    q.add_argument("--relay", metavar="SPEC", help=_("the lane's relay (default: the one it last ran with): "
                                                     "{usage}").format(usage=usage("relay")))
    q.add_argument("--relay-exit", metavar="SPEC", help=_("the lane's exit relay, if it has one (default: the one "
                                                          "it last ran with)"))
    q.add_argument("--sensor", metavar="SPEC", help=_("the lane's passage sensor (default: the one it last ran "
                                                      "with): {usage}").format(usage=usage("sensor")))
    q.set_defaults(func=cmd_fault_clear)

