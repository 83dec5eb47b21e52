"""diff_reports / render_changes_md on constructed report.json dicts (pure, no I/O)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agent.changes import diff_reports, metrics_with_ci, render_changes_md, verdicts_changed


def _evidence(arxiv_id: str, stance: str = "supports", published: str = "2026-03-02") -> dict:
    return {"arxiv_id": arxiv_id, "title": f"Paper {arxiv_id}", "published": published,
            "stance": stance, "summary": "s"}


def _report(**over: Any) -> dict[str, Any]:
    report = {
        "prompt_sha256": "a" * 64, "generated_at": "2026-11-01T00:00:00+00:00",
        "model": "m", "corpus": "c.jsonl", "degraded": [],
        "claims": [
            {"id": "C1", "text": "Contamination inflates scores.", "dated": "2024",
             "verdict": "holds", "evidence": [_evidence("2504.00001")], "retest": None},
            {"id": "C2", "text": "Dedup removes the gap.", "dated": "2023",
             "verdict": "unresolved", "evidence": [_evidence("2504.00002", "unrelated")],
             "retest": {"spec": "gsm8k.toml", "supports_claim": None, "summary": {
                 "accuracy": {"base": {"seen": {"n": 100, "accuracy": 0.40, "ci": [0.30, 0.50]}}},
                 "gap": {"gap": 0.02, "ci": [-0.05, 0.09], "p_value": 0.6}}}},
        ],
        "anchors": [{"arxiv_id": "2401.00001", "status": "verified", "title": "A"},
                    {"arxiv_id": "2401.99999", "status": "unverifiable", "title": None}],
        "tensions": [], "research_questions": ["q1", "q2"],
        "citations": ["2504.00001", "2504.00002"],
    }
    report.update(over)
    return report


def test_first_run_says_nothing_to_compare() -> None:
    changes = diff_reports(None, _report())
    assert changes["has_previous"] is False
    assert changes["new_papers"] == [] and changes["verdicts_changed"] == []
    assert not verdicts_changed(changes)
    assert "nothing to compare" in render_changes_md(changes)


def test_identical_reports_have_no_changes() -> None:
    old = _report()
    new = _report(generated_at="2026-11-08T00:00:00+00:00")
    changes = diff_reports(old, new)
    assert changes["has_previous"] is True
    for key in ("new_papers", "verdicts_changed", "anchors_changed", "retests_moved",
                "claims_added", "claims_removed"):
        assert changes[key] == [], key
    md = render_changes_md(changes)
    assert "No new papers." in md and "No verdict changed." in md
    assert "2026-11-01" in md


def test_new_papers_per_claim_exclude_ones_seen_before() -> None:
    old = _report()
    new = copy.deepcopy(old)
    new["claims"][0]["evidence"] += [_evidence("2605.00010", "overturns", "2026-05-04"),
                                     _evidence("2504.00002", "supports")]  # seen under C2 before
    new["claims"][1]["evidence"].append(_evidence("2605.00011", "relaxes", "2026-05-09"))
    changes = diff_reports(old, new)
    by_claim = {g["claim_id"]: [p["arxiv_id"] for p in g["papers"]]
                for g in changes["new_papers"]}
    assert by_claim == {"C1": ["2605.00010"], "C2": ["2605.00011"]}
    md = render_changes_md(changes)
    assert "arXiv:2605.00010 (2026-05-04) Paper 2605.00010 — overturns" in md
    assert "2504.00001" not in md and "2504.00002" not in md
    assert "2 new papers" in changes["summary"]


def test_verdict_change_explains_why_from_the_records() -> None:
    old = _report()
    new = copy.deepcopy(old)
    new["claims"][0]["verdict"] = "overturned"
    new["claims"][0]["evidence"].append(_evidence("2605.00010", "overturns", "2026-05-04"))
    new["claims"][0]["evidence"][0]["stance"] = "relaxes"
    changes = diff_reports(old, new)
    assert verdicts_changed(changes)
    [change] = changes["verdicts_changed"]
    assert (change["claim_id"], change["from"], change["to"]) == ("C1", "holds", "overturned")
    why = " | ".join(change["why"])
    assert "new paper 2605.00010 (2026-05-04) overturns: Paper 2605.00010" in why
    assert "stance of 2504.00001 changed from supports to relaxes" in why
    assert "holds → overturned" in render_changes_md(changes)


def test_verdict_change_without_new_evidence_is_attributed_to_the_model() -> None:
    old = _report()
    new = copy.deepcopy(old)
    new["claims"][1]["verdict"] = "holds"
    [change] = diff_reports(old, new)["verdicts_changed"]
    assert change["why"] == ["same evidence re-judged: the judging model changed its mind"]


def test_anchor_status_changes_added_and_removed() -> None:
    old = _report()
    new = copy.deepcopy(old)
    new["anchors"][1] = {"arxiv_id": "2401.99999", "status": "verified", "title": "Found now"}
    new["anchors"].append({"arxiv_id": "2402.00003", "status": "not_found", "title": None})
    del new["anchors"][0]
    changes = diff_reports(old, new)
    assert changes["anchors_changed"] == [
        {"arxiv_id": "2401.00001", "from": "verified", "to": None, "title": "A"},
        {"arxiv_id": "2401.99999", "from": "unverifiable", "to": "verified", "title": "Found now"},
        {"arxiv_id": "2402.00003", "from": None, "to": "not_found", "title": None},
    ]
    assert "arXiv:2401.99999: unverifiable → verified (Found now)" in render_changes_md(changes)


@pytest.mark.parametrize(("new_gap", "moved"), [(0.08, False), (-0.05, False), (0.15, True),
                                               (-0.2, True)])
def test_retest_moves_only_beyond_the_previous_ci(new_gap: float, moved: bool) -> None:
    old = _report()
    new = copy.deepcopy(old)
    new["claims"][1]["retest"]["summary"]["gap"] = {"gap": new_gap, "ci": [new_gap - .05,
                                                                          new_gap + .05]}
    changes = diff_reports(old, new)
    metrics = [m["metric"] for m in changes["retests_moved"]]
    assert metrics == (["gap.gap"] if moved else [])
    if moved:
        m = changes["retests_moved"][0]
        assert m["previous_ci"] == [-0.05, 0.09] and m["current"] == new_gap
        assert m["direction"] == ("up" if new_gap > 0.02 else "down")
        assert "gsm8k.toml" in render_changes_md(changes)


def test_nan_estimates_never_count_as_moved() -> None:
    old = _report()
    new = copy.deepcopy(old)
    new["claims"][1]["retest"]["summary"]["gap"] = {"gap": float("nan"),
                                                    "ci": [float("nan"), float("nan")]}
    assert diff_reports(old, new)["retests_moved"] == []


def test_metrics_with_ci_understands_the_summary_shapes() -> None:
    summary = {
        "accuracy": {"m": {"seen": {"n": 9, "accuracy": 0.5, "ci": [0.4, 0.6]}}},
        "paired_difference": {"seen": {"n": 9, "diff": 0.1, "ci": [0.0, 0.2],
                                       "min_detectable": 0.3}},
        "other": {"score": 1.0, "score_ci": {"low": 0.9, "high": 1.1}},
        "flat": {"value": 2.0, "ci_low": 1.0, "ci_high": 3.0},
        "no_ci": {"accuracy": 0.3},
        "ambiguous": {"a": 1.0, "b": 2.0, "ci": [0, 3]},
    }
    found = {path: (v, lo, hi) for path, v, lo, hi in metrics_with_ci(summary)}
    assert found == {
        "accuracy.m.seen.accuracy": (0.5, 0.4, 0.6),
        "paired_difference.seen.diff": (0.1, 0.0, 0.2),
        "other.score": (1.0, 0.9, 1.1),
        "flat.value": (2.0, 1.0, 3.0),
    }


def test_claims_added_and_removed_are_listed() -> None:
    old = _report()
    new = copy.deepcopy(old)
    new["claims"][1]["text"] = "A reworded claim."
    changes = diff_reports(old, new)
    assert [c["text"] for c in changes["claims_added"]] == ["A reworded claim."]
    assert [c["text"] for c in changes["claims_removed"]] == ["Dedup removes the gap."]
    assert "## Claims removed" in render_changes_md(changes)
