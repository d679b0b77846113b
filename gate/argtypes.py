"""argparse type functions shared by every command group (the gate's and the
central's): a bad value is a usage error (exit 2), never a crash later."""

from __future__ import annotations

import argparse
import math

from gate.i18n import _


def unix_time(text: str) -> float:
    """A finite unix time in seconds (not nan, inf or beyond any clock: |t| < 1e15)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(_("{value} is not a number (unix seconds)").format(value=repr(text))) from None
    if not math.isfinite(value) or abs(value) >= 1e15:
        raise argparse.ArgumentTypeError(_("{value} is not a usable unix time (seconds since 1970)").format(
            value=repr(text)))
    return value


def _finite(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(_("{value} is not a number ({what})").format(
            value=repr(text), what=what)) from None
    if not math.isfinite(value):  # nan and inf parse as floats: never a usable setting
        raise argparse.ArgumentTypeError(_("{value} is not a finite number ({what})").format(
            value=repr(text), what=what))
    return value


def finite_float(text: str) -> float:
    """Any finite number (not nan, not inf); ranges are the command's to check."""
    return _finite(text, _("a finite decimal number, e.g. 0.52"))


def seconds(text: str) -> float:
    """A duration in seconds: finite, more than 0, at most a year."""
    value = _finite(text, _("seconds"))
    if not 0 < value <= 366 * 86400:
        raise argparse.ArgumentTypeError(_("{value} seconds is out of range: give more than 0, at most a year").format(
            value=repr(text)))
    return value


def days(text: str) -> float:
    """A number of days from now: finite, from 0 to 100 years."""
    value = _finite(text, _("days"))
    if not 0 <= value <= 36525:
        raise argparse.ArgumentTypeError(_("{value} days is out of range: give 0 to 36525").format(value=repr(text)))
    return value


def listen_address(text: str) -> tuple[str, int]:
    """``IP:PORT`` (``[::1]:9100`` for IPv6) to listen on: (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(_("{value}: give IP:PORT, e.g. 127.0.0.1:9100").format(value=repr(text)))
    return host, int(port)
