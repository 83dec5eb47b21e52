"""The dependency audit: matching rules on constructed data, and the README's table against a
real audit of requirements.lock (so a new pin with a known advisory fails CI until it is listed).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("audit_deps", REPO / "scripts" / "audit_deps.py")
assert _spec is not None and _spec.loader is not None
audit_deps = importlib.util.module_from_spec(_spec)
sys.modules["audit_deps"] = audit_deps
_spec.loader.exec_module(audit_deps)

DB = {
    "$meta": {"timestamp": 1625119202},
    "Requests": [
        {"id": "pyup.io-1", "cve": "CVE-2018-18074", "specs": ["<=2.19.1"], "advisory": "a"},
        {"id": "pyup.io-2", "cve": None, "specs": [">=1.0,<1.2", ">=2.30,<2.31"], "advisory": "b"},
        {"id": "pyup.io-3", "cve": None, "specs": ["not a spec"], "advisory": "c"},
    ],
    "py_yaml": [{"id": "pyup.io-4", "cve": None, "specs": ["<5.4"], "advisory": "d"}],
}


def test_parse_pins_reads_only_exact_pins():
    text = ("# comment\n\nRequests==2.19.0\nPy.YAML==5.3 ; python_version>'3'\n"
            "-e .\nnumpy>=2\nfoo==1.0  # trailing\n")
    assert audit_deps.parse_pins(text) == {"requests": "2.19.0", "py-yaml": "5.3", "foo": "1.0"}


def test_audit_flags_affected_versions_only():
    findings, skipped = audit_deps.audit({"requests": "2.19.0", "py-yaml": "5.3"}, DB)
    assert {(f.package, f.advisory_id, f.affected) for f in findings} == {
        ("requests", "pyup.io-1", "<=2.19.1"), ("py-yaml", "pyup.io-4", "<5.4")}
    assert skipped == 1  # the malformed specifier is counted, not silently passed

    findings, _ = audit_deps.audit({"requests": "2.30.5", "py-yaml": "5.4"}, DB)
    assert [(f.package, f.advisory_id) for f in findings] == [("requests", "pyup.io-2")]

    findings, _ = audit_deps.audit({"requests": "2.31.0", "py-yaml": "6.0"}, DB)
    assert findings == []


def test_cli_lists_findings_and_bad_paths_exit_2(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("requests==2.19.0\n")
    db = tmp_path / "db.json"
    db.write_text(__import__("json").dumps(DB))
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "audit_deps.py"), "--lock",
                          str(lock), "--db", str(db)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "| requests | 2.19.0 | pyup.io-1 | `<=2.19.1` | CVE-2018-18074 |" in out.stdout
    missing = subprocess.run([sys.executable, str(REPO / "scripts" / "audit_deps.py"), "--lock",
                              str(tmp_path / "nope.txt"), "--db", str(db)],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1 and "nope.txt" in missing.stderr


def test_readme_lists_exactly_what_the_lock_audit_finds():
    result = audit_deps.run_audit(REPO / "requirements.lock", audit_deps.default_database())
    assert result.pins > 200  # the whole resolved set, not a stub
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- audit:start -->\n(.*?)<!-- audit:end -->", readme, re.S)
    assert block, "README.md lacks the <!-- audit:start --> ... <!-- audit:end --> block"
    assert block.group(1) == audit_deps.render_markdown(result), (
        "README's dependency audit is stale; paste the output of "
        "`.venv/bin/python scripts/audit_deps.py`")
