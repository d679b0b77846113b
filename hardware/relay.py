"""Turnstile relay drivers by spec string (pulse length default 200 ms):

- ``sim`` / ``sim:FILE`` — simulated; remembers pulses, and with FILE appends one
  line per pulse (the dry-run journal an installer can read)
- ``gpio:CHIP:LINE`` — a GPIO line through libgpiod (``pip install gpiod``)
- ``serial:PORT[?on=HEX&off=HEX&baud=N]`` — USB serial relay boards (LCUS-1 style
  ``A00101A2`` / ``A00100A1`` by default)
- ``hid[:N]`` — the common USB HID relay boards (16c0:05df), relay N (default 1)
"""

from __future__ import annotations

import threading
import time

from gate.errors import HardwareError

DEFAULT_PULSE_MS = 200


class _TimedRelay:
    """Close now, open after ``ms`` on a timer thread, so the lane never waits."""

    def __init__(self) -> None:
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def _on(self) -> None: ...

    def _off(self) -> None: ...

    def is_closed(self) -> bool:
        """Whether the relay contact is closed (turnstile released) now, as
        the device reports it where it can (GPIO, HID), else as last commanded."""
        return self._timer is not None

    def pulse(self, ms: int = DEFAULT_PULSE_MS, *, tag: str | None = None) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._on()
            self._timer = threading.Timer(ms / 1000, self._release)
            self._timer.daemon = True
            self._timer.start()

    def _release(self) -> None:
        with self._lock:
            self._off()
            self._timer = None

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._off()


class SimRelay:
    """The simulated relay: no thread, no waiting; pulses are recorded."""

    def __init__(self, journal: str | None = None):
        self.pulses: list[tuple[int, int, str | None]] = []  # (monotonic_ns, ms, tag)
        self._journal = open(journal, "a", buffering=1) if journal else None

    def pulse(self, ms: int = DEFAULT_PULSE_MS, *, tag: str | None = None) -> None:
        self.pulses.append((time.monotonic_ns(), ms, tag))
        if self._journal:
            self._journal.write(f"{time.time():.3f} pulse {ms}ms {tag or ''}\n")

    def close(self) -> None:
        if self._journal:
            self._journal.close()


class SerialRelay(_TimedRelay):
    def __init__(self, port: str, *, on: bytes = bytes.fromhex("A00101A2"),
                 off: bytes = bytes.fromhex("A00100A1"), baud: int = 9600):
        super().__init__()
        import serial

        try:
            self.port = serial.Serial(port, baudrate=baud, timeout=1, write_timeout=1)
        except (serial.SerialException, OSError) as exc:
            raise HardwareError(f"cannot open relay port {port}: {exc}; check the USB cable and "
                                "that the user is in the 'dialout' group") from None
        self.on_bytes, self.off_bytes = on, off

    def _on(self) -> None:
        self.port.write(self.on_bytes)
        self.port.flush()

    def _off(self) -> None:
        self.port.write(self.off_bytes)
        self.port.flush()

    def close(self) -> None:
        super().close()
        self.port.close()


class GpioRelay(_TimedRelay):
    def __init__(self, chip: str, line: int, *, active_low: bool = False):
        super().__init__()
        try:
            import gpiod
            from gpiod.line import Direction, Value
        except ImportError:
            raise HardwareError("gpio relay needs the gpiod package: .venv/bin/pip install gpiod") from None
        chip_path = chip if chip.startswith("/") else f"/dev/{chip}"
        self._Value = Value
        try:
            self.req = gpiod.request_lines(chip_path, consumer="gate-relay", config={
                line: gpiod.LineSettings(direction=Direction.OUTPUT, active_low=active_low,
                                         output_value=Value.INACTIVE)})
        except OSError as exc:
            raise HardwareError(f"cannot claim {chip_path} line {line}: {exc}") from None
        self.line = line

    def _on(self) -> None:
        self.req.set_value(self.line, self._Value.ACTIVE)

    def _off(self) -> None:
        self.req.set_value(self.line, self._Value.INACTIVE)

    def is_closed(self) -> bool:
        return self.req.get_value(self.line) == self._Value.ACTIVE

    def close(self) -> None:
        super().close()
        self.req.release()


HID_VID, HID_PID = 0x16C0, 0x05DF


class HidRelay(_TimedRelay):
    def __init__(self, relay: int = 1):
        super().__init__()
        try:
            import hid
        except ImportError:
            raise HardwareError("hid relay needs the hid package and libhidapi: "
                                ".venv/bin/pip install hid; apt-get install libhidapi-hidraw0") from None
        try:
            self.dev = hid.Device(HID_VID, HID_PID)
        except Exception as exc:  # hid raises its own HIDException
            raise HardwareError(f"no USB HID relay (16c0:05df) found: {exc}") from None
        self.relay = relay

    def _report(self, cmd: int) -> None:
        self.dev.send_feature_report(bytes([0, cmd, self.relay, 0, 0, 0, 0, 0, 0]))

    def _on(self) -> None:
        self._report(0xFF)

    def _off(self) -> None:
        self._report(0xFD)

    def is_closed(self) -> bool:
        # the board's feature report: byte 7 holds one state bit per relay
        state = self.dev.get_feature_report(1, 9)
        return bool(state[7] & (1 << (self.relay - 1)))

    def close(self) -> None:
        super().close()
        self.dev.close()
