"""Near-duplicate detection between a training side and a test side: shingles, MinHash, LSH.

Stages (each timed in :attr:`DedupResult.summary`): fingerprint (normalize, shingle, MinHash
signatures) -> index (datasketch ``MinHashLSH`` over the training side) -> query and verify
(exact Jaccard on the shingle sets of the proposed pairs) -> label.

Signatures are bit-identical to ``datasketch.MinHash(num_perm, seed, scheme=...)`` fed each
shingle as UTF-8 bytes with the default SHA-1 hash, so datasketch's LSH (including its Redis
storage) can index them. They are computed differently, over a whole batch of documents instead
of one small ``update_batch`` per document:
- numpy path (any size; the default below :data:`JIT_MIN_DOCS` documents): every distinct
  shingle of a chunk is hashed once with hashlib, then the permutations and the per-document
  minima run as numpy array operations over all of the chunk's shingles;
- compiled path (numba, optional): the shingles are packed into one byte buffer and a compiled
  kernel computes SHA-1, the permutations and the minima with no Python object per shingle (it
  hashes every occurrence: deduplicating in Python would cost as much as the compiled SHA-1).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Literal

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

log = logging.getLogger(__name__)

# From this many documents the compiled kernel is worth numba's import and cache load (~1 s).
JIT_MIN_DOCS = 50_000


def _load_jit() -> Any:
    """Return the compiled-kernel module, or None when numba is not installed."""
    try:  # optional: numba ships with the CPU build of vLLM
        from evals import _minhash_jit
    except ImportError:
        return None
    return _minhash_jit

Scheme = Literal["affine32", "affine64", "legacy"]
DEFAULT_SCHEME: Scheme = "affine32"  # datasketch >= 2.0's default

_SCHEME_CODES = {"affine32": 0, "affine64": 1, "legacy": 2}
_MERSENNE_PRIME = np.uint64((1 << 61) - 1)
_LEGACY_MAX_HASH = np.uint64((1 << 32) - 1)
_FMIX = {
    32: (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35),
         np.uint32(16)),
    64: (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(33),
         np.uint64(0xC4CEB9FE1A85EC53), np.uint64(33)),
}
# Keeps one chunk's (occurrences x num_perm) work array around 32 MB: large enough to amortize
# numpy call overhead, small enough to stay near the cache and keep peak memory flat.
_CHUNK_CELLS = 4_000_000

_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
_NON_WORD_RE = re.compile(r"[\W_]+", re.UNICODE)
# ASCII punctuation, symbols, controls and "_" (what _NON_WORD_RE matches) become spaces.
_ASCII_NON_WORD = {c: " " for c in range(128) if not chr(c).isalnum()}


# ---------------------------------------------------------------------------- text -> shingles


def normalize(text: str, *, mask_numbers: bool = False) -> str:
    """Return ``text`` NFKC-folded, lower-cased, punctuation replaced by spaces, spaces collapsed.

    With ``mask_numbers`` every number (``12``, ``3.5``, ``1,200``) becomes the token ``0``, so two
    items that differ only in their numbers normalize to the same text.
    """
    if text.isascii():
        # NFKC leaves ASCII alone, and a translate table beats the regex several times over.
        text = text.lower()
        if mask_numbers:
            text = _NUMBER_RE.sub(" 0 ", text)
        return " ".join(text.translate(_ASCII_NON_WORD).split())
    text = unicodedata.normalize("NFKC", text).lower()
    if mask_numbers:
        text = _NUMBER_RE.sub(" 0 ", text)
    return " ".join(_NON_WORD_RE.sub(" ", text).split())


def word_shingles(text: str, n: int) -> set[str]:
    """Return the set of ``n``-word shingles (words joined by one space) of ``text``.

    ``text`` is split on whitespace as given (normalize it first). A text shorter than ``n`` words
    yields one shingle of all its words; an empty text yields the empty set.
    """
    if n < 1:
        raise ValueError(f"shingle size must be >= 1, got {n}")
    words = text.split()
    if len(words) <= n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def char_shingles(text: str, n: int) -> set[str]:
    """Return the set of ``n``-character substrings of ``text``.

    A non-empty text shorter than ``n`` characters yields itself; an empty text the empty set.
    """
    if n < 1:
        raise ValueError(f"shingle size must be >= 1, got {n}")
    if len(text) <= n:
        return {text} if text else set()
    return {text[i:i + n] for i in range(len(text) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """Return ``|a & b| / |a | b|``; two empty sets share nothing, so their similarity is 0.0."""
    if not a and not b:
        return 0.0
    inter = len(a & b) if len(a) <= len(b) else len(b & a)
    return inter / (len(a) + len(b) - inter)


# ---------------------------------------------------------------------------- signatures


def permutations(num_perm: int, seed: int, scheme: Scheme = DEFAULT_SCHEME) -> np.ndarray:
    """Return datasketch's permutation parameters ``[a, b]`` (shape ``(2, num_perm)``)."""
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        # datasketch draws (a, b) pairs interleaved, one randint call each.
        pairs = [(gen.randint(1, _MERSENNE_PRIME, dtype=np.uint64),
                  gen.randint(0, _MERSENNE_PRIME, dtype=np.uint64)) for _ in range(num_perm)]
        return np.array(pairs, dtype=np.uint64).T.copy()
    width = 32 if scheme == "affine32" else 64
    dtype = np.uint32 if width == 32 else np.uint64
    a = gen.randint(0, 1 << (width - 1), num_perm, dtype=dtype) * dtype(2) + dtype(1)
    b = gen.randint(0, 1 << width, num_perm, dtype=dtype)
    return np.array([a, b])


def _empty_value(scheme: Scheme) -> np.integer:
    if scheme == "legacy":
        return _LEGACY_MAX_HASH
    return np.uint32(0xFFFFFFFF) if scheme == "affine32" else np.uint64(0xFFFFFFFFFFFFFFFF)


def _dtype(scheme: Scheme) -> type[np.unsignedinteger]:
    return np.uint32 if scheme == "affine32" else np.uint64


def _sha1_hashes(shingles: list[str], width: int) -> np.ndarray:
    """Hash shingles like datasketch's sha1_hash32/64: the digest's first bytes, little-endian."""
    # C-level iteration (map) and one frombuffer over all 20-byte digests: no per-item slicing
    # or int conversion in Python.
    digests = b"".join([h.digest() for h in map(hashlib.sha1, map(str.encode, shingles))])
    rows = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 20)
    nbytes = width // 8
    return rows[:, :nbytes].copy().view("<u4" if width == 32 else "<u8").ravel().astype(
        np.uint32 if width == 32 else np.uint64)


def _fmix(hv: np.ndarray, width: int) -> np.ndarray:
    s1, m1, s2, m2, s3 = _FMIX[width]
    hv = hv ^ (hv >> s1)
    hv = hv * m1
    hv = hv ^ (hv >> s2)
    hv = hv * m2
    return hv ^ (hv >> s3)


def _signatures_chunk(shingle_sets: Sequence[set[str]], perms: np.ndarray,
                      scheme: Scheme) -> np.ndarray:
    """Compute the signatures of one chunk of documents (the vectorized core)."""
    num_perm = perms.shape[1]
    out = np.full((len(shingle_sets), num_perm), _empty_value(scheme), dtype=_dtype(scheme))
    # Map every shingle occurrence to the index of its distinct string, so each string is hashed
    # once; dict/map/fromiter keep the per-occurrence work in C.
    lengths = np.fromiter(map(len, shingle_sets), dtype=np.int64, count=len(shingle_sets))
    total = int(lengths.sum())
    if total == 0:
        return out
    index = {s: i for i, s in enumerate(dict.fromkeys(chain.from_iterable(shingle_sets)))}
    occ = np.fromiter(map(index.__getitem__, chain.from_iterable(shingle_sets)),
                      dtype=np.int64, count=total)
    width = 64 if scheme == "affine64" else 32
    hv = _sha1_hashes(list(index), width)
    if scheme != "legacy":
        hv = _fmix(hv, width)  # a bijection, applied once per distinct shingle
    occ_hv = hv[occ]
    nonempty = np.flatnonzero(lengths)
    starts = np.concatenate(([0], np.cumsum(lengths[nonempty])[:-1]))
    a, b = perms[0], perms[1]
    with np.errstate(over="ignore"):
        if scheme == "legacy":
            # Same uint64 arithmetic as datasketch: a*h wraps modulo 2^64 before the modulo prime.
            phv = occ_hv.astype(np.uint64)[:, None] * a
            phv += b
            phv %= _MERSENNE_PRIME
            phv &= _LEGACY_MAX_HASH
        else:
            phv = occ_hv[:, None] * a  # wraps modulo 2^width: datasketch's intended arithmetic
            phv += b
    out[nonempty] = np.minimum.reduceat(phv, starts, axis=0)
    return out


def _signatures_chunk_jit(shingle_sets: Sequence[set[str]], perms: np.ndarray,
                          scheme: Scheme) -> np.ndarray:
    """Compute one chunk's signatures with the compiled kernel on a packed byte buffer."""
    flat = list(chain.from_iterable(shingle_sets))
    doc_lengths = np.fromiter(map(len, shingle_sets), dtype=np.int64, count=len(shingle_sets))
    joined = "".join(flat)
    if joined.isascii():  # one encode for the chunk; byte lengths are the string lengths
        buf = joined.encode("ascii")
        lengths = np.fromiter(map(len, flat), dtype=np.int64, count=len(flat))
    else:
        encoded = [s.encode("utf8") for s in flat]
        buf = b"".join(encoded)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(flat))
    starts = np.cumsum(lengths) - lengths
    doc_of = np.repeat(np.arange(len(shingle_sets), dtype=np.int64), doc_lengths)
    out = np.full((len(shingle_sets), perms.shape[1]), int(_empty_value(scheme)), dtype=np.uint64)
    _load_jit().signatures_kernel(np.frombuffer(buf, dtype=np.uint8), starts, lengths, doc_of,
                           perms[0].astype(np.uint64), perms[1].astype(np.uint64), out,
                           _SCHEME_CODES[scheme])
    return out.astype(_dtype(scheme), copy=False)


def _signatures_serial(shingle_sets: Sequence[set[str]], num_perm: int, seed: int,
                       scheme: Scheme, chunk_docs: int | None,
                       use_jit: bool | None) -> np.ndarray:
    perms = permutations(num_perm, seed, scheme)
    if chunk_docs is None:
        sample = shingle_sets[:1000]
        mean_len = max(1.0, sum(map(len, sample)) / max(1, len(sample)))
        chunk_docs = max(1, int(_CHUNK_CELLS / (mean_len * num_perm)))
    if use_jit is None:
        use_jit = len(shingle_sets) >= JIT_MIN_DOCS
    chunk = _signatures_chunk_jit if (use_jit and _load_jit() is not None) else _signatures_chunk
    parts = [chunk(shingle_sets[i:i + chunk_docs], perms, scheme)
             for i in range(0, len(shingle_sets), chunk_docs)]
    if not parts:
        return np.empty((0, num_perm), dtype=_dtype(scheme))
    return np.concatenate(parts)


def _worker(args: tuple[Sequence[set[str]], int, int, Scheme, int | None, bool | None],
            ) -> np.ndarray:
    return _signatures_serial(*args)


def minhash_signatures(shingle_sets: Sequence[set[str]], *, num_perm: int = 128, seed: int = 1,
                       scheme: Scheme = DEFAULT_SCHEME, processes: int = 1,
                       chunk_docs: int | None = None,
                       use_jit: bool | None = None) -> np.ndarray:
    """Return the MinHash signatures of ``shingle_sets``, one row per set.

    Row ``i`` equals ``datasketch.MinHash(num_perm, seed, scheme=scheme)`` updated with each
    shingle's UTF-8 bytes (default SHA-1 hash), bit for bit; an empty set gives datasketch's empty
    signature. The dtype is the scheme's: uint32 for ``affine32`` (datasketch's default), uint64
    for ``affine64`` and ``legacy``. ``processes > 1`` splits the documents into contiguous parts
    computed in worker processes (worth it from ~100k documents). ``use_jit`` picks the compiled
    kernel (numba; True) or the numpy path (False); by default the kernel runs from
    :data:`JIT_MIN_DOCS` documents when numba is installed. Both give the same bits.
    """
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    if scheme not in ("affine32", "affine64", "legacy"):
        raise ValueError(f"unknown MinHash scheme {scheme!r}")
    if use_jit is None:  # decided for the whole input, not per worker's share
        use_jit = len(shingle_sets) >= JIT_MIN_DOCS
    if processes <= 1 or len(shingle_sets) < 2 * processes:
        return _signatures_serial(shingle_sets, num_perm, seed, scheme, chunk_docs, use_jit)
    step = -(-len(shingle_sets) // processes)
    jobs = [(shingle_sets[i:i + step], num_perm, seed, scheme, chunk_docs, use_jit)
            for i in range(0, len(shingle_sets), step)]
    with ProcessPoolExecutor(max_workers=processes) as pool:
        return np.concatenate(list(pool.map(_worker, jobs)))


def text_signatures(texts: Sequence[str], *, n: int = 3, num_perm: int = 128, seed: int = 1,
                    scheme: Scheme = DEFAULT_SCHEME, mask_numbers: bool = False,
                    use_jit: bool | None = None) -> np.ndarray:
    """Return the signatures of each text's word ``n``-gram shingles, normalized first.

    Equal to ``minhash_signatures(shingle_texts(texts, n=n, mask_numbers=...))``. With the
    compiled kernel the n-grams are read straight from the normalized text bytes, so no shingle
    strings or sets are built at all.
    """
    if n < 1:
        raise ValueError(f"shingle size must be >= 1, got {n}")
    if use_jit is None:
        use_jit = len(texts) >= JIT_MIN_DOCS
    jit = _load_jit() if use_jit else None
    if jit is None:
        return minhash_signatures(shingle_texts(texts, n=n, mask_numbers=mask_numbers),
                                  num_perm=num_perm, seed=seed, scheme=scheme, use_jit=False)
    perms = permutations(num_perm, seed, scheme)
    a, b = perms[0].astype(np.uint64), perms[1].astype(np.uint64)
    out = np.full((len(texts), num_perm), int(_empty_value(scheme)), dtype=np.uint64)
    step = 20_000  # bounds the joined buffer; one kernel call per block
    for lo in range(0, len(texts), step):
        encoded = [normalize(t, mask_numbers=mask_numbers).encode("utf8")
                   for t in texts[lo:lo + step]]
        ends = np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))
        starts = ends - np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        buf = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        jit.word_ngram_kernel(buf, starts, ends, n, a, b, out[lo:lo + step], _SCHEME_CODES[scheme])
    return out.astype(_dtype(scheme), copy=False)


def lean_minhashes(signatures: np.ndarray, *, seed: int = 1,
                   scheme: Scheme = DEFAULT_SCHEME) -> list[LeanMinHash]:
    """Wrap signature rows as datasketch ``LeanMinHash`` objects (for its LSH and storage)."""
    return [LeanMinHash(seed=seed, hashvalues=row, scheme=scheme) for row in signatures]


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


def shingle_texts(texts: Sequence[str], *, shingle: Literal["word", "char"] = "word", n: int = 3,
                  mask_numbers: bool = False) -> list[set[str]]:
    """Normalize each text and return its shingle set (word or character ``n``-grams)."""
    if shingle not in ("word", "char"):
        raise ValueError(f"shingle must be 'word' or 'char', got {shingle!r}")
    make = word_shingles if shingle == "word" else char_shingles
    return [make(normalize(t, mask_numbers=mask_numbers), n) for t in texts]


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
    use_jit = (len(train_texts) + len(test_texts) >= JIT_MIN_DOCS) and _load_jit() is not None
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
    empty = _empty_value(DEFAULT_SCHEME)
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
        scored: list[tuple[int, float]] = []
        candidates = [] if (row == empty).all() else lsh.query(
            LeanMinHash(seed=seed, hashvalues=row, scheme=DEFAULT_SCHEME))
        if candidates:
            n_candidates += len(candidates)
            shingles = make(normalize(test_texts[j], mask_numbers=mask_numbers), n)
            scored = sorted(((i, jaccard(shingles, train_set(i))) for i in candidates),
                            key=lambda pair: (-pair[1], pair[0]))
        matches = [(i, round(s, 6)) for i, s in scored if s >= threshold]
        best_index, best = scored[0] if scored else (None, 0.0)
        labels.append(DedupLabel(index=j, label="repeated" if matches else "novel",
                                 best_match_index=best_index, best_jaccard=round(best, 6),
                                 matches=matches))
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
