"""The Streamlit app driven by AppTest: chat (real vLLM + store), report form, reports."""

from __future__ import annotations

import itertools
import json
import re
import sys
import time
import warnings
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]
# app_pages sits beside app.py (streamlit puts the script's folder on sys.path; so do we).
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agent.parse import MAX_PROMPT_BYTES  # noqa: E402
from app_pages.render import escape_md, linked_answer  # noqa: E402
from app_pages.retest import prompt_from_upload  # noqa: E402

APP = str(REPO / "app.py")
CORPUS = "arxiv/arxiv_cs_CL_LG_AI_2025-03_2026-07.jsonl.gz"
LINK = re.compile(r"\]\(https://arxiv\.org/abs/([^)]+)\)")


def _app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=600)


def _markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


# ---- pure helpers ---------------------------------------------------------------------------

def test_escape_md_neutralizes_markup_and_links():
    hostile = "<script>x</script> **b** [click](javascript:alert(1)) :red[x]"
    escaped = escape_md(hostile)
    assert not re.search(r"(?<!\\)<script>", escaped) and "](javascript" not in escaped
    assert "\\*\\*b\\*\\*" in escaped


def test_linked_answer_links_only_cited_ids():
    text = "A [arXiv:2501.01234]. B [arXiv:2609.99999]."
    out = linked_answer(text, ["2501.01234"])
    assert LINK.findall(out) == ["2501.01234"]
    assert "2609" in out and "abs/2609" not in out


def test_uploads_are_size_limited_and_must_be_text():
    assert prompt_from_upload("• claim one two (2024)".encode()) .startswith("•")
    with pytest.raises(ValueError, match="too large"):
        prompt_from_upload(b"x" * (MAX_PROMPT_BYTES + 1))
    with pytest.raises(ValueError, match="UTF-8"):
        prompt_from_upload(b"\xff\xfe\x00bin")


# ---- report form (parse before running) and the reports page --------------------------------

def test_report_form_shows_parsed_claims_and_anchors(isolated_env: Path, seed_prompt: Path):
    at = _app()
    at.run()
    at.sidebar.radio(key="page").set_value("Re-test").run()
    at.text_area(key="prompt_text").input(seed_prompt.read_text()).run()
    assert not at.exception
    shown = _markdown(at)
    assert "| C1 |" in shown and "| C5 |" in shown
    assert "Anchors:" in shown
    assert at.button(key="start_run")  # the run button appears only after a good parse


def test_report_form_rejects_a_prompt_without_claims(isolated_env: Path):
    at = _app()
    at.run()
    at.sidebar.radio(key="page").set_value("Re-test").run()
    at.text_area(key="prompt_text").input("just some words").run()
    assert any("No dated claims" in w.value for w in at.warning)
    assert not [b for b in at.button if b.key == "start_run"]


def _report(verdict: str, generated_at: str, title: str) -> dict:
    return {
        "prompt_sha256": "a" * 64, "generated_at": generated_at, "model": "SmolLM2-135M-Instruct",
        "corpus": "test", "degraded": [],
        "claims": [{"id": "C1", "text": "Dedup lowers scores", "dated": "2024",
                    "verdict": verdict,
                    "evidence": [{"arxiv_id": "2501.01234", "title": title,
                                  "published": "2025-01-05", "stance": "supports",
                                  "summary": "It does."}],
                    "retest": None}],
        "anchors": [{"arxiv_id": "2513.01234", "status": "malformed", "title": None}],
        "tensions": [{"text": "Two papers disagree", "arxiv_ids": ["2501.01234"]}],
        "research_questions": ["Does it hold at scale?", "Which benchmarks?"],
        "citations": ["2501.01234"],
    }


def test_reports_page_shows_verdicts_history_plots_and_escapes(isolated_env: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agent.history import ReportHistory

    hostile = "<img src=x onerror=alert(1)> [x](javascript:alert(1))"
    old = _report("holds", "2026-01-01T00:00:00+00:00", hostile)
    new = _report("overturned", "2026-02-01T00:00:00+00:00", hostile)
    new["claims"][0]["retest"] = {"spec": "finetune_sft_vs_dpo.toml", "supports_claim": None,
                                  "summary": {
        "recipe": "sft_vs_dpo", "spec": {"description": "SFT vs DPO"}, "supports_claim": None,
        "rule": "the rule", "accuracy": {"sft": {"novel": {"n": 20, "accuracy": 0.05,
                                                          "ci": [0.0, 0.15]}}},
        "dpo_minus_sft": {"unseen": {"diff": -0.075, "ci": [-0.175, 0.0]}}}}
    history = ReportHistory(isolated_env)
    history.record(old, "# old")
    run_dir = isolated_env / "app_runs" / ("b" * 16)
    (run_dir / "eval").mkdir(parents=True)
    (run_dir / "report.json").write_text(json.dumps(new))
    (run_dir / "report.md").write_text("# new")
    (run_dir / "references.bib").write_text("@misc{x}")
    plt.plot([0, 1], [0, 1])
    plt.savefig(run_dir / "eval" / "accuracy.png")
    history.record(new, "# new", out_dir=run_dir)

    at = _app()
    at.run()
    at.sidebar.radio(key="page").set_value("Reports").run()
    assert not at.exception
    shown = _markdown(at)
    assert ":red-badge[overturned]" in shown
    assert "holds → overturned" in shown.replace("\\", "")
    assert not re.search(r"(?<!\\)<img", shown) and "](javascript" not in shown
    assert "arxiv.org/abs/2501.01234" in shown
    assert ":gray-badge[judge said supports]" in shown  # no judge figures: stances unweighed
    assert "- sft: novel 5.0 [0.0, 15.0] (n=20)" in shown  # the re-test's rendered summary
    assert "DPO minus SFT on unseen: -7.5 [-17.5, 0.0] points" in shown
    assert "abs/2513.01234" not in shown  # a malformed anchor is never linked
    labels = {d.label for d in at.get("download_button")}
    assert {"report.md", "report.json", "references.bib"} <= labels
    assert [c for i in at.get("image") for c in i.captions] == ["accuracy.png"]
    assert any("could not be grounded" in w.value for w in at.warning)


def test_settings_page_names_endpoint_and_data_dir(llm_env: Path, llm_base_url: str):
    at = _app()
    at.run()
    at.sidebar.radio(key="page").set_value("Settings").run()
    shown = _markdown(at).replace("\\", "")
    assert llm_base_url in shown and str(llm_env.resolve()) in shown


# ---- chat against the real embedded vLLM server and a small real store ----------------------

@pytest.fixture()
def small_store(llm_env: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> list:
    """120 real corpus records: in a JSONL file (RETEST_CORPUS) and in the tmp paper store."""
    import gzip

    from core.settings import load_settings
    from tools.corpus import iter_corpus
    from tools.paper_store import PaperStore

    corpus = llm_env.parent / "small.jsonl"
    with gzip.open(shared_data / CORPUS, "rt") as src:
        corpus.write_text("".join(itertools.islice(src, 120)))
    monkeypatch.setenv("RETEST_CORPUS", str(corpus))
    papers = list(iter_corpus(corpus))
    PaperStore(load_settings()).upsert(papers, progress=False)
    return papers


@pytest.mark.slow
@pytest.mark.shared
def test_chat_streams_a_grounded_answer_and_new_chat_clears(small_store: list):
    question = f"What does the paper '{small_store[0].title}' propose?"
    at = _app()
    at.run()
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    messages = at.chat_message
    assert [m.name for m in messages] == ["user", "assistant"]
    history = at.session_state["chat_messages"]
    answer = history[-1]["answer"]
    assert answer["text"].strip()
    ids = {p.arxiv_id for p in small_store}
    assert set(answer["retrieved"]) <= ids
    assert all(c["arxiv_id"] in answer["retrieved"] for c in answer["cited"])
    linked = LINK.findall("\n".join(m.value for m in messages[1].markdown))
    assert set(linked) <= set(answer["retrieved"])
    assert len(at.expander) == len(answer["cited"])
    at.button(key="new_chat").click().run()
    assert at.session_state["chat_messages"] == []
    assert not at.chat_message


@pytest.mark.slow
@pytest.mark.shared
def test_report_run_in_background_reattaches_and_cancels(small_store: list, seed_prompt: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    from app_pages.resources import run_registry

    monkeypatch.setenv("RETEST_OFFLINE", "true")
    at = _app()
    at.run()
    at.sidebar.radio(key="page").set_value("Re-test").run()
    at.text_area(key="prompt_text").input(seed_prompt.read_text()).run()
    at.number_input(key="papers_per_claim").set_value(2)
    at.checkbox(key="run_retests").uncheck()
    at.button(key="start_run").click().run()
    run_id = at.query_params["run"]
    run_id = run_id[0] if isinstance(run_id, list) else run_id
    assert re.fullmatch(r"[0-9a-f]{16}", run_id)
    run = run_registry().get(run_id)
    assert run is not None and run.running
    deadline = time.time() + 300
    while not run.snapshot() and run.running and time.time() < deadline:
        time.sleep(1)  # wait for the first progress event
    # A fresh session with ?run=ID (a browser refresh) reattaches to the same run...
    again = _app()
    again.query_params["run"] = run_id
    again.run()
    assert any(f"Run {run_id}" in c.value for c in again.caption)
    assert "**start**" in _markdown(again) or "**parse**" in _markdown(again)
    # ...and can cancel it: the flag is set at once and the page says so; the worker stops at
    # its next step (an LLM call in flight on a busy 2-core server can take minutes, so the
    # wait is bounded and a worker still inside one call is reported, not waited for).
    again.button(key="cancel_run").click().run()
    assert run.cancel.is_set()
    assert any("Cancelling" in i.value for i in again.info)
    deadline = time.time() + 240
    while run.running and time.time() < deadline:
        time.sleep(2)
    if run.running:
        warnings.warn("the cancelled run was still inside one step after 240 s", stacklevel=1)
        return
    assert run.cancelled, run.error
    assert run.outcome is None and not (run.out_dir / "report.json").exists()
