"""Benchmark retrieval against the labelled dev set: recall@10 and recall@20 of relevant papers.

For every (prompt, claim) of ``evals/devset/claims_papers.jsonl`` it ranks the full shared corpus
five ways in one run and prints, over all relevant rows, the share found in each claim's top 10
and top 20:

* ``keyword scan`` - the baseline: the retrieve node's corpus scan before hybrid retrieval
  (copied below verbatim from commit bd485ab), with its hard "newer than date_to" cut;
* ``dense only`` - the paper store's dense (MiniLM) rankings of the claim's queries, fused by
  reciprocal rank;
* ``bm25 only`` - the kept BM25 index's rankings of the same queries, fused;
* ``hybrid, no PRF`` - both, fused, then the newer-paper preference;
* ``hybrid`` - the same plus one round of pseudo-relevance feedback (BM25 expansion and Rocchio
  from the first ranking's top papers): what the report's retrieve node ranks (before the
  relevance floor, which the last table is about).

The queries are the node's (``agent.nodes.search.claim_queries``): the claim, each of its
clauses (split at semicolons and colons), and the prompt's question and tasks. With
``--plan`` the configured LLM also plans queries as in a report run (needs a model server).
Nothing here looks at the labelled ids to build queries; the labels are used only to score.

A table then counts the relevant rows by the rank BM25 and dense give them for the claim's
own text (top 20, 21-100, 101-1000, past 1000): what no fusion of these two rankers can lift.

Recall counts only the rows of ``claims_papers.jsonl``, gathered independently of any ranker
here. ``pooled_top10.jsonl`` holds the judgements of every paper that hybrid (and hybrid fused
with sentence max-sim, ``bench/retrieval_tries.py``) put in a claim's top 10 and that file had
left out (pooling, as TREC does); with both files the bench prints each
method's precision@10 over the judged papers of its top 10, with the share judged, and a
capture-recapture estimate of how many relevant papers the corpus holds for these claims.

The relevance floor table shows, for several cosine floors, the share of relevant and of
not-relevant labelled rows whose claim-paper cosine is at least the floor; RELEVANCE_FLOOR in
``agent/nodes/search.py`` is the highest floor that keeps at least 95% of the relevant rows.

Usage: ``python bench/retrieval_bench.py [--corpus PATH] [--devset PATH] [--data-dir DIR]
[--pooled PATH] [--plan] [--json OUT]``. The first run ingests the corpus into the store and
builds the BM25 index (minutes); later runs load both.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tqdm import tqdm  # noqa: E402

from agent.nodes.search import RELEVANCE_FLOOR, claim_queries, keywords  # noqa: E402
from agent.parse import parse_prompt  # noqa: E402
from agent.state import Brief, Claim  # noqa: E402
from core.settings import load_settings  # noqa: E402
from tools.corpus import iter_corpus  # noqa: E402
from tools.paper_store import PaperStore  # noqa: E402
from tools.ranking import date_floor, prefer_newer, recency_label  # noqa: E402
from tools.retrieval import (  # noqa: E402
    HybridRetriever,
    LexicalIndex,
    cosine_relevance,
)

DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "arxiv" / (
    "arxiv_cs_CL_LG_AI_2025-03_2026-07.jsonl.gz")
DEFAULT_DEVSET = REPO / "evals" / "devset" / "claims_papers.jsonl"
DEFAULT_POOLED = REPO / "evals" / "devset" / "pooled_top10.jsonl"
PROMPT_DIRS = [REPO / "evals" / "devset" / "prompts", REPO / "evals" / "devset",
               REPO.parent / "shared" / "seed", REPO / "examples"]
DEPTH = 20
FLOORS = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45)

log = logging.getLogger("retrieval_bench")


# --- the baseline: the keyword scan of agent/nodes/search.py at bd485ab, verbatim ---------------
def _stem(word: str) -> str:
    return word[:6] if len(word) > 6 else word


def terms(text: str) -> set[str]:
    """Return the set of words and stems of ``text``."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {_stem(w) for w in words} | set(words)


def keyword_score(claim_terms: list[str], extra_terms: list[str], title: set[str],
                  abstract: set[str]) -> float:
    """Score a paper by the claim's terms it contains (title hits count double), in [0, 1]."""
    if not claim_terms:
        return 0.0
    hits = sum((2.0 if t in title else 1.0) for t in claim_terms if t in title or t in abstract)
    extra = sum(0.5 for t in extra_terms if t not in claim_terms and (t in title or t in abstract))
    return min(1.0, (hits + extra) / (1.5 * len(claim_terms)))


def keyword_scan(path: Path, claims: list[Claim], planned: dict[str, list[str]], keep: int
                 ) -> dict[str, list[str]]:
    """One pass over the corpus: best-keyword paper ids per claim, newer than the claim."""
    claim_terms = {c["id"]: keywords(c["text"]) for c in claims}
    extra = {c["id"]: [t for q in planned.get(c["id"], [])[2:] for t in keywords(q)]
             for c in claims}
    bounds = {c["id"]: (date.fromisoformat(c["date_to"]) + timedelta(days=1)
                        if c["date_to"] else None) for c in claims}
    best: dict[str, list[tuple[float, str]]] = {c["id"]: [] for c in claims}
    for paper in tqdm(iter_corpus(path), desc="keyword scan", unit=" papers", leave=False,
                      mininterval=2.0):
        title_t, body_t = None, None
        for claim in claims:
            bound = bounds[claim["id"]]
            if bound and (paper.published is None or paper.published < bound):
                continue
            if title_t is None:
                title_t, body_t = terms(paper.title), terms(paper.abstract)
            score = keyword_score(claim_terms[claim["id"]], extra[claim["id"]], title_t, body_t)
            if score >= 0.3:
                best[claim["id"]].append((score, paper.arxiv_id))
    return {cid: [pid for _, pid in sorted(rows, key=lambda r: (-r[0], r[1]))[:keep]]
            for cid, rows in best.items()}


# --- the dev set ---------------------------------------------------------------------------------
def load_devset(path: Path) -> list[dict[str, Any]]:
    """Read the labelled rows (one JSON object a line); skip blank lines."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


@dataclass
class DevSet:
    """The labelled rows, keyed by (prompt file name, claim id)."""

    rows: list[dict[str, Any]]
    pooled: list[dict[str, Any]]
    relevant: dict[tuple[str, str], set[str]]          # the independently gathered relevant ids
    labelled: dict[tuple[str, str], dict[str, bool]]   # claims_papers.jsonl: id -> relevant
    judged: dict[tuple[str, str], dict[str, bool]]     # the same plus the pooled judgements
    briefs: dict[str, Brief]
    claims: dict[tuple[str, str], Claim]


def load_dev(devset: Path, pooled_path: Path) -> DevSet:
    """Read the dev set and (when present) the pooled judgements; parse their prompts."""
    rows = load_devset(devset)
    relevant: dict[tuple[str, str], set[str]] = defaultdict(set)
    labelled: dict[tuple[str, str], dict[str, bool]] = defaultdict(dict)
    for row in rows:
        key = (row["prompt"], row["claim_id"])
        labelled[key][row["arxiv_id"]] = bool(row["relevant"])
        if row["relevant"]:
            relevant[key].add(row["arxiv_id"])
    judged = {key: dict(labels) for key, labels in labelled.items()}
    pooled = load_devset(pooled_path) if pooled_path.is_file() else []
    for row in pooled:
        judged.setdefault((row["prompt"], row["claim_id"]), {})[row["arxiv_id"]] = row["relevant"]
    briefs = {name: parse_prompt(find_prompt(name).read_text(encoding="utf-8"))
              for name in sorted({r["prompt"] for r in rows})}
    claims = {key: match_claim(briefs[key[0]], key[1], "") for key in labelled}
    return DevSet(rows, pooled, dict(relevant), dict(labelled), judged, briefs, claims)


def find_prompt(name: str) -> Path:
    """Locate a dev-set row's prompt file by name in the known prompt folders."""
    for folder in PROMPT_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise SystemExit(f"prompt file {name} of the dev set not found in "
                     f"{', '.join(str(d) for d in PROMPT_DIRS)}")


def match_claim(brief: Brief, claim_id: str, text: str) -> Claim:
    """Return the parsed claim the dev set means: by id, checked against its text."""
    for claim in brief["claims"]:
        if claim["id"] == claim_id:
            return claim
    raise SystemExit(f"claim {claim_id} ({text[:60]}...) not found in the parsed prompt")


def recall(ranked: dict[tuple[str, str], list[str]], relevant: dict[tuple[str, str], set[str]],
           k: int) -> float:
    """Share of all relevant rows found in their claim's top ``k``."""
    total = sum(len(ids) for ids in relevant.values())
    found = sum(len(set(ranked.get(key, [])[:k]) & ids) for key, ids in relevant.items())
    return found / total if total else 0.0


def precision(ranked: dict[tuple[str, str], list[str]],
              judged: dict[tuple[str, str], dict[str, bool]], k: int) -> tuple[float, float]:
    """Return (relevant share of the judged papers in the top ``k``, judged share of the top k)."""
    hits = seen = shown = 0
    for key, ids in ranked.items():
        for pid in ids[:k]:
            shown += 1
            if pid in judged.get(key, {}):
                seen += 1
                hits += judged[key][pid]
    return (hits / seen if seen else 0.0), (seen / shown if shown else 0.0)


def chapman_estimate(first: int, second: int, both: int) -> float:
    """Chapman's capture-recapture estimate of a population from two samples and their overlap.

    ``first`` and ``second`` are the relevant papers each labelling found, ``both`` those found by
    both. It assumes the two samples are independent; both used MiniLM neighbours in part, which
    biases the estimate low.
    """
    return (first + 1) * (second + 1) / (both + 1) - 1


def newer_first(store: PaperStore, claim: Claim, fused: list[tuple[str, float]]) -> list[str]:
    """Apply the retrieve node's newer-paper preference to a fused ranking; return the top DEPTH."""
    days = {pid: p.published for pid, p in store.get_many([i for i, _ in fused]).items()}
    labels = {pid: recency_label(days.get(pid), claim["date_from"], claim["date_to"])
              for pid, _ in fused}
    return [pid for pid, _ in prefer_newer(fused, labels)][:DEPTH]


def unplanned_queries(claim: Claim) -> list[str]:
    """The planner's output when no model plans: the keyword query and the claim (as the node)."""
    return [" ".join(keywords(claim["text"])[:8]), claim["text"]]


def plan_with_llm(settings: Any, claims: list[Claim]) -> dict[str, list[str]]:
    """Ask the configured model for search queries per claim, as plan_claim does."""
    from agent.nodes.search import PlannedQueries
    from agent.prompts import query_plan_messages
    from tools.llm import make_llm

    llm = make_llm(settings)
    out: dict[str, list[str]] = {}
    for claim in claims:
        reply = llm.complete_json(query_plan_messages(claim), PlannedQueries, max_tokens=120)
        out[claim["id"]] = [q.strip() for q in reply.queries if 2 <= len(q.split()) <= 14][:3]
    return out


def main() -> None:
    """Run the five rankings and print recall@10/@20 and the floor table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--devset", type=Path, default=DEFAULT_DEVSET)
    parser.add_argument("--pooled", type=Path, default=DEFAULT_POOLED)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--plan", action="store_true", help="also ask the LLM for queries")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path, what in ((args.corpus, "corpus"), (args.devset, "dev set")):
        if not path.is_file():
            raise SystemExit(f"{what} not found: {path}")
    overrides: dict[str, Any] = {"offline": True, "corpus": args.corpus}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    settings = load_settings(**overrides)

    dev = load_dev(args.devset, args.pooled)
    rows, pooled, relevant, labelled, judged = (dev.rows, dev.pooled, dev.relevant, dev.labelled,
                                                dev.judged)
    briefs, claims = dev.briefs, dev.claims
    print(f"dev set: {len(rows)} rows, {sum(map(len, relevant.values()))} relevant, "
          f"{len(labelled)} claims of {len(briefs)} prompts")

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    store = PaperStore(settings)
    store.ingest_corpus(args.corpus, progress=True)
    timings["store ready (ingest or no-op)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lexical = LexicalIndex.for_corpus(args.corpus, settings.data_dir)
    timings["bm25 index ready (build or load)"] = time.perf_counter() - t0
    dense = store.dense_search

    planned: dict[tuple[str, str], list[str]] = {}
    for name, brief in briefs.items():
        llm_queries = plan_with_llm(settings, brief["claims"]) if args.plan else {}
        for claim in brief["claims"]:
            planned[(name, claim["id"])] = (unplanned_queries(claim)
                                            + llm_queries.get(claim["id"], []))

    t0 = time.perf_counter()
    scan: dict[tuple[str, str], list[str]] = {}
    for name, brief in briefs.items():
        wanted = [c for c in brief["claims"] if (name, c["id"]) in labelled]
        found = keyword_scan(args.corpus, wanted,
                             {c["id"]: planned[(name, c["id"])] for c in wanted}, DEPTH)
        scan.update({(name, cid): ids for cid, ids in found.items()})
    timings["keyword scan"] = time.perf_counter() - t0

    methods = {"dense only": HybridRetriever(None, dense, feedback_papers=0),
               "bm25 only": HybridRetriever(lexical, None, feedback_papers=0),
               "hybrid, no PRF": HybridRetriever(lexical, dense, feedback_papers=0),
               "hybrid": HybridRetriever(lexical, dense, dense_feedback=store.feedback_search)}
    ranked: dict[str, dict[tuple[str, str], list[str]]] = {"keyword scan": scan}
    for method, retriever in methods.items():
        t0 = time.perf_counter()
        ranked[method] = {}
        for key, claim in claims.items():
            queries = claim_queries(claim, planned[key], briefs[key[0]])
            fused = retriever.rank(queries, 3 * DEPTH, date_floor(claim["date_from"]))
            ranked[method][key] = newer_first(store, claim, fused)
        timings[method] = time.perf_counter() - t0

    # The ceiling of re-ranking: how many relevant papers the fused lists hold at all.
    pool = {key: [pid for pid, _ in methods["hybrid"].rank(
        claim_queries(claim, planned[key], briefs[key[0]]), 100_000,
        date_floor(claim["date_from"]))] for key, claim in claims.items()}
    pool_size = sum(map(len, pool.values())) / max(1, len(pool))
    results = {m: {"recall@10": round(recall(r, relevant, 10), 3),
                   "recall@20": round(recall(r, relevant, 20), 3)} for m, r in ranked.items()}
    base = results["keyword scan"]["recall@20"]
    print(f"\n{'method':<14} {'recall@10':>9} {'recall@20':>9}  {'vs keyword scan @20':>20}"
          f"  seconds")
    for method, res in results.items():
        ratio = f"{res['recall@20'] / base:.1f}x" if base else "n/a (baseline 0)"
        print(f"{method:<14} {res['recall@10']:>9.3f} {res['recall@20']:>9.3f}  {ratio:>20}"
              f"  {timings[method]:.1f}")
    pool_recall = recall(pool, relevant, 100_000)
    print(f"\nhybrid's whole fused pool ({pool_size:.0f} papers a claim on average, up to "
          f"{methods['hybrid'].depth} from each list) holds {pool_recall:.3f} of the relevant "
          f"rows: no re-ranking of these lists finds the rest")
    results["hybrid pool"] = {"papers_per_claim": round(pool_size), "recall": round(pool_recall,
                                                                                    3)}
    if pooled:
        print(f"\nprecision@10 over judged papers ({len(rows)} rows and {len(pooled)} pooled "
              f"judgements):")
        print(f"{'method':<14} {'precision@10':>12} {'judged share':>13}")
        for method, ranks in ranked.items():
            share, covered = precision(ranks, judged, 10)
            results[method].update({"precision@10": round(share, 3),
                                    "judged@10": round(covered, 3)})
            print(f"{method:<14} {share:>12.3f} {covered:>13.3f}")
        found = {(k, pid) for k, ids in ranked["hybrid"].items() for pid in ids[:10]
                 if judged.get(k, {}).get(pid)}
        first = {(k, pid) for k, ids in relevant.items() for pid in ids}
        estimate = chapman_estimate(len(first), len(found), len(first & found))
        results["relevant estimate"] = round(estimate)
        print(f"relevant papers for these claims, estimated from the two labellings "
              f"({len(first)} and {len(found)} found, {len(first & found)} by both): "
              f"~{estimate:.0f}; claims_papers.jsonl holds {len(first) / estimate:.0%}")
    print("\nper prompt, hybrid recall@20:")
    for name in briefs:
        sub = {k: v for k, v in relevant.items() if k[0] == name}
        print(f"  {name}: {recall(ranked['hybrid'], sub, 20):.3f} "
              f"({sum(map(len, sub.values()))} relevant)")

    buckets = rank_buckets(lexical, dense, claims, relevant)
    print("\nwhere each ranker puts the relevant rows for the claim's own text (how many):")
    print(f"{'ranker':<8} " + " ".join(f"{b:>13}" for b in BUCKETS))
    for ranker, counts in buckets.items():
        print(f"{ranker:<8} " + " ".join(f"{counts[b]:>13}" for b in BUCKETS))
    results["claim text ranks"] = buckets

    floors = floor_table(store, claims, labelled)
    print(f"\nrelevance floor (cosine of claim and paper), labelled rows kept "
          f"[current RELEVANCE_FLOOR={RELEVANCE_FLOOR}]:")
    print(f"{'floor':>6} {'relevant kept':>14} {'not relevant kept':>18}")
    for floor, (rel, irr) in floors.items():
        print(f"{floor:>6.2f} {rel:>14.3f} {irr:>18.3f}")
    for what, seconds in timings.items():
        print(f"time: {what}: {seconds:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "floors": floors,
                                         "timings": timings}, indent=2) + "\n")


BUCKETS = ("top 20", "21-100", "101-1000", "past 1000")


def rank_buckets(lexical: LexicalIndex, dense: Any, claims: dict[tuple[str, str], Claim],
                 relevant: dict[tuple[str, str], set[str]]) -> dict[str, dict[str, int]]:
    """Count relevant rows by the rank BM25 and dense give them for the claim text alone.

    Rows past rank 1000 are beyond what any fusion or re-ranking of these rankers' lists reaches:
    the vocabulary of the claim and of the papers that bear on it do not meet.
    """
    out = {"bm25": dict.fromkeys(BUCKETS, 0), "dense": dict.fromkeys(BUCKETS, 0)}
    for key, claim in claims.items():
        since = date_floor(claim["date_from"])
        for ranker, hits in (("bm25", lexical.search([claim["text"]], 1000, since)[0]),
                             ("dense", dense([claim["text"]], 1000, since)[0])):
            rank = {pid: i for i, (pid, _) in enumerate(hits, start=1)}
            for pid in relevant.get(key, set()):
                r = rank.get(pid, 10**9)
                out[ranker][BUCKETS[0] if r <= 20 else BUCKETS[1] if r <= 100
                            else BUCKETS[2] if r <= 1000 else BUCKETS[3]] += 1
    return out


def floor_table(store: PaperStore, claims: dict[tuple[str, str], Claim],
                labelled: dict[tuple[str, str], dict[str, bool]]
                ) -> dict[float, tuple[float, float]]:
    """For each floor: share of relevant and of not-relevant rows with cosine >= floor."""
    sims: list[tuple[float, bool]] = []
    for key, labels in labelled.items():
        papers = store.get_many(list(labels))
        ids = [i for i in labels if i in papers]
        docs = [f"{papers[i].title}\n\n{papers[i].abstract}" for i in ids]
        for pid, sim in zip(ids, cosine_relevance(store.embedder, claims[key]["text"], docs),
                            strict=True):
            sims.append((sim, labels[pid]))
    rel = [s for s, r in sims if r]
    irr = [s for s, r in sims if not r]
    return {f: (sum(s >= f for s in rel) / max(1, len(rel)),
                sum(s >= f for s in irr) / max(1, len(irr))) for f in FLOORS}


if __name__ == "__main__":
    main()
