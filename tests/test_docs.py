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


def test_gt1_worked_example_is_what_the_code_mints():
    # a change to the encoder (claim order, header, base45) that the doc does not follow fails here
    printed = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                             check=True).stdout.rstrip("\n")
    doc = (DOCS / "gt1.md").read_text()
    assert printed in doc, "docs/gt1.md is stale: run python docs/gt1_example.py --write"


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
