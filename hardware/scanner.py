"""Handheld scanners as code sources (an alternative to the camera):
``stdin`` (keyboard wedge: one code per line) and ``serial:PORT[?baud=N]``."""

from __future__ import annotations

import sys

from gate.errors import HardwareError

# where ``stdin`` scanners read when standard input was handed to a terminal UI
# (tui.terminal.own_terminal keeps the original input on a private descriptor)
_STDIN: list = []


def use_stdin(stream) -> None:
    """Read ``--scanner stdin`` codes from ``stream`` (a binary file) from now on."""
    _STDIN[:] = [stream]


class StdinScanner:
    """One code per line from a binary stream (default: stdin's bytes). A byte
    that is not UTF-8 or a line over 4096 characters (cut there; the rest is
    read in chunks and dropped) reaches the decision, which says MALFORMED."""

    def __init__(self, stream=None):
        from crypto.gt1 import MAX_QR_CHARS
        from gate.lines import text_lines

        stream = stream or (_STDIN[0] if _STDIN else sys.stdin.buffer)
        self._lines = text_lines(stream, MAX_QR_CHARS)

    def read_code(self) -> str | None:
        for _, line, _ in self._lines:
            if line.strip():
                return line
        return None

    def close(self) -> None:
        pass


class SerialScanner:
    def __init__(self, port: str, baud: int = 9600):
        import serial

        try:
            self.port = serial.Serial(port, baudrate=baud, timeout=None)
        except (serial.SerialException, OSError) as exc:
            raise HardwareError(f"cannot open scanner port {port}: {exc}") from None

    def read_code(self) -> str | None:
        while True:
            raw = self.port.readline()
            if not raw:
                return None
            text = raw.decode("utf-8", "replace").strip("\r\n")
            if text.strip():
                return text

    def close(self) -> None:
        self.port.close()
