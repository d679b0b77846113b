"""What people read for each reason code: an icon, a headline that can be read
from two metres, advice on what to do, and a style (never colour alone).

One table for every room: the staff UI, the command line's human output, the
ops room and the wallet translate from it (gettext domain ``gate``; see
gate/i18n.py). Codes stay codes in machine output."""

from __future__ import annotations

from dataclasses import dataclass

from gate.i18n import N_, current, translations


@dataclass(frozen=True, slots=True)
class Words:
    icon: str
    headline: str
    advice: str
    style: str  # accept | reject | caution | idle


# English source strings (marked for extraction, translated where shown)
REASONS: dict[str, Words] = {
    "ACCEPT": Words("✔", N_("ADMIT"), N_("Let the holder through"), "accept"),
    "MANUAL_ADMIT": Words("✔", N_("ADMIT (MANUAL)"), N_("Admitted by a supervisor"), "accept"),
    "MANUAL_DENY": Words("✖", N_("DENIED (MANUAL)"), N_("Refused by a supervisor"), "reject"),
    "MALFORMED": Words("?", N_("UNREADABLE"), N_("Not a ticket code: ask for the ticket again"), "reject"),
    "UNKNOWN_KEY": Words("✖", N_("NOT OUR TICKET"),
                         N_("Signed by an unknown or withdrawn issuer: send to box office"), "reject"),
    "BAD_SIGNATURE": Words("✖", N_("FORGED"), N_("The code was altered: call a supervisor"), "reject"),
    "WRONG_EVENT": Words("✖", N_("WRONG EVENT"), N_("Ticket is for another event or day"), "reject"),
    "NOT_YET_VALID": Words("…", N_("TOO EARLY"), N_("Ticket is not valid yet"), "reject"),
    "EXPIRED": Words("✖", N_("EXPIRED"), N_("Ticket is no longer valid"), "reject"),
    "PROOF_REQUIRED": Words("▣", N_("SHOW LIVE CODE"),
                            N_("Open the ticket in the app: screenshots are not accepted"), "reject"),
    "STALE_CODE": Words("▣", N_("OLD CODE"),
                        N_("Screenshot or phone clock wrong: open the live ticket in the app"), "reject"),
    "BAD_PROOF": Words("✖", N_("COPIED CODE"), N_("Code not from the holder's phone: call a supervisor"), "reject"),
    "REVOKED": Words("✖", N_("CANCELLED"), N_("Ticket refunded or cancelled: send to box office"), "reject"),
    "SUPERSEDED": Words("✖", N_("REPLACED"), N_("Ticket was transferred or reissued: an older copy"), "reject"),
    "NOT_IN_LEDGER": Words("✖", N_("NOT LISTED"), N_("Ticket not in this gate's list: send to box office"),
                           "reject"),
    "WRONG_ZONE": Words("➜", N_("OTHER ENTRANCE"), N_("Ticket is for another zone or entrance"), "reject"),
    "REPLAY": Words("✖", N_("ALREADY SCANNED"), N_("This exact code was just used: ask for the live ticket"),
                    "reject"),
    "ALREADY_USED": Words("✖", N_("ALREADY IN"), N_("Ticket already used for entry"), "reject"),
    "FACE_REQUIRED": Words("☺", N_("LOOK AT CAMERA"), N_("Face check needed: one person, face to the camera"),
                           "reject"),
    "FACE_MISMATCH": Words("✖", N_("FACE MISMATCH"), N_("Face does not match the ticket holder: check ID"),
                           "reject"),
    "NO_FACE_ENROLLED": Words("✖", N_("NO FACE ON FILE"), N_("Face-bound ticket without enrolment: box office"),
                              "reject"),
    "LANE_ALONE": Words("✖", N_("LANE CUT OFF"),
                        N_("This lane checks no tickets while cut off: send the holder to another lane"),
                        "reject"),
    "ERROR": Words("!", N_("NOT CHECKED"), N_("The gate could not check this code: call a supervisor"), "reject"),
}


def reason_words(code: str, lang: str | None = None) -> Words:
    """The words for a reason code in ``lang`` (default: the process language).
    An unknown code (a newer gate's) is shown as itself, as a refusal."""
    w = REASONS.get(code)
    if w is None:
        return Words("✖", code, "", "reject")
    t = translations(lang or current(), "gate").gettext
    return Words(w.icon, t(w.headline), t(w.advice), w.style)
