"""The composition root: the one place that turns configuration into a running
gate and lane (real or simulated hardware). The CLI, the staff UI, the demo and
the tests build through here."""

from __future__ import annotations

import time
from pathlib import Path

from gate.appliance import Gate


def open_gate(data: str | Path, *, now: float | None = None) -> Gate:
    """Open the gate in ``data`` as of ``now`` (default: the system clock)."""
    return Gate.open(Path(data), now=time.time() if now is None else now)
