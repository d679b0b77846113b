"""A throwaway PostgreSQL cluster for tests and benchmarks, run as a plain
process: initdb/pg_ctl from the Debian package (scripts/sysdeps.sh installs
it), as the ``postgres`` user when we are root (root cannot run postgres),
a Unix socket in a temp dir, TCP off, a free port number, stopped at the end."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from ports import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _bin() -> Path:
    if (PG_BIN / "initdb").exists():
        return PG_BIN
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    raise RuntimeError("PostgreSQL is not installed: run scripts/sysdeps.sh (Debian package 'postgresql')")


class PgCluster:
    def __init__(self, *, fast: bool = True):
        self.bin = _bin()
        self.root = Path(tempfile.mkdtemp(prefix="gate-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else getpass.getuser()
        self.fast = fast
        self.sock.mkdir()
        if self.as_root:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
            os.chmod(self.root, 0o755)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60,
                              stdin=subprocess.DEVNULL)

    def start(self) -> "PgCluster":
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-A", "trust", "--no-sync", "-U", self.user)
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses='' -c max_connections=200"
        if self.fast:  # throwaway data: no fsync
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        else:  # benchmarks: SQLite WAL + synchronous=NORMAL durability (recent commits may go, no corruption)
            opts += " -c synchronous_commit=off -c shared_buffers=256MB -c max_wal_size=4GB"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        # a session's cluster holds a database per central test (a gigabyte or more): removing it
        # takes seconds of disk time that nobody needs to wait for, so it goes on in the background
        subprocess.Popen(["rm", "-rf", "--", str(self.root)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{dbname}?host={self.sock}&port={self.port}"

    def create_db(self, name: str | None = None) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg
        name = name or "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(host=str(self.sock), port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def __enter__(self) -> "PgCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.destroy()
