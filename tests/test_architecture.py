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


# ------------------------------------------------------------------ one composition root
#
# Who may wire: only gate/app/compose.py builds the running things (a Lane, its
# LaneRunner, the LinkMonitor, the SyncLoop, the venue bus service) and connects
# them (the lane's link, append hooks and bus, the relay's fault hook, the bus's
# state hooks, the sync loop's status headers). Who may open: only compose (and
# Gate itself) calls Gate.open / Gate.init or constructs a Gate; a worker that
# needs its own connection asks an open gate (gate.reopen). Who may touch keys:
# their file names are spelled only in gate/keyfiles.py, keys are created only
# there (called only by Gate.init), and nothing "loads or creates".

COMPOSE = "gate.app.compose"
BUILT_BY_COMPOSE = {"Lane", "LaneRunner", "LinkMonitor", "SyncLoop", "BusService", "for_gate"}
DEFINED_IN = {"SyncLoop": "sync.loop", "BusService": "sync.bus_service", "LinkMonitor": COMPOSE,
              "LaneRunner": COMPOSE, "Lane": "gate.lane", "for_gate": "sync.loop"}
WIRED_ATTRS = {"link", "appended", "bus", "when_alone", "headers"}
HOOK_LISTS = {"appended", "on_state"}  # hook lists only compose appends to (on_fault: a relay's)


def _called(node: ast.Call) -> str | None:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _targets(node) -> list:
    if isinstance(node, ast.Assign):
        out = []
        for t in node.targets:
            out += list(t.elts) if isinstance(t, (ast.Tuple, ast.List)) else [t]
        return out
    if isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        return [node.target]
    return []


def wiring_outside_compose(module: str, tree: ast.AST) -> list[str]:
    """Where ``module`` builds or connects what only the composition root may."""
    if module == COMPOSE:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _called(node)
            if name in BUILT_BY_COMPOSE and DEFINED_IN.get(name) != module:
                found.append(f"line {node.lineno}: builds {name}")
            if isinstance(node.func, ast.Name) and node.func.id == "open_bus" and module != "sync.bus_service":
                found.append(f"line {node.lineno}: opens a bus service")
            if name == "append" and isinstance(node.func, ast.Attribute) \
                    and isinstance(node.func.value, ast.Attribute):
                hooks = node.func.value
                owner = ast.unparse(hooks.value)
                if hooks.attr in HOOK_LISTS and owner != "self" or hooks.attr == "on_fault" and "relay" in owner:
                    found.append(f"line {node.lineno}: hooks into {owner}.{hooks.attr}")
        for t in _targets(node):
            if isinstance(t, ast.Subscript):
                t = t.value
            if isinstance(t, ast.Attribute) and t.attr in WIRED_ATTRS and ast.unparse(t.value) != "self":
                found.append(f"line {node.lineno}: sets {ast.unparse(t)}")
    return found


def gate_opened_outside_compose(module: str, tree: ast.AST) -> list[str]:
    """Where ``module`` opens, sets up or constructs a Gate itself."""
    if module in (COMPOSE, "gate.appliance"):
        return []
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in ("open", "init") and ast.unparse(f.value) == "Gate":
            found.append(f"line {node.lineno}: Gate.{f.attr}()")
        if isinstance(f, ast.Name) and f.id == "Gate":
            found.append(f"line {node.lineno}: Gate()")
    return found


KEY_NAMES = {"device.key", "data.key"}
KEY_CREATORS = {"create_ed25519": "gate.keyfiles", "create_data_key": "gate.keyfiles",
                "create_missing": "gate.appliance"}


def keys_outside_keyfiles(module: str, tree: ast.AST) -> list[str]:
    """Key file names spelled, keys created, or "load or create" anywhere but its one place."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in KEY_NAMES and module != "gate.keyfiles":
            found.append(f"line {node.lineno}: spells {node.value!r}")
        if isinstance(node, (ast.FunctionDef, ast.Name, ast.Attribute)):
            name = getattr(node, "name", None) or getattr(node, "id", None) or getattr(node, "attr", None)
            if name and name.startswith("load_or_create"):
                found.append(f"line {node.lineno}: {name}")
        if isinstance(node, ast.Call) and _called(node) in KEY_CREATORS \
                and KEY_CREATORS[_called(node)] != module:
            found.append(f"line {node.lineno}: creates a key ({_called(node)})")
    return found


PRODUCT = [p for pkg in PACKAGES for p in _modules(pkg)]
PRODUCT_IDS = [_module_name(p) for p in PRODUCT]


@pytest.mark.parametrize("path", PRODUCT, ids=PRODUCT_IDS)
def test_only_the_composition_root_wires(path):
    # The demo used to attach the bus by hand (lane.appended[:] = ..., lane.link
    # = ...), the composer round-tripped the link state through a lambda into the
    # sync loop: any such line outside gate/app/compose.py fails here.
    assert wiring_outside_compose(_module_name(path), ast.parse(path.read_text())) == []


@pytest.mark.parametrize("path", PRODUCT, ids=PRODUCT_IDS)
def test_only_the_composition_root_opens_a_gate(path):
    # Gate was opened in six places with different rules (the sync loop, the
    # staff UI, `gate sync`, ...); now compose.open_gate / init_gate, or an open
    # gate's reopen().
    assert gate_opened_outside_compose(_module_name(path), ast.parse(path.read_text())) == []


@pytest.mark.parametrize("path", PRODUCT, ids=PRODUCT_IDS)
def test_key_files_have_one_home(path):
    # "device.key" was spelled six times and created anew on read paths in four.
    assert keys_outside_keyfiles(_module_name(path), ast.parse(path.read_text())) == []


@pytest.mark.parametrize("snippet,checker", [
    ("lane.appended[:] = [svc.appended]", wiring_outside_compose),   # the demo, before
    ("lane.link, lane.bus = svc.state, svc", wiring_outside_compose),
    ("sync.link = lambda: lane.link().value", wiring_outside_compose),
    ("runner.lane.appended.append(svc.appended)", wiring_outside_compose),
    ("relay.on_fault.append(lane.relay_fault)", wiring_outside_compose),
    ("svc = open_bus(g, listen=[], peers=[])", wiring_outside_compose),
    ("loop = SyncLoop.for_gate(g, url)", wiring_outside_compose),
    ("lane = Lane(g, relay=r, sensor=s, clock=c)", wiring_outside_compose),
    ("self.db = Gate.open(lane.gate.data_dir, now=clock())", gate_opened_outside_compose),  # the TUI, before
    ("g = Gate.init(d, event=e)", gate_opened_outside_compose),
    ("k = load_or_create_ed25519(gate.data_dir / 'keys' / 'device.key')", keys_outside_keyfiles),
    ("k = sealed.create_data_key(p)", keys_outside_keyfiles),
])
def test_the_rules_catch_what_they_mean(snippet, checker):
    # Each rule fails on the code it exists to stop, in any module but its own.
    assert checker("gate.app.demo", ast.parse(snippet)) != []


@pytest.mark.parametrize("snippet", [
    "lane.observers.append(app.on_event)", "lane.on_fault.append(ui.show_fault)",  # observing is free
    "self.link = link", "runner.start_bus(on_state=print)", "runner = build_lane(spec, gate)",
    "g = open_gate(args.data)", "other = gate.reopen()",
])
def test_the_rules_leave_observers_and_callers_alone(snippet):
    tree = ast.parse(snippet)
    assert wiring_outside_compose("tui.app", tree) == gate_opened_outside_compose("tui.app", tree) == []
