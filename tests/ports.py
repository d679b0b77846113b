"""Port numbers for the servers tests and benches start on 127.0.0.1, the
wait until one answers, and stopping it. One copy for tests/ and bench/ (bench adds tests/ to
sys.path).

Ports come from the OS (bind port 0), never from a formula: several test runs
share this machine, and a number made up from a pid or a counter collides with
theirs. The OS hands out a port nobody holds *now*; the server binds it a moment
later, so a clash is still possible but rare — a server that cannot bind fails
loudly, never silently talks to another run's server."""

from __future__ import annotations

import socket
import subprocess
import time

# Upper bound for a server to come up. Generous on purpose: the machine is
# shared, and a loaded machine must make a test slow, never make it fail.
START_TIMEOUT_S = 120.0


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` different ports free on ``host`` right now (all held open together
    while asking, so the OS cannot hand out the same one twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def wait_until_serving(url: str, *, proc: subprocess.Popen | None = None, timeout: float = START_TIMEOUT_S,
                       verify: bool | str = True, what: str = "server") -> None:
    """Poll ``url`` until it answers at all (any HTTP status). Raises at once when
    ``proc`` exits, and after ``timeout`` seconds otherwise."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=5, verify=verify)
            return
        except requests.RequestException:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{what} exited with {proc.returncode} before answering {url}") from None
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not answer {url} within {timeout:.0f} s") from None
            time.sleep(0.05)


def stop_process(proc: subprocess.Popen, *, close_stdin: bool = False, timeout: float = 10.0) -> None:
    """End a server or lane started by a test: close its stdin (a lane reading
    codes ends on EOF) or send SIGTERM, and kill it when it has not ended within
    ``timeout`` seconds. Nothing happens when it has ended already."""
    if proc.poll() is not None:
        return
    if close_stdin:
        try:
            proc.stdin.close()
        except OSError:
            pass
    else:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
