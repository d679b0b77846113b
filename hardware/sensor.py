"""Passage sensors by spec string:

- ``none`` — no sensor: every opening counts as a passage
- ``sim`` (everyone passes), ``sim:never``, ``sim:P`` (each passes with probability P, seeded)
- ``gpio:CHIP:LINE`` — a beam or arm sensor on a GPIO line (rising edge = passage)
"""

from __future__ import annotations

import random
from datetime import timedelta

from gate.errors import HardwareError


class NoSensor:
    present = False

    def wait_passage(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        pass


class SimSensor:
    """Answers at once (no waiting): the lane's clock, not this sensor, keeps time."""

    present = True

    def __init__(self, probability: float = 1.0, seed: int = 7):
        self.probability = probability
        self.rng = random.Random(seed)
        self.script: list[bool] = []  # explicit answers first, then the probability

    def wait_passage(self, timeout_s: float) -> bool:
        if self.script:
            return self.script.pop(0)
        return self.rng.random() < self.probability

    def close(self) -> None:
        pass


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
