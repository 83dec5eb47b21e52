"""Plan queries per claim and retrieve newer papers for every claim.

Retrieval merges three sources and ranks the union per claim:
1. the local corpus (``settings.corpus``): one streaming pass scores every record by the claim's
   keywords and keeps the best ``candidates_per_claim`` newer than the claim; those (not all 46k
   records) are upserted into the paper store, which keeps ingest to seconds per run;
2. the paper store (chromadb): semantic search per query, bounded after the claim's date;
3. live arXiv (unless offline): date-bounded searches; when unreachable the run is degraded.
Papers are deduplicated by id; the rank is keyword overlap plus store similarity.
"""

from __future__ import annotations

import logging
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

from langgraph.runtime import Runtime
from pydantic import BaseModel, Field
from tqdm import tqdm

from agent.history import ReportHistory
from agent.judgement_cache import incremental_since
from agent.nodes.context import RunContext
from agent.prompts import query_plan_messages
from agent.report import prompt_sha256
from agent.state import AgentState, Claim, PaperRecord, PlanTask
from core.errors import RetestError
from tools.arxiv_source import ArxivSource, ArxivUnavailable
from tools.corpus import iter_corpus
from tools.paper import Paper
from tools.paper_cache import PaperCache
from tools.paper_store import PaperStore

log = logging.getLogger(__name__)

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


def terms(text: str) -> set[str]:
    """Return the set of words and stems of ``text`` (what :func:`keyword_score` matches)."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {_stem(w) for w in words} | set(words)


def keyword_score(claim_terms: list[str], extra_terms: list[str], title: str | set[str],
                  abstract: str | set[str]) -> float:
    """Score a paper by the claim's terms it contains (title hits count double), in [0, 1].

    ``title`` and ``abstract`` may be given as term sets (see :func:`terms`) to tokenize once.
    """
    if not claim_terms:
        return 0.0
    title_t = title if isinstance(title, set) else terms(title)
    body_t = abstract if isinstance(abstract, set) else terms(abstract)
    hits = sum((2.0 if t in title_t else 1.0) for t in claim_terms if t in title_t or t in body_t)
    extra = sum(0.5 for t in extra_terms
                if t not in claim_terms and (t in title_t or t in body_t))
    return min(1.0, (hits + extra) / (1.5 * len(claim_terms)))


def to_record(paper: Paper) -> PaperRecord:
    """Copy a Paper's facts into a state record."""
    return PaperRecord(
        arxiv_id=paper.arxiv_id, title=re.sub(r"\s+", " ", paper.title).strip(),
        authors=list(paper.authors), abstract=re.sub(r"\s+", " ", paper.abstract).strip(),
        categories=list(paper.categories),
        published=paper.published.isoformat() if paper.published else None, source=paper.source)


class _Queries(BaseModel):
    # Bounded lengths make guided decoding stop: the small model otherwise rambles to max_tokens.
    queries: list[Annotated[str, Field(min_length=3, max_length=80)]] = Field(
        default_factory=list, max_length=3)


def plan_claim(task: PlanTask, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Plan search queries for one claim: its keywords always, plus the LLM's queries if any."""
    ctx = runtime.context
    ctx.check_cancel()
    claim = task["claim"]
    queries = [" ".join(keywords(claim["text"])[:8]), claim["text"]]
    degraded: list[str] = []
    try:
        reply = ctx.complete_json(query_plan_messages(claim), _Queries, max_tokens=120)
        queries += [q.strip() for q in reply.queries if 2 <= len(q.split()) <= 14][:3]
    except RetestError as exc:
        degraded.append(f"model failed while planning queries: {exc}")
    ctx.emit("plan", f"{claim['id']}: {len(queries)} queries")
    return {"queries": {claim["id"]: queries}, "degraded": degraded}


def _after(claim: Claim) -> date | None:
    return date.fromisoformat(claim["date_to"]) + timedelta(days=1) if claim["date_to"] else None


def _scan_corpus(path: Path, claims: list[Claim], queries: dict[str, list[str]],
                 anchor_ids: set[str], keep: int, *, progress: bool = True,
                 ) -> tuple[dict[str, list[tuple[float, Paper]]], dict[str, Paper]]:
    """One pass over the corpus: best-keyword papers per claim (newer than it), and anchors."""
    claim_terms = {c["id"]: keywords(c["text"]) for c in claims}
    extra = {c["id"]: [t for q in queries.get(c["id"], [])[2:] for t in keywords(q)]
             for c in claims}
    bounds = {c["id"]: _after(c) for c in claims}
    best: dict[str, list[tuple[float, Paper]]] = {c["id"]: [] for c in claims}
    anchors: dict[str, Paper] = {}
    for paper in tqdm(iter_corpus(path), desc="scan corpus", unit=" papers", leave=False,
                      mininterval=2.0, disable=None if progress else True):
        if paper.arxiv_id in anchor_ids:
            anchors[paper.arxiv_id] = paper
        title_t, body_t = None, None
        for claim in claims:
            bound = bounds[claim["id"]]
            if bound and (paper.published is None or paper.published < bound):
                continue
            if title_t is None:  # tokenize once per paper, only when some claim needs it
                title_t, body_t = terms(paper.title), terms(paper.abstract)
            score = keyword_score(claim_terms[claim["id"]], extra[claim["id"]], title_t,
                                  body_t)
            if score >= 0.3:
                best[claim["id"]].append((score, paper))
        for rows in best.values():
            if len(rows) > 4 * keep:  # prune now and then: memory stays bounded
                rows.sort(key=lambda r: -r[0])
                del rows[keep:]
    for rows in best.values():
        rows.sort(key=lambda r: (-r[0], r[1].arxiv_id))
        del rows[keep:]
    return best, anchors


def _open_store(ctx: RunContext) -> PaperStore | None:
    try:
        return PaperStore(ctx.settings)
    except RetestError as exc:
        log.warning("paper store unavailable: %s", exc)
        return None


def retrieve(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Find newer papers per claim from corpus, store and live arXiv; merge, dedupe and rank."""
    ctx = runtime.context
    ctx.check_cancel()
    claims = state["brief"]["claims"]
    queries = state.get("queries", {})
    anchor_ids = {a["arxiv_id"] for a in state["brief"]["anchors"] if a["valid"]}
    opts = ctx.options
    scored: dict[str, dict[str, float]] = {c["id"]: {} for c in claims}
    papers: dict[str, PaperRecord] = {}
    degraded: list[str] = []
    anchor_hits: dict[str, Paper] = {}

    def add(claim_id: str, paper: Paper, score: float) -> None:
        papers.setdefault(paper.arxiv_id, to_record(paper))
        scored[claim_id][paper.arxiv_id] = max(score, scored[claim_id].get(paper.arxiv_id, 0.0))

    store = _open_store(ctx)
    if ctx.settings.corpus is not None:
        ctx.emit("retrieve", f"scanning corpus {ctx.settings.corpus.name}")
        best, anchor_hits = _scan_corpus(ctx.settings.corpus, claims, queries, anchor_ids,
                                         opts.candidates_per_claim, progress=opts.progress_bars)
        for cid, rows in best.items():
            for score, paper in rows:
                add(cid, paper, score)
        if store is not None:
            chosen = {p.arxiv_id: p for rows in best.values() for _, p in rows}
            chosen.update(anchor_hits)
            store.upsert(list(chosen.values()), progress=opts.progress_bars)
    if store is not None:
        for i, claim in enumerate(claims):
            ctx.check_cancel()
            for query in queries.get(claim["id"], [claim["text"]])[:3]:
                for paper, similarity in store.search(query, k=opts.papers_per_claim * 2,
                                                      since=_after(claim), until=None,
                                                      categories=None):
                    kw = keyword_score(keywords(claim["text"]), [], paper.title, paper.abstract)
                    add(claim["id"], paper, 0.5 * kw + 0.5 * float(similarity))
            ctx.emit("retrieve", f"{claim['id']}: searched the paper store", i + 1, len(claims))
    if not ctx.settings.offline:
        degraded += _search_arxiv(ctx, claims, queries, add, state["prompt_text"])
    candidates = {cid: [[pid, round(score, 4)] for pid, score in
                        sorted(rows.items(), key=lambda kv: (-kv[1], kv[0]))[
                            :opts.papers_per_claim]]
                  for cid, rows in scored.items()}
    kept = {pid for rows in candidates.values() for pid, _ in rows}
    anchor_records = {pid: to_record(p) for pid, p in anchor_hits.items()}
    ctx.emit("retrieve", f"{len(kept)} papers kept for {len(claims)} claims", len(claims),
             len(claims))
    return {"papers": {**{pid: papers[pid] for pid in kept}, **anchor_records},
            "candidates": candidates, "degraded": degraded}


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
                  add: Any, prompt_text: str) -> list[str]:
    """Search live arXiv after each claim's date (and after the last run); return notes."""
    try:
        cache = PaperCache.from_settings(ctx.settings)
        source = ArxivSource(ctx.settings, cache)
    except (OSError, RetestError) as exc:
        return [f"arXiv unavailable: {exc}"]
    last_run, kept_before = _previous_live_run(ctx, prompt_text)
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
            return [f"arXiv unreachable: {exc}"]
        except RetestError as exc:  # e.g. arXiv rejected this query: the others may still work
            log.warning("arXiv search for %s failed: %s", claim["id"], exc)
            continue
        kw = keywords(claim["text"])
        for paper in found:
            add(claim["id"], paper, keyword_score(kw, [], paper.title, paper.abstract))
    return []
