"""A real pretix server for the tests: pretix in its own venv outside the
repository (it pins Django; AGPL: installed at test time, never copied),
SQLite with IMMEDIATE transactions and a timeout, debug off, a dummy mail
backend. The migrated database is made once and copied per test module."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests

from ports import free_port, wait_until_serving

PRETIX_SPEC = os.environ.get("GATE_PRETIX_SPEC", "pretix==2026.8.*")
CACHE = Path(os.environ.get("GATE_PRETIX_CACHE", Path.home() / ".cache" / "gate-tests" / "pretix"))
HERE = Path(__file__).resolve().parent

SETTINGS = '''from pretix.settings import *  # noqa
from pretix.settings import DATABASES
DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 30}
EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
'''


# One venv per pretix spec and Python version, shared by every test run on this
# machine (several worktrees run the tests at once). It is built in a temporary
# directory under an exclusive lock and renamed into place complete, with a
# completion marker written before the rename: a run never sees a half-built
# venv, never deletes one another run is using, and never builds it twice at
# once. Older harnesses used CACHE/venv and CACHE/migrated.sqlite3 (rebuilt
# without a lock); those paths are left alone so runs of old checkouts are safe.
_KEY = hashlib.sha256(f"{PRETIX_SPEC}|{sys.version_info[0]}.{sys.version_info[1]}".encode()).hexdigest()[:12]
VENV = CACHE / f"venv-{_KEY}"
MIGRATED = CACHE / f"migrated-{_KEY}.sqlite3"
COMPLETE = ".complete"  # the marker inside VENV


def _python() -> Path:
    return VENV / "bin" / "python"


@contextlib.contextmanager
def _cache_lock():
    """Exclusive lock over building anything in CACHE (flock: released by the
    kernel if the holder dies, so a killed run never leaves the cache locked)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_installed() -> Path:
    """pretix in its own venv (cached); skips the tests when it cannot be installed."""
    py = _python()
    if (VENV / COMPLETE).exists():  # complete venvs are never changed: no lock needed to use one
        return py
    with _cache_lock():
        if (VENV / COMPLETE).exists():  # another run built it while we waited
            return py
        tmp = Path(tempfile.mkdtemp(prefix=f".build-venv-{_KEY}-", dir=CACHE))
        try:
            # no pip of its own (ensurepip takes seconds): our pip installs into it (pip --python)
            subprocess.run([_base_python(), "-m", "venv", "--without-pip", str(tmp)], check=True,
                           capture_output=True, timeout=120)
            subprocess.run([sys.executable, "-m", "pip", "--python", str(tmp / "bin" / "python"), "install", "-q",
                            "--disable-pip-version-check", PRETIX_SPEC],
                           check=True, capture_output=True, text=True, timeout=900)
            (tmp / COMPLETE).write_text(PRETIX_SPEC + "\n")
            os.chmod(tmp, 0o755)  # mkdtemp made it private; a venv is readable like any other
            if VENV.exists():  # debris of a build killed before this layout's rename (we hold the lock)
                shutil.rmtree(VENV)
            os.rename(tmp, VENV)  # atomic: VENV appears complete or not at all
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = getattr(exc, "stderr", "") or ""
            if isinstance(detail, bytes):
                detail = detail.decode(errors="replace")
            pytest.skip(f"cannot install {PRETIX_SPEC} for the pretix tests (no package index?): "
                        f"{detail.strip().splitlines()[-1] if detail.strip() else exc}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename
    return py


def _base_python() -> str:
    """The interpreter our venv was made from (pretix gets a venv of its own)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return base


def _env(workdir: Path) -> dict:
    (workdir / "mod").mkdir(parents=True, exist_ok=True)
    (workdir / "mod" / "gate_pretix_settings.py").write_text(SETTINGS)
    return {**os.environ, "PRETIX_CONFIG_FILE": str(workdir / "pretix.cfg"),
            "PYTHONPATH": str(workdir / "mod"), "DJANGO_SETTINGS_MODULE": "gate_pretix_settings"}


def _config(workdir: Path, port: int, db: Path) -> None:
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    (workdir / "pretix.cfg").write_text(
        f"[pretix]\ninstance_name=gate-tests\nurl=http://127.0.0.1:{port}\ncurrency=EUR\n"
        f"datadir={workdir / 'data'}\n\n[database]\nbackend=sqlite3\nname={db}\n\n"
        "[django]\ndebug=off\n\n[mail]\nfrom=pretix@localhost\n")


def migrated_db(py: Path) -> Path:
    """pretix's migrated empty database (migrating takes minutes: once per machine),
    made under the cache lock in a temporary directory and renamed into place."""
    if MIGRATED.exists():
        return MIGRATED
    with _cache_lock():
        if MIGRATED.exists():
            return MIGRATED
        work = Path(tempfile.mkdtemp(prefix=".migrate-", dir=CACHE))
        try:
            db = work / "db.sqlite3"
            _config(work, 8000, db)
            subprocess.run([str(py), "-m", "pretix", "migrate"], cwd=work, env=_env(work), check=True,
                           capture_output=True, timeout=900)
            os.replace(db, MIGRATED)  # the work dir is inside CACHE: one file system, an atomic rename
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return MIGRATED


class PretixServer:
    def __init__(self, workdir: Path, positions: int):
        py = ensure_installed()
        snap = migrated_db(py)
        self.work = workdir
        self.port = free_port()
        db = workdir / "db.sqlite3"
        shutil.copy(snap, db)
        _config(workdir, self.port, db)
        env = _env(workdir)
        out = subprocess.run([str(py), str(HERE / "seed.py"), str(positions)], cwd=workdir, env=env,
                             capture_output=True, text=True, timeout=600, check=True)
        self.seed = json.loads(out.stdout.strip().splitlines()[-1])
        self.log = open(workdir / "server.log", "w")
        self.proc = subprocess.Popen([str(py), "-m", "pretix", "runserver", f"127.0.0.1:{self.port}",
                                      "--noreload"], cwd=workdir, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            wait_until_serving(f"{self.base}/api/v1/", proc=self.proc, what="pretix runserver")
        except AssertionError as exc:
            self.stop()
            raise RuntimeError(f"{exc}; see {workdir / 'server.log'}") from None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, event: str) -> str:
        ev = self.seed["events"][event]
        return f"pretix+{self.base}/{self.seed['organizer']}/{ev['slug']}?list={ev['list']}"

    def team_get(self, path: str, **params) -> list[dict]:
        """Read back with the team token (the device profile may not list check-ins)."""
        url = f"{self.base}/api/v1/organizers/{self.seed['organizer']}{path}"
        out = []
        params = {"page_size": 50, **params}
        while url:
            r = requests.get(url, params=params, headers={"Authorization": f"Token {self.seed['team_token']}"},
                             timeout=30)
            r.raise_for_status()
            doc = r.json()
            out += doc["results"]
            url, params = doc.get("next"), None
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
