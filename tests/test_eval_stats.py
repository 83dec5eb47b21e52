"""Statistics of dedup evaluations on constructed data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evals import stats


def test_accuracy_and_ci_bracket_the_mean() -> None:
    result = stats.accuracy([1, 1, 1, 0] * 25, seed=1)
    assert result["n"] == 100
    assert result["accuracy"] == pytest.approx(0.75)
    low, high = result["ci"]
    assert low < 0.75 < high
    assert 0.08 < high - low < 0.25  # about 2 * 1.96 * sqrt(.75 * .25 / 100) = 0.17


def test_bootstrap_is_seeded() -> None:
    data = np.random.default_rng(3).random(50)  # continuous, so quantiles differ by seed
    assert stats.bootstrap_mean_ci(data, seed=7) == stats.bootstrap_mean_ci(data, seed=7)
    assert stats.bootstrap_mean_ci(data, seed=7) != stats.bootstrap_mean_ci(data, seed=8)


def test_constant_data_has_degenerate_ci() -> None:
    assert stats.accuracy([1] * 10)["ci"] == [1.0, 1.0]
    assert math.isnan(stats.accuracy([])["accuracy"])


def test_paired_difference_pairs_by_item() -> None:
    ft = [1, 1, 0, 1, 0, 1, 1, 1]
    base = [0, 1, 0, 0, 0, 1, 1, 0]
    result = stats.paired_difference(ft, base)
    assert result["diff"] == pytest.approx(3 / 8)
    with pytest.raises(ValueError):
        stats.paired_difference([1, 0], [1])


def test_min_detectable_effect_shrinks_with_n() -> None:
    small = stats.min_detectable_effect([1, 0, -1, 0] * 5)
    large = stats.min_detectable_effect([1, 0, -1, 0] * 500)
    assert large < stats.TARGET_EFFECT < small
    assert math.isinf(stats.min_detectable_effect([]))
    assert stats.min_detectable_effect([0, 0, 0]) > 0  # no disagreement still is not certainty


def _split(n: int, ft_acc: float, base_acc: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.random(n) < ft_acc).astype(float), (rng.random(n) < base_acc).astype(float)


@pytest.mark.parametrize(("seen", "unseen", "expected"), [
    # ft leads by 50 points on repeated items and by 0 on novel ones: a clear gap.
    (((0.9, 0.4)), ((0.5, 0.5)), True),
    # The fine-tuned lead is larger on novel items: the opposite effect.
    (((0.5, 0.5)), ((0.9, 0.4)), False),
])
def test_gap_direction(seen: tuple[float, float], unseen: tuple[float, float],
                       expected: bool) -> None:
    ft_s, bs_s = _split(400, *seen, seed=1)
    ft_u, bs_u = _split(400, *unseen, seed=2)
    gap = stats.memorization_gap(ft_s - bs_s, ft_u - bs_u, n_perm=2000)
    assert (gap["gap"] > 0) is expected
    assert gap["p_value"] < 0.001
    assert stats.supports_claim({"gap": gap}) is expected


def test_identical_models_give_equivalence_false_with_power() -> None:
    # Both models answer every item identically: every difference is 0, the gap CI is [0, 0]
    # and, with thousands of items, the design could see a 10-point gap: no gap.
    zeros = np.zeros(2000)
    gap = stats.memorization_gap(zeros, zeros, n_perm=500)
    assert gap["ci"] == [0.0, 0.0]
    assert gap["min_detectable"] < stats.TARGET_EFFECT
    assert stats.supports_claim({"gap": gap}) is False


def test_small_noisy_sample_is_inconclusive() -> None:
    ft_s, bs_s = _split(15, 0.6, 0.5, seed=4)
    ft_u, bs_u = _split(15, 0.55, 0.5, seed=5)
    gap = stats.memorization_gap(ft_s - bs_s, ft_u - bs_u, n_perm=500)
    assert gap["ci"][0] < 0 < gap["ci"][1]
    assert stats.supports_claim({"gap": gap}) is None
    assert stats.power_warnings({}, gap)  # and it says why


def test_permutation_p_value_is_never_zero_and_near_one_without_effect() -> None:
    same = np.tile([1.0, 0.0, -1.0, 0.0], 50)
    gap = stats.memorization_gap(same, same.copy(), n_perm=999)
    assert gap["gap"] == 0.0
    assert gap["p_value"] == pytest.approx(1.0)
    strong = stats.memorization_gap(np.ones(50), -np.ones(50), n_perm=999)
    assert strong["p_value"] == pytest.approx(1 / 1000)


@pytest.mark.parametrize(("ci", "mde", "expected"), [
    ([0.01, 0.2], 0.05, True),
    ([-0.2, -0.01], 0.05, False),
    ([-0.03, 0.04], 0.08, False),  # inside +-5 points and powered: no gap
    ([-0.03, 0.04], 0.3, None),  # inside +-5 points but underpowered
    ([-0.2, 0.3], 0.05, None),
    ([math.nan, math.nan], 0.05, None),
])
def test_supports_claim_rule(ci: list[float], mde: float, expected: bool | None) -> None:
    assert stats.supports_claim({"gap": {"ci": ci, "min_detectable": mde}}) is expected


@pytest.mark.parametrize(("ci", "p", "expected"), [
    ([0.031, 0.281], 0.062, None),  # the seed's template transfer: CI and exact test disagree
    ([0.031, 0.281], 0.01, True),
    ([-0.3, -0.02], 0.2, None),
    ([-0.3, -0.02], 0.001, False),
    ([0.031, 0.281], None, True),  # no test of its own: the CI decides
])
def test_a_ci_reading_needs_the_gaps_own_test(ci: list[float], p: float | None,
                                               expected: bool | None) -> None:
    assert stats.supports_claim({"gap": {"ci": ci, "p_value": p, "min_detectable": 0.05}}) \
        is expected


def test_summarize_pairs_models_on_common_keys() -> None:
    correct = {
        ("ft", "repeated"): {"a": 1, "b": 1, "c": 1, "only_ft": 1},
        ("base", "repeated"): {"a": 0, "b": 1, "c": 0},
        ("ft", "novel"): {"d": 1, "e": 0},
        ("base", "novel"): {"d": 1, "e": 0},
    }
    summary = stats.summarize(correct, seen="repeated", unseen="novel", base="base",
                              fine_tuned="ft", n_perm=200, n_boot=200)
    assert summary["accuracy"]["ft"]["repeated"]["n"] == 4
    assert summary["paired_difference"]["repeated"]["n"] == 3
    assert summary["paired_difference"]["repeated"]["diff"] == pytest.approx(2 / 3)
    assert summary["gap"]["gap"] == pytest.approx(2 / 3)
    assert summary["supports_claim"] in (True, None)
    assert any("split 'novel'" in w for w in summary["power_warnings"])


def test_samples_are_nested_and_sample_size_keeps_fingerprint() -> None:
    from evals.items import Item
    from evals.pipeline import results_fingerprint, sample_splits
    from evals.spec import EvalSpec

    items = [Item(id=f"x{k}", prompt=f"q{k}", answer="a") for k in range(50)]
    small = sample_splits({"novel": items}, 10, seed=4, spec_name="s")["novel"]
    large = sample_splits({"novel": items}, 30, seed=4, spec_name="s")["novel"]
    assert len(small) == 10 and set(small) < set(large)
    assert sample_splits({"novel": items}, 10, seed=5, spec_name="s")["novel"] != small
    base = {"description": "d", "claim_kinds": ["m"], "scoring": "exact",
            "dataset": {"kind": "gsm8k", "path": "x"},
            "models": [{"role": "base", "endpoint": "http://h/v1", "model": "a"},
                       {"role": "fine_tuned", "endpoint": "http://h/v1", "model": "b"}]}
    one = EvalSpec.model_validate(base | {"sample": {"per_split": 5}})
    two = EvalSpec.model_validate(base | {"sample": {"per_split": 50}})
    other = EvalSpec.model_validate(base | {"scoring": "numeric"})
    assert results_fingerprint(one) == results_fingerprint(two) != results_fingerprint(other)


@pytest.mark.parametrize(("raw", "expected"), [
    # Hand-computed: sorted 0.01, 0.02, 0.04 -> 3 x 0.01, 2 x 0.02, max(0.04, 1 x 0.04).
    ({"C1": 0.04, "C2": 0.01, "C3": 0.02}, {"C1": 0.04, "C2": 0.03, "C3": 0.04}),
    # Step-down monotonicity: sorted a, c, b, d: 4 x 0.001 = 0.004; 3 x 0.03 = 0.09;
    # 2 x 0.04 = 0.08 is raised to 0.09; 1 x 0.5.
    ({"a": 0.001, "b": 0.04, "c": 0.03, "d": 0.5},
     {"a": 0.004, "b": 0.09, "c": 0.09, "d": 0.5}),
    # Capped at 1; None (and NaN) pass through as None and do not count towards m = 2.
    ({"a": 0.6, "b": None, "c": 0.2, "d": math.nan}, {"a": 0.6, "b": None, "c": 0.4, "d": None}),
    ({"a": 0.7, "b": 0.8}, {"a": 1.0, "b": 1.0}),
    # Ties get the same adjusted value.
    ({"a": 0.01, "b": 0.01}, {"a": 0.02, "b": 0.02}),
    # One test: no correction.
    ({"only": 0.03}, {"only": 0.03}),
    ({}, {}),
])
def test_holm_matches_hand_computed_values(raw: dict[str, float | None],
                                           expected: dict[str, float | None]) -> None:
    got = stats.holm(raw)
    assert list(got) == list(raw)
    for key, value in expected.items():
        if value is None:
            assert got[key] is None
        else:
            assert got[key] == pytest.approx(value)


def test_holm_rejects_an_impossible_p_value() -> None:
    with pytest.raises(ValueError, match="not in"):
        stats.holm({"a": 1.5})


@pytest.mark.parametrize(("diffs", "low", "high"), [
    ([1.0] * 12, 0.0, 0.001),  # 12 wins of 12: p = 2 / 4096 exactly, about 0.0005
    ([1.0, -1.0] * 10, 0.9, 1.0),  # balanced: no evidence
    ([0.0] * 5, 1.0, 1.0),  # no disagreement at all
])
def test_paired_difference_has_a_sign_flip_p(diffs: list[float], low: float,
                                             high: float) -> None:
    p = stats.paired_difference(diffs, [0.0] * len(diffs))["p_value"]
    assert low <= p <= high
    assert math.isnan(stats.sign_flip_p([]))
