"""Benchmark MinHash signatures against datasketch, and GSM8K dedup end to end.

For each size in ``--sizes`` it streams synthetic ~60-word documents (Zipf-distributed words from
a 20k vocabulary) in blocks, shingles them (word 3-grams), and times
``evals.dedup.minhash_signatures`` against datasketch's ``MinHash.bulk`` and a per-document
``MinHash().update_batch`` loop on the same shingle sets, in the same run. The datasketch
baselines run on at most ``--baseline-docs`` documents of each size (their rate is per document,
so it does not depend on the corpus size); the report says when they were subsampled. Signatures
are compared bit for bit on the baseline documents. Shingling is timed apart: both sides need it.

Usage: ``python bench/dedup_bench.py [--sizes 10000,100000,1000000] [--processes 1]``
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
from datasketch import MinHash
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evals.dedup import label_test_items, minhash_signatures, normalize, word_shingles  # noqa: E402

GSM8K = REPO.parent / "shared" / "data" / "benchmarks" / "gsm8k"
VOCAB = 20_000
WORDS_PER_DOC = 60


def synthetic_docs(count: int, rng: np.random.Generator) -> list[str]:
    """Return ``count`` documents of ~60 words drawn from a Zipf(1.1) vocabulary."""
    ranks = rng.zipf(1.1, size=count * WORDS_PER_DOC * 2)
    ranks = ranks[ranks <= VOCAB][: count * WORDS_PER_DOC].reshape(count, WORDS_PER_DOC)
    words = np.array([f"w{k}" for k in range(VOCAB + 1)])
    return [" ".join(row) for row in words[ranks]]


def shingle(docs: list[str]) -> list[set[str]]:
    return [word_shingles(normalize(d), 3) for d in docs]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_size(size: int, *, block: int, baseline_docs: int, processes: int,
               num_perm: int, seed: int, use_jit: bool) -> dict[str, object]:
    rng = np.random.default_rng(size)
    t_shingle = t_ours = 0.0
    n_shingles = 0
    baseline_sets: list[set[str]] = []
    signatures = []
    with tqdm(total=size, desc=f"{size:,} docs", unit="doc", leave=False) as bar:
        for start in range(0, size, block):
            docs = synthetic_docs(min(block, size - start), rng)
            t0 = time.perf_counter()
            sets = shingle(docs)
            t1 = time.perf_counter()
            signatures.append(minhash_signatures(sets, num_perm=num_perm, seed=seed,
                                                 processes=processes, use_jit=use_jit))
            t_ours += time.perf_counter() - t1
            t_shingle += t1 - t0
            n_shingles += sum(map(len, sets))
            if len(baseline_sets) < baseline_docs:
                baseline_sets.extend(sets[: baseline_docs - len(baseline_sets)])
            bar.update(len(docs))
    ours_rate = size / t_ours
    encoded = [[s.encode("utf8") for s in d] for d in baseline_sets]
    t0 = time.perf_counter()
    bulk = MinHash.bulk(encoded, num_perm=num_perm, seed=seed)
    bulk_rate = len(encoded) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for shingles in encoded:
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch(shingles)
    batch_rate = len(encoded) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    numpy_sigs = minhash_signatures(baseline_sets, num_perm=num_perm, seed=seed, use_jit=False)
    numpy_rate = len(encoded) / (time.perf_counter() - t0)
    head, rows = [], 0
    for part in signatures:  # only the baseline's rows: no second copy of 1M signatures
        if rows >= len(encoded):
            break
        head.append(part[: len(encoded) - rows])
        rows += len(head[-1])
    ours_head = np.concatenate(head)
    reference = np.array([m.hashvalues for m in bulk])
    match = bool(np.array_equal(ours_head, reference) and np.array_equal(numpy_sigs, reference))
    return {
        "docs": size, "shingles_per_doc": round(n_shingles / size, 1),
        "shingle_s": round(t_shingle, 2), "ours_s": round(t_ours, 2),
        "ours_docs_per_s": round(ours_rate), "bulk_docs_per_s": round(bulk_rate),
        "update_batch_docs_per_s": round(batch_rate), "numpy_path_docs_per_s": round(numpy_rate),
        "kernel": "jit" if use_jit else "numpy",
        "ratio_vs_bulk": round(ours_rate / bulk_rate, 2),
        "ratio_vs_update_batch": round(ours_rate / batch_rate, 2),
        "baseline_docs": len(encoded), "baseline_subsampled": len(encoded) < size,
        "signatures_match": match, "peak_rss_mb": round(peak_rss_mb()),
        "processes": processes,
    }


def bench_gsm8k() -> dict[str, object] | None:
    if not GSM8K.is_dir():
        print(f"skip GSM8K: {GSM8K} is absent", file=sys.stderr)
        return None
    t0 = time.perf_counter()
    train = [json.loads(line)["question"] for line in (GSM8K / "train.jsonl").open()]
    test = [json.loads(line)["question"] for line in (GSM8K / "test.jsonl").open()]
    result = label_test_items(train, test, threshold=0.7)
    total = time.perf_counter() - t0
    return {"train": len(train), "test": len(test), "repeated": result.summary["repeated"],
            "end_to_end_s": round(total, 3), "stages_s": result.summary["timings_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="comma-separated corpus sizes (documents)")
    parser.add_argument("--block", type=int, default=50_000, help="documents per streamed block")
    parser.add_argument("--baseline-docs", type=int, default=20_000,
                        help="most documents the datasketch baselines run on per size")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-gsm8k", action="store_true")
    parser.add_argument("--no-jit", action="store_true", help="time the numpy path only")
    args = parser.parse_args()
    if not args.no_jit:
        t0 = time.perf_counter()  # numba import + compile or cache load: once per process
        minhash_signatures([{"warm up"}], use_jit=True)
        print(f"compiled kernel ready in {time.perf_counter() - t0:.2f}s (excluded)", flush=True)
    rows = []
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        row = bench_size(size, block=args.block, baseline_docs=args.baseline_docs,
                         processes=args.processes, num_perm=args.num_perm, seed=args.seed,
                         use_jit=not args.no_jit)
        rows.append(row)
        sub = f" (baselines on {row['baseline_docs']:,} docs)" if row["baseline_subsampled"] else ""
        print(f"{size:>9,} docs: ours ({row['kernel']}) {row['ours_docs_per_s']:>8,}/s  "
              f"numpy path {row['numpy_path_docs_per_s']:>7,}/s  bulk "
              f"{row['bulk_docs_per_s']:>7,}/s  update_batch {row['update_batch_docs_per_s']:>7,}/s"
              f"  x{row['ratio_vs_bulk']} vs bulk, x{row['ratio_vs_update_batch']} vs "
              f"update_batch  match={row['signatures_match']}  peak {row['peak_rss_mb']} MB"
              f"  (shingling {row['shingle_s']}s apart){sub}", flush=True)
    gsm = None if args.no_gsm8k else bench_gsm8k()
    if gsm:  # the default path for this size (numpy: below JIT_MIN_DOCS documents)
        print(f"GSM8K test {gsm['test']} vs train {gsm['train']}: {gsm['end_to_end_s']}s end to "
              f"end, {gsm['repeated']} repeated at 0.7; stages {gsm['stages_s']}")
    print(json.dumps({"sizes": rows, "gsm8k": gsm}))


if __name__ == "__main__":
    main()
