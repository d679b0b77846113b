"""Handheld scanners as code sources (an alternative to the camera):
``stdin`` (keyboard wedge: one code per line) and ``serial:PORT[?baud=N]``."""

from __future__ import annotations

import sys

from gate.errors import HardwareError


class StdinScanner:
    def __init__(self, stream=None):
        self.stream = stream or sys.stdin

    def read_code(self) -> str | None:
        while True:
            line = self.stream.readline()
            if not line:
                return None
            line = line.rstrip("\r\n")
            if line.strip():
                return line

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
