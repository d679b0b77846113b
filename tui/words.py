"""What staff read for each reason code: an icon, a word that can be read from
two metres, and what to do. Never colour alone."""

from __future__ import annotations

# reason: (icon, headline, advice, style)
WORDS: dict[str, tuple[str, str, str, str]] = {
    "ACCEPT": ("✔", "ADMIT", "Let the holder through", "accept"),
    "MANUAL_ADMIT": ("✔", "ADMIT (MANUAL)", "Admitted by a supervisor", "accept"),
    "MANUAL_DENY": ("✖", "DENIED (MANUAL)", "Refused by a supervisor", "reject"),
    "MALFORMED": ("?", "UNREADABLE", "Not a ticket code: ask for the ticket again", "reject"),
    "UNKNOWN_KEY": ("✖", "NOT OUR TICKET", "Signed by an unknown or withdrawn issuer: send to box office", "reject"),
    "BAD_SIGNATURE": ("✖", "FORGED", "The code was altered: call a supervisor", "reject"),
    "WRONG_EVENT": ("✖", "WRONG EVENT", "Ticket is for another event or day", "reject"),
    "NOT_YET_VALID": ("…", "TOO EARLY", "Ticket is not valid yet", "reject"),
    "EXPIRED": ("✖", "EXPIRED", "Ticket is no longer valid", "reject"),
    "PROOF_REQUIRED": ("▣", "SHOW LIVE CODE", "Open the ticket in the app: screenshots are not accepted", "reject"),
    "STALE_CODE": ("▣", "OLD CODE", "Screenshot or phone clock wrong: open the live ticket in the app", "reject"),
    "BAD_PROOF": ("✖", "COPIED CODE", "Code not from the holder's phone: call a supervisor", "reject"),
    "REVOKED": ("✖", "CANCELLED", "Ticket refunded or cancelled: send to box office", "reject"),
    "SUPERSEDED": ("✖", "REPLACED", "Ticket was transferred or reissued: an older copy", "reject"),
    "NOT_IN_LEDGER": ("✖", "NOT LISTED", "Ticket not in this gate's list: send to box office", "reject"),
    "WRONG_ZONE": ("➜", "OTHER ENTRANCE", "Ticket is for another zone or entrance", "reject"),
    "REPLAY": ("✖", "ALREADY SCANNED", "This exact code was just used: ask for the live ticket", "reject"),
    "ALREADY_USED": ("✖", "ALREADY IN", "Ticket already used for entry", "reject"),
    "FACE_REQUIRED": ("☺", "LOOK AT CAMERA", "Face check needed: one person, face to the camera", "reject"),
    "FACE_MISMATCH": ("✖", "FACE MISMATCH", "Face does not match the ticket holder: check ID", "reject"),
    "NO_FACE_ENROLLED": ("✖", "NO FACE ON FILE", "Face-bound ticket without enrolment: box office", "reject"),
    "ERROR": ("!", "NOT CHECKED", "The gate could not check this code: call a supervisor", "reject"),
}


def words(reason: str) -> tuple[str, str, str, str]:
    return WORDS.get(reason, ("✖", reason, "", "reject"))
