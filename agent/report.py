"""The report: report.json (DESIGN schema), report.md and references.bib.

Facts in all three come from retrieved records (ids, titles, dates, authors) and from re-test
summaries (numbers); the model contributes only summaries, stances and question wording, which
pass through the grounding filter. The markdown gets a final grounding pass over its whole text.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from agent.grounding import ground_markdown, strip_ungrounded
from agent.nodes.synthesis import MIN_COUNTED_EVIDENCE, judge_trust, stance_counts
from agent.parse import prompt_sha256
from agent.retest_report import (
    budget_json,
    budget_line,
    drop_repeated_lines,
    retest_json,
    retest_lines,
    verdict_word,
)
from agent.state import AgentState, Evidence
from evals.dispatch import render_any_summary

EMBEDDED_WARNING = (
    "> **Warning:** judged by the embedded {model} model: its summaries and stances are a smoke "
    "test of the pipeline, not a research judgement (point RETEST_LLM_BASE_URL at a capable "
    "model).")
_EMBEDDED_MARKERS = ("smollm2-135m", "gemma-3-270m")



def is_embedded_model(model: str) -> bool:
    """Tell whether ``model`` is one of the tiny packaged models."""
    return any(m in model.lower() for m in _EMBEDDED_MARKERS)


def build_report_json(state: AgentState, ctx: Any) -> dict[str, Any]:
    """Build report.json from the state; every id in it is one the run retrieved."""
    papers = state.get("papers", {})
    retrieved = set(papers)
    claims_out: list[dict[str, Any]] = []
    for claim in state["brief"]["claims"]:
        evidence = sorted((e for e in state.get("evidence", [])
                           if e["claim_id"] == claim["id"] and e["arxiv_id"] in retrieved),
                          key=lambda e: (-e["score"], e["arxiv_id"]))
        plan = state.get("retest_plans", {}).get(claim["id"])
        retest = state.get("retests", {}).get(claim["id"])
        note = ""
        if plan and not plan["spec"]:
            note = plan["needs"]
        elif plan and retest is None:
            note = f"recipe {plan['spec']} (chosen by {plan['chosen_by']}): {plan['status']}"
        claims_out.append({
            "id": claim["id"], "text": claim["text"], "dated": claim["dated"],
            "date_range": [claim["date_from"], claim["date_to"]],
            "verdict": state.get("verdicts", {}).get(claim["id"], "unresolved"),
            "verdict_reason": state.get("verdict_reasons", {}).get(
                claim["id"], "no reason recorded (a run from before verdict reasons)"),
            "evidence": [_evidence_json(e, papers[e["arxiv_id"]], retrieved) for e in evidence],
            "retest": retest_json(plan, retest, ctx.options.retest_budget_s),
            "retest_note": note,
        })
    anchors = [{"arxiv_id": a["arxiv_id"], "status": a["status"],
                "title": a["title"] if a["status"] == "verified" else None,
                "published": a["published"] if a["status"] == "verified" else None,
                "note": a["note"]} for a in state.get("anchors", [])]
    tensions = [{"text": strip_ungrounded(t["text"], retrieved)[0],
                 "arxiv_ids": [i for i in t["arxiv_ids"] if i in retrieved]}
                for t in state.get("tensions", [])]
    cited: list[str] = []
    for claim in claims_out:
        cited += [e["arxiv_id"] for e in claim["evidence"]]
    for tension in tensions:
        cited += tension["arxiv_ids"]
    cited += [a["arxiv_id"] for a in anchors if a["status"] == "verified"]
    citations = sorted({c for c in cited if c in retrieved})
    settings = ctx.settings
    quality = state.get("judge_quality")
    judge_model = state.get("judge_model") or ctx.model_name  # see AgentState.judge_model
    trust = judge_trust(quality, judge_model)
    questions = state.get("research_questions", [])[:2]
    fallback = list(state.get("research_question_fallback") or [])
    return {
        "prompt_sha256": prompt_sha256(state["prompt_text"]),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": judge_model,
        "corpus": str(settings.corpus) if settings.corpus else
        ("arxiv-api" if not settings.offline else "paper-store"),
        "degraded": list(state.get("degraded", [])),
        "claims": claims_out,
        "retest_budget": budget_json(claims_out, ctx.options.retest_budget_s),
        "anchors": anchors,
        "tensions": tensions,
        "research_questions": [strip_ungrounded(q, retrieved)[0] for q in questions],
        "research_questions_fallback": [bool(f) for f in fallback[:len(questions)]]
        + [False] * (len(questions) - len(fallback)),
        "citations": citations,
        "judge": {"model": judge_model, "measured": bool(quality),
                  "decides_verdicts": trust.decides, "reason": trust.reason,
                  "min_counted_evidence": MIN_COUNTED_EVIDENCE,
                  "quality": dict(quality) if quality else None},
        "question": state["brief"]["question"],
        "run_id": ctx.run_id,
        "offline": settings.offline,
        "references": [{"arxiv_id": c, "title": papers[c]["title"],
                        "authors": papers[c]["authors"], "published": papers[c]["published"]}
                       for c in citations],
    }


def _evidence_json(e: Evidence, paper: dict[str, Any], retrieved: set[str]) -> dict[str, Any]:
    """One evidence row of report.json: facts from the paper record, the rest from the judge.

    A record without ``recency`` predates contemporaneous evidence (retrieval then kept only
    papers newer than the claim), so it reads "newer"; one without ``stance_counts`` counts only
    for supports/unrelated (:func:`stance_counts`).
    """
    quote = e.get("quote")
    return {"arxiv_id": e["arxiv_id"], "title": paper["title"],
            "published": paper["published"] or "", "stance": e["stance"],
            "summary": strip_ungrounded(e["summary"], retrieved)[0],
            "recency": e.get("recency") or "newer",
            "quote": strip_ungrounded(quote, retrieved)[0] if quote else None,
            "stance_counts": stance_counts(e)}


def _inert(text: str) -> str:
    """Make outside text (titles, abstracts, model output) inert in Markdown.

    No raw HTML tags or comments, no links or images (``[x](javascript:...)``) survive; the words
    stay readable.
    """
    return (str(text).replace("<", "&lt;").replace(">", "&gt;")
            .replace("[", "\\[").replace("]", "\\]"))


def _cell(text: str) -> str:
    return _inert(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict[str, Any]) -> str:
    """Render report.md from report.json, then run the final grounding pass over it."""
    lines: list[str] = []
    if is_embedded_model(report["model"]):
        lines += [EMBEDDED_WARNING.format(model=report["model"]), ""]
    lines += [judge_line(report.get("judge")), ""]
    lines += ["# Re-test report", "", f"**Question:** {_cell(report.get('question', ''))}", ""]
    if report["degraded"]:
        lines += ["**Degraded run:** " + "; ".join(report["degraded"]), ""]
    lines += ["## Summary", "",
              "| claim | dated | evidence (counted stances) | re-test | verdict |",
              "|---|---|---|---|---|"]
    weighed = bool((report.get("judge") or {}).get("decides_verdicts"))
    for c in report["claims"]:
        ev = _stance_cell(c["evidence"], weighed)
        rt = "none"
        if c["retest"]:
            rt = f"{c['retest']['spec']}: {verdict_word(c['retest'])}"
        lines.append(f"| {c['id']}: {_cell(_short(c['text']))} | {_cell(c['dated']) or '-'} | "
                     f"{ev} | {rt} | **{c['verdict']}** |")
    lines.append("")
    if budget_line(report.get("retest_budget")):
        lines += [budget_line(report.get("retest_budget")), ""]
    for c in report["claims"]:
        reason = f" Why: {_cell(c['verdict_reason'])}." if c.get("verdict_reason") else ""
        lines += [f"## {c['id']}: {_cell(c['text'])}", "",
                  f"Dated {_cell(c['dated']) or 'undated'}; verdict **{c['verdict']}**.{reason}",
                  ""]
        if c["evidence"]:
            lines += ["Evidence (newer than the claim, or contemporaneous with its dates):", ""]
            lines += [_evidence_line(e, weighed) for e in c["evidence"]]
            lines.append("")
        else:
            lines += ["No paper matched this claim.", ""]
        if c["retest"]:
            lines += retest_lines(c["id"], c["retest"], _cell)
            if c["retest"]["summary"]:
                lines += [*drop_repeated_lines(retest_summary_lines(c["retest"]["summary"])), ""]
        elif c.get("retest_note"):
            lines += [f"Re-test: {c['retest_note']}", ""]
    lines += ["## Tensions (recent work)", ""]
    if not (report.get("judge") or {}).get("decides_verdicts"):
        lines += ["Stances below come from a judge whose stances do not decide verdicts (see the "
                  "judge line at the top).", ""]
    lines += [f"- {_cell(t['text'])}" for t in report["tensions"]] or [
        "- None found in the window."]
    lines += ["", "## Research questions", ""]
    fallback = report.get("research_questions_fallback") or []
    lines += [f"{i}. {_cell(q)}" + (" *(fallback: built from the claims and the evidence found, "
                                    "since the model's question was unusable)*"
                                    if i <= len(fallback) and fallback[i - 1] else "")
              for i, q in enumerate(report["research_questions"], 1)]
    lines += ["", "## Anchors", "", "| anchor | status | title |", "|---|---|---|"]
    for a in report["anchors"]:
        flag = "" if a["status"] == "verified" else " (flagged: not grounded, not cited)"
        lines.append(f"| {a['arxiv_id']} | {a['status']}{flag} | "
                     f"{_cell(a['title'] or a['note'])} <!-- anchor --> |")
    usage = report.get("usage", {})
    lines += ["", "## Method", "",
              f"- model: {report['model']}", f"- corpus: {report['corpus']}",
              f"- generated: {report['generated_at']}", f"- run id: {report.get('run_id', '')}",
              f"- LLM calls: {usage.get('calls', 0)}, tokens: "
              f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} "
              "completion (this process)",
              "- verdict rule: a controlled re-test with a clear result settles a claim; "
              "otherwise counted stances decide only when the judge's measured kappa CI lies "
              f"above 0 and at least {(report.get('judge') or {}).get('min_counted_evidence', 2)}"
              " counted papers bear on the claim; a relaxing or overturning stance counts only "
              "with a quote verified in the abstract (see agent/nodes/synthesis.py)", ""]
    anchor_ids = [a["arxiv_id"] for a in report["anchors"]]
    text, _ = ground_markdown("\n".join(lines), report["citations"], anchor_ids)
    return text


def judge_line(judge: dict[str, Any] | None) -> str:
    """Render the one line at the top that states the judge's measured figures, or that none are.

    Every number comes from ``judge.quality`` (measured by ``retest judge-eval``), none from the
    model.
    """
    quality = (judge or {}).get("quality")
    if not quality:
        return ("> **Judge unmeasured:** stances do not decide verdicts (measure the judging "
                "model with `retest judge-eval`).")
    try:
        lo, hi = quality["kappa_ci"]
        figures = (f"{_cell(quality.get('model', '?'))} ({_cell(quality.get('method', '?'))}), "
                   f"n={quality['n']} hand-labelled rows: accuracy {_num(quality.get('accuracy'))}"
                   f", macro-F1 {_num(quality.get('macro_f1'))}, kappa {_num(quality['kappa'])} "
                   f"[{_num(lo)}, {_num(hi)}], majority baseline "
                   f"{_num(quality.get('majority_baseline'))}")
    except (KeyError, TypeError, ValueError):
        return "> **Judge figures incomplete:** stances do not decide verdicts."
    if (judge or {}).get("decides_verdicts"):
        verdict_use = "stances decide verdicts (kappa CI above 0)"
    elif isinstance(lo, int | float) and lo <= 0:
        verdict_use = "stances do not decide verdicts (kappa CI includes 0: no better than chance)"
    else:
        verdict_use = f"stances do not decide verdicts: {_cell((judge or {}).get('reason', ''))}"
    return f"> **Judge:** {figures}; {verdict_use}."


def _num(value: Any) -> str:
    return f"{float(value):.2f}" if isinstance(value, int | float) else "n/a"


def _counts(e: dict[str, Any]) -> bool:
    """Whether a report.json evidence row's stance counts toward a verdict."""
    return e.get("stance") != "unrelated" and stance_counts(e)


def _stance_cell(evidence: list[dict[str, Any]], weighed: bool) -> str:
    """Return the summary table's evidence cell: counted stances, or how many papers, unweighed."""
    if not evidence:
        return "none found"
    if not weighed:
        n = len(evidence)
        return f"{n} paper{'' if n == 1 else 's'}; no stance counts (judge)"
    stances: dict[str, int] = {}
    uncounted = 0
    for e in evidence:
        if _counts(e):
            stances[e["stance"]] = stances.get(e["stance"], 0) + 1
        else:
            uncounted += 1
    cell = ", ".join(f"{n} {s}" for s, n in sorted(stances.items()))
    return cell + ((("; " if cell else "") + f"{uncounted} not counted") if uncounted else "")


def _evidence_line(e: dict[str, Any], weighed: bool = True) -> str:
    """One evidence bullet: link, title, date and recency, stance, whether it counts, quote.

    ``weighed`` is whether the report's judge decides verdicts. When it does not (unmeasured, or
    no better than chance), the stance is shown as the judge's unweighted answer, not in bold:
    a bold "relaxes" beside an off-topic paper would read as a finding.
    """
    if not weighed:
        stance, counting = f"judge's stance *{e['stance']}* (carries no weight)", ""
    elif e.get("stance") == "unrelated":
        stance, counting = f"**{e['stance']}**", ""
    elif stance_counts(e):
        stance, counting = f"**{e['stance']}**", ", counts"
    else:
        stance, counting = f"**{e['stance']}**", ", does not count (no verified quote)"
    summary = _cell(e["summary"]).rstrip()
    if e.get("quote") and summary and summary[-1] not in ".!?":
        summary += "."  # the quote starts a new sentence
    quote = f" Quote: \"{_cell(e['quote'])}\"" if e.get("quote") else ""
    recency = f", {e['recency']}" if e.get("recency") else ""
    return (f"- [arXiv:{e['arxiv_id']}](https://arxiv.org/abs/{e['arxiv_id']}) "
            f"*{_cell(e['title'])}* ({e['published']}{recency}), {stance}{counting}: "
            f"{summary}{quote}")


def retest_summary_lines(summary: dict[str, Any]) -> list[str]:
    """Return the evaluation's own Markdown summary lines, title dropped, headings demoted.

    Accuracies with CIs, the gap and the rule, as in ``retests/<claim>/summary.md``; the
    headings nest under the claim's section.
    """
    try:
        body = render_any_summary(summary).splitlines()[1:]
    except (KeyError, TypeError, ValueError, IndexError):  # not a summary this version renders
        return [f"supports_claim = {summary.get('supports_claim')}; see summary.json."]
    return ["###" + line if line.startswith("#") else line for line in body]


def _short(text: str, words: int = 10) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


def render_bibtex(report: dict[str, Any]) -> str:
    """Render references.bib for every cited paper (facts from the retrieved records)."""
    entries: list[str] = []
    for ref in report.get("references", []):
        key = "arxiv" + re.sub(r"[^0-9A-Za-z]", "", ref["arxiv_id"])
        year = (ref.get("published") or "")[:4]
        authors = " and ".join(ref.get("authors") or []) or "Unknown"
        title = ref["title"].replace("{", "").replace("}", "")
        entries.append(
            f"@misc{{{key},\n  title = {{{{{title}}}}},\n  author = {{{authors}}},\n"
            f"  year = {{{year}}},\n  eprint = {{{ref['arxiv_id']}}},\n"
            f"  archivePrefix = {{arXiv}},\n  url = {{https://arxiv.org/abs/{ref['arxiv_id']}}}\n}}")
    return "\n\n".join(entries) + ("\n" if entries else "")
