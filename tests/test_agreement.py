"""Unit tests of evals.agreement: accuracy, macro-F1, kappa and its CI, baseline, confusion."""

from __future__ import annotations

import pytest

from evals.agreement import (
    accuracy,
    bootstrap_kappa_ci,
    cohen_kappa,
    confusion_matrix,
    kappa_ci_excludes_zero,
    macro_f1,
    majority_baseline,
    summarize,
)

GOLD = ["supports", "relaxes", "overturns", "unrelated", "supports", "unrelated"]


def test_perfect_agreement_is_kappa_one() -> None:
    assert cohen_kappa(GOLD, GOLD) == pytest.approx(1.0)
    assert accuracy(GOLD, GOLD) == 1.0
    assert macro_f1(GOLD, GOLD) == pytest.approx(1.0)


@pytest.mark.parametrize("constant", ["supports", "unrelated", "overturns"])
def test_constant_rater_has_kappa_zero(constant: str) -> None:
    pred = [constant] * len(GOLD)
    assert cohen_kappa(GOLD, pred) == pytest.approx(0.0)
    assert accuracy(GOLD, pred) == GOLD.count(constant) / len(GOLD)


@pytest.mark.parametrize(("gold", "pred", "expected"), [
    # Both raters used one and the same label: kappa is 0/0, reported as 0 (no evidence).
    (["a", "a", "a"], ["a", "a", "a"], 0.0),
    # Gold has one class, the judge varies: chance agreement equals observed agreement.
    (["a", "a", "a", "a"], ["a", "b", "a", "b"], 0.0),
    # Systematic disagreement on a balanced binary set: kappa -1.
    (["a", "b", "a", "b"], ["b", "a", "b", "a"], -1.0),
    # Textbook 2x2 example: p_o = 0.7, p_e = 0.5 -> 0.4.
    (["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15,
     ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15, 0.4),
])
def test_kappa_cases(gold: list[str], pred: list[str], expected: float) -> None:
    assert cohen_kappa(gold, pred) == pytest.approx(expected)


def test_macro_f1_counts_each_label_equally() -> None:
    gold = ["a"] * 8 + ["b"] * 2
    pred = ["a"] * 10
    # F1(a) = 16/18, F1(b) = 0 -> mean 8/18, far below accuracy 0.8.
    assert macro_f1(gold, pred) == pytest.approx(8 / 18)
    assert accuracy(gold, pred) == pytest.approx(0.8)


@pytest.mark.parametrize("gold,pred", [([], []), (["a"], ["a", "b"])])
def test_bad_lengths_raise(gold: list[str], pred: list[str]) -> None:
    with pytest.raises(ValueError):
        cohen_kappa(gold, pred)


def test_ci_contains_point_and_is_deterministic() -> None:
    gold = (["supports"] * 12 + ["relaxes"] * 8 + ["unrelated"] * 15 + ["overturns"] * 5)
    pred = (["supports"] * 9 + ["unrelated"] * 3 + ["relaxes"] * 5 + ["supports"] * 3
            + ["unrelated"] * 12 + ["supports"] * 3 + ["overturns"] * 3 + ["relaxes"] * 2)
    point = cohen_kappa(gold, pred)
    lo, hi = bootstrap_kappa_ci(gold, pred, resamples=500, seed=1)
    assert lo <= point <= hi
    assert lo < hi
    assert (lo, hi) == bootstrap_kappa_ci(gold, pred, resamples=500, seed=1)
    assert kappa_ci_excludes_zero([lo, hi]) == (lo > 0)


def test_ci_of_a_constant_judge_includes_zero() -> None:
    pred = ["supports"] * len(GOLD * 5)
    lo, hi = bootstrap_kappa_ci(GOLD * 5, pred, resamples=300)
    assert lo <= 0.0 <= hi
    assert not kappa_ci_excludes_zero([lo, hi])


def test_majority_baseline_and_ties() -> None:
    assert majority_baseline(["b", "a", "b"]) == {"label": "b", "accuracy": pytest.approx(2 / 3)}
    assert majority_baseline(["b", "a"])["label"] == "a"  # ties: first as text, order-free


def test_confusion_matrix_keeps_every_item() -> None:
    m = confusion_matrix(["a", "a", "b"], ["a", "c", "b"], labels=["a", "b"])
    assert m["a"] == {"a": 1, "b": 0, "c": 1}
    assert m["b"]["b"] == 1
    assert sum(sum(row.values()) for row in m.values()) == 3


def test_summarize_has_every_key() -> None:
    out = summarize(GOLD, GOLD[::-1], resamples=50)
    assert set(out) == {"n", "accuracy", "macro_f1", "kappa", "kappa_ci", "majority_baseline",
                        "confusion"}
    assert out["n"] == len(GOLD)
