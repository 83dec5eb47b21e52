"""Run ``retest report --offline`` as a user would, judged by the deterministic fake model.

Shared by the kill/resume and disk-full suites: the CLI runs in a child process (so a kill or a
full disk hits a real process), over the hostile corpus, with an isolated data directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
CORPUS = TESTS / "hostile" / "poisoned.jsonl"
PROMPT = TESTS / "hostile" / "prompt.txt"
FAKE_CLI = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); from report_fakes import FakeLLM; "
            "import tools.llm; tools.llm.make_llm = lambda *a, **k: FakeLLM(); "
            "from agent.cli import main; sys.exit(main(sys.argv[1:]))")
VOLATILE_REPORT = {"generated_at", "usage", "run_id"}


def cli_env(data_dir: Path) -> dict[str, str]:
    """Return this process's environment with RETEST_DATA_DIR set and other RETEST_* cleared."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETEST_")
           or k in ("RETEST_LLM_BASE_URL", "RETEST_LLM_MODEL")}
    env["RETEST_DATA_DIR"] = str(data_dir)
    return env


def report_args(out: Path) -> list[str]:
    """Return the ``retest report`` arguments of the small offline run, writing to ``out``."""
    return ["report", str(PROMPT), "--offline", "--corpus", str(CORPUS), "--out", str(out),
            "--papers-per-claim", "3", "--retest-limit", "0"]


def stable_report(report: dict[str, Any]) -> dict[str, Any]:
    """Return report.json without the fields that differ between identical runs."""
    return {k: v for k, v in report.items() if k not in VOLATILE_REPORT}


def stable_md(md: str) -> list[str]:
    """Return report.md's lines without the ones that differ between identical runs."""
    return [ln for ln in md.splitlines()
            if not ln.startswith(("- generated:", "- run id:", "- LLM calls:"))]
