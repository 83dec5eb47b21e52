"""Statistics of a dedup evaluation: pure numpy over per-item correctness.

Inputs are 0/1 correctness arrays. The design has two models (roles ``base`` and ``fine_tuned``)
run on the same items, and two splits: the *seen* split (``repeated`` items, or the ``original``
items of a variants run) and the *unseen* split (``novel`` items, or the ``variant`` rewrites).

- Accuracy per (model, split) with a seeded 95% percentile bootstrap CI.
- The paired difference fine_tuned minus base per split, paired by item (both models answered the
  same item), with a bootstrap CI over items.
- The memorization gap: (ft - base on seen) - (ft - base on unseen), with a bootstrap CI (items
  resampled within each split) and a two-sided permutation p-value (split labels of the per-item
  differences shuffled).
- Power: the minimum detectable effect (alpha 0.05 two-sided, power 0.8) of the paired difference
  in each split and of the gap; a warning when a 10-point gap could not be detected.

:func:`supports_claim` turns the gap into True / False / None; see its docstring for the rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Z_ALPHA = 1.959964  # two-sided 5%
Z_POWER = 0.841621  # 80% power
TARGET_EFFECT = 0.10  # the 10-point gap a split must be able to detect
ALPHA = 0.05  # a CI reading must be confirmed by the gap's own test at this level
# The version of the rules that turn statistics into ``supports_claim`` (supports_claim below and
# each recipe's reading). Every summary records it as ``reading_version``; a finished re-test
# whose summary carries another version is summarized again (its models and answers are reused),
# so a report never shows a reading under a rule the code no longer applies. Bump on any change.
# 2: a CI excluding 0 needs the effect's own p < ALPHA; pass@k's headline is the largest-k
#    advantage; self-verification with fewer than 3 right or 3 wrong answers is untestable.
READING_VERSION = 2
EQUIVALENCE_MARGIN = 0.05  # a gap whose CI lies within +-5 points counts as "no gap"
# Worst-case standard deviation of a paired 0/1 difference when the data say nothing (n < 2 or
# no disagreement): two independent coin flips differ with SD sqrt(0.5).
_WORST_SD = math.sqrt(0.5)


def _as_array(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=float)


def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, *, seed: int = 0,
                      n_boot: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Return the percentile bootstrap CI of the mean of ``values`` (NaNs when empty)."""
    data = _as_array(values)
    if data.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(n_boot, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return (float(low), float(high))


def accuracy(values: Sequence[float] | np.ndarray, *, seed: int = 0,
             n_boot: int = 2000) -> dict[str, Any]:
    """Return ``{"n", "accuracy", "ci": [low, high]}`` of a 0/1 correctness array."""
    data = _as_array(values)
    mean = float(data.mean()) if data.size else math.nan
    return {"n": int(data.size), "accuracy": mean,
            "ci": list(bootstrap_mean_ci(data, seed=seed, n_boot=n_boot))}


def paired_difference(fine_tuned: Sequence[float] | np.ndarray,
                      base: Sequence[float] | np.ndarray, *, seed: int = 0,
                      n_boot: int = 2000) -> dict[str, Any]:
    """Return the mean of fine_tuned minus base over items answered by both, with its CI.

    The two arrays are aligned by item (index i is the same item for both models).
    """
    ft, bs = _as_array(fine_tuned), _as_array(base)
    if ft.shape != bs.shape:
        raise ValueError(f"paired arrays differ in length: {ft.size} vs {bs.size}")
    diff = ft - bs
    mean = float(diff.mean()) if diff.size else math.nan
    return {"n": int(diff.size), "diff": mean,
            "ci": list(bootstrap_mean_ci(diff, seed=seed, n_boot=n_boot)),
            "p_value": sign_flip_p(diff, seed=seed),
            "min_detectable": min_detectable_effect(diff)}


def sign_flip_p(diffs: Sequence[float] | np.ndarray, *, seed: int = 0,
                n_perm: int = 5000) -> float:
    """Return the two-sided paired permutation p of mean(diffs) = 0 (NaN when empty).

    Under the null each item's two answers are exchangeable, so each difference's sign is a coin
    flip; +1 corrected so it is never exactly zero. All-zero differences give 1.0.
    """
    data = _as_array(diffs)
    if data.size == 0:
        return math.nan
    observed = abs(float(data.mean()))
    rng = np.random.default_rng(seed)
    signs = rng.integers(0, 2, size=(n_perm, data.size)) * 2 - 1
    perm = np.abs((signs * data).mean(axis=1))
    extreme = int(np.sum(perm >= observed - 1e-12))
    return (extreme + 1) / (n_perm + 1)


def min_detectable_effect(diffs: Sequence[float] | np.ndarray) -> float:
    """Return the smallest mean paired difference detectable at alpha 0.05 with power 0.8.

    Uses the observed SD of the per-item differences, floored at a worst case when the data
    cannot estimate it (fewer than two items, or no disagreement at all); infinite when empty.
    """
    data = _as_array(diffs)
    if data.size == 0:
        return math.inf
    sd = float(data.std(ddof=1)) if data.size > 1 else 0.0
    if sd == 0.0:
        sd = _WORST_SD
    return (Z_ALPHA + Z_POWER) * sd / math.sqrt(data.size)


def memorization_gap(seen_diffs: Sequence[float] | np.ndarray,
                     unseen_diffs: Sequence[float] | np.ndarray, *, seed: int = 0,
                     n_boot: int = 2000, n_perm: int = 5000) -> dict[str, Any]:
    """Return the gap mean(seen_diffs) - mean(unseen_diffs) with bootstrap CI and p-value.

    Each argument holds the per-item paired differences (fine_tuned minus base) of one split.
    The CI resamples items within each split; the p-value is two-sided, from ``n_perm`` random
    reassignments of the pooled differences to splits of the same sizes, with the +1 correction
    so it is never exactly zero.
    """
    seen, unseen = _as_array(seen_diffs), _as_array(unseen_diffs)
    if seen.size == 0 or unseen.size == 0:
        return {"gap": math.nan, "ci": [math.nan, math.nan], "p_value": math.nan,
                "min_detectable": math.inf}
    observed = float(seen.mean() - unseen.mean())
    rng = np.random.default_rng(seed)
    boot_seen = seen[rng.integers(0, seen.size, size=(n_boot, seen.size))].mean(axis=1)
    boot_unseen = unseen[rng.integers(0, unseen.size, size=(n_boot, unseen.size))].mean(axis=1)
    low, high = np.percentile(boot_seen - boot_unseen, [2.5, 97.5])
    pooled = np.concatenate([seen, unseen])
    # Argsort of uniform noise gives n_perm independent permutations in one vectorized step.
    order = np.argsort(rng.random((n_perm, pooled.size)), axis=1)
    shuffled = pooled[order]
    perm_gaps = shuffled[:, : seen.size].mean(axis=1) - shuffled[:, seen.size:].mean(axis=1)
    extreme = int(np.sum(np.abs(perm_gaps) >= abs(observed) - 1e-12))
    p_value = (extreme + 1) / (n_perm + 1)
    se_seen = _se(seen)
    se_unseen = _se(unseen)
    mde = (Z_ALPHA + Z_POWER) * math.sqrt(se_seen**2 + se_unseen**2)
    return {"gap": observed, "ci": [float(low), float(high)], "p_value": p_value,
            "min_detectable": mde}


def _se(diffs: np.ndarray) -> float:
    sd = float(diffs.std(ddof=1)) if diffs.size > 1 else 0.0
    return (sd or _WORST_SD) / math.sqrt(diffs.size)


def supports_claim(summary: dict[str, Any], *,
                   margin: float = EQUIVALENCE_MARGIN) -> bool | None:
    """Decide whether the memorization-gap claim holds: True, False, or None (inconclusive).

    The claim is "the fine-tuned model's advantage over the base model is larger on seen items
    than on unseen ones", i.e. a positive gap. Reading ``summary["gap"]``:

    - True when the gap's 95% CI lies entirely above 0;
    - False when the CI lies entirely below 0 (the opposite effect), or when the CI lies inside
      ``[-margin, +margin]`` and the design had the power to detect a 10-point gap (an
      equivalence result: no gap worth the name);
    - None otherwise (CI straddles 0 without adequate power, or statistics are missing).

    A CI that excludes 0 counts only when the gap's own test agrees (``p_value`` below
    ``ALPHA``, where the summary has one): with few discordant items a percentile bootstrap CI
    can exclude 0 while the exact permutation or sign-flip p does not (the seed's template
    transfer: [3.1, 28.1] points at p = 0.062), and then the reading is None.
    Never decided by a point estimate alone, so a noisy run cannot flip a coin.
    """
    gap = summary.get("gap") or {}
    ci = gap.get("ci") or [math.nan, math.nan]
    low, high = float(ci[0]), float(ci[1])
    if math.isnan(low) or math.isnan(high):
        return None
    p = gap.get("p_value")
    confirmed = not isinstance(p, int | float) or math.isnan(float(p)) or float(p) < ALPHA
    if low > 0:
        return True if confirmed else None
    if high < 0:
        return False if confirmed else None
    powered = float(gap.get("min_detectable", math.inf)) <= TARGET_EFFECT
    if powered and -margin <= low and high <= margin:
        return False
    return None


def power_warnings(per_split: dict[str, dict[str, Any]], gap: dict[str, Any]) -> list[str]:
    """Return one warning per split (and for the gap) too small to detect a 10-point effect."""
    warnings = []
    for split, diff in per_split.items():
        mde = float(diff.get("min_detectable", math.inf))
        if mde > TARGET_EFFECT:
            warnings.append(f"split '{split}' ({diff.get('n', 0)} paired items) can only detect "
                            f"a difference of {mde:.2f} or more, not {TARGET_EFFECT:.2f}")
    mde = float(gap.get("min_detectable", math.inf))
    if mde > TARGET_EFFECT:
        warnings.append(f"the memorization gap can only be detected at {mde:.2f} or more, "
                        f"not {TARGET_EFFECT:.2f}: a null result is inconclusive")
    return warnings


def summarize(correct: dict[tuple[str, str], dict[str, float]], *, seen: str, unseen: str,
              base: str, fine_tuned: str, seed: int = 0, n_boot: int = 2000,
              n_perm: int = 5000) -> dict[str, Any]:
    """Aggregate per-item correctness into the evaluation's statistics.

    ``correct[(model, split)]`` maps a pairing key (the item, or item+variant) to 0/1. Models are
    paired on the keys both answered in a split. Returns accuracy per model and split, the paired
    difference per split, the gap, power warnings and ``supports_claim``.
    """
    acc: dict[str, dict[str, Any]] = {}
    for (model, split), by_key in sorted(correct.items()):
        acc.setdefault(model, {})[split] = accuracy(list(by_key.values()), seed=seed,
                                                    n_boot=n_boot)
    per_split: dict[str, dict[str, Any]] = {}
    split_diffs: dict[str, np.ndarray] = {}
    for split in (seen, unseen):
        ft, bs = correct.get((fine_tuned, split), {}), correct.get((base, split), {})
        keys = sorted(set(ft) & set(bs))
        ft_arr = np.array([ft[k] for k in keys], dtype=float)
        bs_arr = np.array([bs[k] for k in keys], dtype=float)
        per_split[split] = paired_difference(ft_arr, bs_arr, seed=seed, n_boot=n_boot)
        split_diffs[split] = ft_arr - bs_arr
    gap = memorization_gap(split_diffs[seen], split_diffs[unseen], seed=seed, n_boot=n_boot,
                           n_perm=n_perm)
    summary: dict[str, Any] = {
        "models": {"base": base, "fine_tuned": fine_tuned},
        "splits": {"seen": seen, "unseen": unseen},
        "accuracy": acc,
        "paired_difference": per_split,
        "gap": gap,
        "power_warnings": power_warnings(per_split, gap),
    }
    summary["supports_claim"] = supports_claim(summary)
    return summary


def holm(p_values: dict[str, float | None]) -> dict[str, float | None]:
    """Return Holm's step-down adjusted p-values, keyed like ``p_values``.

    Family: the keys whose p-value is a finite number (None and NaN are passed through as None
    and do not count towards the family size m). Sorted ascending, the i-th smallest (1-based)
    gets ``max over j <= i of min(1, (m - j + 1) * p_(j))``, so adjusted values never fall as the
    raw ones rise, and rejecting where the adjusted p < alpha controls the family-wise error rate
    at alpha. Ties get equal adjusted values whatever their order.
    """
    valid = {k: float(p) for k, p in p_values.items()
             if p is not None and not math.isnan(float(p))}
    for key, p in valid.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-value of {key!r} is {p}, not in [0, 1]")
    m = len(valid)
    adjusted: dict[str, float | None] = dict.fromkeys(p_values)
    running = 0.0
    for rank, (key, p) in enumerate(sorted(valid.items(), key=lambda kv: kv[1])):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[key] = running
    return adjusted
