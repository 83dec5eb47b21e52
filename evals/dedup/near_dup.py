"""Near-duplicate detection between a training side and a test side: shingles, MinHash, LSH.

Stages (each timed in :attr:`DedupResult.summary`): fingerprint (normalize, shingle, MinHash
signatures: :mod:`evals.dedup.shingles`, :mod:`evals.dedup.minhash`) -> index (datasketch
``MinHashLSH`` over the training side) -> query and verify (exact Jaccard on the shingle sets of the
proposed pairs) -> label. The text and signature functions are re-exported here, so ``evals.dedup``
is the one import for dedup work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

from evals.dedup.minhash import (
    DEFAULT_SCHEME,
    JIT_MIN_DOCS,
    Scheme,
    empty_value,
    lean_minhashes,
    load_jit,
    minhash_signatures,
    permutations,
    text_signatures,
)
from evals.dedup.shingles import (
    char_shingles,
    jaccard,
    normalize,
    shingle_texts,
    word_shingles,
)

__all__ = [
    "DEFAULT_SCHEME", "JIT_MIN_DOCS", "DedupLabel", "DedupResult", "Scheme", "build_lsh",
    "char_shingles", "default_lsh_threshold", "jaccard", "label_test_items", "lean_minhashes",
    "minhash_signatures", "normalize", "permutations", "shingle_texts", "text_signatures",
    "verify_candidates",
    "word_shingles",
]

log = logging.getLogger(__name__)


def build_lsh(signatures: np.ndarray, *, threshold: float, seed: int = 1,
              scheme: Scheme = DEFAULT_SCHEME, keep: np.ndarray | None = None) -> MinHashLSH:
    """Return an in-memory datasketch ``MinHashLSH`` holding signature row ``i`` under key ``i``.

    Rows where ``keep`` is False are left out. The index is the one ``MinHashLSH.insert`` of
    ``LeanMinHash`` objects builds (same band keys, same storage calls), but every band's keys are
    cut from one byte-swapped array instead of one small array per document and band.
    """
    n, num_perm = signatures.shape
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    rows = np.arange(n) if keep is None else np.flatnonzero(keep)
    if rows.size == 0:
        return lsh
    # The first row goes through the public API: it checks the format and records the scheme
    # the index then enforces on queries.
    first = int(rows[0])
    lsh.insert(first, LeanMinHash(seed=seed, hashvalues=signatures[first], scheme=scheme),
               check_duplication=False)
    rest = rows[1:]
    band_keys = []
    for start, end in lsh.hashranges:
        # MinHashLSH keys a band by bytes(hashvalues[start:end].byteswap().data).
        raw = np.ascontiguousarray(signatures[rest, start:end]).byteswap().tobytes()
        width = (end - start) * signatures.dtype.itemsize
        band_keys.append([raw[k:k + width] for k in range(0, len(raw), width)])
    for j, key in enumerate(rest.tolist()):
        hs = [keys[j] for keys in band_keys]
        lsh.keys.insert(key, *hs)
        for h, table in zip(hs, lsh.hashtables, strict=True):
            table.insert(h, key)
    return lsh


# ---------------------------------------------------------------------------- labelling


@dataclass(frozen=True)
class DedupLabel:
    """The label of one test item.

    ``matches`` lists every training item whose exact Jaccard is >= the threshold, best first, as
    ``(train_index, jaccard)``. ``best_match_index``/``best_jaccard`` are the best verified LSH
    candidate even when it is below the threshold (then the item is ``novel``); ``None``/0.0 when
    LSH proposed no candidate at all. A novel item's best match is therefore the best among LSH
    candidates, not over the whole training side: pairs far below the threshold are rarely
    candidates.
    """

    index: int
    label: Literal["repeated", "novel"]
    best_match_index: int | None
    best_jaccard: float
    matches: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class DedupResult:
    """Per-test-item labels plus a summary (counts, parameters, timings per stage in seconds)."""

    items: list[DedupLabel]
    summary: dict[str, Any]


def default_lsh_threshold(threshold: float) -> float:
    """Return the LSH threshold used to propose candidates for a verification ``threshold``.

    LSH's S-curve misses a share of pairs whose Jaccard sits just above its threshold, so
    candidates are proposed from a lower threshold and the exact Jaccard decides: recall near the
    edge costs only some extra verifications.
    """
    return round(min(max(0.05, threshold - 0.2), 0.95), 4)




def verify_candidates(index: int, shingles: set[str], candidates: Iterable[int],
                      train_set: Callable[[int], set[str]], threshold: float) -> DedupLabel:
    """Label test item ``index`` from its LSH ``candidates`` by exact Jaccard on shingle sets.

    Matches are the candidates at or above ``threshold``, best first (ties by index); the item
    is "repeated" when there is one. ``train_set(i)`` returns training item ``i``'s shingles.
    """
    scored = sorted(((i, jaccard(shingles, train_set(i))) for i in candidates),
                    key=lambda pair: (-pair[1], pair[0]))
    matches = [(i, round(s, 6)) for i, s in scored if s >= threshold]
    best_index, best = scored[0] if scored else (None, 0.0)
    return DedupLabel(index=index, label="repeated" if matches else "novel",
                      best_match_index=best_index, best_jaccard=round(best, 6), matches=matches)


def label_test_items(train_texts: Sequence[str], test_texts: Sequence[str], *,
                     threshold: float = 0.7, num_perm: int = 128,
                     shingle: Literal["word", "char"] = "word", n: int = 3,
                     mask_numbers: bool = False, seed: int = 1,
                     lsh_threshold: float | None = None, processes: int = 1) -> DedupResult:
    """Label each test text ``repeated`` or ``novel`` against the training texts.

    ``repeated`` means some training text's exact Jaccard is >= ``threshold``.
    Training signatures go into a datasketch ``MinHashLSH`` (built with ``lsh_threshold``, by
    default :func:`default_lsh_threshold`); every candidate a test item's query returns is verified
    with the exact Jaccard of the shingle sets, so LSH false positives never label an item
    repeated. A pair LSH fails to propose is missed: the lower LSH threshold makes that rare.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    lsh_threshold = default_lsh_threshold(threshold) if lsh_threshold is None else lsh_threshold
    timings: dict[str, float] = {}
    started = clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 4)
        clock = now

    if shingle not in ("word", "char"):
        raise ValueError(f"shingle must be 'word' or 'char', got {shingle!r}")
    params = {"shingle": shingle, "n": n, "mask_numbers": mask_numbers}
    use_jit = (len(train_texts) + len(test_texts) >= JIT_MIN_DOCS) and load_jit() is not None
    if shingle == "word":
        # Signatures straight from the text; shingle sets are built only for the pairs LSH
        # proposes, which is all the exact verification needs.
        sig = {"n": n, "num_perm": num_perm, "seed": seed, "mask_numbers": mask_numbers,
               "use_jit": use_jit}
        train_sigs = text_signatures(train_texts, **sig)  # type: ignore[arg-type]
        test_sigs = text_signatures(test_texts, **sig)  # type: ignore[arg-type]
    else:
        sig = {"num_perm": num_perm, "seed": seed, "processes": processes, "use_jit": use_jit}
        train_sigs = minhash_signatures(shingle_texts(train_texts, **params), **sig)  # type: ignore[arg-type]
        test_sigs = minhash_signatures(shingle_texts(test_texts, **params), **sig)  # type: ignore[arg-type]
    lap("fingerprint")
    # An empty text has the empty signature and matches nothing: keep it out of every bucket.
    empty = empty_value(DEFAULT_SCHEME)
    keep = ~(train_sigs == empty).all(axis=1)
    lsh = build_lsh(train_sigs, threshold=lsh_threshold, seed=seed, keep=keep)
    lap("index")
    make = word_shingles if shingle == "word" else char_shingles
    train_sets: dict[int, set[str]] = {}

    def train_set(i: int) -> set[str]:
        if i not in train_sets:
            train_sets[i] = make(normalize(train_texts[i], mask_numbers=mask_numbers), n)
        return train_sets[i]

    labels: list[DedupLabel] = []
    n_candidates = 0
    for j, row in enumerate(test_sigs):
        candidates = [] if (row == empty).all() else lsh.query(
            LeanMinHash(seed=seed, hashvalues=row, scheme=DEFAULT_SCHEME))
        n_candidates += len(candidates)
        shingles = make(normalize(test_texts[j], mask_numbers=mask_numbers), n) \
            if candidates else set()
        labels.append(verify_candidates(j, shingles, candidates, train_set, threshold))
    lap("query_verify")
    timings["total"] = round(time.perf_counter() - started, 4)
    repeated = sum(1 for lab in labels if lab.label == "repeated")
    summary = {
        "n_train": len(train_texts), "n_test": len(test_texts),
        "repeated": repeated, "novel": len(labels) - repeated,
        "threshold": threshold, "lsh_threshold": lsh_threshold,
        "lsh_bands": lsh.b, "lsh_rows": lsh.r, "num_perm": num_perm, "seed": seed,
        "scheme": DEFAULT_SCHEME, **params, "candidates_verified": n_candidates,
        "compiled_kernel": use_jit,
        "timings_s": timings,
    }
    log.info("dedup: %d of %d test items repeated (threshold %.2f) in %.2fs",
             repeated, len(labels), threshold, timings["total"])
    return DedupResult(items=labels, summary=summary)
