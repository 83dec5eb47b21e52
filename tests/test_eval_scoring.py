"""Scoring of model outputs: exact, numeric, letter and log-likelihood helpers."""

from __future__ import annotations

import math

import pytest

from evals import scoring
from evals.items import Item

MC = Item(id="q1", prompt="Which is bigger?", answer="an elephant",
          choices=("a mouse", "an elephant", "a cat"))


@pytest.mark.parametrize(("prediction", "answer", "expected"), [
    ("Paris", "paris", True),
    ("  The Paris. ", "paris", True),
    ("Paris, France", "paris", False),
    ("", "paris", False),
    ("an apple", "Apple!", True),
])
def test_exact_match(prediction: str, answer: str, expected: bool) -> None:
    assert scoring.exact_match(prediction, answer) is expected


@pytest.mark.parametrize(("text", "expected"), [
    ("She pays $1,234.50 in total.", 1234.5),
    ("First 3 apples, then 5 more, so 8 apples", 8.0),
    ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", 72.0),
    ("The answer is 18 dollars. (I used 3 steps)", 18.0),
    ("Answer: -7", -7.0),
    ("no digits here", None),
    ("It costs .5 dollars", 0.5),
    ("a total of 1,000,000 people", 1_000_000.0),
])
def test_extract_final_number(text: str, expected: float | None) -> None:
    got = scoring.extract_final_number(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


@pytest.mark.parametrize(("prediction", "answer", "expected"), [
    ("so the total is $72.00", "72", True),
    ("#### 72", "72", True),
    ("the answer is 71", "72", False),
    ("I do not know", "72", False),
    ("2,500 meters", "2500", True),
    ("step1 10 step2 20 so 25", "25", True),
])
def test_numeric_match(prediction: str, answer: str, expected: bool) -> None:
    assert scoring.numeric_match(prediction, answer) is expected


@pytest.mark.parametrize(("text", "n", "expected"), [
    ("B", 3, 1),
    ("(C) a cat", 3, 2),
    ("The answer is A.", 3, 0),
    ("Answer: b", 3, 1),
    ("I think it is C because", 3, 2),
    ("D", 3, None),  # not a valid option of three
    ("no letter at all", 3, None),
    ("A mouse is small, so B", 3, 0),  # leading letter wins: a model writing 'A mouse' chose A
])
def test_extract_choice_letter(text: str, n: int, expected: int | None) -> None:
    assert scoring.extract_choice_letter(text, n) == expected


def test_gold_index_by_text_and_by_letter() -> None:
    assert scoring.gold_index(MC) == 1
    letter_item = Item(id="q2", prompt="p", answer="C", choices=("x", "y", "z"))
    assert scoring.gold_index(letter_item) == 2
    with pytest.raises(ValueError, match="none of its choices"):
        scoring.gold_index(Item(id="q3", prompt="p", answer="w", choices=("x", "y")))


def test_letter_match_uses_gold_option() -> None:
    assert scoring.letter_match("B", MC)
    assert not scoring.letter_match("A", MC)


def test_format_prompt_lists_choices_once() -> None:
    prompt = scoring.format_prompt(MC, "mc_letter")
    assert " A: a mouse" in prompt and " B: an elephant" in prompt and " C: a cat" in prompt
    listed = Item(id="q", prompt="Pick\n\n A: up\n B: down", answer="A", choices=("up", "down"))
    assert scoring.format_prompt(listed, "mc_letter").count("A: up") == 1
    assert scoring.format_prompt(MC, "mc_loglik").endswith("Answer:")


def test_loglik_helpers_sum_option_tail() -> None:
    prompts = scoring.loglik_token_prompts([1, 2, 3], [[7], [8, 9]])
    assert prompts == [[1, 2, 3, 7], [1, 2, 3, 8, 9]]
    echoed = [None, -0.5, -0.25, -1.0, -2.0]
    assert scoring.option_logprob(echoed, 2) == pytest.approx(-3.0)
    assert scoring.option_logprob(echoed, 1) == pytest.approx(-2.0)
    with pytest.raises(ValueError):
        scoring.option_logprob(echoed, 5)  # the option cannot swallow the whole prompt
    with pytest.raises(ValueError):
        scoring.loglik_token_prompts([1], [[]])


@pytest.mark.parametrize(("scores", "expected"), [
    ([-3.0, -1.0, -2.0], 1),
    ([-1.0, -1.0], 0),  # ties go to the first option, deterministically
    ([-math.inf, -50.0], 1),
])
def test_best_option(scores: list[float], expected: int) -> None:
    assert scoring.best_option(scores) == expected


def test_score_text_rejects_loglik() -> None:
    with pytest.raises(ValueError):
        scoring.score_text("mc_loglik", "B", MC)
