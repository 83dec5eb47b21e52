"""Summarize each candidate paper against its claim and classify its stance.

One task per (claim, paper), fanned out with ``Send`` so the LLM server batches them and a
resumed run keeps every finished judgement (LangGraph saves each finished task's writes). The
model sees the abstract only as quoted data and returns JSON under a schema; the id, title and
date of the evidence are copied from the retrieved record, and any arXiv id in the model's summary
that the run did not retrieve is removed.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import BaseModel, Field

from agent.grounding import strip_ungrounded
from agent.judgement_cache import JudgementCache
from agent.nodes.context import RunContext
from agent.prompts import judge_messages
from agent.state import AgentState, Evidence, JudgeTask
from core.errors import RetestError
from tools.ranking import recency_label

log = logging.getLogger(__name__)

# The judgement cache saves LLM calls; when it breaks, the run goes on without it.
_CACHE_ERRORS = (OSError, TypeError, ValueError, sqlite3.Error, RetestError)


class Judgement(BaseModel):
    """The model's reading of one paper against one claim."""

    summary: str = Field(max_length=300, description="One sentence on what the paper finds")
    stance: Literal["supports", "relaxes", "overturns", "unrelated"]


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
    recency = recency_label(paper["published"], claim["date_from"], claim["date_to"])
    try:
        ctx.llm()  # first, so the cache is keyed by the model that actually answers
        cached = _cache_get(ctx, claim["text"], paper["arxiv_id"])
        if cached is not None:
            reply = Judgement.model_validate(cached)
        else:
            reply = ctx.complete_json(judge_messages(claim, paper), Judgement,
                                            max_tokens=160)
            _cache_put(ctx, claim["text"], paper["arxiv_id"], reply.model_dump())
    except RetestError as exc:
        log.warning("judging %s for %s failed: %s", paper["arxiv_id"], claim["id"], exc)
        # Keep the retrieved paper (its facts are real) but count it for nothing: the verdict
        # rule ignores "unrelated", and the summary says why.
        return {"degraded": [f"model failed while judging papers: {exc}"],
                "evidence": [Evidence(claim_id=claim["id"], arxiv_id=paper["arxiv_id"],
                                      title=paper["title"], published=paper["published"] or "",
                                      stance="unrelated",
                                      summary="Not judged: the model failed on this paper.",
                                      score=float(task["score"]), recency=recency)]}
    summary, removed = strip_ungrounded(reply.summary, {paper["arxiv_id"]})
    if removed:
        log.warning("removed ids the model wrote but the run never retrieved: %s", removed)
    ctx.emit("judge", f"{claim['id']} x {paper['arxiv_id']}: {reply.stance}")
    evidence = Evidence(claim_id=claim["id"], arxiv_id=paper["arxiv_id"], title=paper["title"],
                        published=paper["published"] or "", stance=reply.stance,
                        summary=summary.strip(), score=float(task["score"]), recency=recency)
    return {"evidence": [evidence]}


def _cache_get(ctx: RunContext, claim_text: str, arxiv_id: str) -> dict[str, Any] | None:
    """Reuse a stance judged by the same model in an earlier run; a broken cache only warns."""
    cache = _judgement_cache(ctx)
    if cache is None:
        return None
    try:
        hit = cache.get(claim_text, arxiv_id, ctx.model_name)
    except _CACHE_ERRORS as exc:
        log.warning("judgement cache read failed: %s", exc)
        return None
    return hit if isinstance(hit, dict) and {"summary", "stance"} <= hit.keys() else None


def _cache_put(ctx: RunContext, claim_text: str, arxiv_id: str, value: dict[str, Any]) -> None:
    cache = _judgement_cache(ctx)
    if cache is not None:
        try:
            cache.put(claim_text, arxiv_id, ctx.model_name, value)
        except _CACHE_ERRORS as exc:
            log.warning("judgement cache write failed: %s", exc)


def _judgement_cache(ctx: RunContext) -> JudgementCache | None:
    try:
        return JudgementCache(ctx.settings.data_dir)
    except _CACHE_ERRORS as exc:
        log.warning("judgement cache unavailable: %s", exc)
        return None
    try:
        return JudgementCache(ctx.settings.data_dir)
    except (OSError, TypeError, ValueError) as exc:
        log.warning("judgement cache unavailable: %s", exc)
        return None
