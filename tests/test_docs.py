"""docs/ is the product's specification: its worked example must be what the code
produces, and what it says a gate answers must be what `gate` answers."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import ROOT, json_lines, run_gate

DOCS = ROOT / "docs"
EXAMPLE = DOCS / "gt1_example.py"


def _example_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("gt1_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_worked_examples_are_what_the_code_produces():
    # a change to the encoders (claim order, header, base45, record fields) that docs/ does not follow
    # fails here
    printed = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                             check=True).stdout
    ex = _example_module()
    for name, begin, end in (("gt1.md", ex.BEGIN, ex.END), ("scanlog.md", ex.LOG_BEGIN, ex.LOG_END)):
        block = printed[printed.index(begin):printed.index(end) + len(end)]
        assert block in (DOCS / name).read_text(), f"docs/{name} is stale: run python docs/gt1_example.py --write"


def test_scanlog_example_matches_a_real_gate_and_a_real_central_accepts_its_upload(tmp_path):
    """The documented record has the fields a real gate writes, and the documented upload body
    (exact CBOR bytes base64'd, signed head) is stored by the reference central."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from crypto import gt1
    from sync.central.store import CentralStore

    ex = _example_module()
    rec, data, h, body = ex.scan_example()
    ring, tickets, qr = ex.write_files(tmp_path / "files")
    gate_dir = tmp_path / "gate"
    run_gate(gate_dir, "init", "--event", ex.EVENT, "--zones", "A")
    run_gate(gate_dir, "keys", "trust", str(ring))
    run_gate(gate_dir, "ledger", "import", str(tickets))
    run_gate(gate_dir, "verify", "--json", "--now", str(ex.NOW), "--", qr)
    (real,) = json_lines(run_gate(gate_dir, "log", "--json").stdout)
    real.pop("hash")
    assert real.pop("device").startswith("gate-")
    assert real == {k: (v.hex() if isinstance(v, bytes) else v) for k, v in rec.items() if k != "device"}

    store = CentralStore(tmp_path / "central")
    try:
        store.create_event(ex.EVENT)
        code = store.enrol_code(ex.EVENT)
        pub = gt1.raw_public(Ed25519PrivateKey.from_private_bytes(ex.DEVICE_SEED))
        store.register(code, ex.DEVICE_ID, pub)
        assert store.store_scans(ex.EVENT, ex.DEVICE_ID, pub, body) == {"stored_through": 1}
        assert store.store_scans(ex.EVENT, ex.DEVICE_ID, pub, body) == {"stored_through": 1}  # idempotent
        assert store.stored_through(ex.DEVICE_ID) == (1, h)
    finally:
        store.close()


def test_gt1_worked_example_verifies_as_documented(tmp_path):
    ex = _example_module()
    ring, tickets, qr = ex.write_files(tmp_path / "files")
    data = tmp_path / "gate"
    run_gate(data, "init", "--event", ex.EVENT, "--zones", "A")
    run_gate(data, "keys", "trust", str(ring))
    run_gate(data, "ledger", "import", str(tickets))
    out = json_lines(run_gate(data, "verify", "--dry-run", "--json", "--now", str(ex.NOW), "--", qr).stdout)
    assert out == [ex.expected_verdict()]
    doc = (DOCS / "gt1.md").read_text()
    assert json.dumps(out[0], separators=(",", ":")) in doc
    late = json_lines(run_gate(data, "verify", "--dry-run", "--json", "--now", str(ex.NOW + 45), "--", qr).stdout)
    assert late[0]["reason"] == "STALE_CODE"


def test_gt1_verification_snippet_runs_on_the_example():
    """The Python snippet in docs/gt1.md verifies the example code, and fails on a forged one."""
    import pytest
    from cryptography.exceptions import InvalidSignature

    ex = _example_module()
    doc = (DOCS / "gt1.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    qr = ex.objects()[-1]
    exec(compile(snippet, "docs/gt1.md", "exec"), {"qr_text": qr})
    from crypto import gt1
    other = gt1.present(ex.objects()[3], holder_key=ex.objects()[1], now=ex.NOW)  # proof by the issuer key
    with pytest.raises(InvalidSignature):
        exec(compile(snippet, "docs/gt1.md", "exec"), {"qr_text": other})


def _repo_files():
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    return [ROOT / f for f in out if (ROOT / f).is_file()]


def test_every_environment_variable_read_is_in_the_readme():
    # a new os.environ / getenv read without a README line fails here
    pattern = re.compile(r"""(?:os\.environ(?:\.get|\.setdefault|\.pop)?\(\s*|os\.environ\[\s*|getenv\(\s*)"""
                         r"""["']([A-Z][A-Z0-9_]*)["']""")
    names = set()
    for path in _repo_files():
        if path.suffix == ".py":
            names |= set(pattern.findall(path.read_text(errors="replace")))
    assert {"GATE_DATA", "GATE_PRETIX_SPEC"} <= names  # the scan itself works
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Environment variables"):]
    missing = sorted(n for n in names if f"`{n}`" not in section)
    assert not missing, f"add these to README.md, 'Environment variables': {missing}"


def test_the_repository_stands_on_its_own():
    """No file points outside the checkout for the contract or the vectors."""
    banned = ("../" + "shared", "GATE_" + "SHARED", "DESIGN" + " §")
    hits = [f"{p.relative_to(ROOT)}: {b}" for p in _repo_files() if p.suffix in (".py", ".md", ".toml", ".sh", ".json", "")
            for b in banned if b in p.read_text(errors="replace")]
    assert not hits, hits


def test_links_between_docs_resolve():
    """Every relative link in README.md and docs/*.md names a file that exists (and a heading
    that exists, for #anchors): a renamed doc or section fails here."""
    def anchors(text: str) -> set[str]:
        return {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", text, re.M)}

    broken = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and dest.is_file() and anchor not in anchors(dest.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
