"""Two retrieval ideas measured on the dev set and not kept: what each prints beside hybrid.

Hybrid retrieval's fused pool holds most relevant papers, but BM25 and MiniLM rank fewer than
half of them into a claim's top 20 (``bench/retrieval_bench.py``). Two cheap ways to lift them,
each measured here in one run against hybrid as the report ranks it:

* **sentence max-sim re-ranking**: a claim is one statement, and the abstract that bears on it
  usually says so in one sentence among background ones. Each paper of hybrid's top ``--pool``
  is scored by the best MiniLM cosine between any of its sentences (title included) and the
  claim or one of its clauses; that order is fused with hybrid's by reciprocal rank (weight
  0.5 and 1.0 against hybrid's 1.0), and shown alone too.
* **hypothetical abstracts (HyDE)**: the configured model writes ``--samples`` abstracts of a
  paper that tests the claim (temperature 0.7); each joins the claim's queries with weight 0.25
  or 1.0, first one sample, then all. Needs a model server (the embedded one by default).

Scores: recall@10 and recall@20 of the relevant rows of ``claims_papers.jsonl`` and
precision@10 over the judged papers (pooled judgements included) with the judged share; a
re-ranking that surfaces unjudged papers shows a lower share, and its precision says less.
Every variant gets hybrid's newer-paper preference, except max-sim alone (not a fused score).

Usage: ``python bench/retrieval_tries.py [--corpus PATH] [--pool N] [--samples K] [--no-hyde]
[--json OUT]``. Needs the store and BM25 index that ``bench/retrieval_bench.py`` builds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from retrieval_bench import (  # noqa: E402
    DEFAULT_CORPUS,
    DEFAULT_DEVSET,
    DEFAULT_POOLED,
    DEPTH,
    load_dev,
    newer_first,
    precision,
    recall,
    unplanned_queries,
)
from tqdm import tqdm  # noqa: E402

from agent.ask import split_sentences  # noqa: E402
from agent.nodes.search import claim_clauses, claim_queries  # noqa: E402
from agent.state import Claim  # noqa: E402
from core.settings import load_settings  # noqa: E402
from tools.paper_store import PaperStore  # noqa: E402
from tools.ranking import date_floor  # noqa: E402
from tools.retrieval import (  # noqa: E402
    HybridRetriever,
    LexicalIndex,
    WeightedQuery,
    reciprocal_rank_fusion,
)

Key = tuple[str, str]
Ranked = list[tuple[str, float]]
HYDE_TEMPERATURE = 0.7
HYDE_TOKENS = 160


def sentence_max_sim(embedder: Any, claim_text: str, texts: list[tuple[str, str]]
                     ) -> list[float]:
    """Best cosine between any sentence of each (title, abstract) and the claim or a clause."""
    sentences: list[str] = []
    owner: list[int] = []
    for i, (title, abstract) in enumerate(texts):
        for sentence in [title, *split_sentences(abstract)]:
            sentences.append(sentence)
            owner.append(i)
    if not sentences:
        return [0.0] * len(texts)
    queries = embedder.embed_queries([claim_text, *claim_clauses(claim_text)])
    sims = (embedder.embed_documents(sentences) @ queries.T).max(axis=1)
    best = np.full(len(texts), -1.0)
    np.maximum.at(best, np.asarray(owner), sims)
    return best.tolist()


def hyde_abstracts(llm: Any, claim: Claim, samples: int) -> list[str]:
    """Ask the model for ``samples`` abstracts of a paper that tests the claim."""
    messages = [{"role": "system", "content": "You are an ML researcher writing arXiv abstracts."},
                {"role": "user", "content": "Write the abstract of a research paper that tests "
                 "this claim with experiments and reports what it found.\n"
                 f"Claim: {claim['text']}\nAbstract:"}]
    return [" ".join(llm.chat(messages, max_tokens=HYDE_TOKENS).split()) for _ in range(samples)]


def main() -> None:
    """Rank every dev-set claim each way and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--pool", type=int, default=300, help="hybrid papers re-ranked per claim")
    parser.add_argument("--samples", type=int, default=4, help="hypothetical abstracts per claim")
    parser.add_argument("--no-hyde", action="store_true", help="skip the model (no server)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not args.corpus.is_file():
        raise SystemExit(f"corpus not found: {args.corpus}")
    settings = load_settings(offline=True, corpus=args.corpus)
    dev = load_dev(DEFAULT_DEVSET, DEFAULT_POOLED)
    store = PaperStore(settings)
    store.ingest_corpus(args.corpus, progress=True)
    hybrid = HybridRetriever(LexicalIndex.for_corpus(args.corpus, settings.data_dir),
                             store.dense_search, dense_feedback=store.feedback_search)

    def queries(key: Key, extra: Sequence[WeightedQuery] = ()) -> list[WeightedQuery]:
        claim = dev.claims[key]
        return [*claim_queries(claim, unplanned_queries(claim), dev.briefs[key[0]]), *extra]

    def top(key: Key, fused: Ranked) -> list[str]:
        return newer_first(store, dev.claims[key], fused)

    ranked: dict[str, dict[Key, list[str]]] = {}
    seconds: dict[str, float] = {}

    def measure(name: str, rank_one: Callable[[Key], list[str]]) -> None:
        start = time.perf_counter()
        ranked[name] = {key: rank_one(key) for key in tqdm(dev.claims, desc=name, leave=False)}
        seconds[name] = time.perf_counter() - start

    pools: dict[Key, Ranked] = {}

    def hybrid_rank(key: Key) -> list[str]:
        pools[key] = hybrid.rank(queries(key), args.pool, date_floor(dev.claims[key]["date_from"]))
        return top(key, pools[key][:3 * DEPTH])

    measure("hybrid (as reports rank)", hybrid_rank)
    max_sim: dict[Key, list[str]] = {}
    start = time.perf_counter()
    for key in tqdm(dev.claims, desc="sentence max-sim", leave=False):
        ids = [pid for pid, _ in pools[key]]
        papers = store.get_many(ids)
        ids = [pid for pid in ids if pid in papers]
        scores = sentence_max_sim(store.embedder, dev.claims[key]["text"],
                                  [(papers[p].title, papers[p].abstract) for p in ids])
        max_sim[key] = [ids[i] for i in np.argsort(-np.asarray(scores), kind="stable")]
    seconds["sentence max-sim alone"] = time.perf_counter() - start
    ranked["sentence max-sim alone"] = {key: ids[:DEPTH] for key, ids in max_sim.items()}
    for weight in (0.5, 1.0):
        measure(f"rrf(hybrid, max-sim x{weight})", lambda key, w=weight: top(
            key, reciprocal_rank_fusion([[p for p, _ in pools[key]], max_sim[key]], [1.0, w])))

    if not args.no_hyde:
        from tools.llm import make_llm

        llm = make_llm(settings)
        llm.temperature = HYDE_TEMPERATURE  # samples must differ; the factory's default is greedy
        start = time.perf_counter()
        fakes = {key: hyde_abstracts(llm, claim, args.samples)
                 for key, claim in tqdm(dev.claims.items(), desc="HyDE abstracts", leave=False)}
        seconds["writing the abstracts"] = time.perf_counter() - start
        example = next(iter(fakes.values()))[0]
        print(f"a hypothetical abstract ({llm.model}): {example[:300]}...")
        for weight in (0.25, 1.0):
            for count in sorted({1, args.samples}):
                measure(f"hybrid + HyDE x{weight}, {count} abstract(s)",
                        lambda key, w=weight, n=count: top(key, hybrid.rank(
                            queries(key, [WeightedQuery(t, w) for t in fakes[key][:n] if t]),
                            3 * DEPTH, date_floor(dev.claims[key]["date_from"]))))

    print(f"\n{len(dev.claims)} claims, {sum(map(len, dev.relevant.values()))} relevant rows; "
          f"re-ranked pool {args.pool} papers a claim")
    print(f"{'method':<38} {'recall@10':>9} {'recall@20':>9} {'P@10':>6} {'judged':>7} seconds")
    results: dict[str, dict[str, float]] = {}
    for name, ranks in ranked.items():
        share, judged = precision(ranks, dev.judged, 10)
        results[name] = {"recall@10": round(recall(ranks, dev.relevant, 10), 3),
                         "recall@20": round(recall(ranks, dev.relevant, 20), 3),
                         "precision@10": round(share, 3), "judged@10": round(judged, 3)}
        res = results[name]
        print(f"{name:<38} {res['recall@10']:>9.3f} {res['recall@20']:>9.3f} "
              f"{share:>6.3f} {judged:>7.2f} {seconds.get(name, 0.0):.1f}")
    if "writing the abstracts" in seconds:
        print(f"writing the abstracts: {seconds['writing the abstracts']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "seconds": seconds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
