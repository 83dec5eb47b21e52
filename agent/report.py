"""The report: report.json (DESIGN schema), report.md and references.bib.

Facts in all three come from retrieved records (ids, titles, dates, authors) and from re-test
summaries (numbers); the model contributes only summaries, stances and question wording, which
pass through the grounding filter. The markdown gets a final grounding pass over its whole text.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from agent.grounding import ground_markdown, strip_ungrounded
from agent.state import AgentState
from evals.dispatch import render_any_summary

EMBEDDED_WARNING = (
    "> **Warning:** judged by the embedded {model} model: its summaries and stances are a smoke "
    "test of the pipeline, not a research judgement (point RETEST_LLM_BASE_URL at a capable "
    "model).")
_EMBEDDED_MARKERS = ("smollm2-135m", "gemma-3-270m")


def prompt_sha256(prompt_text: str) -> str:
    """Hash identifying a prompt across runs (the history keys on it)."""
    return hashlib.sha256(prompt_text.encode("utf-8")).hexdigest()


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
            "evidence": [{"arxiv_id": e["arxiv_id"], "title": papers[e["arxiv_id"]]["title"],
                          "published": papers[e["arxiv_id"]]["published"] or "",
                          "stance": e["stance"],
                          "summary": strip_ungrounded(e["summary"], retrieved)[0]}
                         for e in evidence],
            "retest": dict(retest) if retest else None,
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
    return {
        "prompt_sha256": prompt_sha256(state["prompt_text"]),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": ctx.model_name,
        "corpus": str(settings.corpus) if settings.corpus else
        ("arxiv-api" if not settings.offline else "paper-store"),
        "degraded": list(state.get("degraded", [])),
        "claims": claims_out,
        "anchors": anchors,
        "tensions": tensions,
        "research_questions": [strip_ungrounded(q, retrieved)[0]
                               for q in state.get("research_questions", [])][:2],
        "citations": citations,
        "question": state["brief"]["question"],
        "run_id": ctx.run_id,
        "offline": settings.offline,
        "references": [{"arxiv_id": c, "title": papers[c]["title"],
                        "authors": papers[c]["authors"], "published": papers[c]["published"]}
                       for c in citations],
    }


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
    lines += ["# Re-test report", "", f"**Question:** {_cell(report.get('question', ''))}", ""]
    if report["degraded"]:
        lines += ["**Degraded run:** " + "; ".join(report["degraded"]), ""]
    lines += ["## Summary", "", "| claim | dated | newer evidence | re-test | verdict |",
              "|---|---|---|---|---|"]
    for c in report["claims"]:
        stances: dict[str, int] = {}
        for e in c["evidence"]:
            stances[e["stance"]] = stances.get(e["stance"], 0) + 1
        ev = ", ".join(f"{n} {s}" for s, n in sorted(stances.items())) or "none found"
        rt = "none"
        if c["retest"]:
            sc = c["retest"]["supports_claim"]
            rt = f"{c['retest']['spec']}: " + {True: "supports", False: "contradicts",
                                                None: "not significant"}[sc]
        lines.append(f"| {c['id']}: {_cell(_short(c['text']))} | {_cell(c['dated']) or '-'} | "
                     f"{ev} | {rt} | **{c['verdict']}** |")
    lines.append("")
    for c in report["claims"]:
        lines += [f"## {c['id']}: {_cell(c['text'])}", "",
                  f"Dated {_cell(c['dated']) or 'undated'}; verdict **{c['verdict']}**.", ""]
        if c["evidence"]:
            lines += ["Newer evidence:", ""]
            for e in c["evidence"]:
                lines.append(f"- [arXiv:{e['arxiv_id']}](https://arxiv.org/abs/{e['arxiv_id']}) "
                             f"*{_cell(e['title'])}* ({e['published']}), **{e['stance']}**: "
                             f"{_cell(e['summary'])}")
            lines.append("")
        else:
            lines += ["No newer paper matched this claim.", ""]
        if c["retest"]:
            lines += [f"Re-test `{c['retest']['spec']}` (all outputs in `retests/{c['id']}/`):",
                      "", *retest_summary_lines(c["retest"]["summary"]), ""]
        elif c.get("retest_note"):
            lines += [f"Re-test: {c['retest_note']}", ""]
    lines += ["## Tensions (recent work)", ""]
    lines += [f"- {_cell(t['text'])}" for t in report["tensions"]] or [
        "- None found in the window."]
    lines += ["", "## Research questions", ""]
    lines += [f"{i}. {_cell(q)}" for i, q in enumerate(report["research_questions"], 1)]
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
              "- verdict rule: a significant re-test decides over single papers; otherwise "
              "stance counts (see agent/nodes/synthesis.py)", ""]
    anchor_ids = [a["arxiv_id"] for a in report["anchors"]]
    text, _ = ground_markdown("\n".join(lines), report["citations"], anchor_ids)
    return text


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
