"""Benchmark the paper store on the real 46,696-record corpus.

Measures: ingest throughput (records/s) and peak memory; search latency p50/p95 over 100 queries
(half paper titles, half short topic/acronym queries); known-item recall@10 (query = a paper's
title, expect that paper). The baseline measured in the same run is dense-only search (chroma's
own vector query with the same embedder), so the hybrid's cost and gain are printed as ratios.

Usage: ``python bench/store_bench.py [--corpus PATH] [--limit N] [--data-dir DIR] [--json OUT]``.
Targets from the issue: full ingest < 15 min on 2 cores, p95 search < 150 ms, recall@10 >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import statistics
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tqdm import tqdm  # noqa: E402

from core.settings import load_settings  # noqa: E402
from tools.corpus import CorpusReport, iter_corpus  # noqa: E402
from tools.paper_store import PaperStore  # noqa: E402

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
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def dense_only(store: PaperStore, query: str, k: int) -> list[str]:
    """Baseline: chroma's vector query alone, same embedder, no lexical component."""
    vector = store.embedder([query])[0]
    return store.collection.query(query_embeddings=[vector], n_results=k, include=[])["ids"][0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=None, help="Ingest only the first N records.")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="Store directory (default: a fresh temp dir; reuse to skip ingest).")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="Also write results here.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="store_bench_"))
    settings = load_settings(data_dir=data_dir, offline=True)
    store = PaperStore(settings)
    before = store.count()

    report = CorpusReport()
    papers = iter_corpus(args.corpus, report)
    if args.limit:
        papers = islice(papers, args.limit)
    started, cpu_started = time.perf_counter(), time.process_time()
    added = store.upsert(papers, progress=True)
    ingest_s = time.perf_counter() - started
    # CPU seconds too: on a shared machine wall time depends on the neighbours, CPU time less.
    ingest_cpu_s = time.process_time() - cpu_started
    ingest_peak = peak_rss_mb()  # before the query pool below adds its own memory
    print(f"ingest: {report.summary()}")
    print(f"ingest: {added} new ({before} already stored) in {ingest_s:.1f} s = "
          f"{report.papers / ingest_s:.1f} records/s ({ingest_cpu_s:.0f} CPU s, "
          f"{report.papers / max(ingest_cpu_s, 1e-9):.1f} records per CPU s); "
          f"peak RSS {ingest_peak:.0f} MB")

    # Known items: titles of random stored papers (sampled from the ingested stream again).
    rng = random.Random(args.seed)
    stream = iter_corpus(args.corpus)
    pool = list(islice(stream, args.limit)) if args.limit else list(stream)
    items = rng.sample(pool, min(args.queries // 2, len(pool)))
    queries = [p.title for p in items] + rng.sample(TOPICS, min(len(TOPICS), args.queries // 2))

    store.search("warm up the model and the index", k=10)
    latencies, base_latencies = [], []
    hits = base_hits = 0
    for query in tqdm(queries, desc="queries", unit="query"):
        t0 = time.perf_counter()
        found = [p.arxiv_id for p, _ in store.search(query, k=10)]
        latencies.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        base = dense_only(store, query, 10)
        base_latencies.append((time.perf_counter() - t0) * 1000)
        for item in items:
            if item.title == query:
                hits += item.arxiv_id in found
                base_hits += item.arxiv_id in base
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    b50, b95 = percentile(base_latencies, 0.5), percentile(base_latencies, 0.95)
    recall, base_recall = hits / len(items), base_hits / len(items)
    print(f"search: {len(queries)} queries over {store.count()} papers: p50 {p50:.0f} ms, "
          f"p95 {p95:.0f} ms (dense-only baseline p50 {b50:.0f} ms, p95 {b95:.0f} ms; "
          f"ratio p95 {p95 / max(b95, 1e-9):.2f}x)")
    print(f"known-item recall@10: {recall:.3f} over {len(items)} titles "
          f"(dense-only baseline {base_recall:.3f})")
    results = {
        "records": report.papers, "new": added, "malformed": report.malformed_count,
        "ingest_s": round(ingest_s, 1), "ingest_cpu_s": round(ingest_cpu_s, 1),
        "records_per_s": round(report.papers / ingest_s, 1),
        "peak_rss_mb": round(ingest_peak), "queries": len(queries),
        "p50_ms": round(p50, 1), "p95_ms": round(p95, 1),
        "baseline_p50_ms": round(b50, 1), "baseline_p95_ms": round(b95, 1),
        "recall_at_10": recall, "baseline_recall_at_10": base_recall,
        "mean_ms": round(statistics.fmean(latencies), 1), "data_dir": str(data_dir),
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
