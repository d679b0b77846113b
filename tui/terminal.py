"""The terminal the staff UI draws on, kept apart from the scanner's input.

Textual reads keys from file descriptor 0 and draws on descriptor 2. With
``--scanner stdin`` the codes arrive on descriptor 0 too: both would read the
same pipe (the UI ate the codes as keys; neither worked). :func:`own_terminal`
moves the codes to a private descriptor for the scanner, then points 0 and 2
at the controlling terminal (``/dev/tty``) for the UI, and puts everything
back afterwards. With no terminal at all the UI refuses to start (exit 2)
instead of drawing escapes into a pipe.

No Textual import here: ``gate run`` checks the terminal before it builds a lane.
"""

from __future__ import annotations

import contextlib
import os
import sys

from gate.errors import ConfigError
from gate.i18n import _


def open_tty() -> int:
    """A read/write descriptor on the controlling terminal, or ConfigError."""
    try:
        return os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        raise ConfigError(_("the staff UI needs a terminal and this process has none: run 'gate tui' in a "
                            "terminal (or over ssh -t), or run the lane without the UI: 'gate run'")) from None


def check_terminal(*, scanner: str | None) -> None:
    """Refuse early (before a lane is built) what :func:`own_terminal` cannot do."""
    os.close(open_tty())
    if scanner == "stdin" and os.isatty(0):
        raise ConfigError(_("--scanner stdin with the staff UI reads codes piped into 'gate', but standard "
                            "input is this terminal: pipe the scanner in (SCANNER | gate tui --scanner stdin), "
                            "or use --scanner serial:PORT"))


@contextlib.contextmanager
def own_terminal(*, keep_stdin: bool):
    """Give the UI the terminal on descriptors 0 and 2; with ``keep_stdin`` the
    scanner (hardware.scanner) keeps reading what was on standard input."""
    from hardware import scanner

    tty = open_tty()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (0, 2)}
    if keep_stdin:
        scanner.use_stdin(os.fdopen(os.dup(0), "rb", buffering=0))
    try:
        os.dup2(tty, 0)
        os.dup2(tty, 2)
        yield
    finally:
        sys.stderr.flush()
        for fd, old in saved.items():
            os.dup2(old, fd)
            os.close(old)
        os.close(tty)
