"""Verdicts, tensions and research questions.

Verdict rule (per claim, applied in code, never by the model):
1. Count the stances of its evidence: S supports, R relaxes, O overturns (``unrelated`` ignored).
2. A re-test with a significant result (``supports_claim`` True or False) decides: True ->
   ``holds``, False -> ``overturned``; it outweighs any single paper. Only when at least two papers
   disagree with it does the verdict soften to ``relaxed`` (the evidence is mixed).
3. Without a decisive re-test: no judged paper -> ``unresolved``; O >= 2 and O > S ->
   ``overturned``; O + R > S -> ``relaxed`` (one paper alone never overturns); S >= 1 -> ``holds``.
Tensions are evidence that relaxes or overturns a claim and was published within the tension
window (about 6 months) before the horizon: today online, the newest retrieved paper offline
(a corpus is a snapshot). Research questions come from the LLM, are stripped of ids the run did
not retrieve, and each names the retrieved papers that motivate it.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from agent.grounding import strip_ungrounded
from agent.nodes.context import RunContext
from agent.prompts import research_question_messages
from agent.state import AgentState, Evidence, Retest, Tension, VerdictLabel
from core.errors import RetestError

log = logging.getLogger(__name__)


def decide_verdict(evidence: list[Evidence], retest: Retest | None) -> VerdictLabel:
    """Apply the documented verdict rule to one claim's evidence and re-test."""
    s = sum(1 for e in evidence if e["stance"] == "supports")
    r = sum(1 for e in evidence if e["stance"] == "relaxes")
    o = sum(1 for e in evidence if e["stance"] == "overturns")
    if retest is not None and isinstance(retest.get("supports_claim"), bool):
        if retest["supports_claim"]:
            return "relaxed" if o + r >= 2 else "holds"
        return "relaxed" if s >= 2 else "overturned"
    if s + r + o == 0:
        return "unresolved"
    if o >= 2 and o > s:
        return "overturned"
    if o + r > s:
        return "relaxed"
    return "holds"


def verdicts(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Decide every claim's verdict."""
    retests = state.get("retests", {})
    out: dict[str, VerdictLabel] = {}
    for claim in state["brief"]["claims"]:
        ev = [e for e in state.get("evidence", []) if e["claim_id"] == claim["id"]]
        out[claim["id"]] = decide_verdict(ev, retests.get(claim["id"]))
    runtime.context.emit("verdict", ", ".join(f"{k}: {v}" for k, v in out.items()))
    return {"verdicts": out}


def _horizon(state: AgentState, offline: bool) -> date:
    if not offline:
        return date.today()
    dates = [p["published"] for p in state.get("papers", {}).values() if p.get("published")]
    return date.fromisoformat(max(dates)) if dates else date.today()


def tensions(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """List recent evidence that relaxes or overturns a claim, one tension per claim."""
    ctx = runtime.context
    horizon = _horizon(state, ctx.settings.offline)
    since = horizon - timedelta(days=ctx.options.tension_window_days)
    out: list[Tension] = []
    for claim in state["brief"]["claims"]:
        recent = [e for e in state.get("evidence", []) if e["claim_id"] == claim["id"]
                  and e["stance"] in ("relaxes", "overturns") and e["published"]
                  and date.fromisoformat(e["published"]) >= since]
        if not recent:
            continue
        recent.sort(key=lambda e: (e["published"], e["arxiv_id"]), reverse=True)
        parts = [f"{e['title']} (arXiv:{e['arxiv_id']}, {e['published']}) {e['stance']} it"
                 for e in recent[:3]]
        out.append(Tension(text=f"{claim['id']} ('{_short(claim['text'])}') is in tension with "
                           f"recent work: " + "; ".join(parts) + ".",
                           arxiv_ids=[e["arxiv_id"] for e in recent[:3]]))
    ctx.emit("tensions", f"{len(out)} tensions since {since.isoformat()}")
    return {"tensions": out}


def _short(text: str, words: int = 12) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


class _Questions(BaseModel):
    first: str = Field(max_length=300)
    second: str = Field(max_length=300)


def research_questions(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Propose two research questions that assume the regime moved, grounded in evidence."""
    ctx = runtime.context
    ctx.check_cancel()
    evidence = sorted((e for e in state.get("evidence", []) if e["stance"] != "unrelated"),
                      key=lambda e: (-e["score"], e["arxiv_id"]))
    if not evidence:
        evidence = sorted(state.get("evidence", []), key=lambda e: (-e["score"], e["arxiv_id"]))
    lines = [f"{e['title']} ({e['published']}): {e['summary']}" for e in evidence[:6]]
    retrieved = set(state.get("papers", {}))
    degraded: list[str] = []
    questions: list[str] = []
    try:
        reply = ctx.complete_json(
            research_question_messages(state["brief"]["question"], lines, state["brief"]["tasks"]),
            _Questions, max_tokens=260)
        questions = [strip_ungrounded(q.strip(), retrieved)[0]
                     for q in (reply.first, reply.second)]
    except RetestError as exc:
        degraded.append(f"model failed while proposing research questions: {exc}")
    fallback = _fallback_questions(state)
    questions = [q if _usable(q) else fallback[i] for i, q in
                 enumerate(questions + [""] * (2 - len(questions)))][:2]
    if questions[0] == questions[1]:
        questions[1] = fallback[1]
    grounded = [_with_sources(q, evidence[i::2][:2]) for i, q in enumerate(questions)]
    ctx.emit("questions", "two research questions proposed")
    return {"research_questions": grounded, "degraded": degraded}


def _usable(question: str) -> bool:
    """Reject empty and degenerate (looping) questions a small model may produce."""
    words = question.lower().split()
    return len(words) >= 5 and len(set(words)) / len(words) >= 0.6


def _with_sources(question: str, evidence: list[Evidence]) -> str:
    if not evidence:
        return question
    ids = ", ".join(f"arXiv:{e['arxiv_id']}" for e in evidence)
    return f"{question} (motivated by {ids})"


def _fallback_questions(state: AgentState) -> list[str]:
    """Deterministic questions from the brief when the model gives none usable."""
    claims = state["brief"]["claims"]
    first = claims[0]["text"] if claims else state["brief"]["question"]
    return [
        "If newer methods can teach transferable procedures, which out-of-distribution test "
        f"would separate memorization from generalization for: '{_short(first)}'?",
        "Does the memorization-versus-generalization picture change when the base model is "
        "smaller than the fine-tuned variant it is compared with?",
    ]
