"""Helpers for venue bus tests and the bus bench: real `gate run` processes on
127.0.0.1 with explicit endpoints and multicast off, driven through stdin."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from ports import free_ports, stop_process, wait_until_serving  # noqa: F401  (free_ports: the bus tests take it from here)

GATE_BIN = Path(sys.executable).with_name("gate")


def gate_cmd(data: Path, *args: str) -> list[str]:
    return [str(GATE_BIN), "--data", str(data), *args]


def setup_gate(data: Path, event: str, lane: str, ring: Path) -> str:
    """init + trust issuer keys; returns the device's trust entry (device_id, key)."""
    subprocess.run(gate_cmd(data, "init", "--event", event, "--lane", lane), check=True, capture_output=True)
    subprocess.run(gate_cmd(data, "keys", "trust", str(ring)), check=True, capture_output=True)
    st = json.loads(subprocess.run(gate_cmd(data, "bus", "status", "--json"), check=True,
                                   capture_output=True, text=True).stdout)
    return {"device_id": st["device_id"], "public_key": st["public_key"], "status": "active"}


def trust_all(datas: list[Path], event: str, entries: list[dict], tmp: Path) -> None:
    f = tmp / "devices.json"
    f.write_text(json.dumps({"event": event, "devices": entries}))
    for d in datas:
        subprocess.run(gate_cmd(d, "bus", "trust", str(f)), check=True, capture_output=True)


class LaneProc:
    """One `gate run --scanner stdin --json-events` process with a bus."""

    def __init__(self, data: Path, *, listen: int | None, peers: list[int], extra: tuple[str, ...] = ()):
        args = ["run", "--scanner", "stdin", "--relay", "sim", "--sensor", "none", "--json-events"]
        if listen is not None:
            args += ["--bus-listen", f"tcp/127.0.0.1:{listen}"]
        for p in peers:
            args += ["--bus-peer", f"tcp/127.0.0.1:{p}"]
        self.proc = subprocess.Popen(gate_cmd(data, *args, *extra), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                     env={**os.environ, "RUST_LOG": "off"})
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                pass
        self.lines.put(None)

    def next(self, pred=lambda e: True, timeout: float = 20.0) -> dict:
        """The next JSON line matching pred, within a bounded deadline."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching event within {timeout} s; seen {self.seen[-5:]}; "
                                     f"stderr: {self.stderr_tail()}")
            try:
                e = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if e is None:
                raise AssertionError(f"lane exited; stderr: {self.stderr_tail()}")
            self.seen.append(e)
            if pred(e):
                return e

    def ready(self, timeout: float = 20.0) -> dict:
        """The first link line: printed once start-up (and catch-up) is done."""
        return self.next(lambda e: "link" in e and "reason" not in e, timeout)

    def scan(self, code: str, timeout: float = 20.0) -> dict:
        self.proc.stdin.write(code + "\n")
        self.proc.stdin.flush()
        return self.next(lambda e: "reason" in e, timeout)

    def stderr_tail(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        return (self.proc.stderr.read() or "")[-2000:]

    def stop(self) -> None:
        stop_process(self.proc, close_stdin=True)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def lane(procs: list, data: Path, listen: int | None, peers: list[int], *extra: str) -> LaneProc:
    """A lane process, added to ``procs`` (the fixture stops them all)."""
    p = LaneProc(data, listen=listen, peers=peers, extra=extra)
    procs.append(p)
    return p


class Outsider:
    """A bare Zenoh session on the venue network (tests/bus_peer.py), driven by
    JSON commands: the attacker of issue 19 (no key, or a stolen genuine record)."""

    PEER = Path(__file__).with_name("bus_peer.py")

    def __init__(self, tmp: Path, event: str, *, connect=(), listen=(), tls: dict | None = None, name="outsider"):
        conf = tmp / f"{name}.json"
        conf.write_text(json.dumps({"connect": list(connect), "listen": list(listen), "tls": tls}))
        self.tmp, self.name, self._n = tmp, name, 0
        self.proc = subprocess.Popen([sys.executable, str(self.PEER), event, str(conf)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                     env={**os.environ, "RUST_LOG": "off"})

    def do(self, cmd: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"outsider exited: {self.proc.stderr.read()[-2000:]}")
        return json.loads(line)

    def send(self, cmd: str, **kw) -> None:
        """A command whose answer is read later with :meth:`result` (e.g. a long flood)."""
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()

    def result(self) -> dict:
        return json.loads(self.proc.stdout.readline())

    def messages_file(self, msgs: list[bytes]) -> str:
        import cbor2
        self._n += 1
        f = self.tmp / f"{self.name}-{self._n}.cbor"
        f.write_bytes(cbor2.dumps(msgs))
        return str(f)

    def stop(self) -> None:
        stop_process(self.proc, close_stdin=True)


@contextlib.contextmanager
def central_serve(tmp: Path, *events: str, venue: str = ""):
    """`gate central serve` in a subprocess on 127.0.0.1 with ``events`` created."""
    data = tmp / "central"
    for ev in events:
        subprocess.run(gate_cmd(data, "central", "event", "create", ev, *(["--venue", venue] if venue else [])),
                       check=True, capture_output=True)
    (port,) = free_ports(1)
    err = tmp / "central.err"
    with open(err, "wb") as fh:
        proc = subprocess.Popen(gate_cmd(data, "central", "serve", "--port", str(port)),
                                stdout=subprocess.DEVNULL, stderr=fh)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_serving(url + "/v1/time", proc=proc, what="central serve")
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{err.read_text()}") from None
        yield data, url
    finally:
        stop_process(proc)


def central_json(data: Path, *args: str) -> dict:
    return json.loads(subprocess.run(gate_cmd(data, "central", *args, "--json"), check=True, capture_output=True,
                                     text=True).stdout)


def enrol_gate(gdir: Path, event: str, lane: str, central: Path, url: str) -> str:
    """init + enrol + first sync (keys, tickets, trust list, bus credential); returns the device id."""
    subprocess.run(gate_cmd(gdir, "init", "--event", event, "--lane", lane), check=True, capture_output=True)
    code = central_json(central, "device", "enroll", "--event", event)["code"]
    subprocess.run(gate_cmd(gdir, "sync", "--central", url, "--enroll", code, "--once"), check=True,
                   capture_output=True)
    return json.loads(subprocess.run(gate_cmd(gdir, "bus", "status", "--json"), check=True, capture_output=True,
                                     text=True).stdout)["device_id"]
