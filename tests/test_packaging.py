"""A non-editable install works on its own: the wheel carries the package data
(the demo's face photos) and `gate demo --headless` runs from it, outside the
repository, importing nothing from the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def test_wheel_ships_assets_and_the_demo_runs_from_it(tmp_path):
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # build from a clean copy: a stale build/ in the checkout would leak old modules into the wheel
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "gate-data",
        "demo-data"))
    # --no-build-isolation: build with this venv's setuptools, so no index is consulted
    subprocess.run(PIP + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
                   check=True, capture_output=True, text=True, timeout=300, cwd=elsewhere)
    (wheel,) = wheels.glob("gate_appliance-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # package data left out of pyproject (or a glob that misses them) fails here
    photos = {Path(n).name for n in names if n.startswith("gate/assets/faces/")}
    assert {"obama1.jpg", "obama2.jpg", "biden1.jpg", "README.md"} <= photos
    assert not any(n.startswith(("tests/", "bench/", "docs/")) for n in names)
    # the central's schema revisions run from the installed package (the demo below opens a central)
    schema = {n for n in names if n.startswith("sync/central/schema/")}
    assert {"sync/central/schema/env.py", "sync/central/schema/script.py.mako",
            "sync/central/schema/versions/central_1_schema.py",
            "sync/central/schema/versions/ops_1_accounts_sessions_status.py"} <= schema, sorted(schema)
    revisions = {Path(n).name for n in schema if n.startswith("sync/central/schema/versions/")}
    shipped = {p.name for p in (ROOT / "sync" / "central" / "schema" / "versions").glob("*.py")}
    assert revisions == shipped  # every revision file, none left behind
    models = {Path(n).name for n in names if n.startswith("hardware/models/wechat_qrcode/")}
    assert {"detect.prototxt", "detect.caffemodel", "sr.prototxt", "sr.caffemodel", "LICENSE"} <= models

    subprocess.run(PIP + ["install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300, cwd=elsewhere)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    code = ("import sys, gate, gate.app.demo as d; print('GATE', gate.__file__); print('ASSETS', d.ASSETS); "
            "from gate.app.cli import main; sys.exit(main(['demo', '--headless']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    # the editable install of this checkout is on sys.path too: the import must still come from the wheel
    gate_file = Path(next(ln for ln in lines if ln.startswith("GATE ")).split(" ", 1)[1])
    assets = Path(next(ln for ln in lines if ln.startswith("ASSETS ")).split(" ", 1)[1])
    assert gate_file.is_relative_to(target) and assets.is_relative_to(target)
    assert not gate_file.is_relative_to(ROOT)
    # the demo's end: its summary and the reconciliation finding the offline double admission
    assert any(ln.startswith("summary: ACCEPT") for ln in lines), proc.stdout[-2000:]
    assert "double admissions found by reconciliation: 1; chains intact" in proc.stdout
    assert "FACE_MISMATCH" in proc.stdout  # the face photos were found and used
