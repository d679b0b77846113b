"""Every conformance scenario from shared/vectors, through the CLI, as an operator runs it."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED, json_lines, run_gate, write_jsonl


def _scenarios():
    path = SHARED / "vectors" / "gt1-scenarios.json"
    if not path.exists():
        return [pytest.param(None, id="vectors-missing")]
    doc = json.loads(path.read_text())
    return [pytest.param(s, id=s["name"]) for s in doc["scenarios"]]


@pytest.mark.parametrize("scenario", _scenarios())
def test_scenario_through_cli(scenario, vectors, tmp_path):
    assert scenario is not None, "shared/vectors/gt1-scenarios.json is missing"
    data = tmp_path / "gate"
    lane = scenario["lane"]
    init = ["init", "--event", vectors["event"], "--mode", lane.get("mode", "entry")]
    if lane.get("zones"):
        init += ["--zones", ",".join(lane["zones"])]
    if lane.get("require_rotating"):
        init.append("--require-rotating")
    if lane.get("require_listed"):
        init.append("--require-listed")
    run_gate(data, *init)
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps(vectors["keyring"]))
    run_gate(data, "keys", "trust", str(ring))
    run_gate(data, "ledger", "import", str(write_jsonl(tmp_path / "tickets.jsonl", vectors["tickets"])))
    for i, step in enumerate(scenario["steps"]):
        args = ["verify", "--json", "--now", str(step["now"])]
        if step.get("lane", {}).get("mode"):
            args += ["--mode", step["lane"]["mode"]]
        out = json_lines(run_gate(data, *args, "--", step["qr"]).stdout)
        assert len(out) == 1
        assert out[0]["reason"] == step["expect"], f"step {i}: {out[0]}"
        assert out[0]["decision"] == ("accept" if step["expect"] == "ACCEPT" else "reject")
    assert "chain ok" in run_gate(data, "log", "verify").stdout
