"""Large glyphs for the verdict, readable from two metres: 7 rows of 12 cells,
drawn with full blocks (one cell each in every terminal font we tried).
Language-independent on purpose: the words beside them are translated."""

from __future__ import annotations

HEIGHT = 7
WIDTH = 12

_ART: dict[str, str] = {
    "ADMIT": """
          ██
         ██
        ██
 ██    ██
  ██  ██
   ████
    ██
""",
    "REFUSED": """
 ██      ██
  ██    ██
   ██  ██
    ████
   ██  ██
  ██    ██
 ██      ██
""",
    "EXIT": """
    ██
   ██
  ██
 ██████████
  ██
   ██
    ██
""",
    "CAUTION": """
     ██
    ████
   ██  ██
  ██ ██ ██
 ██  ██  ██
██        ██
████████████
""",
    "NOT_PASSED": """
   ██████
 ██      ██
 ██
 ██    ████
 ██      ██
 ██      ██
   ██████
""",
    "PAUSED": """
  ███   ███
  ███   ███
  ███   ███
  ███   ███
  ███   ███
  ███   ███
  ███   ███
""",
    "FAULT": """
 ██████████
 ██      ██
 ██  ██  ██
 ██  ██  ██
 ██      ██
 ██  ██  ██
 ██████████
""",
    "FIRE": """
     ██
    ████
   ██  ██
  ██ ██ ██
 ██  ██  ██
██        ██
████████████
""",
    "IDLE": """
 ███████
 █     █
 █ ███ █
 █ ███ █
 █ ███ █
 █     █
 ███████
""",
}


def glyph(state: str, scale: int = 1) -> list[str]:
    """The rows of a state's glyph, each padded to WIDTH * scale cells (IDLE for an
    unknown state); ``scale`` 2 doubles it both ways for large windows."""
    art = _ART.get(state, _ART["IDLE"])
    rows = art.strip("\n").split("\n")
    rows += [""] * (HEIGHT - len(rows))
    rows = [r.ljust(WIDTH)[:WIDTH] for r in rows[:HEIGHT]]
    if scale == 1:
        return rows
    return [wide for r in rows for wide in ["".join(ch * scale for ch in r)] * scale]
