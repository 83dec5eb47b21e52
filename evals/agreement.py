"""Agreement between two raters (gold labels and a judge's labels): pure functions, plain lists.

Accuracy, macro-F1, Cohen's kappa with a percentile-bootstrap 95% CI, the majority-class baseline
and the confusion matrix. Every function takes two equal-length sequences of hashable labels,
``gold`` and ``pred``, and never mutates them.

Degenerate cases are decided here, once:
- Kappa is ``(p_o - p_e) / (1 - p_e)``. When chance agreement ``p_e`` is 1 (both raters used one
  and the same label throughout), kappa is 0/0; it is reported as 0.0, because agreement that
  chance alone would produce is no evidence that the judge reads the text.
- A judge that answers one label whatever the input gets kappa 0 exactly (``p_o == p_e``).
- Macro-F1 averages over the labels that occur in either sequence (a label neither rater used
  tells nothing); a class with no true and no predicted member is not averaged in.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

Label = Hashable


def _check(gold: Sequence[Label], pred: Sequence[Label]) -> int:
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred differ in length ({len(gold)} != {len(pred)})")
    if not gold:
        raise ValueError("no labelled items")
    return len(gold)


def accuracy(gold: Sequence[Label], pred: Sequence[Label]) -> float:
    """Return the share of items where ``pred`` equals ``gold``."""
    n = _check(gold, pred)
    return sum(g == p for g, p in zip(gold, pred, strict=True)) / n


def macro_f1(gold: Sequence[Label], pred: Sequence[Label]) -> float:
    """Return the unweighted mean of per-label F1 over the labels either rater used."""
    _check(gold, pred)
    labels = set(gold) | set(pred)
    scores = []
    for label in labels:
        tp = sum(g == label and p == label for g, p in zip(gold, pred, strict=True))
        fp = sum(g != label and p == label for g, p in zip(gold, pred, strict=True))
        fn = sum(g == label and p != label for g, p in zip(gold, pred, strict=True))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def cohen_kappa(gold: Sequence[Label], pred: Sequence[Label]) -> float:
    """Return Cohen's kappa; 0.0 when chance agreement is 1 (see the module docstring)."""
    n = _check(gold, pred)
    observed = accuracy(gold, pred)
    g_counts, p_counts = Counter(gold), Counter(pred)
    expected = sum(g_counts[k] * p_counts[k] for k in g_counts) / (n * n)
    if expected >= 1.0:
        return 0.0
    return (observed - expected) / (1.0 - expected)


def bootstrap_kappa_ci(gold: Sequence[Label], pred: Sequence[Label], *, resamples: int = 2000,
                       level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Return the percentile-bootstrap CI of kappa, resampling (gold, pred) pairs.

    Deterministic for a given ``seed``. A percentile interval: on very small or lopsided samples
    it can miss the point estimate, so a caller should show ``n`` beside it.
    """
    n = _check(gold, pred)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    rng = random.Random(seed)
    pairs = list(zip(gold, pred, strict=True))
    stats = []
    for _ in range(resamples):
        sample = [pairs[rng.randrange(n)] for _ in range(n)]
        stats.append(cohen_kappa([g for g, _ in sample], [p for _, p in sample]))
    stats.sort()
    tail = (1.0 - level) / 2
    lo = stats[int(tail * (resamples - 1))]
    hi = stats[int(round((1.0 - tail) * (resamples - 1)))]
    return lo, hi


def majority_baseline(gold: Sequence[Label]) -> dict[str, Any]:
    """Return the most common gold label and the accuracy of always answering it (kappa 0).

    Ties go to the label that sorts first as text, so the result does not depend on row order.
    """
    if not gold:
        raise ValueError("no labelled items")
    counts = Counter(gold)
    top = max(counts.values())
    label = sorted((k for k, v in counts.items() if v == top), key=str)[0]
    return {"label": label, "accuracy": top / len(gold)}


def confusion_matrix(gold: Sequence[Label], pred: Sequence[Label],
                     labels: Sequence[Label] | None = None) -> dict[Label, dict[Label, int]]:
    """Return ``{gold_label: {pred_label: count}}`` over ``labels`` (default: those seen, sorted).

    Labels outside ``labels`` are counted under their own key too, so no item is lost.
    """
    _check(gold, pred)
    order = list(labels) if labels is not None else sorted(set(gold) | set(pred), key=str)
    for extra in sorted((set(gold) | set(pred)) - set(order), key=str):
        order.append(extra)
    matrix = {g: {p: 0 for p in order} for g in order}
    for g, p in zip(gold, pred, strict=True):
        matrix[g][p] += 1
    return matrix


def kappa_ci_excludes_zero(ci: Sequence[float]) -> bool:
    """Tell whether a kappa CI lies wholly above 0 (the judge agrees beyond chance)."""
    return len(ci) == 2 and float(ci[0]) > 0.0


def summarize(gold: Sequence[Label], pred: Sequence[Label],
              labels: Sequence[Label] | None = None, *, resamples: int = 2000,
              seed: int = 0) -> dict[str, Any]:
    """Return every agreement figure as one JSON-able dict (the judge-eval output)."""
    lo, hi = bootstrap_kappa_ci(gold, pred, resamples=resamples, seed=seed)
    return {
        "n": len(gold),
        "accuracy": accuracy(gold, pred),
        "macro_f1": macro_f1(gold, pred),
        "kappa": cohen_kappa(gold, pred),
        "kappa_ci": [lo, hi],
        "majority_baseline": majority_baseline(gold),
        "confusion": confusion_matrix(gold, pred, labels),
    }
