"""The self-verification gap: a model answers, then judges its own answers.

Two verifiers accept or reject each answer: the model itself (asked "is this answer correct?"),
and an external verifier (the benchmark's exact answer match, :mod:`evals.scoring`). The external
verifier accepts exactly the correct answers, so its accepted answers are 100% accurate; the
question is how far the model's own acceptance falls short of that.

Measured numbers, each with a seeded bootstrap CI over items:

- ``generation_accuracy``: accuracy of all answers (what a model gets without any verifier);
- ``self_accepted_accuracy``: accuracy of the answers the model accepted (precision of self-checks);
- ``external_accepted_accuracy``: accuracy of the answers the exact-match verifier accepted (1.0);
- ``verification_accuracy``: how often the model's verdict agrees with the external one;
- ``gap``: ``external_accepted_accuracy - self_accepted_accuracy``, the generation-verification
  gap; ``self_verification_gain``: ``self_accepted_accuracy - generation_accuracy``.

``supports_claim`` reads the claim "a model's self-verification improves on its raw answers"
(a positive gain) by the same CI rule as :func:`evals.stats.supports_claim`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from evals import stats
from evals.items import Item

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


def _subset_accuracy(correct: np.ndarray, mask: np.ndarray, *, seed: int,
                     n_boot: int) -> dict[str, Any]:
    return stats.accuracy(correct[mask], seed=seed, n_boot=n_boot)


def verification_gap(correct: Sequence[bool], self_accepted: Sequence[bool | None], *,
                     seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """Compute the self-verification statistics (see module docstring) from per-item data.

    ``correct[i]`` says whether answer i is right (the external verdict); ``self_accepted[i]``
    is the model's verdict on it, None when unparseable (counted as a rejection, and reported).
    The gap's CI comes from resampling items and recomputing both accuracies on each resample.
    """
    ok = np.asarray([bool(c) for c in correct], dtype=float)
    verdicts = list(self_accepted)
    if ok.size != len(verdicts):
        raise ValueError(f"{ok.size} correctness values but {len(verdicts)} verdicts")
    accepted = np.asarray([v is True for v in verdicts], dtype=bool)
    external = ok.astype(bool)
    agreement = (accepted == external).astype(float)
    gen = stats.accuracy(ok, seed=seed, n_boot=n_boot)
    self_acc = _subset_accuracy(ok, accepted, seed=seed, n_boot=n_boot)
    ext_acc = _subset_accuracy(ok, external, seed=seed, n_boot=n_boot)
    gap = _boot_difference(ok, external, accepted, seed=seed, n_boot=n_boot)
    gain = _boot_difference(ok, accepted, np.ones_like(accepted), seed=seed, n_boot=n_boot)
    summary: dict[str, Any] = {
        "n": int(ok.size),
        "n_self_accepted": int(accepted.sum()),
        "n_unparsed_verdicts": sum(v is None for v in verdicts),
        "generation_accuracy": gen,
        "self_accepted_accuracy": self_acc,
        "external_accepted_accuracy": ext_acc,
        "verification_accuracy": stats.accuracy(agreement, seed=seed, n_boot=n_boot),
        "gap": gap,
        "self_verification_gain": gain,
    }
    summary["supports_claim"] = stats.supports_claim({"gap": gain})
    return summary


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
