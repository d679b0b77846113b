"""Small ports the lane talks to. Adapters live beside this file; each has a
simulated twin that ships in the product (the demo, CI and installers' dry runs
use them)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol


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
    fault: str | None  # set when the contact could not be opened again (or closed): see hardware.relay
    on_fault: list[Callable[[str], None]]  # told of a fault, from any thread (the lane pauses itself)

    def pulse(self, ms: int) -> None:
        """Close the contact for ``ms`` milliseconds; returns at once. Raises when it
        could not (and when the relay is faulted)."""

    def reset(self) -> None:
        """Open the contact and forget the fault; raises while the fault persists."""

    def close(self) -> None:
        """Open the contact and let go; raises when the contact could not be opened."""


class PassageSensor(Protocol):
    def wait_passage(self, timeout_s: float) -> bool:
        """True when someone passed within ``timeout_s``. Raises on a sensor fault
        (a fault is not "nobody passed")."""

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
