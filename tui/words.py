"""What staff read for each reason code (the table lives in gate/words.py, shared
with the command line, the ops room and the wallet)."""

from __future__ import annotations

from gate.words import reason_words


def words(reason: str) -> tuple[str, str, str, str]:
    w = reason_words(reason)
    return w.icon, w.headline, w.advice, w.style
