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
    todo: str = ""  # what staff do next, where ``advice`` does not already say it


# English source strings (marked for extraction, translated where shown)
REASONS: dict[str, Words] = {
    "ACCEPT": Words("✔", N_("ADMIT"), N_("Let the holder through"), "accept"),
    "MANUAL_ADMIT": Words("✔", N_("ADMIT (MANUAL)"), N_("Admitted by a supervisor"), "accept"),
    "MANUAL_DENY": Words("✖", N_("DENIED (MANUAL)"), N_("Refused by a supervisor"), "reject"),
    "MALFORMED": Words("?", N_("UNREADABLE"), N_("Not a ticket code: ask for the ticket again"), "reject"),
    "UNKNOWN_KEY": Words("✖", N_("NOT OUR TICKET"),
                         N_("Signed by an unknown or withdrawn issuer: send to box office"), "reject"),
    "BAD_SIGNATURE": Words("✖", N_("FORGED"), N_("The code was altered: call a supervisor"), "reject"),
    "WRONG_EVENT": Words("✖", N_("WRONG EVENT"), N_("Ticket is for another event or day"), "reject",
                         N_("Check the date and venue on the ticket; the box office can help")),
    "NOT_YET_VALID": Words("…", N_("TOO EARLY"), N_("Ticket is not valid yet"), "reject",
                           N_("Check the opening time on the ticket: it opens later")),
    "EXPIRED": Words("✖", N_("EXPIRED"), N_("Ticket is no longer valid"), "reject", N_("Send to the box office")),
    "PROOF_REQUIRED": Words("▣", N_("SHOW LIVE CODE"),
                            N_("Open the ticket in the app: screenshots are not accepted"), "reject"),
    "STALE_CODE": Words("▣", N_("OLD CODE"),
                        N_("Screenshot or phone clock wrong: open the live ticket in the app"), "reject"),
    "BAD_PROOF": Words("✖", N_("COPIED CODE"), N_("Code not from the holder's phone: call a supervisor"), "reject"),
    "REVOKED": Words("✖", N_("CANCELLED"), N_("Ticket refunded or cancelled: send to box office"), "reject"),
    "SUPERSEDED": Words("✖", N_("REPLACED"), N_("Ticket was transferred or reissued: an older copy"), "reject",
                        N_("Ask for the current ticket in the app, else the box office")),
    "NOT_IN_LEDGER": Words("✖", N_("NOT LISTED"), N_("Ticket not in this gate's list: send to box office"),
                           "reject"),
    "WRONG_ZONE": Words("➜", N_("OTHER ENTRANCE"), N_("Ticket is for another zone or entrance"), "reject",
                        N_("Direct the holder to the entrance for their zone")),
    "REPLAY": Words("✖", N_("ALREADY SCANNED"), N_("This exact code was just used: ask for the live ticket"),
                    "reject"),
    "ALREADY_USED": Words("✖", N_("ALREADY IN"), N_("Ticket already used for entry"), "reject",
                          N_("A copy, or passed back? Lookup (l) shows where; if in doubt call a supervisor")),
    "FACE_REQUIRED": Words("☺", N_("LOOK AT CAMERA"), N_("Face check needed: one person, face to the camera"),
                           "reject"),
    "FACE_MISMATCH": Words("✖", N_("FACE MISMATCH"), N_("Face does not match the ticket holder: check ID"),
                           "reject"),
    "NO_FACE_ENROLLED": Words("✖", N_("NO FACE ON FILE"), N_("Face-bound ticket without enrolment: box office"),
                              "reject"),
    "LANE_ALONE": Words("✖", N_("LANE CUT OFF"),
                        N_("This lane checks no tickets while cut off: send the holder to another lane"),
                        "reject"),
    "LANE_PAUSED": Words("⏸", N_("LANE PAUSED"), N_("Staff paused this lane: no code is checked"), "reject",
                         N_("Send the holder to another lane, or resume the lane")),
    "ERROR": Words("!", N_("NOT CHECKED"), N_("The gate could not check this code: call a supervisor"), "reject"),
}

# Sub-reasons (gate.decision.Sub): which check inside a reason failed, said plainly.
SUBS: dict[str, str] = {
    "TOO_LONG": N_("The code is far too long to be a ticket"),
    "PREFIX": N_("Not a ticket code of this system"),
    "BASE45": N_("The code's characters are damaged"),
    "CBOR": N_("The code's content is damaged"),
    "STRUCTURE": N_("The code's layout is wrong"),
    "COSE": N_("The code's signature block is damaged"),
    "CLAIMS": N_("The ticket data in the code is incomplete"),
    "NOT_TEXT": N_("The scanner read something that is not text"),
    "NOT_PRETIX": N_("Not a pretix ticket code"),
    "PRETIX_PAYLOAD": N_("The pretix ticket data is damaged"),
    "KEY_NOT_IN_RING": N_("Signed by an issuer this gate does not know"),
    "KEY_NOT_USABLE": N_("The issuer's key is withdrawn or outside its dates"),
    "STATIC_FOR_ROTATING": N_("A still picture of a live ticket (screenshot or print)"),
    "LANE_ROTATING_ONLY": N_("This lane takes live app codes only: no paper, no screenshots"),
    "NO_FACE": N_("No face seen in time: face the camera"),
    "SEVERAL_FACES": N_("More than one face: one person at a time"),
    "NOT_LIVE": N_("The face did not move (a photo?): ask them to turn their head"),
    "NO_CAPTURE": N_("This lane has no face camera: send to a lane with one"),
    "POOR_CAPTURE": N_("Face too small, blurred or turned away: step closer, face the camera"),
}


@dataclass(frozen=True, slots=True)
class LinkWords:
    word: str      # ONLINE / VENUE / ALONE in the reader's language
    meaning: str   # what it means for admissions
    style: str     # ok | warn | bad


# The link states (gate.bus.LinkState): one vocabulary in every room.
LINKS: dict[str, LinkWords] = {
    "ONLINE": LinkWords(N_("ONLINE"), N_("central answers"), "ok"),
    "VENUE": LinkWords(N_("VENUE"), N_("central gone: other gates on the venue network"), "warn"),
    "ALONE": LinkWords(N_("ALONE"), N_("no central, no other gate: a copied ticket may get in elsewhere"), "bad"),
}


def reason_words(code: str, lang: str | None = None) -> Words:
    """The words for a reason code in ``lang`` (default: the process language).
    An unknown code (a newer gate's) is shown as itself, as a refusal."""
    w = REASONS.get(code)
    if w is None:
        return Words("✖", code, "", "reject")
    t = translations(lang or current(), "gate").gettext
    return Words(w.icon, t(w.headline), t(w.advice), w.style, t(w.todo) if w.todo else "")


def sub_words(code: str | None, lang: str | None = None) -> str:
    """A sub-reason said plainly (empty for None; an unknown code as itself)."""
    if not code:
        return ""
    text = SUBS.get(code)
    if text is None:
        return code
    return translations(lang or current(), "gate").gettext(text)


def link_words(state: str, lang: str | None = None) -> LinkWords:
    """ONLINE / VENUE / ALONE in ``lang``; an unknown state as itself (style bad)."""
    w = LINKS.get(state)
    if w is None:
        return LinkWords(state, "", "bad")
    t = translations(lang or current(), "gate").gettext
    return LinkWords(t(w.word), t(w.meaning), w.style)


# what a logged lane fault is called to people (gate fault, gate doctor)
FAULT_WORDS = {"relay_fault": N_("relay fault"), "sensor_fault": N_("sensor fault"), "store_fault": N_("store fault")}


def fault_words(action: str) -> str:
    """A fault record's ``action`` in the process language ("relay fault")."""
    from gate.i18n import _
    word = FAULT_WORDS.get(action)
    return _(word) if word else action.replace("_", " ")
