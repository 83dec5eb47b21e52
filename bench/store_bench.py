"""Benchmark the paper store on the real 46,696-record corpus (full size by default).

One run measures, each beside a baseline measured in the same run:

* ingest: ``PaperStore.ingest_corpus`` of the whole file into a fresh store, in records/s and
  total seconds (wall and CPU), against the embedding-only rate of the same embedder on a sample
  of the same documents (what the ingest would take if storing were free); then the no-op rerun.
* search: ``PaperStore.search`` (hybrid: lexical candidates from the kept BM25 index, which
  ``retest ingest`` builds after embedding, timed here too; and from chroma's full-text filter,
  the path of a store without an index) and ``PaperStore.dense_search`` latency p50/p95 over
  100 queries (half paper titles, half short topic/acronym queries), against chroma's bare vector
  query with the same embedder;
* known-item recall@10 (query = a paper's title, expect that paper) for each of the three.

The machine may be shared: the load average is printed at the start and the end, and the ratios
(ingest vs embedding-only, search vs bare query) are the figures that survive neighbours.

Usage: ``python bench/store_bench.py [--corpus PATH] [--limit N] [--data-dir DIR] [--json OUT]``.
Targets (issue 13): full ingest < 5 min on 2 cores, search p95 < 150 ms, recall@10 >= 0.95.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import random
import resource
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tqdm import tqdm  # noqa: E402

from core.settings import load_settings  # noqa: E402
from tools.corpus import iter_corpus  # noqa: E402
from tools.paper_store import PaperStore, document_text  # noqa: E402
from tools.retrieval import LexicalIndex  # noqa: E402

DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "arxiv" / (
    "arxiv_cs_CL_LG_AI_2025-03_2026-07.jsonl.gz")
TOPICS = [
    "GRPO", "DPO", "LoRA", "RLHF reward hacking", "chain-of-thought faithfulness",
    "benchmark contamination", "speculative decoding", "mixture of experts routing",
    "retrieval augmented generation", "test-time compute scaling", "KV cache compression",
    "tokenizer-free language models", "multilingual low-resource translation",
    "LLM-as-a-judge bias", "process reward models", "synthetic data for math reasoning",
    "long-context evaluation", "vision-language model hallucination", "agentic tool use",
    "membership inference attacks on LLMs", "quantization of large language models",
    "in-context learning theory", "model merging", "diffusion language models",
    "GSM8K", "MMLU contamination", "self-consistency", "instruction tuning data selection",
    "sparse autoencoders interpretability", "state space models Mamba",
    "federated learning privacy", "graph neural networks", "time series forecasting",
    "reinforcement learning from verifiable rewards", "jailbreak attacks", "watermarking",
    "code generation benchmarks", "memorization in language models",
    "curriculum learning", "knowledge distillation", "prompt injection", "PPO",
    "continual learning catastrophic forgetting", "medical question answering",
    "small language models", "emergent abilities", "scaling laws", "data deduplication",
    "MinHash near-duplicate detection", "evaluation of reasoning models",
]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], q: float) -> float:
    """Return the nearest-rank ``q`` quantile of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_average() -> str:
    """The 1-minute load average, with the core count, as a short label."""
    return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def bare_query(store: PaperStore, query: str, k: int) -> list[str]:
    """Baseline: chroma's vector query alone, same query embedding, nothing else."""
    vector = store.embedder.embed_queries([query])[0]
    return store.collection.query(query_embeddings=[vector], n_results=k, include=[])["ids"][0]


def limited_copy(corpus: Path, limit: int, folder: Path) -> Path:
    """Write the first ``limit`` lines of the corpus to a plain JSONL file in ``folder``."""
    opener = gzip.open if corpus.name.endswith(".gz") else open
    target = folder / f"first_{limit}.jsonl"
    with opener(corpus, "rt", encoding="utf-8") as src, target.open("w", encoding="utf-8") as out:
        out.writelines(islice(src, limit))
    return target


def measure_ingest(store: PaperStore, corpus: Path, sample: list[str]) -> dict[str, float]:
    """Time the embedding-only baseline on ``sample``, the ingest, and the no-op rerun."""
    store.embedder.embed_documents(sample[:64])  # load the model outside both timings
    print(f"baseline: embedding {len(sample)} documents alone ({load_average()})")
    t0, c0 = time.perf_counter(), time.process_time()
    store.embedder.embed_documents(sample)
    embed_s, embed_cpu = time.perf_counter() - t0, time.process_time() - c0
    embed_rate = len(sample) / embed_s
    print(f"ingest: {corpus} ({load_average()})")
    t0, c0 = time.perf_counter(), time.process_time()
    stats = store.ingest_corpus(corpus, progress=True)
    ingest_s, ingest_cpu = time.perf_counter() - t0, time.process_time() - c0
    rate = stats.papers / ingest_s
    t0 = time.perf_counter()
    again = store.ingest_corpus(corpus, progress=False)
    rerun_s = time.perf_counter() - t0
    print(f"ingest: {stats.added} new of {stats.papers} records in {ingest_s:.1f} s = "
          f"{rate:.1f} records/s ({ingest_cpu:.0f} CPU s = {stats.papers / ingest_cpu:.1f} "
          f"records per CPU s); embedding {stats.embed_seconds:.1f} s, chroma "
          f"{stats.add_seconds:.1f} s; peak RSS {peak_rss_mb():.0f} MB")
    print(f"baseline: embedding alone {embed_rate:.1f} records/s "
          f"({len(sample) / embed_cpu:.1f} per CPU s) -> the whole file would take "
          f"{stats.papers / embed_rate:.1f} s; ingest/embedding-only time ratio "
          f"{embed_rate / rate:.2f}x ({load_average()})")
    print(f"rerun of the complete ingest: noop={again.noop}, {again.added} new, {rerun_s:.2f} s")
    return {"records": stats.papers, "new": stats.added, "ingest_s": round(ingest_s, 1),
            "ingest_cpu_s": round(ingest_cpu, 1), "records_per_s": round(rate, 1),
            "embed_s": round(stats.embed_seconds, 1), "chroma_s": round(stats.add_seconds, 1),
            "baseline_embed_per_s": round(embed_rate, 1),
            "baseline_embed_per_cpu_s": round(len(sample) / embed_cpu, 1),
            "ratio_ingest_vs_embedding": round(embed_rate / rate, 2),
            "rerun_s": round(rerun_s, 2), "rerun_noop": again.noop,
            "peak_rss_mb": round(peak_rss_mb())}


def measure_search(store: PaperStore, fulltext: PaperStore, titles: dict[str, str],
                   topics: list[str]) -> dict:
    """Time hybrid, dense-only and bare-query search; known-item recall@10 on the titles.

    ``store`` searches with the kept BM25 index; ``fulltext`` is the same collection without
    one (chroma's full-text filter: the path of a store whose corpus has no index yet).
    """
    queries = list(titles) + topics
    for warm in (store, fulltext):
        warm.search("warm up the model and the index", k=10)
    store.dense_search(["warm up"], n=10)
    timing: dict[str, list[float]] = {"hybrid": [], "fulltext": [], "dense": [], "bare": []}
    hits = dict.fromkeys(timing, 0)
    for query in tqdm(queries, desc="queries", unit="query"):
        found: dict[str, list[str]] = {}
        seconds: dict[str, float] = {}
        for name, run in (
                ("hybrid", lambda q: [p.arxiv_id for p, _ in store.search(q, k=10)]),
                ("fulltext", lambda q: [p.arxiv_id for p, _ in fulltext.search(q, k=10)]),
                ("dense", lambda q: [i for i, _ in store.dense_search([q], n=10)[0]]),
                ("bare", lambda q: bare_query(store, q, 10))):
            t0 = time.perf_counter()
            found[name] = run(query)
            seconds[name] = time.perf_counter() - t0
        for name in timing:
            timing[name].append(seconds[name] * 1000)
            if query in titles:
                hits[name] += titles[query] in found[name]
    figures: dict[str, float] = {}
    for name, values in timing.items():
        figures[f"{name}_p50_ms"] = round(percentile(values, 0.5), 1)
        figures[f"{name}_p95_ms"] = round(percentile(values, 0.95), 1)
        figures[f"{name}_recall_at_10"] = round(hits[name] / len(titles), 3)
    bare95 = max(figures["bare_p95_ms"], 1e-9)
    print(f"search: {len(queries)} queries over {store.count()} papers ({load_average()})")
    for name, label in (("hybrid", "search (hybrid, BM25 index)"),
                        ("fulltext", "search (hybrid, full text)"), ("dense", "dense_search"),
                        ("bare", "baseline: bare chroma query")):
        print(f"  {label:<28} p50 {figures[f'{name}_p50_ms']:6.1f} ms  p95 "
              f"{figures[f'{name}_p95_ms']:6.1f} ms  (p95 {figures[f'{name}_p95_ms'] / bare95:.2f}x"
              f" the baseline)  known-item recall@10 {figures[f'{name}_recall_at_10']:.3f} "
              f"over {len(titles)} titles")
    return figures


def main() -> int:
    """Run the benchmark; print the figures (and write them as JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=None,
                        help="Ingest only the first N lines (quick runs); default: all.")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="Store directory (default: a fresh temp dir; reuse to skip ingest).")
    parser.add_argument("--baseline-docs", type=int, default=2000,
                        help="Documents embedded alone for the embedding-only baseline.")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="Also write results here.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.corpus.is_file():
        print(f"store_bench: corpus not found: {args.corpus}", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="store_bench_"))
    corpus = limited_copy(args.corpus, args.limit, work) if args.limit else args.corpus
    data_dir = args.data_dir or work / "data"
    store = PaperStore(load_settings(data_dir=data_dir, offline=True))
    papers = list(iter_corpus(corpus))
    rng = random.Random(args.seed)
    sample = [document_text(p)
              for p in rng.sample(papers, min(args.baseline_docs, len(papers)))]
    results = measure_ingest(store, corpus, sample)

    items = rng.sample(papers, min(args.queries // 2, len(papers)))
    titles = {p.title: p.arxiv_id for p in items}
    topics = rng.sample(TOPICS, min(len(TOPICS), args.queries - len(titles)))
    t0 = time.perf_counter()
    lexical = LexicalIndex.for_corpus(corpus, data_dir, progress=False)
    results["bm25_build_s"] = round(time.perf_counter() - t0, 1)
    print(f"BM25 index of {len(lexical)} papers built in {results['bm25_build_s']} s "
          f"(what `retest ingest` adds after embedding)")
    indexed = PaperStore(store.settings, client=store.client, lexical=[lexical])
    fulltext = PaperStore(store.settings, client=store.client, lexical=[])
    results |= measure_search(indexed, fulltext, titles, topics)
    results["data_dir"] = str(data_dir)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
