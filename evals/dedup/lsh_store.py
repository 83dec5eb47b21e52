"""Decontamination at training-set scale: a streamed training side indexed in Redis.

The in-memory path (:func:`evals.dedup.label_test_items`) holds every training text, signature
and LSH bucket in one process. :func:`label_streaming` gives the same labels with memory bounded
by one batch: the training side is read twice as a stream (once to index, once to verify the few
candidates LSH proposes), and the LSH index lives in Redis through datasketch's own storage layer
(``MinHashLSH(storage_config={"type": "redis", ...})``), so an index of millions of documents
outlives the process and is reused by later runs against other test sets.

Stages: sign (MinHash signatures of each batch, optionally fanned out over processes with the
same seeds: the bits do not depend on the split) -> index (buffered Redis pipelines) -> query
(each test item) -> verify (exact Jaccard of the candidates, read in a second pass) -> label.
An index is named by the caller (the CLI hashes the training file and the parameters); a
completed index carries a marker key and is reused; a partial one (a killed build) is dropped and
rebuilt.
"""

from __future__ import annotations

import json
import logging
import pickle  # noqa: S403  (datasketch's own key format in Redis; keys are our ints)
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import redis
from datasketch import LeanMinHash, MinHashLSH

from evals.dedup.minhash import DEFAULT_SCHEME, empty_value, minhash_signatures, text_signatures
from evals.dedup.near_dup import (
    DedupLabel,
    DedupResult,
    default_lsh_threshold,
    verify_candidates,
)
from evals.dedup.shingles import char_shingles, normalize, shingle_texts, word_shingles

log = logging.getLogger(__name__)

DEFAULT_BATCH = 50_000  # from evals.dedup.minhash.JIT_MIN_DOCS a batch uses the compiled kernel
# Commands each Redis storage buffers before one pipelined round trip (datasketch keeps one
# buffer per band plus one for keys, so this bounds client memory at ~(bands+1) x this).
REDIS_BUFFER = 10_000
REDIS_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RedisLSHStore:
    """Where the LSH index lives: a Redis server and database, from ``redis://HOST:PORT/DB``."""

    host: str
    port: int = 6379
    db: int = 0
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisLSHStore:
        """Parse ``redis://[:PASSWORD@]HOST[:PORT][/DB]``; ValueError (one line) when malformed."""
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise ValueError(f"--lsh-store must look like redis://HOST:PORT/DB, got {url!r}")
        path = parts.path.strip("/")
        try:
            port = parts.port or 6379
            db = int(path) if path else 0
        except ValueError:
            raise ValueError(f"--lsh-store {url!r}: port and database must be numbers") from None
        return cls(host=parts.hostname, port=port, db=db, password=parts.password)

    def redis_params(self) -> dict[str, Any]:
        """Return ``redis.Redis`` keyword arguments (datasketch passes them through)."""
        params: dict[str, Any] = {"host": self.host, "port": self.port, "db": self.db,
                                  "socket_timeout": REDIS_TIMEOUT_S,
                                  "socket_connect_timeout": REDIS_TIMEOUT_S}
        if self.password:
            params["password"] = self.password
        return params

    def client(self) -> redis.Redis:
        """Return a client for marker keys and cleanup (the index itself goes via datasketch)."""
        return redis.Redis(**self.redis_params())

    def describe(self) -> str:
        """Return ``redis://host:port/db`` without the password (for summaries and logs)."""
        return f"redis://{self.host}:{self.port}/{self.db}"


def sign_batch(texts: Sequence[str], params: dict[str, Any]) -> np.ndarray:
    """Return the signatures of one batch exactly as :func:`label_test_items` computes them.

    ``params``: shingle ("word"/"char"), n, num_perm, seed, mask_numbers. Top-level so worker
    processes can run it.
    """
    if params["shingle"] == "word":
        return text_signatures(texts, n=params["n"], num_perm=params["num_perm"],
                               seed=params["seed"], mask_numbers=params["mask_numbers"])
    sets = shingle_texts(texts, shingle="char", n=params["n"], mask_numbers=params["mask_numbers"])
    return minhash_signatures(sets, num_perm=params["num_perm"], seed=params["seed"])


def batched(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    """Yield lists of at most ``size`` texts from a stream."""
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def stream_signatures(texts: Iterable[str], params: dict[str, Any], *,
                      batch_size: int = DEFAULT_BATCH, processes: int = 1) -> Iterator[np.ndarray]:
    """Yield the signatures of ``texts`` one batch at a time, in input order.

    With ``processes > 1`` batches are signed in worker processes (at most two per worker in
    flight, so memory stays bounded); every worker uses the same permutations (same seed), so
    the concatenated rows equal the single-process :func:`sign_batch` of all texts, bit for bit.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if processes <= 1:
        for batch in batched(texts, batch_size):
            yield sign_batch(batch, params)
        return
    with ProcessPoolExecutor(max_workers=processes) as pool:
        pending: deque[Future[np.ndarray]] = deque()
        for batch in batched(texts, batch_size):
            pending.append(pool.submit(sign_batch, batch, params))
            if len(pending) >= 2 * processes:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _insert_rows(lsh: MinHashLSH, signatures: np.ndarray, first_key: int,
                 keep: np.ndarray) -> None:
    """Insert the kept rows under keys ``first_key + row`` through buffered storage calls.

    The same storage calls ``MinHashLSH.insert`` makes (pickled keys, byte-swapped band keys),
    with the band keys of the whole batch cut from one array instead of per document and band.
    """
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        return
    band_keys = []
    for start, end in lsh.hashranges:
        raw = np.ascontiguousarray(signatures[rows, start:end]).byteswap().tobytes()
        width = (end - start) * signatures.dtype.itemsize
        band_keys.append([raw[k:k + width] for k in range(0, len(raw), width)])
    for j, row in enumerate(rows.tolist()):
        key = pickle.dumps(first_key + row)
        hs = [keys[j] for keys in band_keys]
        lsh.keys.insert(key, *hs, buffer=True)
        for h, table in zip(hs, lsh.hashtables, strict=True):
            table.insert(h, key, buffer=True)


def _drop_index(client: redis.Redis, basename: bytes) -> int:
    """Delete every key of index ``basename`` (a partial build); return how many."""
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=basename + b"_*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            removed += client.unlink(*batch)
            batch = []
    if batch:
        removed += client.unlink(*batch)
    return removed


def open_index(store: RedisLSHStore, name: str, *, threshold: float,
               num_perm: int) -> tuple[MinHashLSH, bytes]:
    """Return datasketch's Redis-backed ``MinHashLSH`` for index ``name`` and its basename."""
    basename = f"retest-lsh-{name}".encode()
    config = {"type": "redis", "basename": basename, "redis": store.redis_params(),
              "redis_buffer": {"transaction": False}}
    return MinHashLSH(threshold=threshold, num_perm=num_perm, storage_config=config), basename


def build_index(train: Iterable[str], store: RedisLSHStore, name: str, params: dict[str, Any], *,
                lsh_threshold: float, batch_size: int = DEFAULT_BATCH, processes: int = 1,
                progress: Callable[[int], None] | None = None) -> tuple[MinHashLSH, dict[str, Any]]:
    """Index the streamed training texts in Redis, or reuse a completed index of ``name``.

    Return the index and facts about it (n_train, reused, seconds). Raises
    ``redis.RedisError`` when the server is unreachable or refuses a write (out of memory).
    """
    lsh, basename = open_index(store, name, threshold=lsh_threshold, num_perm=params["num_perm"])
    client = store.client()
    marker = basename + b"_complete"
    done = client.get(marker)
    if done is not None:
        facts = json.loads(done)
        log.info("dedup: reusing LSH index %s in %s (%d training items)", name,
                 store.describe(), facts["n_train"])
        return lsh, facts | {"reused": True}
    dropped = _drop_index(client, basename)
    if dropped:
        log.warning("dedup: dropped %d keys of an unfinished LSH index %s", dropped, name)
    started = time.perf_counter()
    empty = empty_value(DEFAULT_SCHEME)
    n_train = 0
    with lsh.insertion_session(buffer_size=REDIS_BUFFER):
        for sigs in stream_signatures(train, params, batch_size=batch_size, processes=processes):
            # An empty text has the empty signature and matches nothing: keep it out.
            _insert_rows(lsh, sigs, n_train, ~(sigs == empty).all(axis=1))
            n_train += len(sigs)
            if progress is not None:
                progress(n_train)
    facts = {"n_train": n_train, "index_s": round(time.perf_counter() - started, 4),
             "bands": lsh.b, "rows": lsh.r}
    client.set(marker, json.dumps(facts))
    return lsh, facts | {"reused": False}


def label_streaming(train: Callable[[], Iterable[str]], test_texts: Sequence[str], *,
                    store: RedisLSHStore, index_name: str, threshold: float = 0.7,
                    num_perm: int = 128, shingle: Literal["word", "char"] = "word", n: int = 3,
                    mask_numbers: bool = False, seed: int = 1, lsh_threshold: float | None = None,
                    batch_size: int = DEFAULT_BATCH, processes: int = 1) -> DedupResult:
    """Label each test text ``repeated`` or ``novel`` against a streamed training side.

    ``train()`` returns a fresh iterable of the training texts each call (it is read twice
    when the index is built, once when a completed index ``index_name`` is reused). The labels
    equal :func:`evals.dedup.label_test_items` with the same parameters: same signatures, same
    LSH bands, same candidates, the same exact-Jaccard verification.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if shingle not in ("word", "char"):
        raise ValueError(f"shingle must be 'word' or 'char', got {shingle!r}")
    lsh_threshold = default_lsh_threshold(threshold) if lsh_threshold is None else lsh_threshold
    params = {"shingle": shingle, "n": n, "num_perm": num_perm, "seed": seed,
              "mask_numbers": mask_numbers}
    timings: dict[str, float] = {}
    started = clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 4)
        clock = now

    lsh, facts = build_index(train(), store, index_name, params, lsh_threshold=lsh_threshold,
                             batch_size=batch_size, processes=processes)
    lap("index")
    test_sigs = sign_batch(test_texts, params)
    empty = empty_value(DEFAULT_SCHEME)
    candidates: list[list[int]] = [
        [] if (row == empty).all() else
        lsh.query(LeanMinHash(seed=seed, hashvalues=row, scheme=DEFAULT_SCHEME))
        for row in test_sigs]
    lap("query")
    make = word_shingles if shingle == "word" else char_shingles
    wanted = {i for found in candidates for i in found}
    train_sets: dict[int, set[str]] = {}
    if wanted:
        # Second pass: only the proposed training items are shingled and kept.
        for i, text in enumerate(train()):
            if i in wanted:
                train_sets[i] = make(normalize(text, mask_numbers=mask_numbers), n)
    labels: list[DedupLabel] = []
    for j, found in enumerate(candidates):
        shingles = make(normalize(test_texts[j], mask_numbers=mask_numbers), n) \
            if found else set()
        labels.append(verify_candidates(j, shingles, found, train_sets.__getitem__, threshold))
    lap("verify")
    timings["total"] = round(time.perf_counter() - started, 4)
    repeated = sum(1 for lab in labels if lab.label == "repeated")
    summary = {
        "n_train": facts["n_train"], "n_test": len(test_texts),
        "repeated": repeated, "novel": len(labels) - repeated,
        "threshold": threshold, "lsh_threshold": lsh_threshold,
        "lsh_bands": lsh.b, "lsh_rows": lsh.r, "num_perm": num_perm, "seed": seed,
        "scheme": DEFAULT_SCHEME, "shingle": shingle, "n": n, "mask_numbers": mask_numbers,
        "candidates_verified": sum(map(len, candidates)),
        "lsh_store": store.describe(), "lsh_index": index_name,
        "index_reused": facts["reused"], "processes": processes, "batch_size": batch_size,
        "timings_s": timings,
    }
    log.info("dedup (redis): %d of %d test items repeated (threshold %.2f) in %.2fs",
             repeated, len(labels), threshold, timings["total"])
    return DedupResult(items=labels, summary=summary)
