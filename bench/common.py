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


# ---------------------------------------------------------------- the machine and its floors

def machine() -> str:
    """One line naming the machine a figure was measured on: CPU model, cores, load."""
    import os
    import platform

    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    la = os.getloadavg()
    return (f"machine: {model}, {os.cpu_count()} cores, load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}"
            f" (1/5/15 min); Python {platform.python_version()}")


def print_machine() -> None:
    print(machine(), flush=True)


def median_of(fn, rounds: int) -> float:
    import statistics

    return statistics.median(fn() for _ in range(rounds))


def ed25519_verify_us(n: int = 400, rounds: int = 5) -> float:
    """The raw floor of one Ed25519 verification (cryptography, CPU time, µs): the
    median over rounds of the mean over n verifications of distinct messages."""
    import time

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    msgs = [i.to_bytes(8, "big") * 24 for i in range(n)]
    sigs = [key.sign(m) for m in msgs]

    def one() -> float:
        t = time.thread_time_ns()
        for m, s in zip(msgs, sigs):
            pub.verify(s, m)
        return (time.thread_time_ns() - t) / n / 1000
    return median_of(one, rounds)


def fsync_us(directory, n: int = 200, rounds: int = 5) -> float:
    """The raw floor of one durable write on the disk holding ``directory`` (wall
    time, µs): overwrite one 4 KiB block of an existing file and fdatasync it, the
    least a durable commit can cost there (what a WAL commit at synchronous=FULL
    does once per transaction). Median over rounds of the mean over n."""
    import os
    import time
    from pathlib import Path

    path = Path(directory) / ".fsync-floor"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        block = b"\0" * 4096
        for i in range(16):
            os.pwrite(fd, block, i * 4096)
        os.fsync(fd)

        def one() -> float:
            t = time.perf_counter_ns()
            for i in range(n):
                os.pwrite(fd, block, (i % 16) * 4096)
                os.fdatasync(fd)
            return (time.perf_counter_ns() - t) / n / 1000
        return median_of(one, rounds)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def print_floors(directory, *, verify_us: float | None = None, sync_us: float | None = None) -> tuple[float, float]:
    """Measure (unless given) and print the raw floors a bench divides by:
    (Ed25519 verify µs CPU, fdatasync µs wall on ``directory``'s disk)."""
    v = ed25519_verify_us() if verify_us is None else verify_us
    f = fsync_us(directory) if sync_us is None else sync_us
    print(f"floors (this run): Ed25519 verify {v:.1f} us CPU; 4 KiB overwrite + fdatasync {f:.0f} us wall"
          f" on {directory}", flush=True)
    return v, f


def free_port() -> int:
    """A TCP port on 127.0.0.1 the OS says is free now (bind to port 0)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
