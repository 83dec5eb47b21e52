"""Issue 7: a re-run of the same prompt asks live arXiv only for papers newer than its last run.

The arXiv API is the replay server of recorded responses on 127.0.0.1; the judge is the
deterministic fake model (this test is about what is asked of arXiv and what is carried over).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from report_fakes import FakeLLM
from test_arxiv_source import EMPTY, ReplayServer

from agent.nodes.context import ReportOptions
from agent.run import run_report
from core.settings import load_settings

RECORDED_SEARCH = "q_testing_s0_m10_bc5a6c384fe9.xml"  # ten real papers, 2020-2024


@pytest.fixture()
def replay(shared_data: Path) -> Iterator[ReplayServer]:
    server = ReplayServer(shared_data / "arxiv" / "atom" / "api_responses_2026")
    server.answer_searches_with = RECORDED_SEARCH  # type: ignore[attr-defined]

    def lookup(params: dict[str, str]) -> str:
        if params.get("id_list") or int(params.get("start", 0)) > 0:
            return EMPTY
        return server.answer_searches_with  # type: ignore[attr-defined]

    server.lookup = lookup  # type: ignore[method-assign]
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def _date_bounds(replay: ReplayServer, first: int) -> set[str]:
    """The submittedDate lower bounds (YYYYMMDD) of the search requests from ``first`` on."""
    bounds = set()
    for _, params in replay.requests[first:]:
        query = params.get("search_query", "")
        if "submittedDate:[" in query:
            bounds.add(query.split("submittedDate:[", 1)[1][:8])
    return bounds


def test_rerun_asks_only_for_newer_papers_and_keeps_earlier_evidence(
        isolated_env: Path, replay: ReplayServer, seed_prompt: Path, tmp_path: Path) -> None:
    settings = load_settings(arxiv={"base_url": replay.url, "request_spacing_s": 0.05,
                                    "timeout_s": 5.0, "max_retries": 1, "page_size": 100})
    options = ReportOptions(papers_per_claim=2, retest_limit=0)
    prompt = seed_prompt.read_text()

    first = run_report(prompt, settings, tmp_path / "one", llm_factory=FakeLLM, options=options)
    assert first.report["degraded"] == []
    # First run: each claim is searched from the day after its dated range (claims end 2024/2025).
    assert _date_bounds(replay, 0) <= {"20250101", "20260101"}
    cited_first = {e["arxiv_id"] for c in first.report["claims"] for e in c["evidence"]}
    assert cited_first, "the recorded search answer should give the first run evidence"

    # Second run: arXiv now has nothing new; every search starts a week before the last run.
    replay.answer_searches_with = EMPTY  # type: ignore[attr-defined]
    seen = len(replay.requests)
    second = run_report(prompt, settings, tmp_path / "two", llm_factory=FakeLLM, options=options)
    last_run = date.fromisoformat(first.report["generated_at"][:10])
    assert _date_bounds(replay, seen) == {(last_run - timedelta(days=7)).strftime("%Y%m%d")}
    # ...and the papers the first run kept are carried over from the cache, not lost.
    cited_second = {e["arxiv_id"] for c in second.report["claims"] for e in c["evidence"]}
    assert cited_first <= cited_second
    changes = json.loads((tmp_path / "two" / "report.json").read_text()).get("changes")
    assert changes is not None
