"""Verdicts, tensions and research questions.

Verdict rule (per claim, applied in code, never by the model; :func:`decide_verdict`):
1. A stance *counts* only when the judge grounded it: ``supports`` and ``unrelated`` always do;
   ``relaxes`` and ``overturns`` only with a quote that code found verbatim in the abstract
   (``stance_counts``; an older record without the flag counts only for supports/unrelated).
   Stances that do not count are ignored.
2. A controlled re-test (``decides`` true) with a clear result (``supports_claim`` true or false)
   settles the claim: true -> ``holds``, false -> ``overturned``. Only when the judge is trusted
   (rule 3) and at least two counted papers disagree with it does the verdict soften to
   ``relaxed``. A re-test that is not a controlled comparison, or has no clear result, settles
   nothing.
3. Otherwise stances decide only when the judge is trusted: its agreement with hand labels was
   measured for the model that judged this run, and the lower bound of its kappa 95% CI is above
   0. An unmeasured judge, or one no better than chance, leaves the claim ``unresolved`` with the
   judge's figures as the reason.
4. With a trusted judge, at least ``MIN_COUNTED_EVIDENCE`` (2) counted relevant papers (counted,
   stance other than ``unrelated``) are needed; fewer -> ``unresolved``. Then with S supports,
   R relaxes, O overturns: O >= 2 and O > S -> ``overturned``; O + R > S -> ``relaxed``
   (one paper alone never overturns); else ``holds``.
Tensions are counted evidence that relaxes or overturns a claim and was published within the
tension window (about 6 months) before the horizon: today online, the newest retrieved paper
offline (a corpus is a snapshot). Research questions come from the LLM given the prompt's
question and tasks, the claims and the counted evidence; ids the run did not retrieve are
stripped. When the model's output is unusable, each missing question is built from the claims and
the counted relaxing/overturning papers found, and marked as a fallback. "Motivated by" names only
papers whose counted stance relaxes or overturns a claim, and none when there are none.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any, NamedTuple

from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from agent.grounding import strip_ungrounded
from agent.nodes.context import RunContext
from agent.prompts import research_question_messages
from agent.state import AgentState, Claim, Evidence, Tension, VerdictLabel
from core.errors import RetestError

log = logging.getLogger(__name__)

MIN_COUNTED_EVIDENCE = 2  # counted relevant papers a stance-based verdict needs
_MOVING = ("relaxes", "overturns")


class VerdictDecision(NamedTuple):
    """One claim's verdict and the reason a reader sees beside it."""

    label: VerdictLabel
    reason: str


class JudgeTrust(NamedTuple):
    """Whether the judge's stances may decide verdicts, and the figures that say why."""

    decides: bool
    reason: str


def stance_counts(evidence: Mapping[str, Any]) -> bool:
    """Tell whether this evidence's stance counts (rule 1 above).

    The judge node sets ``stance_counts``; a record without it (an older checkpoint or report)
    counts only when its stance is ``supports`` or ``unrelated``, which need no quote.
    """
    flag = evidence.get("stance_counts")
    if isinstance(flag, bool):
        return flag
    return evidence.get("stance") in ("supports", "unrelated")


def judge_figures(judge: Mapping[str, Any]) -> str:
    """Render a measured judge's kappa line, e.g. ``kappa 0.03 [-0.08, 0.14], n=180``."""
    lo, hi = judge["kappa_ci"]
    return f"kappa {float(judge['kappa']):.2f} [{float(lo):.2f}, {float(hi):.2f}], n={judge['n']}"


def _model_key(name: str) -> str:
    return str(name).strip().rstrip("/").rsplit("/", 1)[-1].lower()


def judge_trust(judge: Mapping[str, Any] | None, model: str | None = None) -> JudgeTrust:
    """Decide whether stances from this judge may decide verdicts (rule 3 above).

    ``judge`` is the state's ``judge_quality`` (None when unmeasured); ``model`` is the model
    that judged this run, and figures measured for another model do not apply to it.
    """
    if not judge:
        return JudgeTrust(False, "judge unmeasured: stances do not decide verdicts")
    try:
        figures = judge_figures(judge)
        lower = float(judge["kappa_ci"][0])
    except (KeyError, TypeError, ValueError, IndexError):
        return JudgeTrust(False, "judge figures incomplete (no kappa with CI): stances do not "
                                 "decide verdicts")
    measured_for = judge.get("model")
    if model and measured_for and _model_key(measured_for) != _model_key(model):
        return JudgeTrust(False, f"the judge was measured for {measured_for}, not for {model} "
                                 "that judged this run: stances do not decide verdicts")
    if math.isnan(lower) or lower <= 0:
        return JudgeTrust(False, "the judge's agreement with hand labels is no better than "
                                 f"chance: {figures}")
    return JudgeTrust(True, f"judge agreement above chance: {figures}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def decide_verdict(evidence: Sequence[Mapping[str, Any]], retest: Mapping[str, Any] | None,
                   judge: Mapping[str, Any] | None, model: str | None = None
                   ) -> VerdictDecision:
    """Apply the documented verdict rule (module docstring) to one claim.

    ``evidence`` are the claim's judged papers, ``retest`` its re-test record or None, ``judge``
    the measured judge quality or None, ``model`` the model that judged. Pure: same inputs, same
    verdict and reason.
    """
    trust = judge_trust(judge, model)
    counted = [e for e in evidence if stance_counts(e) and e.get("stance") != "unrelated"]
    ignored = sum(1 for e in evidence if not stance_counts(e))
    s = sum(1 for e in counted if e["stance"] == "supports")
    r = sum(1 for e in counted if e["stance"] == "relaxes")
    o = sum(1 for e in counted if e["stance"] == "overturns")
    tally = (f"counted stances: {s} supports, {r} relaxes, {o} overturns"
             + (f"; {_plural(ignored, 'stance')} without a verified quote ignored"
                if ignored else ""))

    retest_note = ""
    if retest is not None:
        spec = retest.get("spec") or "re-test"
        clear = isinstance(retest.get("supports_claim"), bool)
        if retest.get("decides") is True and clear:
            if retest["supports_claim"]:
                if trust.decides and o + r >= 2:
                    return VerdictDecision("relaxed", f"the controlled re-test {spec} supports "
                                           f"the claim, but {o + r} counted papers relax or "
                                           f"overturn it ({tally}; {trust.reason})")
                return VerdictDecision("holds", f"the controlled re-test {spec} supports the "
                                       "claim")
            if trust.decides and s >= 2:
                return VerdictDecision("relaxed", f"the controlled re-test {spec} contradicts "
                                       f"the claim, but {s} counted papers support it ({tally}; "
                                       f"{trust.reason})")
            return VerdictDecision("overturned", f"the controlled re-test {spec} contradicts the "
                                   "claim")
        retest_note = (f"; re-test {spec} has no clear result" if not clear else
                       f"; re-test {spec} is not a controlled comparison, so it does not decide")

    if not trust.decides:
        return VerdictDecision("unresolved", trust.reason + retest_note)
    if len(counted) < MIN_COUNTED_EVIDENCE:
        return VerdictDecision("unresolved", f"{_plural(len(counted), 'counted relevant paper')}"
                               f", fewer than the {MIN_COUNTED_EVIDENCE} the rule needs ({tally})"
                               + retest_note)
    if o >= 2 and o > s:
        label: VerdictLabel = "overturned"
    elif o + r > s:
        label = "relaxed"
    else:
        label = "holds"
    return VerdictDecision(label, f"{tally} ({trust.reason})" + retest_note)


def verdicts(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Decide every claim's verdict and its reason."""
    ctx = runtime.context
    retests = state.get("retests", {})
    judge = state.get("judge_quality")
    out: dict[str, VerdictLabel] = {}
    reasons: dict[str, str] = {}
    for claim in state["brief"]["claims"]:
        ev = [e for e in state.get("evidence", []) if e["claim_id"] == claim["id"]]
        decision = decide_verdict(ev, retests.get(claim["id"]), judge,
                                  state.get("judge_model") or ctx.model_name)
        out[claim["id"]], reasons[claim["id"]] = decision
    ctx.emit("verdict", ", ".join(f"{k}: {v}" for k, v in out.items()))
    return {"verdicts": out, "verdict_reasons": reasons}


def _horizon(state: AgentState, offline: bool) -> date:
    if not offline:
        return date.today()
    dates = [p["published"] for p in state.get("papers", {}).values() if p.get("published")]
    return date.fromisoformat(max(dates)) if dates else date.today()


def tensions(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """List recent counted evidence that relaxes or overturns a claim, one tension per claim."""
    ctx = runtime.context
    horizon = _horizon(state, ctx.settings.offline)
    since = horizon - timedelta(days=ctx.options.tension_window_days)
    out: list[Tension] = []
    for claim in state["brief"]["claims"]:
        recent = [e for e in state.get("evidence", []) if e["claim_id"] == claim["id"]
                  and e["stance"] in _MOVING and stance_counts(e) and e["published"]
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


class Question(NamedTuple):
    """A research question, the papers that motivate it, and whether it is a fallback."""

    text: str
    motivated_by: list[Evidence]
    fallback: bool


def research_questions(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Propose two research questions from this run's claims and evidence (docstring above)."""
    ctx = runtime.context
    ctx.check_cancel()
    claims = state["brief"]["claims"]
    relevant = sorted((e for e in state.get("evidence", [])
                       if e["stance"] != "unrelated" and stance_counts(e)),
                      key=lambda e: (-e["score"], e["arxiv_id"]))
    lines = [f"{e['title']} ({e['published']}) {e['stance']} {e['claim_id']}: {e['summary']}"
             for e in relevant[:6]]
    retrieved = set(state.get("papers", {}))
    degraded: list[str] = []
    proposed: list[str] = []
    try:
        reply = ctx.complete_json(
            research_question_messages(state["brief"]["question"], lines, state["brief"]["tasks"],
                                       [f"{c['id']}: {c['text']}" for c in claims]),
            _Questions, max_tokens=260)
        proposed = [strip_ungrounded(q.strip(), retrieved)[0]
                    for q in (reply.first, reply.second)]
    except RetestError as exc:
        degraded.append(f"model failed while proposing research questions: {exc}")
    questions = choose_questions(proposed, claims, state.get("evidence", []))
    n_fallback = sum(q.fallback for q in questions)
    ctx.emit("questions", "two research questions proposed"
             + (f" ({n_fallback} built from the claims: the model's output was unusable)"
                if n_fallback else ""))
    return {"research_questions": [_with_sources(q.text, q.motivated_by) for q in questions],
            "research_question_fallback": [q.fallback for q in questions],
            "degraded": degraded}


def choose_questions(proposed: Sequence[str], claims: Sequence[Claim],
                     evidence: Sequence[Evidence]) -> list[Question]:
    """Keep the model's usable, distinct questions; build each missing one from the run's data.

    The model's questions are motivated by the counted relaxing/overturning papers, alternately;
    a fallback question is motivated by the papers its own text names.
    """
    movers = _unique_papers(sorted((e for e in evidence
                                    if e["stance"] in _MOVING and stance_counts(e)),
                                   key=lambda e: (-e["score"], e["arxiv_id"])))
    fallback = fallback_questions(claims, evidence)
    out: list[Question] = []
    for i in range(2):
        text = proposed[i].strip() if i < len(proposed) else ""
        if _usable(text) and all(_norm(text) != _norm(q.text) for q in out):
            out.append(Question(text, movers[i::2][:2], fallback=False))
        else:
            out.append(fallback[i])
    return out


def fallback_questions(claims: Sequence[Claim], evidence: Sequence[Evidence]) -> list[Question]:
    """Build two distinct questions from the claims and the counted relaxing/overturning papers.

    Templates only: every topical word comes from a claim's text or a retrieved paper's title.
    The claims with the most counted movers come first (prompt order breaks ties). A question
    about a claim with such a paper names it (and is motivated by it); one without asks what
    controlled re-test would decide the claim.
    """
    by_claim: dict[str, list[Evidence]] = {c["id"]: [] for c in claims}
    for e in sorted(evidence, key=lambda e: (-e["score"], e["arxiv_id"])):
        if e["stance"] in _MOVING and stance_counts(e) and e["claim_id"] in by_claim:
            by_claim[e["claim_id"]].append(e)
    ranked = sorted(claims, key=lambda c: -len(by_claim[c["id"]]))
    if not ranked:  # the parser refuses such prompts; kept so this stays total
        return [Question("Which dated claim should this prompt state so that a re-test can "
                         "decide it?", [], True),
                Question("Which controlled comparison would answer the prompt's question?",
                         [], True)]
    # Two claims when there are two; one claim twice (its second paper, or a second template).
    picks = [(ranked[0], 0), (ranked[1], 0) if len(ranked) > 1 else (ranked[0], 1)]
    out: list[Question] = []
    for claim, nth in picks:
        text = _short(claim["text"], 20)
        papers = by_claim[claim["id"]]
        if nth < len(papers):
            paper = papers[nth]
            out.append(Question(f"What controlled comparison would decide whether '{text}' "
                                f"still holds, given that '{paper['title']}' "
                                f"({paper['published']}) {paper['stance']} it?", [paper], True))
        elif nth == 0:
            out.append(Question(f"What controlled re-test would show whether '{text}' still "
                                "holds, given that this run found no counted paper that relaxes "
                                "or overturns it?", [], True))
        else:
            out.append(Question(f"Which observation would overturn '{text}', and under which "
                                "conditions could a re-test make it?", [], True))
    return out


def _unique_papers(evidence: list[Evidence]) -> list[Evidence]:
    seen: set[str] = set()
    out: list[Evidence] = []
    for e in evidence:
        if e["arxiv_id"] not in seen:
            seen.add(e["arxiv_id"])
            out.append(e)
    return out


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _usable(question: str) -> bool:
    """Reject what a small model may produce instead of a question: empty, looping or a title."""
    words = question.lower().split()
    return (len(words) >= 5 and len(set(words)) / len(words) >= 0.6
            and question.rstrip().endswith("?"))


def _with_sources(question: str, evidence: list[Evidence]) -> str:
    if not evidence:
        return question
    ids = ", ".join(f"arXiv:{e['arxiv_id']}" for e in evidence)
    return f"{question} (motivated by {ids})"
