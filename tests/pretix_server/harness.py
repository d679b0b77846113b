"""A real pretix server for the tests: pretix in its own venv outside the
repository (it pins Django; AGPL: installed at test time, never copied),
SQLite with IMMEDIATE transactions and a timeout, debug off, a dummy mail
backend. The migrated database is made once and copied per test module."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

PRETIX_SPEC = os.environ.get("GATE_PRETIX_SPEC", "pretix==2026.8.*")
CACHE = Path(os.environ.get("GATE_PRETIX_CACHE", Path.home() / ".cache" / "gate-tests" / "pretix"))
HERE = Path(__file__).resolve().parent

SETTINGS = '''from pretix.settings import *  # noqa
from pretix.settings import DATABASES
DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 30}
EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
'''


def _python() -> Path:
    return CACHE / "venv" / "bin" / "python"


def ensure_installed() -> Path:
    """pretix in its own venv (cached); skips the tests when it cannot be installed."""
    py = _python()
    if py.exists() and (CACHE / "venv" / ".installed").exists():
        return py
    CACHE.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(CACHE / "venv", ignore_errors=True)
    try:
        subprocess.run([_base_python(),
                        "-m", "venv", str(CACHE / "venv")], check=True, capture_output=True, timeout=120)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", PRETIX_SPEC],
                       check=True, capture_output=True, text=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", "") or ""
        pytest.skip(f"cannot install {PRETIX_SPEC} for the pretix tests (no package index?): "
                    f"{detail.strip().splitlines()[-1] if detail.strip() else exc}")
    (CACHE / "venv" / ".installed").touch()
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
    snap = CACHE / "migrated.sqlite3"
    if snap.exists():
        return snap
    work = CACHE / "migrate-work"
    shutil.rmtree(work, ignore_errors=True)
    db = work / "db.sqlite3"
    _config(work, 8000, db)
    subprocess.run([str(py), "-m", "pretix", "migrate"], cwd=work, env=_env(work), check=True,
                   capture_output=True, timeout=900)
    shutil.copy(db, snap)
    return snap


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PretixServer:
    def __init__(self, workdir: Path, positions: int):
        py = ensure_installed()
        snap = migrated_db(py)
        self.work = workdir
        self.port = _free_port()
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
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/api/v1/", timeout=2).status_code in (200, 401):
                    return
            except requests.RequestException:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"pretix did not start; see {workdir / 'server.log'}")

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
