"""Small ports the lane talks to. Adapters live beside this file; each has a
simulated twin that ships in the product (the demo, CI and installers' dry runs
use them)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Frame:
    image: Any  # numpy array, BGR or grey
    captured_ns: int  # time.monotonic_ns() when the frame was grabbed
    index: int


class Camera(Protocol):
    def read(self) -> Frame | None:
        """Next frame; None when the source has ended."""

    def close(self) -> None: ...


class QrDecoder(Protocol):
    name: str

    def decode(self, grey) -> list[tuple[str, tuple[int, int, int, int] | None]]:
        """QR texts found in a greyscale image, each with its bounding box (x, y, w, h)."""


class Relay(Protocol):
    def pulse(self, ms: int) -> None:
        """Close the contact for ``ms`` milliseconds; returns at once."""

    def close(self) -> None: ...


class PassageSensor(Protocol):
    def wait_passage(self, timeout_s: float) -> bool:
        """True when someone passed within ``timeout_s``."""

    def close(self) -> None: ...


class CodeSource(Protocol):
    """A handheld scanner: yields QR texts directly (keyboard wedge, serial)."""

    def read_code(self) -> str | None: ...

    def close(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float: ...

    def monotonic_ns(self) -> int: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()
