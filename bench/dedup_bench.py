"""Benchmark MinHash signatures against datasketch, and GSM8K dedup end to end.

Two parts, in the same run:
- ratios: on ``--baseline-docs`` synthetic ~60-word documents (Zipf-distributed words from a 20k
  vocabulary), best of ``--repeats`` runs each (the machine is shared), from shingle sets:
  ``minhash_signatures`` (compiled kernel, and the numpy path) against datasketch's
  ``MinHash.bulk`` and a per-document ``MinHash().update_batch`` loop; from text:
  ``text_signatures`` against ``word_shingles`` + ``MinHash.bulk``. Signatures are compared bit
  for bit. The baselines' cost is per document, so the ratio does not depend on corpus size.
- scaling: for each size in ``--sizes`` the documents are generated and fingerprinted from text
  block by block (the corpus is never all in memory; the signatures are), reporting docs/s and
  peak RSS.
- where the time goes: the numpy path's stages timed one by one on the same documents
  (shingling, SHA-1 of each distinct shingle, permutation + row minimum). SHA-1 is datasketch's
  hash, fixed by our bit-identical contract, and nearly every shingle of natural text is
  distinct, so hashing stays a large share however the arithmetic is compiled; a MinHash with
  a cheaper hash (rensa's) is faster but gives other signatures.
Then GSM8K test against train end to end (``label_test_items``).

Usage: ``python bench/dedup_bench.py [--sizes 10000,100000,1000000] [--processes 1]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from datasketch import MinHash
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evals.dedup import (  # noqa: E402
    label_test_items,
    minhash_signatures,
    normalize,
    text_signatures,
    word_shingles,
)

GSM8K = REPO.parent / "shared" / "data" / "benchmarks" / "gsm8k"
VOCAB = 20_000
WORDS_PER_DOC = 60
WORDS = [f"w{k}" for k in range(VOCAB + 1)]


def synthetic_docs(count: int, rng: np.random.Generator) -> list[str]:
    """Return ``count`` documents of ~60 words drawn from a Zipf(1.1) vocabulary."""
    ranks = rng.zipf(1.1, size=count * WORDS_PER_DOC * 2)
    ranks = ranks[ranks <= VOCAB][: count * WORDS_PER_DOC].reshape(count, WORDS_PER_DOC)
    return [" ".join([WORDS[r] for r in row]) for row in ranks.tolist()]


def shingle(docs: list[str]) -> list[set[str]]:
    return [word_shingles(normalize(d), 3) for d in docs]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_of(repeats: int, run: Callable[[], object]) -> tuple[float, object]:
    """Return the fastest of ``repeats`` runs (CPU seconds of this process) and the last result.

    The machine is shared: CPU time, not wall time, is what other processes disturb least, and
    the minimum is the least disturbed run.
    """
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.process_time()
        result = run()
        best = min(best, time.process_time() - t0)
    return best, result


def compare(texts: list[str], *, num_perm: int, seed: int, repeats: int,
            use_jit: bool) -> dict[str, object]:
    """Time every method on the same texts (best of ``repeats``); check signatures match."""
    sets = shingle(texts)
    encoded = [[s.encode("utf8") for s in d] for d in sets]
    t_shingle, _ = best_of(repeats, lambda: shingle(texts))
    t_bulk, bulk = best_of(repeats, lambda: MinHash.bulk(
        [[s.encode("utf8") for s in d] for d in sets], num_perm=num_perm, seed=seed))

    def update_batch() -> None:
        for shingles in encoded:
            m = MinHash(num_perm=num_perm, seed=seed)
            m.update_batch(shingles)

    t_batch, _ = best_of(repeats, update_batch)
    t_sets, ours_sets = best_of(repeats, lambda: minhash_signatures(
        sets, num_perm=num_perm, seed=seed, use_jit=use_jit))
    t_numpy, ours_numpy = best_of(repeats, lambda: minhash_signatures(
        sets, num_perm=num_perm, seed=seed, use_jit=False))
    t_text, ours_text = best_of(repeats, lambda: text_signatures(
        texts, num_perm=num_perm, seed=seed, use_jit=use_jit))
    reference = np.array([m.hashvalues for m in bulk])
    n = len(texts)
    return {
        "docs": n,
        "bulk_docs_per_s": round(n / t_bulk),
        "update_batch_docs_per_s": round(n / t_batch),
        "ours_sets_docs_per_s": round(n / t_sets),
        "numpy_path_docs_per_s": round(n / t_numpy),
        "ratio_vs_bulk": round(t_bulk / t_sets, 2),
        "ratio_vs_update_batch": round(t_batch / t_sets, 2),
        "numpy_ratio_vs_bulk": round(t_bulk / t_numpy, 2),
        "ours_text_docs_per_s": round(n / t_text),
        "datasketch_text_docs_per_s": round(n / (t_shingle + t_bulk)),
        "ratio_from_text": round((t_shingle + t_bulk) / t_text, 2),
        "signatures_match": bool(np.array_equal(ours_sets, reference)
                                 and np.array_equal(ours_numpy, reference)
                                 and np.array_equal(ours_text, reference)),
    }


def stream(size: int, *, block: int, num_perm: int, seed: int, use_jit: bool,
           processes: int) -> dict[str, object]:
    """Fingerprint ``size`` documents from text, block by block; keep all signatures."""
    rng = np.random.default_rng(size)
    elapsed = cpu = 0.0
    signatures = []
    with tqdm(total=size, desc=f"{size:,} docs", unit="doc", leave=False) as bar:
        for start in range(0, size, block):
            docs = synthetic_docs(min(block, size - start), rng)
            t0, c0 = time.perf_counter(), time.process_time()
            if processes > 1:
                sigs = minhash_signatures(shingle(docs), num_perm=num_perm, seed=seed,
                                          processes=processes, use_jit=use_jit)
            else:
                sigs = text_signatures(docs, num_perm=num_perm, seed=seed, use_jit=use_jit)
            elapsed += time.perf_counter() - t0
            cpu += time.process_time() - c0  # excludes worker processes (--processes > 1)
            signatures.append(sigs)
            bar.update(len(docs))
    held_mb = sum(s.nbytes for s in signatures) / 2**20
    return {"docs": size, "seconds": round(elapsed, 2), "docs_per_s": round(size / elapsed),
            "cpu_seconds": round(cpu, 2), "docs_per_cpu_s": round(size / cpu),
            "signatures_mb": round(held_mb), "peak_rss_mb": round(peak_rss_mb())}


def where_time_goes(texts: list[str], *, num_perm: int, seed: int) -> dict[str, float]:
    """Time the numpy path's stages one by one on ``texts``, in CPU seconds (best of 3).

    Stages as the path runs them: shingling the text, hashing each distinct shingle with SHA-1
    (datasketch's hash, which the bit-identical contract fixes), and the permutation + row-minimum
    arithmetic; ``all`` is ``minhash_signatures`` end to end from the shingle sets, for reference.
    """
    sets = shingle(texts)
    distinct = list(dict.fromkeys(s for doc in sets for s in doc))
    occurrences = sum(map(len, sets))
    rng = np.random.default_rng(seed)
    perms = rng.integers(1, 2**31, size=(2, num_perm), dtype=np.uint64)

    def sha1_distinct() -> object:
        return b"".join(hashlib.sha1(x.encode()).digest() for x in distinct)

    hv = rng.integers(0, 2**32, size=occurrences, dtype=np.uint64)  # stands in for the hashes

    def permute_and_min() -> object:
        with np.errstate(over="ignore"):
            return (hv[:, None] * perms[0] + perms[1]).min(axis=0)

    timings = {"shingle": best_of(3, lambda: shingle(texts))[0],
               "sha1_of_distinct_shingles": best_of(3, sha1_distinct)[0],
               "permute_and_min": best_of(3, permute_and_min)[0],
               "all_from_sets": best_of(3, lambda: minhash_signatures(
                   sets, num_perm=num_perm, seed=seed, use_jit=False))[0]}
    return {k: round(v, 3) for k, v in timings.items()} | {
        "distinct_shingles": len(distinct), "shingle_occurrences": occurrences}


def bench_gsm8k() -> dict[str, object] | None:
    if not GSM8K.is_dir():
        print(f"skip GSM8K: {GSM8K} is absent", file=sys.stderr)
        return None
    t0, c0 = time.perf_counter(), time.process_time()
    train = [json.loads(line)["question"] for line in (GSM8K / "train.jsonl").open()]
    test = [json.loads(line)["question"] for line in (GSM8K / "test.jsonl").open()]
    result = label_test_items(train, test, threshold=0.7)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"train": len(train), "test": len(test), "repeated": result.summary["repeated"],
            "end_to_end_s": round(total, 3), "end_to_end_cpu_s": round(cpu, 3),
            "stages_s": result.summary["timings_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="comma-separated corpus sizes (documents)")
    parser.add_argument("--block", type=int, default=50_000, help="documents per streamed block")
    parser.add_argument("--baseline-docs", type=int, default=10_000,
                        help="documents every method (and datasketch) runs on, for the ratios")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--processes", type=int, default=1,
                        help=">1: stream through shingle sets in this many processes")
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-gsm8k", action="store_true")
    parser.add_argument("--no-jit", action="store_true", help="time the numpy path only")
    args = parser.parse_args()
    if not args.no_jit:
        t0 = time.perf_counter()  # numba import + compile or cache load: once per process
        minhash_signatures([{"warm up"}], use_jit=True)
        text_signatures(["warm up"], use_jit=True)
        print(f"compiled kernel ready in {time.perf_counter() - t0:.2f}s (excluded)", flush=True)
    use_jit = not args.no_jit
    sample = synthetic_docs(args.baseline_docs, np.random.default_rng(0))
    cmp = compare(sample, num_perm=args.num_perm, seed=args.seed, repeats=args.repeats,
                  use_jit=use_jit)
    print(f"same {cmp['docs']:,} docs, best of {args.repeats} (CPU time): from shingle sets "
          f"ours "
          f"{cmp['ours_sets_docs_per_s']:,}/s (numpy path {cmp['numpy_path_docs_per_s']:,}/s) vs "
          f"MinHash.bulk {cmp['bulk_docs_per_s']:,}/s = x{cmp['ratio_vs_bulk']} (numpy path "
          f"x{cmp['numpy_ratio_vs_bulk']}), vs update_batch {cmp['update_batch_docs_per_s']:,}/s"
          f" = x{cmp['ratio_vs_update_batch']}", flush=True)
    print(f"{'':>5}from text (normalize + 3-grams + MinHash): ours "
          f"{cmp['ours_text_docs_per_s']:,}/s vs word_shingles + bulk "
          f"{cmp['datasketch_text_docs_per_s']:,}/s = x{cmp['ratio_from_text']}; "
          f"signatures match: {cmp['signatures_match']}", flush=True)
    split = where_time_goes(sample, num_perm=args.num_perm, seed=args.seed)
    print(f"{'':>5}where the numpy path's time goes on the same docs (CPU s, best of 3): "
          f"shingling {split['shingle']}, SHA-1 of {split['distinct_shingles']:,} distinct "
          f"shingles {split['sha1_of_distinct_shingles']}, permute + min over "
          f"{split['shingle_occurrences']:,} occurrences x {args.num_perm} "
          f"{split['permute_and_min']}; signatures from sets end to end {split['all_from_sets']}",
          flush=True)
    rows = []
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        row = stream(size, block=args.block, num_perm=args.num_perm, seed=args.seed,
                     use_jit=use_jit, processes=args.processes)
        rows.append(row)
        print(f"{size:>9,} docs from text: {row['seconds']}s wall = {row['docs_per_s']:,} docs/s; "
              f"{row['cpu_seconds']}s CPU = {row['docs_per_cpu_s']:,} docs per CPU-s; "
              f"signatures held {row['signatures_mb']} MB, peak RSS {row['peak_rss_mb']} MB",
              flush=True)
    gsm = None if args.no_gsm8k else bench_gsm8k()
    if gsm:  # the default path for this size (numpy: below JIT_MIN_DOCS documents)
        print(f"GSM8K test {gsm['test']} vs train {gsm['train']}: {gsm['end_to_end_s']}s wall "
              f"({gsm['end_to_end_cpu_s']}s CPU) end to end, {gsm['repeated']} repeated at 0.7; "
              f"stages (wall) {gsm['stages_s']}")
    print(json.dumps({"compare": cmp, "where_time_goes": split, "sizes": rows, "gsm8k": gsm}))


if __name__ == "__main__":
    main()
