"""Contact inputs by spec string: a turnstile's PASS output (the arm turned) and a
fire-alarm panel's contact. An input is active or not; :meth:`wait_active` waits
(bounded) for it to become active.

- ``sim:FILE`` — simulated: active while FILE holds ``1`` (a missing or empty file,
  or ``0``, is inactive); a test, the demo or an installer toggles it with
  ``echo 1 > FILE``
- ``sim:after=N`` — simulated: inactive for the first N-1 reads, active from the Nth on
- ``sim:pulse`` — simulated PASS contact: every wait sees one pulse at once (everyone passes)
- ``gpio:CHIP:LINE[:active-low]`` — a dry contact on a GPIO line through libgpiod

An input that cannot be read raises HardwareError: for the PASS contact that is a
sensor fault (the lane pauses itself), for the fire input it is treated as an
alarm (fail safe: a fire panel that cannot be read releases the lanes).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

from gate.errors import HardwareError

POLL_S = 0.02  # how often a simulated file input is read while waiting


class SimInput:
    """A simulated contact: a file the test toggles, a read count, or a pulse per wait."""

    def __init__(self, path: str | None = None, *, after: int | None = None, pulse: bool = False):
        self.path = Path(path) if path else None
        self.after, self.pulse = after, pulse
        self.reads = 0
        self.forced: bool | None = None  # set(): driven in-process (the demo)
        self._closed = threading.Event()

    def set(self, active: bool | None) -> None:
        """Drive the contact from this process (None: back to the file / count)."""
        self.forced = active

    def is_active(self) -> bool:
        self.reads += 1
        if self.forced is not None:
            return self.forced
        if self.pulse:
            return True
        if self.after is not None:
            return self.reads >= self.after
        if self.path is None:
            return False
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").strip() == "1"
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise HardwareError(f"input sim:{self.path}: cannot read it ({exc.strerror})") from None

    def wait_active(self, timeout_s: float) -> bool:
        """True as soon as the contact is active (a PASS pulse), False after ``timeout_s``."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            if self.is_active():
                if self.path is not None and self.forced is None:
                    self._consume()
                return True
            if time.monotonic() >= deadline or self._closed.wait(POLL_S):
                return False

    def _consume(self) -> None:
        """A file-driven PASS pulse is read once (the file goes back to 0)."""
        try:
            self.path.write_text("0\n")
        except OSError:
            pass

    def close(self) -> None:
        self._closed.set()


class GpioInput:
    """A dry contact on a GPIO line (pull-up wiring: ``active-low``)."""

    def __init__(self, chip: str, line: int, *, active_low: bool = False):
        try:
            import gpiod
            from gpiod.line import Direction, Edge, Value
        except ImportError:
            raise HardwareError("gpio input needs the gpiod package: .venv/bin/pip install gpiod") from None
        chip_path = chip if chip.startswith("/") else f"/dev/{chip}"
        self._active = Value.ACTIVE
        self.line = line
        try:
            self.req = gpiod.request_lines(chip_path, consumer="gate-input", config={
                line: gpiod.LineSettings(direction=Direction.INPUT, edge_detection=Edge.RISING,
                                         active_low=active_low, debounce_period=timedelta(milliseconds=20))})
        except OSError as exc:
            raise HardwareError(f"cannot claim {chip_path} line {line}: {exc}") from None

    def is_active(self) -> bool:
        return self.req.get_value(self.line) == self._active

    def wait_active(self, timeout_s: float) -> bool:
        if self.req.wait_edge_events(0):  # drop edges from before the wait
            self.req.read_edge_events()
        if not self.req.wait_edge_events(timedelta(seconds=timeout_s)):
            return False
        self.req.read_edge_events()
        return True

    def close(self) -> None:
        self.req.release()


class PassContactSensor:
    """The turnstile's PASS output as the lane's passage sensor: the arm turned
    when the contact pulses within the lane's passage timeout."""

    present = True

    def __init__(self, contact):
        self.contact = contact

    def wait_passage(self, timeout_s: float) -> bool:
        return self.contact.wait_active(timeout_s)  # a read error raises: a sensor fault

    def reset(self) -> None:
        """Check the contact can be read before a fault is cleared."""
        self.contact.is_active()

    def close(self) -> None:
        self.contact.close()
