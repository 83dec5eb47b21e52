"""End to end in a real browser: ``streamlit run app.py`` on 127.0.0.1, driven by headless Chromium.

Chromium is driven through chromedriver's W3C WebDriver HTTP API (see ``browser_driver.py``,
shared with ``bench/app_load_http.py``). Debian's ``chromium`` and ``chromium-driver`` are
installed by ``scripts/ci_deps.sh``; without them the test skips and says so.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_driver import CHROMEDRIVER, CHROMIUM, ENTER, WebDriver, streamlit_app
from browser_driver import browser as start_browser

CORPUS = "arxiv/arxiv_cs_CL_LG_AI_2025-03_2026-07.jsonl.gz"

pytestmark = [
    pytest.mark.slow, pytest.mark.browser, pytest.mark.shared,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver "
                              "(run scripts/ci_deps.sh)"),
]


@pytest.fixture()
def app_url(llm_env: Path, shared_data: Path, tmp_path: Path) -> Iterator[str]:
    """A real ``streamlit run app.py`` over a small real store and one finished report."""
    from core.settings import load_settings
    from tools.corpus import iter_corpus
    from tools.paper_store import PaperStore

    corpus = tmp_path / "small.jsonl"
    with gzip.open(shared_data / CORPUS, "rt") as src:
        corpus.write_text("".join(itertools.islice(src, 80)))
    PaperStore(load_settings()).upsert(iter_corpus(corpus), progress=False)
    report_dir = llm_env / "app_runs" / ("c" * 16)
    report_dir.mkdir(parents=True)
    first = next(iter_corpus(corpus))
    report_dir.joinpath("report.json").write_text(json.dumps({
        "prompt_sha256": "d" * 64, "generated_at": "2026-02-01T00:00:00+00:00",
        "model": "SmolLM2-135M-Instruct", "corpus": str(corpus), "degraded": [],
        "claims": [{"id": "C1", "text": "Deduplicated benchmarks lower scores", "dated": "2024",
                    "verdict": "relaxed", "retest": None,
                    "evidence": [{"arxiv_id": first.arxiv_id, "title": first.title,
                                  "published": str(first.published), "stance": "relaxes",
                                  "summary": "Copied summary."}]}],
        "anchors": [], "tensions": [], "research_questions": ["Q1?", "Q2?"],
        "citations": [first.arxiv_id]}))
    report_dir.joinpath("report.md").write_text("# Report\n")
    env = {**os.environ, "RETEST_CORPUS": str(corpus)}
    with streamlit_app(env, tmp_path / "streamlit.log") as url:
        yield url


@pytest.fixture()
def browser() -> Iterator[WebDriver]:
    with start_browser() as web:
        yield web


def test_browser_chat_answer_is_cited_and_a_report_opens(app_url: str, browser: WebDriver,
                                                         tmp_path: Path):
    browser.get(app_url)
    browser.wait_for("return !!document.querySelector('textarea')", 120)
    from tools.corpus import iter_corpus

    # Ask about a stored paper by its title: the small model then restates its abstract, which
    # grounding cites (by the model, or attributed by word overlap).
    first = next(iter_corpus(tmp_path / "small.jsonl"))
    title = " ".join(first.title.split())
    browser.type_into("textarea", f"What does the paper '{title}' propose?" + ENTER)
    # The answer is finished when its caption ("… papers retrieved") is drawn.
    browser.wait_for("return document.body.innerText.includes('papers retrieved')", 400)
    links = browser.script(
        "return [...document.querySelectorAll('[data-testid=\"stChatMessage\"] a')]"
        ".map(a => a.href).filter(h => h.startsWith('https://arxiv.org/abs/'))")
    assert links, "the chat answer carries no arXiv citation link"
    browser.screenshot(tmp_path / "chat.png")

    browser.click_text("[data-testid='stSidebar'] label", "Reports")
    text = browser.wait_for("const t=document.body.innerText; "
                            "return t.includes('Summary') && t.includes('relaxed') ? t : ''", 120)
    assert "Deduplicated benchmarks lower scores" in text
    browser.screenshot(tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 10_000
