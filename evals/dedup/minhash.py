"""MinHash signatures bit-identical to datasketch's, computed a batch at a time.

Row ``i`` of :func:`minhash_signatures` equals ``datasketch.MinHash(num_perm, seed,
scheme=...)`` fed each shingle as UTF-8 bytes with the default SHA-1 hash, so datasketch's LSH
(including its Redis storage) can index them. They are computed over a whole batch of documents
instead of one small ``update_batch`` per document:
- numpy path (any size; the default below :data:`JIT_MIN_DOCS` documents): every distinct
  shingle of a chunk is hashed once with hashlib, then the permutations and the per-document
  minima run as numpy array operations over all of the chunk's shingles;
- compiled path (numba, optional): the shingles are packed into one byte buffer and a compiled
  kernel computes SHA-1 (16 messages side by side), the permutations and the minima with no
  Python object per shingle (it hashes every occurrence: deduplicating in Python would cost as
  much as the compiled SHA-1). :func:`text_signatures` goes further and reads word n-grams
  straight from the normalized text bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import chain
from typing import Any, Literal

import numpy as np
from datasketch import LeanMinHash

from evals.dedup.shingles import normalize, shingle_texts

# From this many documents the compiled kernel is worth numba's import and cache load (~1 s).
JIT_MIN_DOCS = 50_000


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


def load_jit() -> Any:
    """Return the compiled-kernel module, or None when numba is not installed."""
    try:  # optional: numba ships with the CPU build of vLLM
        from evals.dedup import minhash_jit
    except ImportError:
        return None
    return minhash_jit


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


def empty_value(scheme: Scheme) -> np.integer:
    """Return the value a signature row holds for an empty shingle set under ``scheme``."""
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
    out = np.full((len(shingle_sets), num_perm), empty_value(scheme), dtype=_dtype(scheme))
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
    out = np.full((len(shingle_sets), perms.shape[1]), int(empty_value(scheme)), dtype=np.uint64)
    load_jit().signatures_kernel(np.frombuffer(buf, dtype=np.uint8), starts, lengths, doc_of,
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
    chunk = _signatures_chunk_jit if (use_jit and load_jit() is not None) else _signatures_chunk
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
    jit = load_jit() if use_jit else None
    if jit is None:
        return minhash_signatures(shingle_texts(texts, n=n, mask_numbers=mask_numbers),
                                  num_perm=num_perm, seed=seed, scheme=scheme, use_jit=False)
    perms = permutations(num_perm, seed, scheme)
    a, b = perms[0].astype(np.uint64), perms[1].astype(np.uint64)
    out = np.full((len(texts), num_perm), int(empty_value(scheme)), dtype=np.uint64)
    step = 20_000  # bounds the joined buffer; one kernel call per block
    for lo in range(0, len(texts), step):
        block = texts[lo:lo + step]
        # ASCII text goes in raw: the kernel lower-cases it and turns every run of other bytes
        # into one space, which is normalize() on ASCII. Other text is normalized here (NFKC,
        # Unicode classes); the kernel's pass leaves normalized text unchanged.
        pieces = [t if (t.isascii() and not mask_numbers) else
                  normalize(t, mask_numbers=mask_numbers) for t in block]
        joined = "".join(pieces)
        if joined.isascii():
            raw = joined.encode("ascii")
            lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        else:
            encoded = [p.encode("utf8") for p in pieces]
            raw = b"".join(encoded)
            lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        ends = np.cumsum(lengths)
        buf, starts, ends = jit.normalize_ascii(np.frombuffer(raw, dtype=np.uint8),
                                                ends - lengths, ends)
        jit.word_ngram_kernel(buf, starts, ends, n, a, b, out[lo:lo + step], _SCHEME_CODES[scheme])
    return out.astype(_dtype(scheme), copy=False)


def lean_minhashes(signatures: np.ndarray, *, seed: int = 1,
                   scheme: Scheme = DEFAULT_SCHEME) -> list[LeanMinHash]:
    """Wrap signature rows as datasketch ``LeanMinHash`` objects (for its LSH and storage)."""
    return [LeanMinHash(seed=seed, hashvalues=row, scheme=scheme) for row in signatures]
