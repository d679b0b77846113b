"""docs/ is the product's specification: its worked example must be what the code
produces, and what it says a gate answers must be what `gate` answers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

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


# ------------------------------------------------------------------ decision.md locked to gate/decision.py


def _table(doc: str, heading: str) -> list[list[str]]:
    """The cells of the first Markdown table after ``heading`` (header and rule rows dropped)."""
    start = doc.index(heading)
    rows, seen = [], False
    for line in doc[start:].splitlines()[1:]:
        if line.startswith("|"):
            seen = True
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif seen:
            break
    return rows[2:]


def _codes(cell: str) -> list[str]:
    return re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)


def _order_table() -> list[tuple[int | None, list[str]]]:
    """docs/decision.md "Order of checks": (row number or None for "—", reason codes)."""
    return [(None if num == "—" else int(num), _codes(reasons))
            for num, reasons, *_ in _table((DOCS / "decision.md").read_text(), "## Order of checks")]


def _decide_source():
    """decide()'s Reason references in source order, and its "# N:" / "# N-M:" row comments."""
    import ast
    src = (ROOT / "gate" / "decision.py").read_text()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "decide")
    refs = sorted((n.lineno, n.col_offset, n.attr) for n in ast.walk(fn)
                  if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "Reason")
    comments = []
    for lineno, line in enumerate(src.splitlines()[fn.lineno - 1:fn.end_lineno], start=fn.lineno):
        m = re.match(r"\s*# (\d+)(?:-(\d+))?:", line)
        if m:
            comments.append((lineno, int(m.group(1)), int(m.group(2) or m.group(1))))
    return [(line, name) for line, _, name in refs], comments


def test_decision_order_table_is_the_order_of_checks_in_decide():
    # decide() reads top to bottom as the table does: a check moved, added or removed in the code
    # without the table (or the other way round) fails here. ACCEPT appears twice in both: the
    # exit lane's early accept and the final one.
    table = _order_table()
    documented = [r for _, reasons in table for r in reasons]
    refs, _ = _decide_source()
    in_code: list[str] = []
    for _, name in refs:
        if name == "ACCEPT" or name not in in_code:  # a reason used twice (PROOF_REQUIRED) keeps its first place
            in_code.append(name)
    assert in_code == documented, f"docs/decision.md order table {documented}\n gate/decision.py decide() {in_code}"
    numbers = [n for n, _ in table if n is not None]
    assert numbers == list(range(1, len(numbers) + 1)), numbers


def test_row_comments_in_decide_name_the_table_rows():
    # "# 9-12: ledger state" above the code of rows 9-12: a comment one row off (as they once were)
    # or a check added without renumbering fails here
    row_of = {r: n for n, reasons in _order_table() if n is not None for r in reasons}
    refs, comments = _decide_source()
    assert comments, "decide() has no '# N:' row comments"
    covered = set()
    for lineno, name in refs:
        if name == "ACCEPT":
            continue
        above = [c for c in comments if c[0] < lineno]
        assert above, f"Reason.{name} (line {lineno}) comes before any row comment"
        _, first, last = above[-1]
        assert first <= row_of[name] <= last, (f"gate/decision.py line {lineno}: Reason.{name} is row "
                                               f"{row_of[name]} of docs/decision.md, under a '# {first}-{last}' comment")
        covered.add(row_of[name])
    assert {n for _, a, b in comments for n in range(a, b + 1)} == covered == set(row_of.values())
    from gate.decision import Reason, allowance
    row = int(re.search(r"Row (\d+) of docs/decision.md", allowance.__doc__).group(1))
    assert row == row_of[Reason.ALREADY_USED.value]


def test_every_reason_code_is_in_the_table_or_named_as_never_from_decide():
    # a new Reason member that decide() returns must get a row; one it never returns must still be
    # described in decision.md (who gives it)
    from gate.decision import Reason
    table = {r for _, reasons in _order_table() for r in reasons}
    refs, _ = _decide_source()
    used = {name for _, name in refs}
    assert table == used
    doc = (DOCS / "decision.md").read_text()
    table_text = doc[doc.index("## Order of checks"):doc.index("The `gate verify --json` object")]
    others = {r.value for r in Reason} - table
    assert others == {"MANUAL_ADMIT", "MANUAL_DENY", "ERROR", "LANE_ALONE", "LANE_PAUSED"}  # a change is seen here
    missing = sorted(r for r in others if f"`{r}`" not in table_text)
    assert not missing, f"docs/decision.md does not say where these come from: {missing}"


def test_sub_reason_table_is_the_sub_enum():
    from gate.decision import Sub
    rows = _table((DOCS / "decision.md").read_text(), "### Sub-reasons")
    listed = {c for _, sub, _ in rows for c in _codes(sub)}
    mentioned = {c for _, sub, meaning in rows for c in _codes(sub) + _codes(meaning)}
    assert listed <= {s.value for s in Sub}, listed - {s.value for s in Sub}
    assert {s.value for s in Sub} <= mentioned, {s.value for s in Sub} - mentioned


def test_null_fields_of_pretix_decisions_are_as_documented(tmp_path):
    """decision.md: pretix codes carry no kid or version, and a ticket_id except when the text is
    no pretix code at all (the GT1 half of the rule is checked on every vector in test_vectors)."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from gate.appliance import Gate
    from gate.decision import Mode, Reason, Sub
    from test_pretix_offline import NOW, sig1, ticket_protobuf

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    g = Gate.init(tmp_path / "gate", event="democon")
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    g.set_pretix({"keys": [base64.b64encode(pem).decode()]})
    other = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    good = sig1(key, ticket_protobuf("seed", 1))
    codes = [good, good, sig1(other, ticket_protobuf("x", 1)), sig1(key, b"\x0a\xff"),
             sig1(key, ticket_protobuf("f", 1, valid_from=NOW + 3600)), "random-unknown", "\x00 not text"]
    decisions = [g.scan(c, now=NOW)[0] for c in codes] + [g.decide(good, now=NOW, mode=Mode.EXIT)]
    g.close()
    assert [d.reason for d in decisions] == [Reason.ACCEPT, Reason.ALREADY_USED, Reason.BAD_SIGNATURE,
                                             Reason.MALFORMED, Reason.NOT_YET_VALID, Reason.NOT_IN_LEDGER,
                                             Reason.MALFORMED, Reason.ACCEPT]
    for d in decisions:
        out = d.to_json()
        assert out["kid"] is None and out["version"] is None, out
        assert (out["ticket_id"] is None) == (d.sub is Sub.NOT_PRETIX), out


# ------------------------------------------------------------------ sync.md locked to the central's routes


def _endpoint_table() -> set[tuple[str, str]]:
    """docs/sync.md "Endpoints": (method, path) with path parameters as {} and no query part."""
    out = set()
    for cell, *_ in _table((DOCS / "sync.md").read_text(), "## Endpoints"):
        method, path = re.fullmatch(r"`([A-Z]+) ([^`]+)`", cell).groups()
        path = re.sub(r"\[?\?.*$", "", path)
        out.add((method, re.sub(r"\{[^}]*\}", "{}", path)))
    return out


def _routes(app) -> set[tuple[str, str, bool]]:
    """(method, path with {} parameters, in the OpenAPI schema) for every HTTP route of the app."""
    out = set()
    for r in app.routes:
        for m in getattr(r, "methods", None) or ():
            if m != "HEAD":
                out.add((m, re.sub(r"\{[^}]*\}", "{}", r.path), getattr(r, "include_in_schema", True)))
    return out


def test_sync_endpoint_table_is_the_central_routes(tmp_path):
    # an endpoint added to the central (app.py or the ops router) without a row, or a row whose
    # endpoint went, fails here; everything else the central serves is the ops room's HTML pages
    # under /ops (README, "The ops room") or FastAPI's own description of the API
    from sync.central.app import create_app
    from sync.central.store import CentralStore

    store = CentralStore(tmp_path / "central")
    try:
        app = create_app(store)
    finally:
        store.close()
    routes = _routes(app)
    own = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    api = {(m, p) for m, p, schema in routes if p not in own and not p.startswith(("/ops", "/wallet"))}
    # the holder wallet's API is documented in docs/wallet.md's request table; its GETs are the app
    wallet_api = {(m, p) for m, p, _s in routes if p.startswith("/wallet/api/")}
    wallet_doc = {(m, p) for m, p in re.findall(r"^\| `(GET|POST) (/wallet/api/[^`]+)` \|",
                                                (DOCS / "wallet.md").read_text(), re.M)}
    assert wallet_api == wallet_doc and wallet_api, (sorted(wallet_api), sorted(wallet_doc))
    assert all(m == "GET" for m, p, _s in routes if p.startswith("/wallet") and not p.startswith("/wallet/api/"))
    assert api == _endpoint_table(), (f"routes not in docs/sync.md: {sorted(api - _endpoint_table())}; "
                                      f"documented but not served: {sorted(_endpoint_table() - api)}")
    assert all(schema for m, p, schema in routes if (m, p) in api)  # /openapi.json describes each of them
    assert "/openapi.json" in own and "/docs" in own  # the doc points there


def test_sync_endpoint_table_auth_column_is_what_the_central_asks(tmp_path):
    """Each endpoint asked with no credentials: "none" answers, "device" and "ops" refuse with 401,
    "enrolment code" refuses the empty body (a 4xx), never with 401."""
    import requests

    from sync.central.app import ServerThread, create_app
    from sync.central.store import CentralStore

    store = CentralStore(tmp_path / "central")
    store.create_event("evt-docs")
    server = ServerThread(create_app(store)).start()
    try:
        answers = {}
        for cell, auth, _ in _table((DOCS / "sync.md").read_text(), "## Endpoints"):
            method, path = re.fullmatch(r"`([A-Z]+) ([^`]+)`", cell).groups()
            path = re.sub(r"\[?\?.*$", "", path).replace("{e}", "evt-docs")
            r = requests.request(method, server.url + path, json={} if method == "POST" else None, timeout=30)
            answers[cell] = (auth, r.status_code)
    finally:
        server.stop()
        store.close()
    expected = {"none": {200}, "device": {401}, "ops": {401}, "enrolment code": set(range(400, 500)) - {401}}
    wrong = {cell: got for cell, got in answers.items() if got[1] not in expected.get(got[0], ())}
    assert not wrong, wrong


def _pass_steps() -> list[tuple[str, str, str]]:
    """docs/sync.md "One sync pass": (step, method, path with {} parameters), in order."""
    doc = (DOCS / "sync.md").read_text()
    section = doc[doc.index("## One sync pass"):]
    section = section[:section.index("\n## ", 1)]
    return [(name, method, re.sub(r"\{[^}]*\}", "{}", path)) for name, method, path in
            re.findall(r"^\d+\. \*\*([^*]+)\*\*: `([A-Z]+) ([^`]+)`", section, re.M)]


def test_one_sync_pass_makes_the_documented_requests_in_that_order(tmp_path):
    # `gate sync --once` through a recording proxy in front of a real central: the requests, in
    # order, are the documented steps; a failing step does not stop the later ones; a central
    # that does not answer ends the pass at the first step. A step added, dropped or moved in
    # the sync engine without docs/sync.md (or the other way round) fails here.
    from crypto.issuer import Wallet
    from faulty_proxy import FaultyProxy
    from sync.central.app import ServerThread, create_app
    from sync.central.store import CentralStore

    steps = _pass_steps()
    assert [s for s, _, _ in steps][:1] == ["time"] and len(steps) >= 5, steps
    store = CentralStore(tmp_path / "central")
    store.create_event("evt-docs")
    (made,) = store.issue("evt-docs", count=1, out=tmp_path / "w")
    server = ServerThread(create_app(store)).start()
    data = tmp_path / "gate"
    try:
        with FaultyProxy(server.url) as proxy:
            run_gate(data, "init", "--event", "evt-docs")
            run_gate(data, "sync", "--central", proxy.url, "--enroll", store.enrol_code("evt-docs"), "--once")
            run_gate(data, "verify", Wallet.load(made["file"]).code(time.time()))  # one record in the outbox

            def one_pass() -> tuple[list[tuple[str, str]], dict]:
                # the bus credential is asked for only when the gate has none (or it runs out):
                # the enrolment pass got one; without it every step is due
                from sync import bus_credential
                for name in (bus_credential.KEY, bus_credential.CERT, bus_credential.CA):
                    (data / "keys" / name).unlink(missing_ok=True)
                del proxy.requests[:]
                out = json.loads(run_gate(data, "sync", "--once", "--json", check=False).stdout)
                seen: list[tuple[str, str]] = []
                for method, path, _ in proxy.requests:
                    key = (method, re.sub(r"/v1/events/[^/]+/", "/v1/events/{}/", path))
                    if not seen or seen[-1] != key:  # pages and batches: one step
                        seen.append(key)
                return seen, out

            seen, out = one_pass()
            assert out["ok"] and seen == [(m, p) for _, m, p in steps], seen
            # a failing step (the key ring answers 500): every other step is still taken
            proxy.mode, proxy.only_path = "500", "/keyring"
            run_gate(data, "verify", Wallet.load(made["file"]).code(time.time() + 60))  # something to upload
            seen, out = one_pass()
            assert not out["ok"] and seen == [(m, p) for _, m, p in steps], seen
            # central does not answer at all: the pass ends at the first step
            proxy.mode, proxy.only_path = "down", None
            seen, out = one_pass()
            assert not out["ok"] and seen == [(m, p) for _, m, p in steps[:1]], seen
    finally:
        server.stop()
        store.close()
