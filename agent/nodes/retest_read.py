"""Read a re-test summary into the numbers a report shows, and correct p for several re-tests.

Pure functions over plain data. ``headline`` picks, from any recipe's or evaluation's summary,
the quantity its ``supports_claim`` rule reads: the effect, its 95% CI, its p-value and n.
Recipes whose rule reads a CI (every recipe and evaluation of ``evals/`` today) may carry no
p-value of their own; their p then comes from the normal approximation of that CI
(``se = width / 3.92``, ``p = erfc(|effect / se| / sqrt 2)``) and says so in ``p_source``.

``holm_read`` (several re-tests in one report): the re-tests with a p-value form Holm's family
(:func:`evals.stats.holm`). A re-test's ``supports_claim`` is read at its Holm-adjusted p where
its rule is a significance rule: a true because the effect's CI lies above 0, or a false because
it lies below 0, becomes None ("not significant after Holm") when the adjusted p is ``ALPHA`` or
more. Readings that do not rest on the effect differing from 0 stand: a false from equivalence (a
powered CI inside the margin around 0), and the self-verification gap's true ("its CI lies below
+margin"). With a single re-test the adjusted p equals the raw one and every reading stands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from agent.nodes.retest_plan import finite_or_none
from evals.stats import holm

ALPHA = 0.05
CI_APPROX = "normal approximation from the 95% CI"


def _effect_block(summary: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the block the recipe's rule reads (a dict holding the effect and its CI)."""
    for key in ("headline", "effect"):
        if isinstance(summary.get(key), Mapping):
            return summary[key]
    if summary.get("recipe") == "dose_response":
        doses = [d for d in summary.get("gap_by_dose") or []
                 if finite_or_none(d.get("gap")) is not None]
        return max(doses, key=lambda d: d.get("dose", 0)) if doses else {}
    if summary.get("recipe") == "self_verification" and isinstance(
            summary.get("self_verification_gain"), Mapping):
        return summary["self_verification_gain"]
    gap = summary.get("gap")
    return gap if isinstance(gap, Mapping) else {}


def _n(summary: Mapping[str, Any], block: Mapping[str, Any]) -> int | None:
    for value in (block.get("n"), summary.get("n")):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    counts = summary.get("counts")
    if isinstance(counts, Mapping):
        if isinstance(counts.get("test_items"), int):
            return int(counts["test_items"])
        ints = [v for v in counts.values() if isinstance(v, int) and not isinstance(v, bool)]
        return sum(ints) if ints else None
    per_split = summary.get("paired_difference")
    if isinstance(per_split, Mapping):
        return sum(int(v.get("n", 0)) for v in per_split.values() if isinstance(v, Mapping))
    return None


def p_from_ci(effect: float | None, ci: list[float] | None) -> float | None:
    """Return the two-sided p of ``effect`` under the normal approximation of its 95% CI."""
    if effect is None or not ci or len(ci) != 2:
        return None
    low, high = finite_or_none(ci[0]), finite_or_none(ci[1])
    if low is None or high is None or high < low:
        return None
    se = (high - low) / (2 * 1.959964)
    if se == 0:
        return 1.0 if effect == 0 else 0.0
    return min(1.0, math.erfc(abs(effect / se) / math.sqrt(2)))


def headline(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``{effect, ci, p_value, p_source, n}`` of the quantity the summary's rule reads."""
    block = _effect_block(summary)
    effect = None
    for key in ("effect", "gap", "diff", "value"):
        effect = finite_or_none(block.get(key))
        if effect is not None:
            break
    ci_raw = block.get("ci")
    ci = ([float(ci_raw[0]), float(ci_raw[1])]
          if isinstance(ci_raw, list | tuple) and len(ci_raw) == 2
          and all(finite_or_none(v) is not None for v in ci_raw) else None)
    p = finite_or_none(block.get("p_value", summary.get("p_value")))
    source = "recipe" if p is not None else "none"
    if p is None:
        p = p_from_ci(effect, ci)
        source = CI_APPROX if p is not None else "none"
    return {"effect": effect, "ci": ci, "p_value": p, "p_source": source,
            "n": _n(summary, block)}


def rests_on_significance(supports: bool | None, ci: list[float] | None) -> bool:
    """Tell whether a reading is the significance reading of the standard CI rule.

    That rule (:func:`evals.stats.supports_claim`) says true because the effect's CI lies above
    0, or false because it lies below 0. A false whose CI lies above 0 rests on significance as
    well: the claim predicted no effect and one was found (pass@k's "the gain persists at k=64",
    the self-verification gap above +margin). A reading of another rule (the self-verification
    gap's "true when the CI lies below +margin", pass@k's "true when the k=64 gain ends below
    +margin") or an equivalence false (a CI inside the margin) does not rest on the effect
    differing from 0, so a p-value, adjusted or not, does not change it.
    """
    if ci is None:
        return False
    return ((supports is True and ci[0] > 0)
            or (supports is False and (ci[1] < 0 or ci[0] > 0)))


def holm_read(retests: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return every re-test with ``p_holm``, ``holm_note`` and ``supports_claim`` re-read.

    Keys are claim ids; each value needs ``p_value``, ``ci`` and ``supports_claim_raw`` (records
    from older runs without them pass through with ``p_holm`` None).
    """
    family = {cid: finite_or_none(r.get("p_value")) for cid, r in retests.items()}
    adjusted = holm(family)
    m = sum(1 for p in family.values() if p is not None)
    out: dict[str, dict[str, Any]] = {}
    for cid, record in retests.items():
        r = dict(record)
        raw = r.get("supports_claim_raw", r.get("supports_claim"))
        r["p_holm"] = adjusted.get(cid)
        r["supports_claim"] = raw
        r["holm_note"] = ""
        if r["p_holm"] is None:
            r["holm_note"] = "no p-value: not part of the Holm family"
        elif m >= 2:
            r["holm_note"] = f"Holm-adjusted over {m} re-tests in this report"
            if rests_on_significance(raw, r.get("ci")) and r["p_holm"] >= ALPHA:
                r["supports_claim"] = None
                r["holm_note"] += (f"; the recipe's reading ({raw}) is not significant at the "
                                   f"adjusted p, so it counts as inconclusive")
        out[cid] = r
    return out
