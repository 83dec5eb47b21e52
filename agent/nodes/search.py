"""Plan queries per claim and retrieve the papers that bear on each claim.

Retrieval is hybrid and fused (``tools/retrieval.py``): for each claim, every query (the claim
itself and, with less weight, each of its clauses, the model's planned queries and the prompt's
question and tasks) is ranked by BM25 over the local corpus and by dense similarity in the
paper store, and all those lists, plus live arXiv's answer when online, are fused by reciprocal
rank. With ``--corpus`` the whole corpus
is ingested into the store once (a no-op later) and its BM25 index is built once and kept; no run
scans the corpus file by keyword.

Dates are a preference and a label, not a cut: a claim dated "~2024-2025" admits papers from
2024-01-01 on; papers published after the range rank slightly higher and are labelled "newer",
those inside it "contemporaneous" (``tools/ranking.py``). The fused shortlist is then held to a
relevance floor (cosine of claim and paper under the store's embedder, see RELEVANCE_FLOOR) and
the best ``papers_per_claim`` are kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from agent.history import ReportHistory
from agent.judgement_cache import incremental_since
from agent.nodes.context import RunContext
from agent.parse import prompt_sha256
from agent.prompts import query_plan_messages
from agent.state import AgentState, Brief, Claim, PaperRecord, PlanTask
from core.errors import RetestError
from tools.arxiv_source import ArxivSource, ArxivUnavailable
from tools.corpus import iter_corpus
from tools.paper import Paper
from tools.paper_cache import PaperCache
from tools.paper_store import PaperStore
from tools.ranking import date_floor, prefer_newer, recency_label, reciprocal_rank_fusion
from tools.retrieval import (
    ClaimRelevance,
    HybridRetriever,
    LexicalIndex,
    WeightedQuery,
)

log = logging.getLogger(__name__)

_CLAUSE_BREAK = re.compile(r"[;:]\s+|\s+[\u2014\u2013]\s+")

# Fusion weights of each query's rankings. The claim speaks for itself; the prompt's question
# and tasks are shared by all claims, so they count for less.
CLAIM_QUERY_WEIGHT = 1.0
PROMPT_QUERY_WEIGHT = 0.25
# A claim of several clauses ("X rely on Y; removing Z exposes W") also queries each clause on
# its own, so a paper about one part is not outranked by papers matching the claim's common words.
CLAUSE_QUERY_WEIGHT = 0.5
# The model's planned queries: with the embedded 135M planner they drift from the claim.
# `python bench/retrieval_bench.py --plan` (2026-12-05), hybrid recall@10 / @20 by this weight:
# 1.0: 0.197 / 0.296, 0.5: 0.218 / 0.310, 0.25: 0.232 / 0.324, 0.1: 0.225 / 0.324.
PLANNED_QUERY_WEIGHT = 0.25
MIN_CLAUSE_WORDS = 4
ARXIV_WEIGHT = 1.0  # live arXiv's ranked answer, one list per claim
# Minimum cosine of claim text and paper (title + abstract) under the store's MiniLM embedder
# for a paper to be judged at all: the highest floor that keeps >= 95% of the dev set's relevant
# rows (bench/retrieval_bench.py, 237 rows: 0.15 keeps 97% of relevant, 93% of not relevant;
# 0.20 keeps 93%). Cosine barely separates hard negatives, so the floor only drops the off-topic.
RELEVANCE_FLOOR = 0.15

_STOP = set("""a an and are as at be been being but by can do does for from has have how if in
into is it its more most much not of on or over rather so such than that the their them then there
these they this those through to under via was were what when where whether which while who why
will with without would alone also only same since both each other others instead versus""".split())
_ACRONYM = re.compile(r"\b[A-Z][A-Z0-9]{1,6}s?\b")


def _stem(word: str) -> str:
    """Crude stem so memorize/memorization and reason/reasoning meet."""
    return word[:6] if len(word) > 6 else word


def keywords(text: str) -> list[str]:
    """Return the content words (stemmed, lowercase) and acronyms of ``text``, in order."""
    out: list[str] = []
    for acro in _ACRONYM.findall(text):
        key = acro.rstrip("s").lower()
        if key not in out:
            out.append(key)
    for word in re.findall(r"[a-z][a-z\-]{3,}", text.lower()):
        for part in word.split("-"):
            if len(part) >= 4 and part not in _STOP and _stem(part) not in out:
                out.append(_stem(part))
    return out


def keyword_query(text: str) -> str:
    """Return the claim's first eight keywords as one query (live arXiv's query per claim)."""
    return " ".join(keywords(text)[:8])


def to_record(paper: Paper) -> PaperRecord:
    """Copy a Paper's facts into a state record."""
    return PaperRecord(
        arxiv_id=paper.arxiv_id, title=re.sub(r"\s+", " ", paper.title).strip(),
        authors=list(paper.authors), abstract=re.sub(r"\s+", " ", paper.abstract).strip(),
        categories=list(paper.categories),
        published=paper.published.isoformat() if paper.published else None, source=paper.source)


class PlannedQueries(BaseModel):
    """The model's search queries for one claim (at most three, each 3-80 characters)."""

    # Bounded lengths make guided decoding stop: the small model otherwise rambles to max_tokens.
    queries: list[Annotated[str, Field(min_length=3, max_length=80)]] = Field(
        default_factory=list, max_length=3)


def plan_claim(task: PlanTask, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Plan search queries for one claim: its keywords always, plus the LLM's queries if any."""
    ctx = runtime.context
    ctx.check_cancel()
    claim = task["claim"]
    queries = [keyword_query(claim["text"]), claim["text"]]
    degraded: list[str] = []
    try:
        reply = ctx.complete_json(query_plan_messages(claim), PlannedQueries, max_tokens=120)
        queries += [q.strip() for q in reply.queries if 2 <= len(q.split()) <= 14][:3]
    except RetestError as exc:
        degraded.append(f"model failed while planning queries: {exc}")
    ctx.emit("plan", f"{claim['id']}: {len(queries)} queries")
    return {"queries": {claim["id"]: queries}, "degraded": degraded}


def _after(claim: Claim) -> date | None:
    """Return the day after the claim's range: where live arXiv searches start (see below)."""
    return date.fromisoformat(claim["date_to"]) + timedelta(days=1) if claim["date_to"] else None


def claim_queries(claim: Claim, planned: list[str], brief: Brief) -> list[WeightedQuery]:
    """Return the weighted queries for one claim, each text once.

    First its text, its clauses and its planned queries (not the keyword query, see below),
    then the prompt's question and tasks (shared by every claim, so weighted lower).
    """
    out: list[WeightedQuery] = []
    # The crude-stem keyword query ("memori templa ...") serves arXiv's own search, not these
    # rankers: with it, hybrid recall@20 on the dev set fell from 0.275 to 0.211.
    seen: set[str] = {keyword_query(claim["text"]).lower()}
    pairs = [(claim["text"], CLAIM_QUERY_WEIGHT)]
    pairs += [(q, CLAUSE_QUERY_WEIGHT) for q in claim_clauses(claim["text"])]
    pairs += [(q, PLANNED_QUERY_WEIGHT) for q in planned]
    pairs += [(q, PROMPT_QUERY_WEIGHT) for q in [brief["question"], *brief["tasks"]]]
    for text, weight in pairs:
        key = " ".join(str(text).lower().split())
        if key and key not in seen:
            seen.add(key)
            out.append(WeightedQuery(" ".join(str(text).split()), weight))
    return out


def claim_clauses(text: str) -> list[str]:
    """Split a claim at semicolons and colons into clauses of at least MIN_CLAUSE_WORDS words.

    A claim of one clause returns nothing (its text is already a query).
    """
    parts = [" ".join(p.split()) for p in _CLAUSE_BREAK.split(text)]
    clauses = [p.strip(" ,.") for p in parts if len(p.split()) >= MIN_CLAUSE_WORDS]
    return clauses if len(clauses) > 1 else []


def open_store(ctx: RunContext) -> PaperStore | None:
    """Open the run's paper store, or return None (logged) when it cannot be opened."""
    try:
        return PaperStore(ctx.settings)
    except RetestError as exc:
        log.warning("paper store unavailable: %s", exc)
        return None


def _fetch(ids: list[str], known: dict[str, Paper], store: PaperStore | None,
           corpus: Path | None) -> dict[str, Paper]:
    """Return the records of ``ids``: already in hand, then the store, then one corpus pass."""
    found = {i: known[i] for i in ids if i in known}
    missing = [i for i in ids if i not in found]
    if missing and store is not None:
        found.update(store.get_many(missing))
        missing = [i for i in ids if i not in found]
    if missing and corpus is not None:  # only when the store is down
        wanted = set(missing)
        found.update({p.arxiv_id: p for p in iter_corpus(corpus) if p.arxiv_id in wanted})
    return found


def _retriever(ctx: RunContext, store: PaperStore | None) -> HybridRetriever | None:
    """Build the hybrid retriever over what this run has: the corpus's BM25 and the store."""
    lexical = None
    corpus = ctx.settings.corpus
    if corpus is not None:
        if store is not None:
            ctx.emit("retrieve", f"paper store: ingesting {corpus.name} (once)")
            # Resumable, and a no-op once this file is stored (its cursor is keyed by content).
            store.ingest_corpus(corpus, progress=ctx.options.progress_bars)
        ctx.emit("retrieve", f"BM25 index of {corpus.name}")
        lexical = LexicalIndex.for_corpus(corpus, ctx.settings.data_dir,
                                          progress=ctx.options.progress_bars)
    stored = store is not None and store.count() > 0
    dense = store.dense_search if stored else None  # type: ignore[union-attr]
    feedback = store.feedback_search if stored else None  # type: ignore[union-attr]
    if lexical is None and dense is None:
        return None
    return HybridRetriever(lexical, dense, dense_feedback=feedback)


def select_evidence(fused: list[tuple[str, float]], papers: dict[str, Paper], claim: Claim,
                    relevance: Callable[[list[Paper]], list[float]] | None, keep: int,
                    floor: float = RELEVANCE_FLOOR) -> list[tuple[str, float]]:
    """Pick a claim's evidence from its fused ranking.

    Drop papers published before the claim's range (or with no record), prefer newer ones, hold
    the rest to the relevance floor, and keep the best ``keep``.

    ``relevance`` scores papers against the claim (None skips the floor, e.g. no embedder).
    Return ``(arxiv_id, score)`` best first.
    """
    labels = {pid: recency_label(papers[pid].published, claim["date_from"], claim["date_to"])
              for pid, _ in fused if pid in papers}
    ranked = [(pid, score) for pid, score in prefer_newer(fused, labels)
              if pid in papers and labels[pid] != "older"]
    if relevance is not None and ranked:
        sims = relevance([papers[pid] for pid, _ in ranked])
        ranked = [row for row, sim in zip(ranked, sims, strict=True) if sim >= floor]
    return ranked[:keep]


def retrieve(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Rank papers per claim by fused BM25, dense and live-arXiv lists; keep the relevant best."""
    ctx = runtime.context
    ctx.check_cancel()
    brief = state["brief"]
    claims = brief["claims"]
    planned = state.get("queries", {})
    opts = ctx.options
    degraded: list[str] = []
    store = open_store(ctx)
    retriever = _retriever(ctx, store)
    live: dict[str, list[Paper]] = {}
    if not ctx.settings.offline:
        live, notes = _search_arxiv(ctx, claims, planned, state["prompt_text"])
        degraded += notes
    embed = store.embedder if store is not None else None
    papers: dict[str, PaperRecord] = {}
    candidates: dict[str, list[list[Any]]] = {}
    for i, claim in enumerate(claims):
        ctx.check_cancel()
        arxiv_ids = [p.arxiv_id for p in live.get(claim["id"], [])]
        extra = [(arxiv_ids, ARXIV_WEIGHT)] if arxiv_ids else []
        since = date_floor(claim["date_from"])
        if retriever is not None:
            queries = claim_queries(claim, planned.get(claim["id"], []), brief)
            fused = retriever.rank(queries, opts.candidates_per_claim, since, extra)
        else:
            fused = reciprocal_rank_fusion([ids for ids, _ in extra])[:opts.candidates_per_claim]
        known = {p.arxiv_id: p for p in live.get(claim["id"], [])}
        found = _fetch([pid for pid, _ in fused], known, store, ctx.settings.corpus)
        relevance = None
        if embed is not None:
            relevance = ClaimRelevance(claim["text"], embed,
                                       retriever.dense if retriever is not None else None, since)
        kept = select_evidence(fused, found, claim, relevance, opts.papers_per_claim)
        candidates[claim["id"]] = [[pid, round(score, 5)] for pid, score in kept]
        papers.update({pid: to_record(found[pid]) for pid, _ in kept})
        ctx.emit("retrieve", f"{claim['id']}: {len(kept)} of {len(fused)} fused candidates "
                 f"kept", i + 1, len(claims))
    ctx.emit("retrieve", f"{len(papers)} papers kept for {len(claims)} claims", len(claims),
             len(claims))
    return {"papers": papers, "candidates": candidates, "degraded": degraded}


def _previous_live_run(ctx: RunContext, prompt_text: str) -> tuple[date | None,
                                                                   dict[str, list[str]]]:
    """Return (date to ask arXiv from, ids each claim kept) from this prompt's last live run.

    A re-run asks arXiv only for papers newer than the last run (minus an overlap window, see
    ``incremental_since``) and carries the papers it kept then forward from the paper cache.
    (None, {}) on a first run, for a local corpus, or when the history cannot be read.
    """
    history = ReportHistory(ctx.settings.data_dir)
    sha = prompt_sha256(prompt_text)
    try:
        since = incremental_since(history, sha, corpus=ctx.settings.corpus)
        previous = history.previous(sha) if since is not None else None
    except (OSError, ValueError, RetestError) as exc:
        log.warning("report history unreadable, asking arXiv for everything: %s", exc)
        return None, {}
    if previous is None:
        return None, {}
    kept = {c["id"]: [e["arxiv_id"] for e in c.get("evidence", [])]
            for c in previous.get("claims", [])}
    return since, kept


def _search_arxiv(ctx: RunContext, claims: list[Claim], queries: dict[str, list[str]],
                  prompt_text: str) -> tuple[dict[str, list[Paper]], list[str]]:
    """Search live arXiv after each claim's date (and after the last run).

    Return (claim id -> papers in arXiv's order, carried-over ones first; notes for degraded).
    """
    try:
        cache = PaperCache.from_settings(ctx.settings)
        source = ArxivSource(ctx.settings, cache)
    except (OSError, RetestError) as exc:
        return {}, [f"arXiv unavailable: {exc}"]
    last_run, kept_before = _previous_live_run(ctx, prompt_text)
    found_by_claim: dict[str, list[Paper]] = {}
    for claim in claims:
        ctx.check_cancel()
        query = queries.get(claim["id"], [claim["text"]])[0]
        since = max((d for d in (_after(claim), last_run) if d is not None), default=None)
        kept = cache.get_papers(kept_before.get(claim["id"], [])).values()
        limit = ctx.options.papers_per_claim * 2
        try:
            try:
                found = list(kept) + source.search(query, since=since, until=None,
                                                   categories=None, max_results=limit)
            except ArxivUnavailable:
                if since == _after(claim):
                    raise
                # arXiv is down: the cached answer of the full-range query, when there is one,
                # is what an earlier run saw, as a non-incremental re-run would have used.
                found = source.search(query, since=_after(claim), until=None, categories=None,
                                      max_results=limit)
        except ArxivUnavailable as exc:
            return found_by_claim, [f"arXiv unreachable: {exc}"]
        except RetestError as exc:  # e.g. arXiv rejected this query: the others may still work
            log.warning("arXiv search for %s failed: %s", claim["id"], exc)
            continue
        found_by_claim[claim["id"]] = found
    return found_by_claim, []
