"""The generation-verification gap: a model answers, then its own verifier filters its answers.

The verifier is the same model asked "is this answer correct?", read by log-likelihood: the score
of an answer is ``log P(yes) - log P(no)`` of the reply (both casings pooled), so every answer
gets a number even when the model would never say "yes" in free text (a 135M model rejects all
its own answers that way: the old free-text verdicts left nothing to measure).

The design is within one model, paired by item: the same answers, filtered by the model's own
verifier or not at all (or by the external verifier, exact match). Its threshold is fixed before
the evaluation items are looked at: the items are split by a seeded hash into a calibration part
and an evaluation part, and the threshold maximizes Youden's J (true-positive rate minus
false-positive rate of "accept" against "correct") on the calibration part (see
:func:`pick_threshold`). On the evaluation part:

- ``gap`` (headline): the generation-verification gap in the sense of Song et al. (arXiv
  2412.02674): accuracy of self-accepted answers minus accuracy of all answers, i.e. what the
  model's own verification adds. 95% bootstrap CI over items; two-sided permutation p (verifier
  scores shuffled across items, threshold kept: the null "the score says nothing about
  correctness").
- ``shortfall``: accuracy of answers the external verifier accepts (1.0 by construction) minus
  accuracy of self-accepted answers: how far self-verification falls short of an external check.
- ``auroc``: how well the score ranks right above wrong answers, threshold-free (0.5 = chance).
- ``curve``: precision and gain of the self-accepted answers at several thresholds (descriptive).

``supports_claim`` reads the claim "a model cannot reliably validate its own answers without an
external signal" by :func:`claim_reading` (margin fixed in the spec): true when the gap's CI lies
below the margin, false when above it, else None. A verifier can only be tested on answers it
could tell apart: with fewer than :data:`MIN_OUTCOMES` right or wrong evaluation answers (a model
that gets every item wrong leaves a gap of exactly 0 [0, 0]) the run is ``untestable`` and
``supports_claim`` is None, whatever the CI says.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from evals import stats
from evals.items import Item

YES_OPTIONS = ("yes", "Yes")
NO_OPTIONS = ("no", "No")
CURVE_QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)  # accept the answers scoring above these
# Right and wrong evaluation answers each needed before the gap can say anything about the
# verifier: with all answers wrong, "self-accepted minus all" is 0 for any verifier at all.
MIN_OUTCOMES = 3

_YES = re.compile(r"^\W*(yes|correct|true)\b", re.IGNORECASE)
_NO = re.compile(r"^\W*(no|incorrect|wrong|false)\b", re.IGNORECASE)


def judge_prompt(item: Item, answer: str) -> str:
    """Return the prompt that asks a model whether ``answer`` answers ``item`` correctly.

    The proposed answer is quoted as data; the question ends with "Answer:" like every eval prompt.
    """
    return (f"Question: {item.prompt.strip()}\n"
            f"Proposed answer: {answer.strip()}\n"
            "Is the proposed answer correct? Reply with yes or no.\nAnswer:")


def parse_verdict(text: str) -> bool | None:
    """Read a yes/no verdict from the start of ``text``; None when it says neither."""
    if _YES.search(text):
        return True
    if _NO.search(text):
        return False
    return None


def verifier_score(option_logprobs: Sequence[float]) -> float:
    """Return ``log P(yes) - log P(no)`` from the log-probs of YES_OPTIONS + NO_OPTIONS."""
    values = np.asarray(option_logprobs, dtype=float)
    n_yes = len(YES_OPTIONS)
    if values.size != n_yes + len(NO_OPTIONS):
        raise ValueError(f"expected {n_yes + len(NO_OPTIONS)} log-probs, got {values.size}")
    return float(np.logaddexp.reduce(values[:n_yes]) - np.logaddexp.reduce(values[n_yes:]))


def calibration_ids(ids: Sequence[str], fraction: float, seed: int) -> set[str]:
    """Return the ids of the calibration part: the first ``fraction`` in seeded-hash order."""
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"calib:{seed}\x00{i}".encode()).digest())
    return set(ranked[: round(fraction * len(ranked))])


def pick_threshold(scores: Sequence[float], correct: Sequence[bool]) -> tuple[float, str]:
    """Return ``(threshold, how)``: the accept threshold (accept when score >= it) and its basis.

    Youden's J = TPR - FPR is maximized over the candidate thresholds (every distinct score);
    ties go to the lowest threshold (accepting most). When the calibration answers are all right
    or all wrong, J is undefined and the threshold falls back to the median calibration score
    (the more confident half is accepted; 0.0, i.e. P(yes) >= P(no), with no calibration item).
    Either way the threshold depends on calibration items only.
    """
    s = np.asarray(scores, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    n_pos, n_neg = int(ok.sum()), int((~ok).sum())
    if s.size == 0:
        return 0.0, "fallback: no calibration item; P(yes) >= P(no)"
    if n_pos == 0 or n_neg == 0:
        return float(np.median(s)), ("fallback: calibration answers all right or all wrong; "
                                     "median calibration score")
    best, best_j = 0.0, -math.inf
    for t in np.unique(s):  # ascending, so ties keep the lowest threshold
        accept = s >= t
        j = (accept & ok).sum() / n_pos - (accept & ~ok).sum() / n_neg
        if j > best_j + 1e-12:
            best, best_j = float(t), float(j)
    return best, f"Youden's J = {best_j:.3f} on {s.size} calibration answers"


def auroc(scores: Sequence[float], correct: Sequence[bool]) -> float:
    """Return the area under the ROC curve of ``scores`` for ``correct`` (ties count half)."""
    s = np.asarray(scores, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    pos, neg = s[ok], s[~ok]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def untestable_reason(correct: Sequence[bool]) -> str | None:
    """Say why a verifier cannot be tested on these evaluation answers, or None when it can."""
    n_right = sum(1 for c in correct if c)
    n_wrong = len(correct) - n_right
    if n_right >= MIN_OUTCOMES and n_wrong >= MIN_OUTCOMES:
        return None
    why = ("all alike, the gap is 0 for any verifier" if n_right == 0 or n_wrong == 0
           else "too few to tell a verifier from chance")
    return (f"untestable: {n_right} right and {n_wrong} wrong of {len(correct)} evaluation "
            f"answers; telling right from wrong needs at least {MIN_OUTCOMES} of each ({why})")


def claim_reading(gap: dict[str, Any], margin: float) -> bool | None:
    """Read "the model cannot reliably validate its own answers" from the gap's 95% CI.

    True when the CI lies entirely below ``margin`` (its own verification adds less than
    ``margin`` accuracy: no reliable self-validation); False when it lies entirely above it;
    None when it straddles the margin or is missing.
    """
    ci = gap.get("ci") or [math.nan, math.nan]
    low, high = float(ci[0]), float(ci[1])
    if math.isnan(low) or math.isnan(high):
        return None
    if high < margin:
        return True
    if low > margin:
        return False
    return None


def verification_gap(correct: Sequence[bool], scores: Sequence[float],
                     calibration: Sequence[bool], *, margin: float = 0.05, seed: int = 0,
                     n_boot: int = 2000, n_perm: int = 5000) -> dict[str, Any]:
    """Compute the self-verification statistics (module docstring) from per-item data.

    ``correct[i]``: answer i is right (the external verdict); ``scores[i]``: the model's verifier
    score of it; ``calibration[i]``: item i belongs to the calibration part. Raises ValueError
    when the lengths differ.
    """
    ok = np.asarray([bool(c) for c in correct], dtype=bool)
    s = np.asarray(scores, dtype=float)
    calib = np.asarray([bool(c) for c in calibration], dtype=bool)
    if not ok.size == s.size == calib.size:
        raise ValueError(f"lengths differ: {ok.size} correct, {s.size} scores, "
                         f"{calib.size} calibration flags")
    threshold, how = pick_threshold(s[calib], ok[calib])
    ev_ok, ev_s = ok[~calib].astype(float), s[~calib]
    accepted = ev_s >= threshold
    everything = np.ones_like(accepted)
    gap = _boot_difference(ev_ok, accepted, everything, seed=seed, n_boot=n_boot)
    gap["p_value"] = _permutation_p(ev_ok, ev_s, threshold, gap["diff"], seed=seed,
                                    n_perm=n_perm)
    gap["n"] = int(ev_ok.size)
    shortfall = _boot_difference(ev_ok, ev_ok.astype(bool), accepted, seed=seed, n_boot=n_boot)
    shortfall["n"] = int(ev_ok.size)
    summary: dict[str, Any] = {
        "n": int(ev_ok.size),
        "n_calibration": int(calib.sum()),
        "threshold": threshold,
        "threshold_basis": how,
        "n_self_accepted": int(accepted.sum()),
        "n_accepted_uncalibrated": int((ev_s >= 0.0).sum()),
        "generation_accuracy": stats.accuracy(ev_ok, seed=seed, n_boot=n_boot),
        "self_accepted_accuracy": stats.accuracy(ev_ok[accepted], seed=seed, n_boot=n_boot),
        "external_accepted_accuracy": stats.accuracy(ev_ok[ev_ok.astype(bool)], seed=seed,
                                                     n_boot=n_boot),
        "verification_accuracy": stats.accuracy((accepted == ev_ok.astype(bool)).astype(float),
                                                seed=seed, n_boot=n_boot),
        "auroc": _auroc_ci(ev_ok.astype(bool), ev_s, seed=seed, n_boot=n_boot),
        "gap": gap,
        "shortfall": shortfall,
        "curve": _curve(ev_ok, ev_s),
        "margin": margin,
    }
    summary["untestable"] = untestable_reason(ev_ok.astype(bool).tolist())
    summary["supports_claim"] = (None if summary["untestable"]
                                 else claim_reading(gap, margin))
    return summary


def _permutation_p(ok: np.ndarray, scores: np.ndarray, threshold: float, observed: float, *,
                   seed: int, n_perm: int) -> float | None:
    """Two-sided p of the gain under shuffled scores (+1 corrected); None when undefined."""
    if ok.size == 0 or math.isnan(observed):
        return None
    rng = np.random.default_rng(seed)
    accept = scores >= threshold
    k = int(accept.sum())
    if k == 0:
        return None
    # Shuffling scores keeps k answers accepted; only which ones changes.
    order = np.argsort(rng.random((n_perm, ok.size)), axis=1)[:, :k]
    gains = ok[order].mean(axis=1) - ok.mean()
    extreme = int(np.sum(np.abs(gains) >= abs(observed) - 1e-12))
    return (extreme + 1) / (n_perm + 1)


def _auroc_ci(ok: np.ndarray, scores: np.ndarray, *, seed: int, n_boot: int) -> dict[str, Any]:
    point = auroc(scores, ok)
    if math.isnan(point):
        return {"auroc": None, "ci": [math.nan, math.nan], "n": int(ok.size)}
    rng = np.random.default_rng(seed)
    draws = [auroc(scores[i], ok[i]) for i in rng.integers(0, ok.size, size=(n_boot, ok.size))]
    kept = np.array([d for d in draws if not math.isnan(d)])
    low, high = np.percentile(kept, [2.5, 97.5]) if kept.size else (math.nan, math.nan)
    return {"auroc": point, "ci": [float(low), float(high)], "n": int(ok.size)}


def _curve(ok: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    """Precision and gain of the answers accepted above each score quantile (descriptive)."""
    if ok.size == 0:
        return []
    rows = []
    for q in CURVE_QUANTILES:
        t = float(np.quantile(scores, q))
        accept = scores >= t
        rows.append({"quantile": q, "threshold": t, "n_accepted": int(accept.sum()),
                     "precision": float(ok[accept].mean()) if accept.any() else None,
                     "gain": float(ok[accept].mean() - ok.mean()) if accept.any() else None})
    return rows


def _boot_difference(ok: np.ndarray, mask_a: np.ndarray, mask_b: np.ndarray, *, seed: int,
                     n_boot: int) -> dict[str, Any]:
    """Return acc(ok | mask_a) - acc(ok | mask_b) with an item-resampled bootstrap CI."""
    point = _masked_mean(ok, mask_a) - _masked_mean(ok, mask_b)
    if ok.size == 0 or math.isnan(point):
        return {"diff": math.nan, "ci": [math.nan, math.nan], "min_detectable": math.inf}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, ok.size, size=(n_boot, ok.size))
    draws = np.array([_masked_mean(ok[i], mask_a[i]) - _masked_mean(ok[i], mask_b[i])
                      for i in idx])
    draws = draws[~np.isnan(draws)]
    if draws.size == 0:
        return {"diff": point, "ci": [math.nan, math.nan], "min_detectable": math.inf}
    low, high = np.percentile(draws, [2.5, 97.5])
    # Detectable effect from the bootstrap spread (SE ~ SD of the draws).
    spread = float(draws.std(ddof=1)) if draws.size > 1 else 0.0
    mde = (stats.Z_ALPHA + stats.Z_POWER) * spread if spread > 0 else math.inf
    return {"diff": float(point), "ci": [float(low), float(high)], "min_detectable": mde}


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    chosen = values[mask.astype(bool)]
    return float(chosen.mean()) if chosen.size else math.nan
