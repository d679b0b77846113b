"""``gate face ...`` and ``gate wipe``: enrolment, retention and deletion of
biometric templates (encrypted at rest under the device data key)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from gate.errors import ConfigError


def cmd_face_enroll(args) -> int:
    from gate import ledger
    from gate.app.compose import open_gate
    from hardware.face import encoding_from_photo

    gate = open_gate(args.data)
    encoding = encoding_from_photo(Path(args.photo))
    ledger.enroll_face(gate.conn, args.ticket_id.lower(), encoding, gate.data_key)
    print(f"enrolled a face for ticket {args.ticket_id} (template encrypted; the photo was not stored)")
    return 0


def cmd_face_retention(args) -> int:
    from gate.app.compose import open_gate

    gate = open_gate(args.data)
    if args.until is not None or args.days is not None:
        until = args.until if args.until is not None else time.time() + args.days * 86400
        gate.set_retention(until)
    until = gate.retention_until()
    if until is None:
        print("no retention deadline set: templates are kept until 'gate wipe --biometrics'")
    else:
        when = datetime.fromtimestamp(until, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        print(f"face templates are deleted automatically after {when}")
    return 0


def cmd_wipe(args) -> int:
    from gate import ledger
    from gate.app.compose import open_gate

    if not args.biometrics:
        raise ConfigError("say what to wipe: gate wipe --biometrics")
    gate = open_gate(args.data)
    n = ledger.wipe_biometrics(gate.conn)
    print(f"deleted {n} face template(s); free pages and the write-ahead log were scrubbed")
    return 0


def register(sub) -> None:
    p = sub.add_parser("face", help="face templates: enrol, retention",
                       description="Manage holders' face templates (encrypted at rest).")
    fs = p.add_subparsers(dest="face_command", metavar="ACTION")
    fs.required = True
    q = fs.add_parser("enroll", help="enrol a holder's face from a photo (box office)",
                      description="Compute the face template of PHOTO (exactly one clear face) and "
                                  "store it, encrypted, for TICKET_ID; the ticket then requires a face "
                                  "match. The photo itself is not stored.")
    q.add_argument("ticket_id", metavar="TICKET_ID")
    q.add_argument("photo", metavar="PHOTO")
    q.set_defaults(func=cmd_face_enroll)
    q = fs.add_parser("retention", help="show or set when templates are deleted automatically",
                      description="Set the event's biometric retention deadline; after it every "
                                  "template is deleted the next time the gate starts or syncs.")
    g = q.add_mutually_exclusive_group()
    from gate.argtypes import unix_time
    g.add_argument("--until", type=unix_time, metavar="UNIX", help="delete templates after this unix time")
    g.add_argument("--days", type=float, help="delete templates this many days from now")
    q.set_defaults(func=cmd_face_retention)

    p = sub.add_parser("wipe", help="delete biometric data from this gate",
                       description="Delete every face template and scrub the database's free pages "
                                   "and write-ahead log, so no template bytes remain on disk.")
    p.add_argument("--biometrics", action="store_true", help="delete all face templates")
    p.set_defaults(func=cmd_wipe)
