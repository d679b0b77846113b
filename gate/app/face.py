"""``gate face ...`` and ``gate wipe``: enrolment, tolerance, calibration,
retention and deletion of biometric templates (encrypted at rest under the
device data key)."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from gate.errors import ConfigError
from gate.i18n import _, ngettext


def cmd_face_enroll(args) -> int:
    from gate import ledger
    from gate.app.cli import open_set_up_gate as open_gate
    from hardware.face import template_from_photos

    gate = open_gate(args.data)
    template = template_from_photos([Path(p) for p in args.photos])
    ledger.enroll_face(gate.conn, args.ticket_id.lower(), template, gate.data_key)
    n = len(args.photos)
    print(ngettext("enrolled a face for ticket {ticket} from {n} photo (template encrypted; the photos were not stored)",
                   "enrolled a face for ticket {ticket} from {n} photos (template encrypted; the photos were not stored)",
                   n).format(ticket=args.ticket_id, n=n))
    from hardware.face import fewer_photos_warning

    warn = fewer_photos_warning(n)
    if warn:
        print(f"gate face enroll: {warn}", file=sys.stderr, flush=True)
    return 0


def _tolerance_in_force(data) -> tuple[float, str]:
    from gate.appliance import Gate
    from gate.decision import LanePolicy

    if Gate.exists(Path(data)):
        from gate.app.cli import open_set_up_gate as open_gate
        gate = open_gate(data)
        try:
            return gate.config.policy.face_tolerance, _("set on the gate in {data}").format(data=data)
        finally:
            gate.close()
    return LanePolicy.__dataclass_fields__["face_tolerance"].default, _("the default: no gate set up in {data}").format(data=data)


def cmd_face_tolerance(args) -> int:
    from dataclasses import replace

    from gate.app.cli import open_set_up_gate as open_gate

    gate = open_gate(args.data)
    if args.tolerance is not None:
        t = args.tolerance
        if not (0.2 <= t <= 0.8):
            raise ConfigError(_("tolerance {t} is out of range: give a value between 0.2 and 0.8 "
                                "(see 'gate face calibrate DIR')").format(t=t))
        gate.save_config(replace(gate.config, policy=replace(gate.config.policy, face_tolerance=round(t, 4))))
    print(_("face tolerance {t}: a face matches when its distance "
            "to the enrolled template is at most this").format(t=gate.config.policy.face_tolerance))
    return 0


def cmd_face_calibrate(args) -> int:
    from gate.errors import GateError
    from hardware.face import (calibration_pairs, encode_photos, enrolment_pairs, error_rates, people_photos,
                               suggest_tolerance)

    if args.enrol is not None and not 1 <= args.enrol <= 20:
        raise ConfigError(_("--enrol {n}: give the number of enrolment photos, 1 to 20 (normally 3)").format(
            n=args.enrol))
    try:
        people = people_photos(Path(args.dir))
    except GateError as e:
        raise ConfigError(str(e)) from None
    encodings = encode_photos(people)
    if args.enrol is None:
        pairs = calibration_pairs(people, encodings)
    else:
        pairs = enrolment_pairs(people, encodings, args.enrol)
        if not any(p.same for p in pairs):
            raise ConfigError(_("--enrol {n}: no person has more than {n} usable photos, so "
                                "nobody can be scored against their own photos; add photos or lower --enrol").format(
                n=args.enrol))
    suggested = suggest_tolerance(pairs)
    in_force, where = _tolerance_in_force(args.data)
    unusable = [{"path": str(p), "reason": why} for p, (e, why) in encodings.items() if e is None]
    if args.json:
        doc = {"tolerance": in_force, "suggested": suggested}
        if args.enrol is not None:
            doc["enrol"] = args.enrol
        doc.update({"pairs": [{"a": list(p.a) if isinstance(p.a, tuple) else p.a, "b": p.b, "same": p.same,
                               "distance": p.distance} for p in pairs], "unusable": unusable})
        print(json.dumps(doc))
        return 0
    n = sum(len(v) for v in people.values())
    how = (_("each photo against each other photo") if args.enrol is None else
           ngettext("templates from {n} photo against every other photo",
                    "templates from {n} photos against every other photo", args.enrol).format(n=args.enrol))
    print(_("{n} photos of {people} people; {pairs} pairs ({how})").format(
        n=n, people=len(people), pairs=len(pairs), how=how))
    for u in unusable:
        print("  " + _("no usable face: {file}: {problem}").format(file=u["path"], problem=u["reason"]))
    marks = {round(in_force, 4): _("in force"), **({round(suggested, 4): _("suggested")} if suggested else {})}
    if suggested is not None and round(suggested, 4) == round(in_force, 4):
        marks[round(in_force, 4)] = _("in force, suggested")
    grid = sorted({round(0.40 + 0.02 * i, 4) for i in range(14)} | set(marks))
    print(_("tolerance  false accepts       false rejects"))
    for t in grid:
        r = error_rates(pairs, t)
        print(f"  {t:.2f}     {r['false_accepts']:4d}/{r['different']:<5d} {100 * r['far']:5.2f} %  "
              f"{r['false_rejects']:4d}/{r['same']:<5d} {100 * r['frr']:5.1f} %  {marks.get(t, '')}")
    if suggested is None:
        print(_("suggested: none (no pair of different people with a usable face)"))
    else:
        r = error_rates(pairs, suggested)
        print(_("suggested {t} (closest different people minus a margin); in force {in_force} ({where})").format(
            t=f"{suggested:.2f}", in_force=in_force, where=where))
        if r["frr"] > 0.03 and (args.enrol or 1) < 3:
            print("  " + _("more than 3 % false rejects here: enrol holders from three photos "
                           "(gate face enroll TICKET P1 P2 P3); see that operating point with --enrol 3"))
        if round(suggested, 4) != round(in_force, 4) and Path(args.data).exists():
            print("  " + _("apply it: gate --data {data} face tolerance {t}").format(data=args.data, t=f"{suggested:.2f}"))
    return 0


def cmd_face_retention(args) -> int:
    from gate.app.cli import open_set_up_gate as open_gate

    gate = open_gate(args.data)
    if args.until is not None or args.days is not None:
        until = args.until if args.until is not None else time.time() + args.days * 86400
        gate.set_retention(until)
    until = gate.retention_until()
    if until is None:
        print(_("no retention deadline set: templates are kept until 'gate wipe --biometrics'"))
    else:
        when = datetime.fromtimestamp(until, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        print(_("face templates are deleted automatically after {when}").format(when=when))
    return 0


def cmd_wipe(args) -> int:
    from gate import ledger
    from gate.app.cli import open_set_up_gate as open_gate

    if not args.biometrics:
        raise ConfigError(_("say what to wipe: gate wipe --biometrics"))
    gate = open_gate(args.data)
    now = time.time()
    n = ledger.wipe_biometrics(gate.conn, now=now)
    gate.control("biometrics", now=now, operator=None, enabled=False)
    print(_("deleted {n} face template(s); free pages and the write-ahead log were scrubbed").format(n=n))
    print(_("no face template is stored again (import, sync, enrol) until 'gate face enable --yes'"))
    return 0


def cmd_face_enable(args) -> int:
    from gate import ledger
    from gate.app.cli import open_set_up_gate as open_gate

    if not args.yes:
        raise ConfigError(_("storing face templates again after a wipe needs the holders' consent: "
                            "confirm with 'gate face enable --yes'"))
    gate = open_gate(args.data)
    now = time.time()
    until = gate.retention_until()
    if until is not None and now >= until:
        raise ConfigError(_("the retention deadline has passed: set a later one first "
                            "('gate face retention --days N'), then 'gate face enable --yes'"))
    if not ledger.enable_biometrics(gate.conn):
        print(_("face templates are already allowed on this gate"))
        return 0
    gate.control("biometrics", now=now, operator=None, enabled=True)
    print(_("face templates may be stored again (import, sync, enrol); sync or import to fetch them"))
    return 0


def register(sub) -> None:
    p = sub.add_parser("face", help=_("face templates: enrol, retention"),
                       description=_("Manage holders' face templates (encrypted at rest)."))
    fs = p.add_subparsers(dest="face_command", metavar="ACTION")
    fs.required = True
    q = fs.add_parser("enroll", help=_("enrol a holder's face from three photos (box office)"),
                      description=_("Compute the face template of the PHOTOs (each: exactly one clear, "
                                  "sharp, frontal face) and store it, encrypted, for TICKET_ID; the ticket "
                                  "then requires a face match. Give three photos of the holder: the "
                                  "normal enrolment (fewer work, with a warning, and turn more holders "
                                  "away). The photos themselves are not stored."))
    q.add_argument("ticket_id", metavar="TICKET_ID")
    q.add_argument("photos", metavar="PHOTO", nargs="+", help=_("three photos of the holder (normal enrolment)"))
    q.set_defaults(func=cmd_face_enroll)
    q = fs.add_parser("enable", help=_("allow face templates again after a wipe or the retention deadline"),
                      description=_("After 'gate wipe --biometrics' or the retention deadline the gate "
                                  "stores no face template (import, sync, enrol). This allows them again."))
    q.add_argument("--yes", action="store_true", help=_("confirm: the holders consented again"))
    q.set_defaults(func=cmd_face_enable)
    q = fs.add_parser("tolerance", help=_("show or set this gate's face match tolerance"),
                      description=_("A face matches when its distance to the template is at most the "
                                  "tolerance: lower refuses more impostors and more holders. Choose it "
                                  "with 'gate face calibrate DIR'."))
    from gate.argtypes import days, finite_float, unix_time
    q.add_argument("tolerance", metavar="T", type=finite_float, nargs="?", help=_("new tolerance (e.g. 0.52)"))
    q.set_defaults(func=cmd_face_tolerance)
    q = fs.add_parser("calibrate", help=_("false accept / false reject curve on your own photos"),
                      description=_("DIR holds one folder per person (DIR/PERSON/*.jpg). Compares every "
                                  "pair of photos through the gate's face code and prints the false "
                                  "accept / false reject curve, the tolerance it suggests and the one "
                                  "in force."))
    q.add_argument("dir", metavar="DIR")
    q.add_argument("--enrol", type=int, metavar="N",
                   help=_("build each person's template from N of their photos (3: the normal enrolment) and "
                        "score it against their other photos and everyone else's, instead of photo pairs"))
    q.add_argument("--json", action="store_true",
                   help=_('print {"tolerance": T, "suggested": S, "pairs": [{"a","b","same","distance"}], ...}; '
                        'with --enrol, "a" is the list of enrolment photos'))
    q.set_defaults(func=cmd_face_calibrate)
    q = fs.add_parser("retention", help=_("show or set when templates are deleted automatically"),
                      description=_("Set the event's biometric retention deadline; after it every "
                                  "template is deleted the next time the gate starts or syncs."))
    g = q.add_mutually_exclusive_group()
    g.add_argument("--until", type=unix_time, metavar="UNIX", help=_("delete templates after this unix time"))
    g.add_argument("--days", type=days, help=_("delete templates this many days from now (0 to 36525)"))
    q.set_defaults(func=cmd_face_retention)

    p = sub.add_parser("wipe", help=_("delete biometric data from this gate"),
                       description=_("Delete every face template and scrub the database's free pages "
                                   "and write-ahead log, so no template bytes remain on disk."))
    p.add_argument("--biometrics", action="store_true", help=_("delete all face templates"))
    p.set_defaults(func=cmd_wipe)
