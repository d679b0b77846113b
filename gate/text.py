"""Text from outside shown to people: made plain, measured in terminal cells.

Holder names, lane names and anything else that comes from an import file,
pretix, central or another gate may carry terminal escapes, bidirectional
overrides or markup. :func:`plain` keeps the words and drops what a terminal
or a renderer would act on. Markup (Textual/Rich ``[...]``, HTML) is the
renderer's job: show such text as a plain ``Text`` or escape it; this module
removes control characters, which no renderer can be trusted with.

Chinese (and other East Asian wide) characters take two terminal cells:
:func:`cells`, :func:`pad` and :func:`clip` count cells, not characters.
"""

from __future__ import annotations

import unicodedata

# Unicode format characters that reorder or hide text (bidi overrides and
# isolates, zero-width marks used to disguise text); other Cf (e.g. soft
# hyphen) are harmless but invisible, so all of category Cf goes.
_REPLACEMENT = "\ufffd"


def plain(text: object, *, limit: int | None = None) -> str:
    """``text`` with every control and format character replaced by U+FFFD
    (newlines and tabs become spaces), cut to ``limit`` characters."""
    s = "" if text is None else str(text)
    out = []
    for ch in s:
        if ch in "\n\t\r":
            out.append(" ")
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn") and ch != " ":
            out.append(_REPLACEMENT)
        else:
            out.append(ch)
    result = "".join(out)
    if limit is not None and len(result) > limit:
        result = result[: max(0, limit - 1)] + "…"
    return result


def char_cells(ch: str) -> int:
    """Terminal cells one character takes: 0 (combining), 1 or 2 (wide)."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def cells(text: str) -> int:
    """The width of ``text`` in terminal cells."""
    return sum(char_cells(ch) for ch in text)


def clip(text: str, width: int, *, ellipsis: str = "…") -> str:
    """``text`` cut to at most ``width`` cells (with an ellipsis when cut)."""
    if cells(text) <= width:
        return text
    room = width - cells(ellipsis)
    out, used = [], 0
    for ch in text:
        w = char_cells(ch)
        if used + w > room:
            break
        out.append(ch)
        used += w
    return "".join(out) + (ellipsis if width >= cells(ellipsis) else "")


def pad(text: str, width: int, *, right: bool = False) -> str:
    """``text`` padded with spaces to ``width`` cells (left-aligned unless ``right``)."""
    gap = " " * max(0, width - cells(text))
    return gap + text if right else text + gap


# Line breaking that suits both English and Chinese: a Latin word is never cut
# (unless it alone is wider than the line); Chinese may break between any two
# characters, except before closing punctuation or after opening punctuation.
_NO_START = set("，。、；：？！）」』】》〉…·,.;:?!)]}%”’")
_NO_END = set("（「『【《〈([{“‘")


def _tokens(text: str) -> list[str]:
    """Unbreakable pieces (" " marks a break opportunity that takes a cell)."""
    raw: list[str] = []
    word = ""
    for ch in text:
        if ch == " ":
            if word:
                raw.append(word)
                word = ""
            raw.append(" ")
        elif char_cells(ch) == 2 or ch in _NO_START or ch in _NO_END:
            if word:
                raw.append(word)
                word = ""
            raw.append(ch)
        else:
            word += ch
    if word:
        raw.append(word)
    out: list[str] = []
    glue = False  # the previous token must not end a line: glue the next one to it
    for tok in raw:
        if tok == " ":
            out.append(tok)
            glue = False
            continue
        if out and out[-1] != " " and (glue or tok[0] in _NO_START or (cells(out[-1]) and not _wide(out[-1][-1])
                                                                          and not _wide(tok[0]))):
            out[-1] += tok
        else:
            out.append(tok)
        glue = tok[-1] in _NO_END
    return out


def _wide(ch: str) -> bool:
    return char_cells(ch) == 2


def wrap(text: str, width: int) -> list[str]:
    """``text`` broken into lines of at most ``width`` cells (see above)."""
    width = max(1, width)
    lines: list[str] = []
    line, space = "", False
    for tok in _tokens(text):
        if tok == " ":
            space = bool(line)
            continue
        sep = " " if space else ""
        if cells(line) + cells(sep) + cells(tok) <= width:
            line += sep + tok
        else:
            if line:
                lines.append(line)
            line = ""
            while cells(tok) > width:  # only a piece wider than a whole line is cut
                cut = clip(tok, width, ellipsis="") or tok[0]  # a wide character on a 1-cell line
                lines.append(cut)
                tok = tok[len(cut):]
            line = tok
        space = False
    if line or not lines:
        lines.append(line)
    return lines
