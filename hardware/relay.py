"""Turnstile relay drivers by spec string (pulse length default 200 ms):

- ``sim`` / ``sim:FILE`` — simulated; remembers pulses, and with FILE appends one
  line per pulse (the dry-run journal an installer can read). Fault modes for
  tests, demos and dry runs: ``:stuck-after=N`` (the Nth release fails, and every
  later one, until :meth:`SimRelay.repair`: the contact stays closed) and
  ``:fail-on=N`` (the Nth pulse cannot close the contact, nor any later one)
- ``gpio:CHIP:LINE`` — a GPIO line through libgpiod (``pip install gpiod``)
- ``serial:PORT[?on=HEX&off=HEX&baud=N]`` — USB serial relay boards (LCUS-1 style
  ``A00101A2`` / ``A00100A1`` by default)
- ``hid[:N]`` — the common USB HID relay boards (16c0:05df), relay N (default 1)

A relay that cannot open its contact again is the worst fault a gate can have:
the turnstile stays released and people pass with no record. Every driver
retries a failed release (``RELEASE_ATTEMPTS``), then marks itself faulted
(:attr:`fault`), refuses further pulses, and calls its :attr:`on_fault` hooks
(the composition root points them at the lane, which pauses itself, logs the
fault and shows it). :meth:`reset` tries to open the contact again; it raises
while the fault is still there.

:meth:`hold` closes the contact and keeps it closed (the turnstile stays released:
a fire alarm) until :meth:`release`; pulses meanwhile change nothing. A hold works
even on a faulted relay (releasing people matters more than the fault).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from gate.errors import HardwareError

DEFAULT_PULSE_MS = 200
RELEASE_ATTEMPTS = 3
RELEASE_RETRY_S = 0.05  # between release attempts (on the relay's timer thread, never the lane's)


class _Faults:
    """What every relay driver shares: its fault state and who to tell."""

    def _init_faults(self) -> None:
        self.fault: str | None = None
        self.on_fault: list[Callable[[str], None]] = []  # called with the fault, from any thread

    def _tell(self, fault: str) -> None:
        for fn in list(self.on_fault):
            try:
                fn(fault)
            except Exception:  # a failing listener must not hide the fault from the others
                pass

    def _check_usable(self) -> None:
        if self.fault is not None:
            raise HardwareError(f"the relay is faulted ({self.fault}): fix it, then clear the fault")


class _TimedRelay(_Faults):
    """Close now, open after ``ms`` on a timer thread, so the lane never waits."""

    def __init__(self) -> None:
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._closed = False  # as last commanded (drivers that can read the contact override is_closed)
        self.held = False  # hold(): closed until release()
        self._init_faults()

    def _on(self) -> None: ...

    def _off(self) -> None: ...

    def is_closed(self) -> bool:
        """Whether the relay contact is closed (turnstile released) now, as
        the device reports it where it can (GPIO, HID), else as last commanded."""
        return self._closed

    def pulse(self, ms: int = DEFAULT_PULSE_MS, *, tag: str | None = None) -> None:
        fault = None
        with self._lock:
            self._check_usable()
            if self.held:  # released already (a fire alarm): nothing to do
                return
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            try:
                self._closed = True  # a failed command may still have closed it: release below
                self._on()
            except Exception as exc:
                fault = self._release_locked() or f"pulse failed: {type(exc).__name__}: {exc}"
                self.fault = fault
            else:
                self._timer = threading.Timer(ms / 1000, self._release)
                self._timer.daemon = True
                self._timer.start()
        if fault is not None:
            self._tell(fault)
            raise HardwareError(f"relay: {fault}")

    def hold(self) -> None:
        """Close the contact until :meth:`release` (a fire alarm); HardwareError when it could not."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.held = True
            self._closed = True
            try:
                self._on()
            except Exception as exc:
                raise HardwareError(f"relay: could not hold the turnstile released: {type(exc).__name__}: {exc}") \
                    from None

    def release(self) -> None:
        """End a hold: open the contact (retrying); a failure is a fault (hooks told, and raised)."""
        with self._lock:
            self.held = False
            fault = self._release_locked()
            if fault is not None:
                self.fault = fault
        if fault is not None:
            self._tell(fault)
            raise HardwareError(f"relay: {fault}")

    def _release_locked(self) -> str | None:
        """Open the contact, retrying; the fault when every attempt failed."""
        err: Exception | None = None
        for attempt in range(RELEASE_ATTEMPTS):
            try:
                self._off()
            except Exception as exc:
                err = exc
                if attempt + 1 < RELEASE_ATTEMPTS:
                    time.sleep(RELEASE_RETRY_S)
                continue
            self._closed = False
            return None
        return (f"release failed {RELEASE_ATTEMPTS} times ({type(err).__name__}: {err}): "
                "the contact may be stuck closed")

    def _release(self) -> None:
        with self._lock:
            self._timer = None
            if self.held:
                return
            fault = self._release_locked()
            if fault is not None:
                self.fault = fault
        if fault is not None:
            self._tell(fault)

    def reset(self) -> None:
        """Try to open the contact again and forget the fault; HardwareError while it persists."""
        with self._lock:
            fault = self._release_locked()
            if fault is not None:
                raise HardwareError(f"relay: {fault}")
            self.fault = None

    def close(self) -> None:
        """Open the contact and let go of the device; HardwareError when the contact
        could not be opened (never silent: it may be left closed)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.held = False
            fault = self._release_locked() if self._closed or self.fault else None
        self._close_device()
        if fault is not None:
            raise HardwareError(f"relay at shutdown: {fault}; check the turnstile by hand")

    def _close_device(self) -> None: ...


class SimRelay(_Faults):
    """The simulated relay: no thread, no waiting; pulses are recorded and the
    contact opens again at once (or not: ``stuck_after``)."""

    def __init__(self, journal: str | None = None, *, stuck_after: int | None = None,
                 fail_on: int | None = None):
        self.pulses: list[tuple[int, int, str | None]] = []  # (monotonic_ns, ms, tag)
        self.stuck_after, self.fail_on = stuck_after, fail_on
        self.attempts = self.releases = 0
        self.closed = False
        self.held = False
        self.holds: list[tuple[int, str]] = []  # (monotonic_ns, "hold" | "release")
        self._journal = open(journal, "a", buffering=1) if journal else None
        self._init_faults()

    def _log(self, line: str) -> None:
        if self._journal:
            self._journal.write(f"{time.time():.3f} {line}\n")

    def is_closed(self) -> bool:
        return self.closed

    def hold(self) -> None:
        self.held = self.closed = True
        self.holds.append((time.monotonic_ns(), "hold"))
        self._log("hold: contact closed until release")

    def release(self) -> None:
        self.held = False
        self.holds.append((time.monotonic_ns(), "release"))
        if not self._open_contact():
            self.fault = f"simulated: release {self.releases} failed, the contact is stuck closed"
            self._log("release FAILED: contact stuck closed")
            self._tell(self.fault)
            raise HardwareError(f"relay: {self.fault}")
        self._log("release: contact open")

    def pulse(self, ms: int = DEFAULT_PULSE_MS, *, tag: str | None = None) -> None:
        self._check_usable()
        if self.held:
            return
        self.attempts += 1
        if self.fail_on is not None and self.attempts >= self.fail_on:
            self.fault = f"simulated: pulse {self.attempts} could not close the contact"
            self._log(f"pulse {ms}ms {tag or ''} FAILED")
            self._tell(self.fault)
            raise HardwareError(f"relay: {self.fault}")
        self.pulses.append((time.monotonic_ns(), ms, tag))
        self._log(f"pulse {ms}ms {tag or ''}")
        self.closed = True
        if not self._open_contact():
            self.fault = f"simulated: release {self.releases} failed, the contact is stuck closed"
            self._log("release FAILED: contact stuck closed")
            self._tell(self.fault)

    def _open_contact(self) -> bool:
        self.releases += 1
        if self.stuck_after is not None and self.releases >= self.stuck_after:
            return False
        self.closed = False
        return True

    def repair(self) -> None:
        """The technician fixed the relay: later releases and pulses work (the fault
        stays until :meth:`reset`, i.e. until a supervisor clears it)."""
        self.stuck_after = self.fail_on = None

    def reset(self) -> None:
        if self.closed and not self._open_contact():
            raise HardwareError(f"relay: {self.fault or 'the contact is stuck closed'}")
        if self.fail_on is not None:
            raise HardwareError(f"relay: {self.fault or 'pulses fail'}")
        self.fault = None

    def close(self) -> None:
        if self.held:
            self.held = False
            self._open_contact()
        if self._journal:
            self._journal.close()
        if self.closed:
            raise HardwareError(f"relay at shutdown: {self.fault or 'the contact is closed'}; "
                                "check the turnstile by hand")


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

    def _close_device(self) -> None:
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

    def _close_device(self) -> None:
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

    def _close_device(self) -> None:
        self.dev.close()
