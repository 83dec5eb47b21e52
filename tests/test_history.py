"""Report history per prompt, the judgement/eval cache, and the incremental arXiv cutoff."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest

from agent.history import ReportHistory
from agent.judgement_cache import JudgementCache, incremental_since, is_live_source
from core.errors import BadInputError

SHA = "b" * 64
REPO = Path(__file__).resolve().parents[1]


def _report(when: str, verdict: str = "holds", corpus: str = "corpus.jsonl",
            degraded: list[str] | None = None) -> dict:
    return {"prompt_sha256": SHA, "generated_at": when, "model": "SmolLM2-135M-Instruct",
            "corpus": corpus, "degraded": degraded or [],
            "claims": [{"id": "C1", "text": "t", "verdict": verdict, "evidence": []}],
            "anchors": [], "tensions": [], "research_questions": [], "citations": []}


def test_record_and_read_back_runs_in_time_order(tmp_path: Path) -> None:
    history = ReportHistory(tmp_path)
    assert history.runs(SHA) == [] and history.previous(SHA) is None
    assert history.last_run_time(SHA) is None
    later = history.record(_report("2026-11-08T10:00:00Z", "relaxed"), "# later", tmp_path / "o")
    earlier = history.record(_report("2026-11-01T10:00:00+00:00"), "# earlier")
    assert (later / "report.md").read_text() == "# later"
    runs = history.runs(SHA)
    assert [r["path"] for r in runs] == [str(earlier), str(later)]
    assert runs[1]["verdicts"] == {"C1": "relaxed"}
    assert runs[1]["corpus"] == "corpus.jsonl" and runs[1]["model"] == "SmolLM2-135M-Instruct"
    assert runs[1]["out_dir"] == str(tmp_path / "o")
    assert history.previous(SHA)["claims"][0]["verdict"] == "relaxed"
    assert history.previous(SHA, before="2026-11-08T10:00:00Z")["generated_at"].startswith(
        "2026-11-01")
    assert history.previous(SHA, before="2026-11-01T10:00:00Z") is None
    assert history.last_run_time(SHA).isoformat() == "2026-11-08T10:00:00+00:00"


def test_same_timestamp_twice_keeps_both_runs(tmp_path: Path) -> None:
    history = ReportHistory(tmp_path)
    first = history.record(_report("2026-11-01T10:00:00Z"), "a")
    second = history.record(_report("2026-11-01T10:00:00Z", "overturned"), "b")
    assert first != second and len(history.runs(SHA)) == 2


def test_half_recorded_and_corrupt_runs_are_ignored(tmp_path: Path) -> None:
    history = ReportHistory(tmp_path)
    good = history.record(_report("2026-11-01T10:00:00Z"), "a")
    # What a kill during record() leaves: a hidden staging folder; and a damaged entry.
    (good.parent / ".recording.x").mkdir()
    (good.parent / ".recording.x" / "report.json").write_text("{")
    broken = good.parent / "20261109T000000000000Z"
    broken.mkdir()
    (broken / "meta.json").write_text("not json")
    assert [r["path"] for r in history.runs(SHA)] == [str(good)]
    assert history.previous(SHA)["generated_at"] == "2026-11-01T10:00:00Z"


@pytest.mark.parametrize("bad", ["", "abc", "../" + "a" * 61, "B" * 64])
def test_malformed_prompt_hash_is_bad_input(tmp_path: Path, bad: str) -> None:
    with pytest.raises(BadInputError):
        ReportHistory(tmp_path).runs(bad)


def test_judgement_cache_round_trip_and_counts(tmp_path: Path) -> None:
    with JudgementCache(tmp_path) as cache:
        assert cache.get("Claim  one.", "2605.00001", "m") is None
        cache.put("Claim one.", "2605.00001", "m", {"stance": "supports", "summary": "s"})
        # Whitespace in the claim text does not matter; paper, model and variant do.
        assert cache.get(" Claim\none. ", "2605.00001", "m") == {"stance": "supports",
                                                                  "summary": "s"}
        assert cache.get("Claim one.", "2605.00002", "m") is None
        assert cache.get("Claim one.", "2605.00001", "other-model") is None
        assert cache.get("Claim one.", "2605.00001", "m", variant="v2") is None
        assert (cache.hits, cache.misses) == (1, 4)
    # A second process (the next scheduled run) sees what the first stored.
    code = textwrap.dedent("""
        import sys
        from agent.judgement_cache import JudgementCache
        print(JudgementCache(sys.argv[1]).get("Claim one.", "2605.00001", "m")["stance"])
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "supports"


def test_incremental_since_uses_last_good_live_run(tmp_path: Path) -> None:
    history = ReportHistory(tmp_path)
    assert incremental_since(history, SHA) is None
    history.record(_report("2026-10-20T08:00:00Z", corpus="arxiv"), "live")
    assert incremental_since(history, SHA) == date(2026, 10, 13)
    assert incremental_since(history, SHA, overlap_days=0) == date(2026, 10, 20)
    history.record(_report("2026-10-27T08:00:00Z", corpus="arxiv",
                           degraded=["arXiv unreachable: timeout"]), "degraded")
    history.record(_report("2026-10-28T08:00:00Z", corpus="/data/corpus.jsonl.gz"), "corpus")
    # Neither a degraded run nor a local-corpus run moves the cutoff.
    assert incremental_since(history, SHA) == date(2026, 10, 13)
    # A run on a local corpus always reads the whole corpus.
    assert incremental_since(history, SHA, corpus="/data/corpus.jsonl.gz") is None


@pytest.mark.parametrize(("corpus", "live"), [(None, True), ("arxiv", True),
                                              ("https://export.example/api", True),
                                              ("/x/arxiv.jsonl.gz", False),
                                              ("corpus.jsonl", False)])
def test_is_live_source(corpus: str | None, live: bool) -> None:
    assert is_live_source(corpus) is live


def test_recorded_files_are_valid_json(tmp_path: Path) -> None:
    run = ReportHistory(tmp_path).record(_report("2026-11-01T10:00:00Z"), "md")
    assert json.loads((run / "report.json").read_text())["prompt_sha256"] == SHA
    assert json.loads((run / "meta.json").read_text())["generated_at"].startswith("2026-11-01")
