"""Helpers shared by the benchmarks (they print figures; nothing here asserts)."""

from __future__ import annotations

# Run the gate CLI in a child that reports its own peak RSS: /proc's VmHWM resets at
# exec, while ru_maxrss does not (it would include the big parent's pages at fork).
MEASURED_GATE = (
    "import sys; from gate.app.cli import main; sys.argv[0] = 'gate'; rc = main(sys.argv[1:]); "
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
    "print(hwm, file=sys.stderr); sys.exit(rc)"
)


def pct(values, p: float) -> float:
    """The p-th percentile (nearest rank) of values."""
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]
