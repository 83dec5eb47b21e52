"""The verdict rule case by case, the report's judge line and evidence fields, and research
questions built from this run (the real embedded SmolLM2 on two prompts of different topics)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from langgraph.runtime import Runtime

from agent.nodes.context import ReportOptions, RunContext
from agent.nodes.synthesis import (
    choose_questions,
    decide_verdict,
    fallback_questions,
    judge_trust,
    research_questions,
    stance_counts,
)
from agent.parse import parse_prompt
from agent.report import build_report_json, render_markdown
from core.settings import load_settings

CORPUS_NAME = "arxiv_cs_CL_LG_AI_2025-03_2026-07.jsonl.gz"
GOOD = {"model": "m", "method": "logprob-calibrated", "n": 180, "accuracy": 0.71,
        "macro_f1": 0.64, "kappa": 0.52, "kappa_ci": [0.41, 0.63], "majority_baseline": 0.45,
        "labels_sha256": "0" * 64, "measured_at": "2026-12-04T00:00:00+00:00"}
CHANCE = {**GOOD, "accuracy": 0.41, "kappa": 0.03, "kappa_ci": [-0.08, 0.14]}
# Words of the seed prompt's topic (and of the canned questions this project used to write).
SEED_TOPIC = ("memoriz", "contamina", "dedup", "repeated", "grpo", "dpo", "self-improv",
              "fine-tuned variant", "out-of-distribution")
ASR_PROMPT = """Inquiring line
Do automatic speech recognition systems still fail on accented and low-resource speech?

Research prompt
- Word error rates of speech recognizers roughly double on accented English compared with \
standard accents (~2024).
- Multilingual speech models trained on web audio transcribe low-resource languages poorly \
without in-language data (2024).

Your task:
(1) Re-test each claim against newer papers and say whether it still holds.
"""


def ev(stance: str, counts: bool | None = None, arxiv_id: str = "2601.00001",
       claim_id: str = "C1", **extra) -> dict:
    """An evidence record; ``counts=None`` leaves out ``stance_counts`` (an older record)."""
    rec = {"claim_id": claim_id, "arxiv_id": arxiv_id, "title": f"Paper {arxiv_id}",
           "published": "2026-01-02", "stance": stance, "summary": "s", "score": 1.0, **extra}
    if counts is not None:
        rec["stance_counts"] = counts
    return rec


# ---------------------------------------------------------------- the verdict rule (pure)

def test_unmeasured_judge_leaves_claims_unresolved():
    label, reason = decide_verdict([ev("supports"), ev("supports"), ev("supports")], None, None)
    assert label == "unresolved"
    assert reason.startswith("judge unmeasured: stances do not decide verdicts")


def test_chance_level_judge_gives_unresolved_with_its_figures():
    label, reason = decide_verdict([ev("supports")] * 4, None, CHANCE)
    assert label == "unresolved"
    assert "no better than chance: kappa 0.03 [-0.08, 0.14], n=180" in reason
    # A CI that touches 0 is not above it.
    assert decide_verdict([ev("supports")] * 4, None,
                          {**GOOD, "kappa_ci": [0.0, 0.3]}).label == "unresolved"
    assert decide_verdict([ev("supports")] * 4, None,
                          {**GOOD, "kappa_ci": [float("nan"), 0.3]}).label == "unresolved"


def test_chance_level_judges_stances_render_without_weight():
    evidence = [ev("relaxes", True, "2601.00001", recency="newer", quote="Error rates fall.")]
    report = build_report_json(_state(CHANCE, evidence), _ctx())
    assert not report["judge"]["decides_verdicts"]
    md = render_markdown(report)
    line = next(ln for ln in md.splitlines() if "2601.00001" in ln and ln.startswith("- "))
    assert "(2026-01-02, newer), judge's stance *relaxes* (carries no weight):" in line
    assert "**relaxes**" not in line and ", counts" not in line
    assert "| 1 paper; no stance counts (judge) |" in md  # the summary table counts none


def test_good_judge_with_counted_overturns_overturns():
    evidence = [ev("overturns", True, "2601.00001"), ev("overturns", True, "2601.00002"),
                ev("supports", True, "2601.00003")]
    label, reason = decide_verdict(evidence, None, GOOD)
    assert label == "overturned"
    assert "1 supports, 0 relaxes, 2 overturns" in reason and "kappa 0.52 [0.41, 0.63]" in reason


def test_uncounted_overturns_are_ignored():
    supports = [ev("supports", True, "2601.00003"), ev("supports", None, "2601.00004")]
    unquoted = [ev("overturns", False, "2601.00001"), ev("overturns", False, "2601.00002")]
    label, reason = decide_verdict(unquoted + supports, None, GOOD)
    assert label == "holds" and "2 stances without a verified quote ignored" in reason
    # An older record without the flag counts only for supports/unrelated.
    legacy = [ev("overturns", None, "2601.00001"), ev("relaxes", None, "2601.00002")]
    assert decide_verdict(legacy + supports, None, GOOD).label == "holds"
    assert not stance_counts(legacy[0]) and stance_counts(ev("unrelated"))


@pytest.mark.parametrize(("stances", "verdict"), [
    (("supports", "supports"), "holds"),
    (("relaxes", "relaxes", "supports"), "relaxed"),
    (("relaxes", "supports", "supports"), "holds"),
    (("overturns", "relaxes"), "relaxed"),  # one overturning paper alone never overturns
    (("overturns", "overturns", "overturns", "supports", "supports"), "overturned"),
])
def test_good_judge_counts_stances(stances, verdict):
    evidence = [ev(s, True, f"2601.0000{i}") for i, s in enumerate(stances)]
    assert decide_verdict(evidence, None, GOOD).label == verdict


def test_too_little_counted_evidence_is_unresolved():
    label, reason = decide_verdict([ev("supports", True), ev("unrelated", True, "2601.00009"),
                                    ev("overturns", False, "2601.00008")], None, GOOD)
    assert label == "unresolved"
    assert "1 counted relevant paper, fewer than the 2 the rule needs" in reason


def test_deciding_retest_settles_the_claim_even_without_a_judge():
    decisive = {"spec": "dedup.toml", "supports_claim": False, "decides": True}
    label, reason = decide_verdict([ev("supports")] * 3, decisive, None)
    assert (label, reason) == ("overturned", "the controlled re-test dedup.toml contradicts the "
                                             "claim")
    assert decide_verdict([], {**decisive, "supports_claim": True}, CHANCE).label == "holds"
    # With a trusted judge, two counted papers against the re-test soften it.
    against = [ev("overturns", True, "2601.00001"), ev("relaxes", True, "2601.00002")]
    assert decide_verdict(against, {**decisive, "supports_claim": True}, GOOD).label == "relaxed"


@pytest.mark.parametrize("retest", [
    {"spec": "x.toml", "supports_claim": False, "decides": False},
    {"spec": "x.toml", "supports_claim": False},  # an older record: decides is missing
    {"spec": "x.toml", "supports_claim": None, "decides": True},  # no clear result
])
def test_non_deciding_retest_does_not_settle(retest):
    label, reason = decide_verdict([ev("supports")] * 3, retest, None)
    assert label == "unresolved" and "re-test x.toml" in reason
    counted = [ev("supports", True, "2601.00001"), ev("supports", True, "2601.00002")]
    assert decide_verdict(counted, retest, GOOD).label == "holds"  # the papers decide


def test_figures_measured_for_another_model_do_not_apply():
    trust = judge_trust(GOOD, "SmolLM2-135M-Instruct")
    assert not trust.decides and "measured for m, not for SmolLM2-135M-Instruct" in trust.reason
    assert judge_trust({**GOOD, "model": "org/SmolLM2-135M-Instruct"},
                       "smollm2-135m-instruct").decides
    assert not judge_trust({"model": "m", "n": 10}).decides  # no kappa CI: incomplete


# ---------------------------------------------------------------- report.json and report.md

def _state(judge: dict | None, evidence: list[dict]) -> dict:
    papers = {e["arxiv_id"]: {"arxiv_id": e["arxiv_id"], "title": e["title"], "authors": ["A"],
                              "abstract": "a", "categories": ["cs.CL"],
                              "published": e["published"], "source": "corpus"}
              for e in evidence}
    state = {"prompt_text": "p", "brief": {"question": "Q?", "tasks": [], "anchors": [],
                                           "claims": [{"id": "C1", "text": "A claim.",
                                                       "dated": "2024", "date_from": "2024-01-01",
                                                       "date_to": "2024-12-31"}]},
             "papers": papers, "evidence": evidence, "research_questions": ["q1 ok", "q2 ok"],
             "research_question_fallback": [False, True]}
    label, reason = decide_verdict(evidence, None, judge, "m")
    state["verdicts"], state["verdict_reasons"] = {"C1": label}, {"C1": reason}
    if judge is not None:
        state["judge_quality"] = judge
    return state


def _ctx(model: str = "m") -> SimpleNamespace:
    return SimpleNamespace(model_name=model, run_id="r1", options=ReportOptions(),
                           settings=SimpleNamespace(corpus=None, offline=True))


def test_report_shows_judge_figures_and_evidence_fields():
    evidence = [ev("relaxes", True, "2601.00001", recency="contemporaneous",
                   quote="Error rates fall by half."),
                ev("overturns", False, "2601.00002", recency="newer"),
                ev("supports", True, "2601.00003", recency="newer")]
    report = build_report_json(_state(GOOD, evidence), _ctx())
    assert report["judge"]["decides_verdicts"] and report["judge"]["quality"]["kappa"] == 0.52
    claim = report["claims"][0]
    assert claim["verdict"] == "holds"  # 1 supports vs 1 relaxes; the unquoted one is ignored
    assert "1 stance without a verified quote ignored" in claim["verdict_reason"]
    rows = {e["arxiv_id"]: e for e in claim["evidence"]}
    assert rows["2601.00001"]["quote"] == "Error rates fall by half."
    assert rows["2601.00001"]["recency"] == "contemporaneous"
    assert rows["2601.00002"]["stance_counts"] is False and rows["2601.00002"]["quote"] is None
    assert report["research_questions_fallback"] == [False, True]
    md = render_markdown(report)
    assert ("> **Judge:** m (logprob-calibrated), n=180 hand-labelled rows: accuracy 0.71, "
            "macro-F1 0.64, kappa 0.52 [0.41, 0.63], majority baseline 0.45; stances decide "
            "verdicts") in md
    line = next(ln for ln in md.splitlines() if "2601.00001" in ln and ln.startswith("- "))
    assert "(2026-01-02, contemporaneous), **relaxes**, counts" in line
    assert 'Quote: "Error rates fall by half."' in line
    assert "**overturns**, does not count (no verified quote)" in md
    shown = claim["verdict_reason"].replace("[", "\\[").replace("]", "\\]")  # inert brackets
    assert f"Why: {shown}." in md
    assert re.search(r"^2\. q2 ok \*\(fallback", md, flags=re.M)
    assert not re.search(r"^1\. q1 ok \*\(fallback", md, flags=re.M)


@pytest.mark.parametrize(("judge", "line"), [
    (None, "> **Judge unmeasured:** stances do not decide verdicts"),
    (CHANCE, "kappa 0.03 [-0.08, 0.14], majority baseline 0.45; stances do not decide verdicts "
             "(kappa CI includes 0"),
])
def test_report_with_untrusted_judge_says_so_and_nothing_holds(judge, line):
    evidence = [ev("supports", True, f"2601.0000{i}") for i in range(4)]
    report = build_report_json(_state(judge, evidence), _ctx())
    assert report["claims"][0]["verdict"] == "unresolved"
    assert not report["judge"]["decides_verdicts"]
    md = render_markdown(report)
    assert line in md and md.index(line) < md.index("# Re-test report")


def test_report_from_an_older_state_still_builds():
    """A checkpoint from before these fields: no reasons, flags, recency or judge."""
    state = _state(None, [ev("supports", None, "2601.00001")])
    for key in ("verdict_reasons", "research_question_fallback"):
        del state[key]
    report = build_report_json(state, _ctx())
    row = report["claims"][0]["evidence"][0]
    assert row["recency"] == "newer" and row["stance_counts"] is True and row["quote"] is None
    assert report["research_questions_fallback"] == [False, False]
    assert "no reason recorded" in report["claims"][0]["verdict_reason"]
    assert "Judge unmeasured" in render_markdown(report)


def test_changes_md_reads_reports_with_the_new_fields():
    from agent.changes import diff_reports, render_changes_md

    evidence = [ev("relaxes", True, "2601.00001", quote="q.", recency="newer")]
    old = build_report_json(_state(None, evidence), _ctx())
    new = build_report_json(_state(GOOD, evidence + [ev("relaxes", True, "2601.00002")]), _ctx())
    changes = diff_reports(old, new)
    assert [p["arxiv_id"] for p in changes["new_papers"][0]["papers"]] == ["2601.00002"]
    assert changes["verdicts_changed"][0]["to"] == "relaxed"
    assert "unresolved → relaxed" in render_changes_md(changes)
    # Same evidence, newly measured judge: the change is the rule's, not the model's mind.
    evidence += [ev("relaxes", True, "2601.00002")]
    old = build_report_json(_state(None, evidence), _ctx())
    new = build_report_json(_state(GOOD, evidence), _ctx())
    [why] = diff_reports(old, new)["verdicts_changed"][0]["why"]
    assert why.startswith("verdict rule now reads: counted stances: 0 supports, 2 relaxes")


# ---------------------------------------------------------------- research questions

def test_fallback_questions_come_from_the_claims_and_counted_movers():
    claims = parse_prompt(ASR_PROMPT)["claims"]
    evidence = [ev("overturns", True, "2601.00001", "C2", title="Whisper-scale models close "
                   "the low-resource gap"),
                ev("relaxes", False, "2601.00002", "C1", title="Unquoted paper"),
                ev("supports", True, "2601.00003", "C1", title="Supporting paper")]
    questions = fallback_questions(claims, evidence)
    assert all(q.fallback for q in questions) and questions[0].text != questions[1].text
    # C2 has the only counted mover, so it comes first and names that paper, and only it.
    assert "Whisper-scale models close the low-resource gap" in questions[0].text
    assert [e["arxiv_id"] for e in questions[0].motivated_by] == ["2601.00001"]
    assert "Word error rates" in questions[1].text and questions[1].motivated_by == []
    assert "Unquoted paper" not in questions[1].text + questions[0].text
    for q in questions:
        assert not any(w in q.text.lower() for w in SEED_TOPIC), q.text


def test_unusable_model_questions_fall_back_and_usable_ones_stay():
    claims = parse_prompt(ASR_PROMPT)["claims"]
    movers = [ev("relaxes", True, "2601.00001", "C1"), ev("overturns", True, "2601.00002", "C2")]
    chosen = choose_questions(["", "loop loop loop loop loop loop"], claims, movers)
    assert [q.fallback for q in chosen] == [True, True]
    title = "The Evidence for Speech Models and the Future of Recognition"  # not a question
    assert choose_questions([title, ""], claims, movers)[0].fallback
    good = "Do accented-speech error gaps persist for recognizers trained on newer corpora?"
    chosen = choose_questions([good, good], claims, movers)  # a repeat is not a second question
    assert [q.fallback for q in chosen] == [False, True] and chosen[0].text == good
    assert [e["arxiv_id"] for e in chosen[0].motivated_by] == ["2601.00001"]
    assert choose_questions([good], claims, [ev("supports", True)])[0].motivated_by == []


def _records(shared_data: Path, needles: dict[str, tuple[str, ...]], per: int = 3) -> dict:
    """Real corpus records whose title holds every word of a topic's needles."""
    found: dict[str, list[dict]] = {k: [] for k in needles}
    with gzip.open(shared_data / "arxiv" / CORPUS_NAME, "rt", encoding="utf-8") as handle:
        for line in handle:
            rec = json.loads(line)
            title = rec["title"].lower()
            for topic, words in needles.items():
                if len(found[topic]) < per and all(w in title for w in words):
                    found[topic].append(rec)
            if all(len(v) == per for v in found.values()):
                break
    return found


def _run_questions(prompt_text: str, records: list[dict], ctx: RunContext) -> dict:
    brief = parse_prompt(prompt_text)
    evidence, papers = [], {}
    for i, rec in enumerate(records):
        first_sentence = " ".join(rec["abstract"].split()).split(". ")[0] + "."
        stance = ("relaxes", "supports", "overturns")[i % 3]
        evidence.append(ev(stance, True, rec["id"], brief["claims"][i % len(brief["claims"])]["id"],
                           title=" ".join(rec["title"].split()), published=rec["listing_date"],
                           summary=first_sentence, quote=first_sentence, score=1.0 - i / 10))
        papers[rec["id"]] = {"arxiv_id": rec["id"], "title": rec["title"]}
    state = {"prompt_text": prompt_text, "brief": brief, "evidence": evidence, "papers": papers}
    out = research_questions(state, Runtime(context=ctx))
    movers = {e["arxiv_id"] for e in evidence if e["stance"] in ("relaxes", "overturns")}
    assert len(out["research_questions"]) == 2 and len(out["research_question_fallback"]) == 2
    for q in out["research_questions"]:
        named = set(re.findall(r"arXiv:(\S+?)[,)]", q.split("(motivated by")[-1])) \
            if "(motivated by" in q else set()
        assert named <= movers, q  # only counted relaxing/overturning papers motivate
    return out


@pytest.mark.slow
def test_questions_from_two_prompts_differ_and_stay_on_topic(llm_env, shared_data, seed_prompt,
                                                             tmp_path):
    """The real embedded SmolLM2 proposes (or the fallback builds) questions for the seed prompt
    and for a speech-recognition prompt: they differ, and the second has no seed-topic words."""
    records = _records(shared_data, {"seed": ("memoriz",), "asr": ("speech recogni",)})
    assert len(records["seed"]) == 3 and len(records["asr"]) == 3
    ctx = RunContext(settings=load_settings(offline=True), out_dir=tmp_path, run_id="q")
    seed = _run_questions(seed_prompt.read_text(), records["seed"], ctx)
    asr = _run_questions(ASR_PROMPT, records["asr"], ctx)
    # The model answered both times (a fallback is then the model's output being unusable).
    assert seed["degraded"] == [] and asr["degraded"] == [], seed["degraded"] + asr["degraded"]
    assert not set(seed["research_questions"]) & set(asr["research_questions"])
    for q in asr["research_questions"]:
        assert not any(w in q.lower() for w in SEED_TOPIC), q
