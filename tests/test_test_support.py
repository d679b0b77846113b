"""The test suite's own machinery: free ports from the OS, the pretix venv cache that
several test runs on one machine share, and no dead imports or helpers in tests/
and bench/ (a helper nobody calls is a check nobody makes)."""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT
from ports import free_port, free_ports

TESTS = ROOT / "tests"


def test_free_ports_are_distinct_and_free():
    ports = free_ports(20)
    assert len(set(ports)) == 20 and all(1024 <= p < 65536 for p in ports)
    for p in ports + [free_port()]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))  # nobody holds it: the caller can start its server there


# ------------------------------------------------------------------ the pretix cache


def _wheel(where: Path) -> Path:
    """A minimal pure-Python wheel built here (installing it needs no package index)."""
    files = {"fakepretix/__init__.py": b"OK = 'installed'\n",
             "fakepretix-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: fakepretix\nVersion: 1.0\n",
             "fakepretix-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                                               b"Tag: py3-none-any\n"}
    record = "".join(f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).decode().rstrip('=')},"
                     f"{len(d)}\n" for p, d in files.items()) + "fakepretix-1.0.dist-info/RECORD,,\n"
    path = where / "fakepretix-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
        z.writestr("fakepretix-1.0.dist-info/RECORD", record)
    return path


_ENSURE = """
import json, os, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
start = sys.argv[2]
while not os.path.exists(start):  # all runs begin together
    time.sleep(0.001)
from pretix_server import harness
py = harness.ensure_installed()
ok = subprocess.run([str(py), "-c", "import fakepretix; print(fakepretix.OK)"], capture_output=True, text=True)
print(json.dumps({"venv": str(harness.VENV), "inode": os.stat(harness.VENV).st_ino, "import": ok.stdout.strip(),
                  "marker": os.path.exists(os.path.join(harness.VENV, harness.COMPLETE))}))
"""


@pytest.mark.slow
def test_pretix_venv_is_built_once_under_a_lock_while_other_runs_wait_and_use_it(tmp_path):
    # Three test runs asking for the cached venv at the same moment: one builds it (in a temporary
    # directory, renamed into place complete), the others wait on the lock and use that same venv.
    # The old harness had each run delete and rebuild it under the others ("No module named
    # django"): different inodes or a failed import fail here. A legacy CACHE/venv that old
    # checkouts still use is left alone, and debris of a killed build of this layout is replaced.
    cache = tmp_path / "cache"
    wheel = _wheel(tmp_path)
    env = {**os.environ, "GATE_PRETIX_CACHE": str(cache), "GATE_PRETIX_SPEC": str(wheel)}
    legacy = cache / "venv"
    legacy.mkdir(parents=True)
    (legacy / "in-use-by-an-old-checkout").write_text("x")
    key = hashlib.sha256(f"{wheel}|{sys.version_info[0]}.{sys.version_info[1]}".encode()).hexdigest()[:12]
    debris = cache / f"venv-{key}"
    debris.mkdir()  # a build of this layout killed before its marker: no marker, so not complete
    start = tmp_path / "go"
    runs = [subprocess.Popen([sys.executable, "-c", _ENSURE, str(TESTS), str(start)], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    start.touch()
    outs = [r.communicate(timeout=600) for r in runs]
    assert all(r.returncode == 0 for r in runs), [err[-2000:] for _, err in outs]
    got = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert {g["venv"] for g in got} == {str(debris)}
    assert len({g["inode"] for g in got}) == 1  # one venv, built once, used by all three
    assert all(g["import"] == "installed" and g["marker"] for g in got), got
    assert (legacy / "in-use-by-an-old-checkout").exists()
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".build-")]  # no temp dirs left


# ------------------------------------------------------------------ no dead code in tests/ and bench/


def _sources() -> list[Path]:
    return sorted(p for d in (TESTS, ROOT / "bench") for p in d.rglob("*.py")
                  if "data" not in p.relative_to(ROOT).parts)


def _used_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)  # fixtures are asked for by parameter name
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            names.add(node.value)  # getattr(mod, "name"), monkeypatch targets, string annotations
    return names


def test_no_unused_imports_or_helpers_in_tests_and_bench():
    # an import nothing uses, or a module-level helper nobody calls (a check that never runs),
    # fails here; '# noqa' on the import line keeps a deliberate re-export
    # parsed on a fresh thread: CPython 3.11's AST validator can trip on the recursion counter of
    # a thread where earlier tests caught RecursionErrors ("AST constructor recursion depth mismatch")
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as pool:
        trees = pool.submit(lambda: {p: ast.parse(p.read_text(), str(p)) for p in _sources()}).result()
    everywhere = set().union(*(_used_names(t) for t in trees.values()))
    unused = []
    for path, tree in trees.items():
        lines = path.read_text().splitlines()
        here = _used_names(tree)
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                    continue
                if "noqa" in lines[node.lineno - 1] and "E402" not in lines[node.lineno - 1]:
                    continue
                for alias in node.names:
                    name = alias.asname or alias.name.split(".")[0]
                    if name not in here:
                        unused.append(f"{path.relative_to(ROOT)}:{node.lineno}: import {name}")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name.startswith(("test_", "pytest_")) or node.decorator_list:
                    continue
                if node.name not in everywhere:
                    unused.append(f"{path.relative_to(ROOT)}:{node.lineno}: def {node.name}")
    assert not unused, unused
