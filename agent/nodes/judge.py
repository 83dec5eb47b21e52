"""Summarize each candidate paper against its claim and classify its stance.

One task per (claim, paper), fanned out with ``Send`` so the LLM server batches them and a
resumed run keeps every finished judgement (LangGraph saves each finished task's writes). The
judge (:mod:`agent.judging`) sees the abstract only as quoted data, without sentences addressed to
it; its stance counts only when grounded in the abstract (``stance_counts``). The id, title and
date of the evidence are copied from the retrieved record, and any arXiv id in the model's summary
that the run did not retrieve is removed. Judgements are cached per model, method and prompt
version, so a changed judge never reuses an older judge's answers.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import asdict
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Send

from agent.grounding import strip_ungrounded
from agent.judge_eval import (
    DEVSET,
    QUALITY_KEYS,
    attach_abstracts,
    evaluate_within,
    load_judge_quality,
    load_rows,
    save_quality,
)
from agent.judgement_cache import JudgementCache
from agent.judging import Judge, JudgeInput, JudgeOutput, cache_variant, judge_method_for
from agent.nodes.context import RunContext
from agent.state import AgentState, Evidence, JudgeTask
from core.errors import RetestError
from core.fsutil import WriteError
from tools.ranking import recency_label

log = logging.getLogger(__name__)

# The judgement cache saves LLM calls; when it breaks, the run goes on without it.
_CACHE_ERRORS = (OSError, TypeError, ValueError, sqlite3.Error, RetestError)


def fan_out_judges(state: AgentState) -> list[Send] | str:
    """Route to one judge task per (claim, candidate paper), or on when there are none."""
    claims = {c["id"]: c for c in state["brief"]["claims"]}
    sends = [Send("judge", JudgeTask(claim=claims[cid], paper=state["papers"][pid], score=score))
             for cid, rows in state.get("candidates", {}).items() for pid, score in rows
             if pid in state["papers"]]
    return sends or "resolve_anchors"


def judge(task: JudgeTask, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Judge one paper against one claim; on model failure record it and mark the run degraded."""
    ctx = runtime.context
    ctx.check_cancel()
    claim, paper = task["claim"], task["paper"]
    recency = recency_label(paper["published"], claim.get("date_from"), claim.get("date_to"))
    try:
        llm = ctx.llm()  # first, so the cache is keyed by the model that actually answers
        method = judge_method_for(llm)
        variant = cache_variant(method)
        cached = _cache_get(ctx, claim["text"], paper["arxiv_id"], variant)
        if cached is not None:
            out = cached
        else:
            judge_ = Judge(llm, method, complete_json=ctx.complete_json)
            out = judge_.judge(JudgeInput(claim["text"], paper["title"], paper["abstract"]))
            _cache_put(ctx, claim["text"], paper["arxiv_id"], variant, asdict(out))
    except RetestError as exc:
        log.warning("judging %s for %s failed: %s", paper["arxiv_id"], claim["id"], exc)
        # Keep the retrieved paper (its facts are real) but count it for nothing: the verdict
        # rule ignores "unrelated", and the summary says why.
        return {"degraded": [f"model failed while judging papers: {exc}"],
                "evidence": [Evidence(claim_id=claim["id"], arxiv_id=paper["arxiv_id"],
                                      title=paper["title"], published=paper["published"] or "",
                                      stance="unrelated",
                                      summary="Not judged: the model failed on this paper.",
                                      score=float(task["score"]), recency=recency,
                                      quote=None,
                                      stance_counts=False, summary_source="abstract")]}
    summary, removed = strip_ungrounded(out.summary, {paper["arxiv_id"]})
    if removed:
        log.warning("removed ids the model wrote but the run never retrieved: %s", removed)
    if out.removed_sentences:
        log.warning("%s: ignored %d abstract sentence(s) addressed to the judge",
                    paper["arxiv_id"], len(out.removed_sentences))
    ctx.emit("judge", f"{claim['id']} x {paper['arxiv_id']}: {out.stance}"
             + ("" if out.stance_counts else " (no verified quote: does not count)"))
    evidence = Evidence(claim_id=claim["id"], arxiv_id=paper["arxiv_id"], title=paper["title"],
                        published=paper["published"] or "", stance=out.stance,  # type: ignore[typeddict-item]
                        summary=summary.strip(), score=float(task["score"]), recency=recency,
                        quote=out.quote,
                        stance_counts=out.stance_counts, summary_source=out.summary_source)
    return {"evidence": [evidence]}


def _cache_get(ctx: RunContext, claim_text: str, arxiv_id: str,
               variant: str) -> JudgeOutput | None:
    """Reuse a judgement by the same model, method and prompt version; a broken cache warns."""
    cache = _judgement_cache(ctx)
    if cache is None:
        return None
    try:
        hit = cache.get(claim_text, arxiv_id, ctx.model_name, variant)
    except _CACHE_ERRORS as exc:
        log.warning("judgement cache read failed: %s", exc)
        return None
    try:
        return JudgeOutput(**hit) if isinstance(hit, dict) else None
    except TypeError:  # a record of another shape: judge again
        return None


def _cache_put(ctx: RunContext, claim_text: str, arxiv_id: str, variant: str,
               value: dict[str, Any]) -> None:
    cache = _judgement_cache(ctx)
    if cache is not None:
        try:
            cache.put(claim_text, arxiv_id, ctx.model_name, value, variant)
        except _CACHE_ERRORS as exc:
            log.warning("judgement cache write failed: %s", exc)


def _judgement_cache(ctx: RunContext) -> JudgementCache | None:
    try:
        return JudgementCache(ctx.settings.data_dir)
    except _CACHE_ERRORS as exc:
        log.warning("judgement cache unavailable: %s", exc)
        return None


def measure_judge(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Attach the judging model's name and measured agreement (``judge_model``, ``judge_quality``).

    A kept measurement for this model and method is reused. Without one, and when papers were
    judged, the judge is measured once on the shipped dev set (abstracts from the run's corpus)
    if that is projected to take under ``agent.judge_eval.AUTO_MEASURE_BUDGET_S``; otherwise it
    stays unmeasured (None) and the verdict rule treats its stances as undecided.
    """
    ctx = runtime.context
    if not state.get("evidence"):
        return {"judge_quality": None}
    try:
        llm = ctx.llm()
    except RetestError:
        return {"judge_quality": None}
    method = judge_method_for(llm)
    quality = load_judge_quality(ctx.settings, llm.model, method)
    if quality is None:
        quality = _measure_once(ctx, llm, method)
    ctx.emit("judge_quality", "judge unmeasured" if quality is None else
             f"judge kappa {quality['kappa']:.2f} [{quality['kappa_ci'][0]:.2f}, "
             f"{quality['kappa_ci'][1]:.2f}] on n={quality['n']}")
    return {"judge_quality": quality, "judge_model": llm.model}


def _measure_once(ctx: RunContext, llm: Any, method: str) -> dict[str, Any] | None:
    corpus = ctx.settings.corpus
    if corpus is None or not DEVSET.is_file():
        log.info("judge not measured: no corpus file to read the dev set's abstracts from")
        return None
    try:
        rows = load_rows(DEVSET)
        inputs = attach_abstracts(rows, corpus)
        judge_ = Judge(llm, method, complete_json=ctx.complete_json)
        result, why = evaluate_within(judge_, rows, inputs)
    except RetestError as exc:
        log.warning("judge not measured: %s", exc)
        return None
    log.info("judge quality: %s", why)
    if result is None:
        return None
    try:
        save_quality(ctx.settings, result)
    except WriteError as exc:
        log.warning("judge measurement not kept: %s", exc)
    return {key: result[key] for key in QUALITY_KEYS}
