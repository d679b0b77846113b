from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GATE_BIN = Path(sys.executable).with_name("gate")


def run_gate(data: Path | None, *args: str, input: str | None = None, check: bool = True,
             timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed `gate` command as an operator would."""
    cmd = [str(GATE_BIN)] + (["--data", str(data)] if data is not None else []) + list(args)
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def vectors() -> dict:
    """The shipped GT1 conformance scenarios (tests/vectors/, see PROVENANCE.md there)."""
    return json.loads((ROOT / "tests" / "vectors" / "gt1-scenarios.json").read_text())


@pytest.fixture
def issuer():
    from crypto.issuer import Issuer
    return Issuer("evt-test")


@pytest.fixture
def gate(tmp_path, issuer):
    """A real gate on a real SQLite file, trusting the test issuer."""
    from gate.appliance import Gate
    g = Gate.init(tmp_path / "gate", event=issuer.event)
    g.trust(issuer.keyring())
    yield g
    g.close()


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ------------------------------------------------------------------ central backends


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL cluster for the session (tests/pg.py)."""
    from pg import PgCluster
    cluster = PgCluster().start()
    yield cluster
    cluster.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def central_db(request, tmp_path):
    """The database URL of a fresh central, on each backend: every central test
    runs on both. SQLite: None (the default file under the central's --data)."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_cluster").create_db()


@contextlib.contextmanager
def central_for(tmp_path: Path, db: str | None, event: str, *, window_s: float = 3600.0):
    """A real central (store on ``db``: SQLite or a PostgreSQL URL) serving HTTP on
    127.0.0.1 in this process, with ``event`` at venue "arena", running from
    ``window_s`` ago to ``window_s`` from now: yields (store, server)."""
    import time

    from sync.central.app import ServerThread, create_app
    from sync.central.store import CentralStore

    store = CentralStore(tmp_path / "central", db)
    now = time.time()
    store.create_event(event, venue="arena", starts_at=now - window_s, ends_at=now + window_s)
    server = ServerThread(create_app(store)).start()
    try:
        yield store, server
    finally:
        server.stop()
        store.close()


def static_gate(data: Path, event: str, *, n: int = 6, now: float) -> list:
    """Set up a gate in ``data`` for ``event`` (lane north-1) with ``n`` listed static
    tickets of a fixed issuer key (ticket ids 0101…, 0202…, …): their wallets, codes
    valid at any time. The gate is closed again."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from crypto.issuer import Issuer, ticket_record
    from gate import ledger
    from gate.appliance import Gate

    issuer = Issuer(event, keys=[Ed25519PrivateKey.from_private_bytes(bytes(range(32)))])
    g = Gate.init(data, event=event, lane="north-1")
    g.trust(issuer.keyring())
    wallets = [issuer.mint(ticket_id=bytes([i + 1]) * 16, rotating=False) for i in range(n)]
    ledger.import_tickets(g.conn, write_jsonl(data.parent / f"{data.name}-tickets.jsonl",
                                              [ticket_record(w) for w in wallets]),
                          event=event, data_key=g.data_key, now=now)
    g.close()
    return wallets
