"""Passage sensors by spec string:

- ``none`` — no sensor: every opening counts as a passage
- ``sim`` (everyone passes), ``sim:never``, ``sim:P`` (each passes with probability P, seeded);
  add ``:delay=S`` (e.g. ``sim:1:delay=2``) for a holder who takes S seconds to walk through,
  and ``:fail-on=N`` for a sensor whose Nth wait fails (and every later one, until
  :meth:`SimSensor.repair`); ``:hang-on=N`` for a broken driver whose Nth wait never
  returns (it ignores the timeout: the lane's decision loop hangs, and the service
  watchdog stops pinging — ``gate run`` under systemd is restarted)
- ``pass:INPUT`` — the turnstile's PASS output (the arm turned) on a contact input
  (``hardware.inputs``: ``pass:gpio:CHIP:LINE``, ``pass:sim:FILE``)
- ``gpio:CHIP:LINE`` — a beam or arm sensor on a GPIO line (rising edge = passage)

A sensor that raises from :meth:`wait_passage` is faulted, not "nobody passed":
the lane keeps the admission (the turnstile was released), pauses itself and
shows the fault until a supervisor clears it (after :meth:`reset` succeeds).
"""

from __future__ import annotations

import random
import threading
from datetime import timedelta

from gate.errors import HardwareError


class NoSensor:
    present = False

    def wait_passage(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        pass


class SimSensor:
    """Answers at once by default (the lane's clock, not this sensor, keeps time).
    With ``delay_s`` the holder takes that long (at most the lane's timeout) to
    walk through; :meth:`walk_through` ends a pending wait at once."""

    present = True

    def __init__(self, probability: float = 1.0, seed: int = 7, *, delay_s: float = 0.0,
                 fail_on: int | None = None, hang_on: int | None = None):
        self.probability = probability
        self.hang_on = hang_on  # the Nth wait never returns (until close): a hung driver
        self._closed = threading.Event()
        self.fail_on = fail_on  # the Nth wait (and every later one) fails: a broken sensor
        self.waits = 0
        self.rng = random.Random(seed)
        self.delay_s = delay_s
        self.script: list[bool] = []  # explicit answers first, then the probability
        self.waiting = threading.Event()  # set while a passage is pending
        self._through = threading.Event()

    def wait_passage(self, timeout_s: float) -> bool:
        self.waits += 1
        if self.fail_on is not None and self.waits >= self.fail_on:
            raise HardwareError(f"simulated: passage sensor failed on wait {self.waits}")
        if self.hang_on is not None and self.waits == self.hang_on:
            self._closed.wait()  # ignores the timeout, like a driver stuck in a read
            raise HardwareError(f"simulated: passage sensor hung on wait {self.waits}")
        if self.delay_s > 0:
            self.waiting.set()
            try:
                early = self._through.wait(min(self.delay_s, timeout_s))
            finally:
                self._through.clear()
                self.waiting.clear()
            if not early and self.delay_s > timeout_s:
                return False  # still walking when the lane gave up
        if self.script:
            return self.script.pop(0)
        return self.rng.random() < self.probability

    def walk_through(self) -> None:
        """The holder reaches the sensor now (ends a pending delayed wait)."""
        self._through.set()

    def repair(self) -> None:
        """The technician fixed the sensor: later waits work."""
        self.fail_on = None

    def reset(self) -> None:
        """Check the sensor before a fault is cleared; HardwareError while it is broken."""
        if self.fail_on is not None:
            raise HardwareError("passage sensor: still failing (simulated)")

    def close(self) -> None:
        self._closed.set()


class GpioSensor:
    present = True

    def __init__(self, chip: str, line: int):
        try:
            import gpiod
            from gpiod.line import Direction, Edge
        except ImportError:
            raise HardwareError("gpio sensor needs the gpiod package: .venv/bin/pip install gpiod") from None
        chip_path = chip if chip.startswith("/") else f"/dev/{chip}"
        try:
            self.req = gpiod.request_lines(chip_path, consumer="gate-sensor", config={
                line: gpiod.LineSettings(direction=Direction.INPUT, edge_detection=Edge.RISING,
                                         debounce_period=timedelta(milliseconds=20))})
        except OSError as exc:
            raise HardwareError(f"cannot claim {chip_path} line {line}: {exc}") from None

    def wait_passage(self, timeout_s: float) -> bool:
        if self.req.wait_edge_events(0):  # drop edges from before the gate opened
            self.req.read_edge_events()
        if not self.req.wait_edge_events(timedelta(seconds=timeout_s)):
            return False
        self.req.read_edge_events()
        return True

    def close(self) -> None:
        self.req.release()
