"""Operator-facing failures. Each message says what to do next.

A rejected ticket is never an error: it is a Decision. These are for things
an operator or integrator has to fix (configuration, files, storage, network).
"""


class GateError(Exception):
    """Base class; the CLI prints the message and exits with ``exit_code``."""

    exit_code = 1


class ConfigError(GateError):
    exit_code = 2


class LedgerError(GateError):
    exit_code = 3


class ImportFileError(LedgerError):
    pass


class StoreError(LedgerError):
    """The device database could not commit a write: nothing of that transaction
    was stored (it was rolled back). A lane stops admitting until the store works."""


class LogError(GateError):
    exit_code = 4


class SyncError(GateError):
    exit_code = 5


class HardwareError(GateError):
    exit_code = 6


class DiskFullError(GateError):
    """The data disk is full: nothing more can be recorded (what was recorded is safe)."""

    exit_code = 7
