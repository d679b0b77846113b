"""argparse type functions shared by every command group (the gate's and the
central's): a bad value is a usage error (exit 2), never a crash later."""

from __future__ import annotations

import argparse
import math


def unix_time(text: str) -> float:
    """A finite unix time in seconds (not nan, inf or beyond any clock: |t| < 1e15)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (unix seconds)") from None
    if not math.isfinite(value) or abs(value) >= 1e15:
        raise argparse.ArgumentTypeError(f"{text!r} is not a usable unix time (seconds since 1970)")
    return value
