"""Benchmark decontamination at training-set scale: Redis-backed streaming index vs in memory.

On ``--n`` generated training documents (default 1,000,000; ~60 Zipf-distributed words each, as
in bench/dedup_bench.py) and a test set of ``--test`` items (half near copies of training
documents, half new), the same labelling runs two ways, each in its own child process so that
its peak RSS is its own:
- memory: the in-memory path (``label_test_items``: all texts in a list, in-memory
  ``MinHashLSH``) - the baseline;
- redis: ``label_streaming`` with the index in a ``redis-server`` this script starts on
  127.0.0.1 (datasketch's Redis storage), the training side streamed in batches.
Both are timed end to end from the first generated document to the labels. Printed: docs/s,
peak RSS of the process (and Redis's own peak memory), the ratios redis/memory, and whether the
labels agree.

Usage: ``python bench/dedup_scale_bench.py [--n 1000000] [--test 1000] [--processes 1]``
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from scale_servers import ServerUnavailable, redis_server  # noqa: E402

from evals.dedup import label_test_items  # noqa: E402
from evals.dedup.lsh_store import RedisLSHStore, label_streaming  # noqa: E402

VOCAB = 20_000
WORDS_PER_DOC = 60
BLOCK = 10_000
WORDS = [f"w{k}" for k in range(VOCAB + 1)]


def block_docs(seed: int, index: int, count: int) -> list[str]:
    """Return block ``index`` of the generated corpus (deterministic, independent per block)."""
    rng = np.random.default_rng([seed, index])
    ranks = rng.zipf(1.1, size=count * WORDS_PER_DOC * 2)
    ranks = ranks[ranks <= VOCAB][: count * WORDS_PER_DOC].reshape(count, WORDS_PER_DOC)
    return [" ".join([WORDS[r] for r in row]) for row in ranks.tolist()]


def generate(n: int, seed: int = 0) -> Iterator[str]:
    """Stream ``n`` generated training documents, block by block."""
    for index, start in enumerate(range(0, n, BLOCK)):
        yield from block_docs(seed, index, min(BLOCK, n - start))


def test_items(n: int, count: int) -> list[str]:
    """Half near copies (2 words changed) of early training documents, half new documents."""
    rng = random.Random(1)
    source = block_docs(0, 0, min(BLOCK, n))
    near = []
    for i in range(count // 2):
        words = source[(i * 7) % len(source)].split()
        for _ in range(2):
            words[rng.randrange(len(words))] = rng.choice(WORDS)
        near.append(" ".join(words))
    return near + block_docs(99, 0, count - count // 2)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(mode: str, n: int, n_test: int, url: str, processes: int) -> None:
    """Label the generated corpus one way; print one JSON line."""
    test = test_items(n, n_test)
    t0 = time.perf_counter()
    if mode == "memory":
        result = label_test_items(list(generate(n)), test)
    else:
        result = label_streaming(lambda: generate(n), test, store=RedisLSHStore.from_url(url),
                                 index_name=f"bench-{n}-{time.time_ns()}",
                                 processes=processes)
    seconds = time.perf_counter() - t0
    labels = [(x.label, x.matches) for x in result.items]
    print(json.dumps({"mode": mode, "docs": n, "seconds": round(seconds, 1),
                      "docs_per_s": round(n / seconds), "peak_rss_mb": round(peak_rss_mb()),
                      "repeated": result.summary["repeated"],
                      "labels_sha": hashlib.sha256(json.dumps(labels).encode()).hexdigest()[:16]}))


def child(mode: str, args: argparse.Namespace, url: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--n", str(args.n), "--test",
           str(args.test), "--processes", str(args.processes), "--url", url]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="training documents")
    parser.add_argument("--test", type=int, default=1000, help="test items")
    parser.add_argument("--processes", type=int, default=1, help="signature workers (redis)")
    parser.add_argument("--child", choices=["memory", "redis"], help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.n, args.test, args.url, args.processes)
        return
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(redis_server())
        except ServerUnavailable as exc:
            sys.exit(str(exc))
        memory = child("memory", args, url)
        print(json.dumps(memory), flush=True)
        redis_run = child("redis", args, url)
        import redis
        info = redis.Redis.from_url(url).info("memory")
        redis_run["redis_used_memory_peak_mb"] = round(info["used_memory_peak"] / 2**20)
        print(json.dumps(redis_run), flush=True)
    print(json.dumps({
        "docs": args.n, "processes": args.processes,
        "docs_per_s_ratio_redis_vs_memory": round(redis_run["docs_per_s"]
                                                  / memory["docs_per_s"], 3),
        "peak_rss_ratio_redis_vs_memory": round(redis_run["peak_rss_mb"]
                                                / memory["peak_rss_mb"], 3),
        "labels_equal": redis_run["labels_sha"] == memory["labels_sha"]
        and redis_run["repeated"] == memory["repeated"],
    }))


if __name__ == "__main__":
    main()
