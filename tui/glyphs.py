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


def glyph(state: str) -> list[str]:
    """The rows of a state's glyph, each padded to WIDTH cells (IDLE for an unknown state)."""
    art = _ART.get(state, _ART["IDLE"])
    rows = art.strip("\n").split("\n")
    rows += [""] * (HEIGHT - len(rows))
    return [r.ljust(WIDTH)[:WIDTH] for r in rows[:HEIGHT]]
