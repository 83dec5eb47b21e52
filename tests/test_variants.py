"""N-1 variants: the arithmetic evaluator, GSM8K number changes, name swaps, inserted clauses."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evals.items import Item
from evals.variants import (
    FEMALE_NAMES,
    IRRELEVANT_CLAUSES,
    MALE_NAMES,
    evaluate,
    make_all_variants,
    make_variants,
    recompute_gsm8k_answer,
)

# ---------------------------------------------------------------------------- evaluator


@pytest.mark.parametrize(("expr", "value"), [
    ("48/2", Fraction(24)),
    ("2+3*4", Fraction(14)),
    ("(2+3)*4", Fraction(20)),
    ("10-4-3", Fraction(3)),
    ("12/60", Fraction(1, 5)),
    ("0.2*50", Fraction(10)),
    ("-3+5", Fraction(2)),
    ("2*-3", Fraction(-6)),
    ("100/3*3", Fraction(100)),  # exact: no float round-off
    (" 1 + ( 2 * ( 3 + 4 ) ) ", Fraction(15)),
    (".5*4", Fraction(2)),
])
def test_evaluate(expr: str, value: Fraction) -> None:
    assert evaluate(expr) == value


@pytest.mark.parametrize("expr", ["2**3", "a+1", "(1+2", "1+", "", "__import__('os')", "3 4"])
def test_evaluate_rejects(expr: str) -> None:
    with pytest.raises(ValueError):
        evaluate(expr)


def test_evaluate_division_by_zero() -> None:
    with pytest.raises(ZeroDivisionError):
        evaluate("5/(2-2)")


@given(st.integers(-999, 999), st.integers(-999, 999), st.integers(-999, 999))
def test_evaluate_matches_python_precedence(a: int, b: int, c: int) -> None:
    assert evaluate(f"{a}+{b}*{c}") == a + b * c
    assert evaluate(f"({a}-{b})*{c}") == (a - b) * c
    if c:
        assert evaluate(f"{a}-{b}/{c}") == Fraction(a) - Fraction(b, c)


# ---------------------------------------------------------------------------- numbers


@pytest.fixture(scope="module")
def gsm8k_test(shared_data: Path) -> list[Item]:
    from evals.datasets import load_gsm8k

    return load_gsm8k(shared_data / "benchmarks/gsm8k/test.jsonl")


@pytest.mark.shared
def test_recompute_with_unchanged_numbers_gives_gold(gsm8k_test: list[Item]) -> None:
    recomputed = 0
    for item in gsm8k_test:
        try:
            answer = recompute_gsm8k_answer(item)
        except ValueError:
            continue
        assert answer == item.answer, item.id
        recomputed += 1
    assert recomputed >= 0.7 * len(gsm8k_test)


def _first_number_after(text: str, word: str) -> int:
    return int(re.search(rf"(\d+) {word}", text).group(1))


@pytest.mark.shared
def test_numbers_variant_answers_by_hand(gsm8k_test: list[Item]) -> None:
    """Check recomputed answers against formulas written by hand for known items."""
    janet = gsm8k_test[0]  # 16 eggs, eats 3, bakes with 4, sells at $2: (16 - 3 - 4) * 2
    toula = next(i for i in gsm8k_test if i.prompt.startswith("Toula went to the bakery"))
    for seed in range(5):
        (v,) = make_variants(janet, ["numbers"], seed)
        eggs = _first_number_after(v.item.prompt, "eggs")
        assert eggs != 16 and v.item.answer == str((eggs - 3 - 4) * 2)
        (t,) = make_variants(toula, ["numbers"], seed)
        prices = [int(p) for p in re.findall(r"\$(\d+) per dozen", t.item.prompt)]
        assert v.item.answer != janet.answer
        assert t.item.answer == str(3 * prices[0] + 2 * prices[1] + 6 * prices[2])


@pytest.mark.shared
def test_numbers_variants_on_gsm8k(gsm8k_test: list[Item]) -> None:
    variants, report = make_all_variants(gsm8k_test, ["numbers"], seed=1)
    by_id = {i.id: i for i in gsm8k_test}
    made = report.made["numbers"]
    skipped = sum(report.skipped["numbers"].values())
    assert made == len(variants) and made + skipped == len(gsm8k_test)
    assert made >= 0.2 * len(gsm8k_test)
    assert "no calculator annotations" in report.skipped["numbers"]
    for v in variants:
        parent = by_id[v.parent_id]
        assert v.item.prompt != parent.prompt
        assert v.item.id == f"{parent.id}~numbers" and v.kind == "numbers"
        new = float(v.item.answer)
        assert new >= 0 and new != float(parent.answer)
        # Recomputing the parent with the recorded mapping reproduces the variant's answer.
        assert recompute_gsm8k_answer(parent, v.item.metadata["number_mapping"]) == v.item.answer


def test_numbers_skips_items_without_annotations() -> None:
    plain = Item(id="x", prompt="Tom has 5 apples and buys 7 more. How many?", answer="12",
                 metadata={"solution": "5 + 7 = 12\n#### 12"})
    free = Item(id="y", prompt="What is 2+2?", answer="4")
    variants, report = make_all_variants([plain, free], ["numbers"], seed=0)
    assert variants == []
    assert report.skipped["numbers"] == {"no calculator annotations": 1, "no worked solution": 1}


def test_numbers_variant_on_a_constructed_item() -> None:
    item = Item(id="c", prompt="A box holds 35 pens. How many pens are in 14 boxes?", answer="490",
                metadata={"solution": "35*14 = <<35*14=490>>490 pens.\n#### 490"})
    (v,) = make_variants(item, ["numbers"], seed=3)
    pens, boxes = (int(n) for n in re.findall(r"\d+", v.item.prompt))
    assert v.item.answer == str(pens * boxes) and (pens, boxes) != (35, 14)
    with pytest.raises(ValueError, match="unexplained literal"):
        recompute_gsm8k_answer(Item(id="d", prompt="A box holds 35 pens.", answer="490",
                                    metadata={"solution": "<<35*14*17/17=490>>\n#### 490"}))


# ---------------------------------------------------------------------------- text edits


def test_name_swap_keeps_answer_and_gender() -> None:
    item = Item(id="n", prompt="Natalia gave James 3 apples. Natalia's friend James said thanks.",
                answer="3")
    (v,) = make_variants(item, ["name_swap"], seed=0)
    swaps = v.item.metadata["name_swaps"]
    assert swaps["Natalia"] in FEMALE_NAMES and swaps["James"] in MALE_NAMES
    assert "Natalia" not in v.item.prompt and "James" not in v.item.prompt
    assert v.item.prompt == item.prompt.replace("Natalia", swaps["Natalia"]).replace(
        "James", swaps["James"])
    assert v.item.answer == "3" and v.parent_id == "n" and v.item.id == "n~name_swap"


def test_name_swap_changes_choices_too() -> None:
    item = Item(id="m", prompt="Who is taller, Emma or Tom?", answer="Emma",
                choices=("Emma", "Tom"))
    (v,) = make_variants(item, ["name_swap"], seed=1)
    assert v.item.answer in v.item.choices and v.item.answer != "Emma"
    assert v.item.choices.index(v.item.answer) == 0


def test_irrelevant_clause_before_the_question() -> None:
    item = Item(id="q", prompt="Tom has 5 apples. He buys 7 more. How many apples does he have?",
                answer="12")
    (v,) = make_variants(item, ["irrelevant_clause"], seed=0)
    clause = v.item.metadata["irrelevant_clause"]
    assert clause in IRRELEVANT_CLAUSES and v.item.answer == "12"
    assert v.item.prompt.endswith(f"{clause} How many apples does he have?")
    assert v.item.prompt.replace(clause + " ", "") == item.prompt


def test_irrelevant_clause_keeps_options_last() -> None:
    item = Item(id="z", answer="increases", choices=("increases", "decreases"),
                prompt="Eric adds resistors. The resistance\n\n A: increases\n B: decreases")
    (v,) = make_variants(item, ["irrelevant_clause"], seed=2)
    assert v.item.prompt.endswith("The resistance\n\n A: increases\n B: decreases")
    assert v.item.choices == item.choices


def test_variants_are_seeded_and_independent_of_other_kinds() -> None:
    item = Item(id="s", prompt="Mary has 5 apples. How many does Mary have?", answer="5")
    both = make_variants(item, ["name_swap", "irrelevant_clause"], seed=4)
    alone = make_variants(item, ["irrelevant_clause"], seed=4)
    assert both[1] == alone[0] and both[1].item.prompt == alone[0].item.prompt
    prompts = {make_variants(item, ["name_swap"], seed=s)[0].item.prompt for s in range(10)}
    assert len(prompts) > 1
    with pytest.raises(ValueError, match="unknown variant kind"):
        make_variants(item, ["paraphrase"], seed=0)


def test_report_counts_skips() -> None:
    items = [Item(id="a", prompt="No names here. Is it?", answer="yes"),
             Item(id="b", prompt="Sam runs. Does Sam run?", answer="yes")]
    variants, report = make_all_variants(items, ["name_swap", "irrelevant_clause"], seed=0)
    assert len(variants) == 3
    assert report.as_dict() == {"made": {"name_swap": 1, "irrelevant_clause": 2},
                                "skipped": {"name_swap": {"no known first name": 1}}}
