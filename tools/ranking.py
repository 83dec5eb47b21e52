"""Pure ranking rules of hybrid retrieval: reciprocal rank fusion, the date floor, recency.

Plain functions over plain data (ids, ranks, ISO dates), so each rule is tested case by case and
the retrieval code that calls them (``tools/retrieval.py``, ``agent/nodes/search.py``) only moves
data. Dates are a preference and a label, never a cut past the start of a claim's range: a paper
published inside the claim's range can still relax it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Literal

# Cormack, Clarke & Buettcher (SIGIR 2009): k=60 damps the head of each list so that a paper
# ranked well by several queries beats one ranked first by a single query.
RRF_K = 60
# "Slightly higher": a newer paper gains 10% of its fused score, about the difference between
# ranks 5 and 10 of one list at k=60; it reorders near-ties, it never lifts an off-topic paper.
NEWER_BONUS = 0.10

Recency = Literal["newer", "contemporaneous", "older", "undated"]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]],
                           weights: Sequence[float] | None = None,
                           k: int = RRF_K) -> list[tuple[str, float]]:
    """Fuse ranked id lists into one: ``score(d) = sum_i w_i / (k + rank_i(d))``, ranks from 1.

    An id listed twice in one list counts once, at its best rank; ``weights`` (default all 1.0)
    must match ``rankings`` in length and be >= 0. Return ``(id, score)`` best first, ties
    broken by id so the order is deterministic. Raise ValueError on bad weights or ``k < 0``.
    """
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    if k < 0 or any(w < 0 for w in weights):
        raise ValueError("k and the weights must be >= 0")
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        seen: set[str] = set()
        for rank, doc_id in enumerate(ranking, start=1):
            if doc_id in seen:
                continue
            seen.add(doc_id)
            scores[doc_id] = scores.get(doc_id, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def _day(value: date | str | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    text = value.strip()[:10]
    return date.fromisoformat(text) if text else None


def date_floor(date_from: date | str | None) -> date | None:
    """Return the earliest publication date a claim admits: the start of its range (or None).

    A claim dated "~2024-2025" admits papers from 2024-01-01 on, not only after 2025.
    """
    return _day(date_from)


def recency_label(published: date | str | None, date_from: date | str | None,
                  date_to: date | str | None) -> Recency:
    """Label a paper against a claim's date range.

    ``newer``: published after ``date_to``; ``contemporaneous``: inside the range (a missing
    ``date_from`` leaves it open below); ``older``: before ``date_from``; ``undated``: the paper
    or the claim has no date to compare (a claim with no ``date_to`` has no "newer").
    """
    day, start, end = _day(published), _day(date_from), _day(date_to)
    if day is None or end is None:
        return "undated"
    if day > end:
        return "newer"
    if start is not None and day < start:
        return "older"
    return "contemporaneous"


def prefer_newer(fused: Sequence[tuple[str, float]], labels: Mapping[str, Recency],
                 bonus: float = NEWER_BONUS) -> list[tuple[str, float]]:
    """Raise the fused score of papers labelled ``newer`` by ``bonus`` (a fraction) and re-sort.

    Ids missing from ``labels`` keep their score. Ties are broken by id.
    """
    boosted = [(doc_id, score * (1.0 + bonus) if labels.get(doc_id) == "newer" else score)
               for doc_id, score in fused]
    return sorted(boosted, key=lambda kv: (-kv[1], kv[0]))
