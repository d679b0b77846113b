"""The shape of the code, enforced: the core at the bottom, one composition
root, no cycles between packages, no clock reads in the core.

Each core module is its own case (harlequin's import-hygiene test is the
model): a new import of an adapter anywhere in the core — even a lazy one
inside a function — fails the case for that module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gate", "crypto", "hardware", "sync", "tui")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _modules(pkg: str) -> list[Path]:
    return sorted(p for p in (ROOT / pkg).rglob("*.py"))


CORE = [p for p in _modules("gate") if "app" not in p.relative_to(ROOT / "gate").parts] + _modules("crypto")
CORE_IDS = [_module_name(p) for p in CORE]

# What the core may import: itself, crypto, the standard library and these.
CORE_THIRD_PARTY = {"cbor2", "cryptography", "sqlite_utils"}
FORBIDDEN_FOR_CORE = ("hardware", "sync", "tui", "gate.app", "cv2", "numpy", "textual", "requests",
                      "fastapi", "uvicorn", "zenoh", "face_recognition", "dlib", "pyzbar", "zxingcpp",
                      "sqlalchemy", "psycopg", "segno", "serial")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _hits(names: set[str], prefixes) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("path", CORE, ids=CORE_IDS)
def test_core_module_imports_only_the_core(path):
    # Fails when a core module imports an adapter or a shell, even lazily.
    names = _imports(path)
    assert _hits(names, FORBIDDEN_FOR_CORE) == []
    tops = {n.split(".")[0] for n in names}
    third_party = {t for t in tops if t not in sys.stdlib_module_names and t not in ("gate", "crypto")}
    assert third_party <= CORE_THIRD_PARTY, f"{_module_name(path)} imports {third_party - CORE_THIRD_PARTY}"


@pytest.mark.parametrize("path", CORE, ids=CORE_IDS)
def test_core_module_loads_nothing_heavy(path):
    # The runtime twin of the static check: importing the module in a fresh
    # interpreter pulls in none of the adapters or heavy libraries.
    mod = _module_name(path)
    code = (f"import sys, {mod}; bad = {FORBIDDEN_FOR_CORE!r}; "
            "print(sorted(m for m in sys.modules if any(m == b or m.startswith(b + '.') for b in bad)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


CLOCK_CALLS = {("time", "time"), ("time", "time_ns"), ("time", "monotonic"), ("time", "monotonic_ns"),
               ("time", "perf_counter"), ("time", "localtime"), ("time", "gmtime"), ("time", "strftime"),
               ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today")}


@pytest.mark.parametrize("path", CORE, ids=CORE_IDS)
def test_core_module_never_reads_the_clock(path):
    # `now` is an argument in the core; a call like time.time() or
    # datetime.now() anywhere in it (or `from time import time`) fails.
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else None
            if (name, node.func.attr) in CLOCK_CALLS:
                found.append(f"line {node.lineno}: {name}.{node.func.attr}()")
        if isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
            found += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names
                      if (node.module, a.name) in CLOCK_CALLS or a.name in ("datetime", "date")]
    assert found == []


def _package_graph() -> dict[str, set[str]]:
    """Edges between top-level packages (gate.app counted on its own)."""
    def unit(mod: str) -> str:
        return "gate.app" if mod == "gate.app" or mod.startswith("gate.app.") else mod.split(".")[0]

    graph: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in _modules(pkg):
            src = unit(_module_name(path))
            for name in _imports(path):
                dst = unit(name)
                if dst in (*PACKAGES, "gate.app") and dst != src:
                    graph.setdefault(src, set()).add(dst)
    return graph


def test_no_cycles_between_packages():
    # A cycle (e.g. tui importing gate.app while gate.app imports tui) fails,
    # naming the path round it.
    graph = _package_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path + [node, nxt]))
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_only_the_shells_reach_the_adapters():
    # In gate/, only gate/app may import hardware/, sync/ or tui/; and the
    # adapters never import the shells.
    graph = _package_graph()
    assert not graph.get("gate", set()) & {"hardware", "sync", "tui", "gate.app"}
    for pkg in ("hardware", "sync", "tui", "crypto"):
        assert "gate.app" not in graph.get(pkg, set()), f"{pkg} imports gate.app"
    assert graph.get("crypto", set()) <= set(), "crypto imports another package"


def test_one_composition_root_builds_every_lane():
    # The CLI, the staff UI and the demo build lanes through compose.build_lane:
    # nobody else constructs a Lane (tests may).
    builders = []
    for pkg in PACKAGES:
        for path in _modules(pkg):
            if path == ROOT / "gate" / "app" / "compose.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Lane":
                    builders.append(f"{_module_name(path)}:{node.lineno}")
    assert builders == []
