"""Compiled MinHash kernel (numba): SHA-1 of each shingle, datasketch's permutations, row minima.

Optional: :mod:`evals.dedup.minhash` uses it for large batches when numba imports (it ships with
the CPU build of vLLM) and falls back to its numpy path otherwise; both are tested bit-identical to
datasketch. The first call compiles (seconds); ``cache=True`` keeps the machine code in
``__pycache__`` for later processes. Python's
hashlib costs a few hundred nanoseconds per call, mostly object overhead, which made hashing the
bottleneck of the numpy path; here SHA-1 runs on a packed byte buffer with no Python objects.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_M32 = np.uint64(0xFFFFFFFF)


@njit(cache=True, inline="always")
def _rotl(x: np.uint64, n: int) -> np.uint64:
    return ((x << np.uint64(n)) | (x >> np.uint64(32 - n))) & _M32


@njit(cache=True)
def _sha1_prefix(buf: np.ndarray, start: int, length: int, out_words: int,
                 scratch: np.ndarray, w: np.ndarray) -> np.uint64:
    """Return the first 4 (``out_words`` 1) or 8 (2) digest bytes of SHA-1, read little-endian.

    ``scratch`` (bytes, at least ``length + 72``) and ``w`` (80 words) are reused work space.
    """
    total = ((length + 8) // 64 + 1) * 64  # message + 0x80 + zero pad + 64-bit length
    scratch[:length] = buf[start:start + length]
    scratch[length] = 0x80
    scratch[length + 1:total] = 0
    bit_len = np.uint64(length) * np.uint64(8)
    for k in range(8):
        scratch[total - 1 - k] = (bit_len >> np.uint64(8 * k)) & np.uint64(0xFF)
    h0 = np.uint64(0x67452301)
    h1 = np.uint64(0xEFCDAB89)
    h2 = np.uint64(0x98BADCFE)
    h3 = np.uint64(0x10325476)
    h4 = np.uint64(0xC3D2E1F0)
    for block in range(0, total, 64):
        for t in range(16):
            p = block + 4 * t
            w[t] = ((np.uint64(scratch[p]) << np.uint64(24))
                    | (np.uint64(scratch[p + 1]) << np.uint64(16))
                    | (np.uint64(scratch[p + 2]) << np.uint64(8)) | np.uint64(scratch[p + 3]))
        for t in range(16, 80):
            w[t] = _rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1)
        a, b, c, d, e = h0, h1, h2, h3, h4
        # Four loops of 20 rounds: no per-round branch on the round function.
        for t in range(20):
            temp = (_rotl(a, 5) + (d ^ (b & (c ^ d))) + e + np.uint64(0x5A827999) + w[t]) & _M32
            e, d, c, b, a = d, c, _rotl(b, 30), a, temp
        for t in range(20, 40):
            temp = (_rotl(a, 5) + (b ^ c ^ d) + e + np.uint64(0x6ED9EBA1) + w[t]) & _M32
            e, d, c, b, a = d, c, _rotl(b, 30), a, temp
        for t in range(40, 60):
            temp = (_rotl(a, 5) + ((b & c) | (d & (b | c))) + e + np.uint64(0x8F1BBCDC)
                    + w[t]) & _M32
            e, d, c, b, a = d, c, _rotl(b, 30), a, temp
        for t in range(60, 80):
            temp = (_rotl(a, 5) + (b ^ c ^ d) + e + np.uint64(0xCA62C1D6) + w[t]) & _M32
            e, d, c, b, a = d, c, _rotl(b, 30), a, temp
        h0 = (h0 + a) & _M32
        h1 = (h1 + b) & _M32
        h2 = (h2 + c) & _M32
        h3 = (h3 + d) & _M32
        h4 = (h4 + e) & _M32
    # The digest is big-endian h0 h1 ...; datasketch reads its first bytes little-endian.
    first = _bswap32(h0)
    if out_words == 1:
        return first
    return first | (_bswap32(h1) << np.uint64(32))


@njit(cache=True, inline="always")
def _bswap32(x: np.uint64) -> np.uint64:
    return (((x & np.uint64(0xFF)) << np.uint64(24)) | ((x & np.uint64(0xFF00)) << np.uint64(8))
            | ((x >> np.uint64(8)) & np.uint64(0xFF00)) | (x >> np.uint64(24)))


_LANES = 16  # messages hashed side by side, so the compiler can use SIMD across them


@njit(cache=True, inline="always")
def _rotl32(x: np.uint32, n: int) -> np.uint32:
    return np.uint32((x << np.uint32(n)) | (x >> np.uint32(32 - n)))


@njit(cache=True)
def sha1_many(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
              out_words: int) -> np.ndarray:
    """Return datasketch's sha1_hash32 (``out_words`` 1) or sha1_hash64 (2) of each message.

    Messages of at most 55 bytes (one SHA-1 block: nearly every shingle) are hashed
    ``_LANES`` at a time in lane-major uint32 arrays, which the compiler turns into SIMD; longer
    ones one by one.
    """
    n = starts.shape[0]
    hs = np.empty(n, dtype=np.uint64)
    w = np.zeros((80, _LANES), dtype=np.uint32)
    a_ = np.empty(_LANES, dtype=np.uint32)
    b_ = np.empty(_LANES, dtype=np.uint32)
    c_ = np.empty(_LANES, dtype=np.uint32)
    d_ = np.empty(_LANES, dtype=np.uint32)
    e_ = np.empty(_LANES, dtype=np.uint32)
    which = np.empty(_LANES, dtype=np.int64)
    longest = 0
    for i in range(n):
        longest = max(longest, lengths[i])
    scratch = np.zeros(longest + 136, dtype=np.uint8)
    w1 = np.empty(80, dtype=np.uint64)
    i = 0
    while i < n:
        m = 0
        while i < n and m < _LANES:
            length = lengths[i]
            if length > 55:
                hs[i] = _sha1_prefix(buf, starts[i], length, out_words, scratch, w1)
                i += 1
                continue
            which[m] = i
            for t in range(16):
                w[t, m] = 0
            start = starts[i]
            for p in range(length):
                w[p >> 2, m] |= np.uint32(buf[start + p]) << np.uint32(24 - 8 * (p & 3))
            w[length >> 2, m] |= np.uint32(0x80) << np.uint32(24 - 8 * (length & 3))
            w[15, m] = np.uint32(length * 8)
            m += 1
            i += 1
        if m == 0:
            continue
        for t in range(16, 80):
            for lane in range(_LANES):
                w[t, lane] = _rotl32(np.uint32(w[t - 3, lane] ^ w[t - 8, lane]
                                               ^ w[t - 14, lane] ^ w[t - 16, lane]), 1)
        a_[:] = 0x67452301
        b_[:] = 0xEFCDAB89
        c_[:] = 0x98BADCFE
        d_[:] = 0x10325476
        e_[:] = 0xC3D2E1F0
        for t in range(80):
            if t < 20:
                k = np.uint32(0x5A827999)
            elif t < 40:
                k = np.uint32(0x6ED9EBA1)
            elif t < 60:
                k = np.uint32(0x8F1BBCDC)
            else:
                k = np.uint32(0xCA62C1D6)
            for lane in range(_LANES):
                a, b, c, d = a_[lane], b_[lane], c_[lane], d_[lane]
                if t < 20:
                    f = np.uint32(d ^ (b & (c ^ d)))
                elif t < 40 or t >= 60:
                    f = np.uint32(b ^ c ^ d)
                else:
                    f = np.uint32((b & c) | (d & (b | c)))
                temp = np.uint32(_rotl32(a, 5) + f + e_[lane] + k + w[t, lane])
                e_[lane] = d
                d_[lane] = c
                c_[lane] = _rotl32(b, 30)
                b_[lane] = a
                a_[lane] = temp
        for j in range(m):
            first = _bswap32(np.uint64(np.uint32(a_[j] + np.uint32(0x67452301))))
            if out_words == 2:
                second = _bswap32(np.uint64(np.uint32(b_[j] + np.uint32(0xEFCDAB89))))
                first |= second << np.uint64(32)
            hs[which[j]] = first
    return hs


@njit(cache=True)
def fold_many(hs: np.ndarray, doc_of: np.ndarray, a: np.ndarray, b: np.ndarray,
              out: np.ndarray, scheme: int) -> None:
    """Fold shingle hashes ``hs`` into their documents' rows of ``out`` (running minima).

    ``scheme`` is 0 for affine32, 1 for affine64, 2 for legacy; ``out`` starts filled with the
    scheme's empty value. A document's minima stay in a local accumulator while its shingles
    (contiguous in ``doc_of``, though any order is correct) are folded in.
    """
    num_perm = a.shape[0]
    prime = np.uint64((1 << 61) - 1)
    acc = np.empty(num_perm, dtype=np.uint64)
    acc32 = np.empty(num_perm, dtype=np.uint32)
    a32 = a.astype(np.uint32)
    b32 = b.astype(np.uint32)
    current = -1
    for i in range(hs.shape[0]):
        doc = doc_of[i]
        if doc != current:
            if current >= 0:
                for k in range(num_perm):
                    out[current, k] = acc32[k] if scheme == 0 else acc[k]
            current = doc
            for k in range(num_perm):
                acc[k] = out[doc, k]
                acc32[k] = np.uint32(out[doc, k] & _M32)
        h = hs[i]
        if scheme == 0:
            h = h ^ (h >> np.uint64(16))
            h = (h * np.uint64(0x85EBCA6B)) & _M32
            h = h ^ (h >> np.uint64(13))
            h = (h * np.uint64(0xC2B2AE35)) & _M32
            h32 = np.uint32(h ^ (h >> np.uint64(16)))
            for k in range(num_perm):  # 32-bit lanes: twice the SIMD width of uint64
                acc32[k] = min(acc32[k], np.uint32(a32[k] * h32 + b32[k]))
        elif scheme == 1:
            h = h ^ (h >> np.uint64(33))
            h = h * np.uint64(0xFF51AFD7ED558CCD)
            h = h ^ (h >> np.uint64(33))
            h = h * np.uint64(0xC4CEB9FE1A85EC53)
            h = h ^ (h >> np.uint64(33))
            for k in range(num_perm):
                acc[k] = min(acc[k], a[k] * h + b[k])
        else:
            for k in range(num_perm):
                acc[k] = min(acc[k], ((a[k] * h + b[k]) % prime) & _M32)
    if current >= 0:
        for k in range(num_perm):
            out[current, k] = acc32[k] if scheme == 0 else acc[k]


@njit(cache=True)
def signatures_kernel(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                      doc_of: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray,
                      scheme: int) -> None:
    """Fold every shingle (``lengths[i]`` bytes at ``starts[i]``) into row ``doc_of[i]``."""
    hs = sha1_many(buf, starts, lengths, 2 if scheme == 1 else 1)
    fold_many(hs, doc_of, a, b, out, scheme)


@njit(cache=True)
def normalize_ascii(buf: np.ndarray, starts: np.ndarray,
                    ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return documents rewritten as ``normalize`` rewrites ASCII text, with their new bounds.

    Letters are lower-cased; every run of bytes that are neither ASCII letters, digits nor
    non-ASCII (UTF-8 of already-normalized text) becomes one space; leading and trailing
    spaces go.
    """
    out = np.empty(buf.shape[0], dtype=np.uint8)
    new_starts = np.empty(starts.shape[0], dtype=np.int64)
    new_ends = np.empty(starts.shape[0], dtype=np.int64)
    m = 0
    for d in range(starts.shape[0]):
        new_starts[d] = m
        pending_space = False
        for pos in range(starts[d], ends[d]):
            c = buf[pos]
            if 65 <= c <= 90:
                c += 32
            if (97 <= c <= 122) or (48 <= c <= 57) or c >= 128:
                if pending_space and m > new_starts[d]:
                    out[m] = 32
                    m += 1
                pending_space = False
                out[m] = c
                m += 1
            else:
                pending_space = True
        new_ends[d] = m
    return out[:m], new_starts, new_ends


@njit(cache=True)
def word_ngram_kernel(buf: np.ndarray, doc_starts: np.ndarray, doc_ends: np.ndarray, n: int,
                      a: np.ndarray, b: np.ndarray, out: np.ndarray, scheme: int) -> None:
    """Fold the word ``n``-grams of each normalized document into its row of ``out``.

    Document ``d`` is ``buf[doc_starts[d]:doc_ends[d]]``, words separated by single spaces (what
    ``normalize`` produces), so an n-gram's text ``" ".join(words)`` is one contiguous byte range:
    no shingle string is ever built. A document of at most ``n`` words is one shingle, as in
    ``word_shingles``; an n-gram repeated within a document changes no minimum.
    """
    total_words = 0
    for pos in range(buf.shape[0]):
        total_words += buf[pos] == 32
    cap = total_words + doc_starts.shape[0] + 1  # words <= spaces + documents
    starts = np.empty(cap, dtype=np.int64)
    lengths = np.empty(cap, dtype=np.int64)
    doc_of = np.empty(cap, dtype=np.int64)
    word_start = np.empty(cap, dtype=np.int64)
    word_end = np.empty(cap, dtype=np.int64)
    m = 0
    for d in range(doc_starts.shape[0]):
        count = 0
        inside = False
        for pos in range(doc_starts[d], doc_ends[d]):
            if buf[pos] == 32:
                if inside:
                    word_end[count - 1] = pos
                    inside = False
            elif not inside:
                word_start[count] = pos
                count += 1
                inside = True
        if inside:
            word_end[count - 1] = doc_ends[d]
        if count == 0:
            continue
        if count <= n:
            starts[m] = word_start[0]
            lengths[m] = word_end[count - 1] - word_start[0]
            doc_of[m] = d
            m += 1
            continue
        for i in range(count - n + 1):
            starts[m] = word_start[i]
            lengths[m] = word_end[i + n - 1] - word_start[i]
            doc_of[m] = d
            m += 1
    hs = sha1_many(buf, starts[:m], lengths[:m], 2 if scheme == 1 else 1)
    fold_many(hs, doc_of[:m], a, b, out, scheme)
