"""Text to shingle sets: normalization, word and character n-grams, exact Jaccard.

Pure functions over strings; :mod:`evals.dedup.minhash` fingerprints their output and
:mod:`evals.dedup` compares it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Literal

_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
_NON_WORD_RE = re.compile(r"[\W_]+", re.UNICODE)
# ASCII punctuation, symbols, controls and "_" (what _NON_WORD_RE matches) become spaces.
_ASCII_NON_WORD = {c: " " for c in range(128) if not chr(c).isalnum()}


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

def shingle_texts(texts: Sequence[str], *, shingle: Literal["word", "char"] = "word", n: int = 3,
                  mask_numbers: bool = False) -> list[set[str]]:
    """Normalize each text and return its shingle set (word or character ``n``-grams)."""
    if shingle not in ("word", "char"):
        raise ValueError(f"shingle must be 'word' or 'char', got {shingle!r}")
    make = word_shingles if shingle == "word" else char_shingles
    return [make(normalize(t, mask_numbers=mask_numbers), n) for t in texts]
