"""Benchmark loaders on the real shared files, bad files, and the seeded split."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import BadInputError
from evals.datasets import (
    gsm8k_final_answer,
    load_bigbench,
    load_dataset,
    load_gsm8k,
    load_jsonl,
    load_openai_evals,
    seeded_split,
)
from evals.items import Item


@pytest.fixture(scope="module")
def bench(shared_data: Path) -> Path:
    return shared_data / "benchmarks"


@pytest.mark.shared
@pytest.mark.parametrize(("name", "count"), [("train", 7473), ("test", 1319)])
def test_gsm8k(bench: Path, name: str, count: int) -> None:
    items = load_gsm8k(bench / f"gsm8k/{name}.jsonl")
    assert len(items) == count
    assert len({i.id for i in items}) == count
    for item in items:
        assert item.answer == gsm8k_final_answer(item.metadata["solution"])
        float(item.answer)  # a plain number, commas removed
    if name == "train":
        first = items[0]
        assert first.prompt.startswith("Natalia sold clips to 48 of her friends")
        assert first.answer == "72" and "<<48/2=24>>" in first.metadata["solution"]


@pytest.mark.parametrize(("solution", "answer"), [
    ("x\n#### 72", "72"), ("#### 1,000", "1000"), ("a\n####  -3.5 ", "-3.5"), ("no answer", None),
    ("", None),
])
def test_gsm8k_final_answer(solution: str, answer: str | None) -> None:
    assert gsm8k_final_answer(solution) == answer


@pytest.mark.shared
def test_bigbench_multiple_choice(bench: Path) -> None:
    items = load_bigbench(bench / "bigbench/strategyqa/task.json")
    assert len(items) == 2290
    first = items[0]
    assert first.choices == ("Yes", "No") and first.answer == "Yes"
    assert first.metadata["target"].startswith("Yes.")  # the explanation is kept, not the answer
    knowledge = load_bigbench(bench / "bigbench/general_knowledge")  # a folder works too
    horse = knowledge[0]
    assert horse.prompt == "How many legs do horses have?" and horse.answer == "four"
    assert "four" in horse.choices and len(horse.choices) == 6
    for item in items + knowledge:
        assert item.answer in item.choices


@pytest.mark.shared
def test_bigbench_subtasks(bench: Path) -> None:
    with pytest.raises(BadInputError, match="subtasks: language_hint_only"):
        load_bigbench(bench / "bigbench/elementary_math_qa")
    items = load_bigbench(bench / "bigbench/elementary_math_qa/question_only")
    assert len(items) == 7688
    assert items[1].prompt == "120 is what percent of 50 ?" and items[1].answer == "240 %"


def test_bigbench_free_form(tmp_path: Path) -> None:
    task = {"name": "t", "examples": [{"input": "2+2?", "target": ["4", "four"]},
                                      {"input": "1+1?", "target": "2"}]}
    path = tmp_path / "task.json"
    path.write_text(json.dumps(task))
    items = load_bigbench(path)
    assert [(i.answer, i.choices) for i in items] == [("4", ()), ("2", ())]
    assert items[0].metadata["targets"] == ["4", "four"]


@pytest.mark.shared
def test_openai_evals_quartz(bench: Path) -> None:
    items = load_openai_evals(bench / "openai_evals/quartz/samples.jsonl")
    assert len(items) == 3860
    assert all(len(i.choices) == 2 and i.answer in i.choices for i in items)
    first = items[0]
    assert first.choices == ("increases", "decreases") and first.answer == "increases"
    assert first.metadata["letters"] == ["A", "B"] and first.metadata["ideal"] == "A"
    assert first.metadata["question"] == "Eric adds more resistors to the series circuit. " \
                                         "The resistance"
    assert first.metadata["messages"][0]["role"] == "system"


@pytest.mark.shared
def test_openai_evals_free_form(bench: Path) -> None:
    items = load_dataset("openai_evals", bench / "openai_evals/sarcasm/samples.jsonl")
    assert len(items) == 28614
    assert {i.answer for i in items} == {"0", "1"}
    assert not any(i.choices for i in items)


def test_load_jsonl_fields(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"q": "Which?", "a": "x", "opts": ["x", "y"], "uid": "u1",
                                "extra": 5}) + "\n\n" + json.dumps({"q": "Two?", "a": 2,
                                                                    "opts": [], "uid": "u2"}))
    items = load_dataset("jsonl", path, prompt_field="q", answer_field="a",
                         choices_field="opts", id_field="uid")
    assert items[0] == Item(id="u1", prompt="Which?", answer="x", choices=("x", "y"))
    assert items[0].metadata["extra"] == 5 and items[1].metadata["line"] == 3
    assert items[1].answer == "2"
    default_ids = load_jsonl(path, prompt_field="q", answer_field="a")
    assert [i.id for i in default_ids] == ["d-0", "d-1"]


@pytest.mark.parametrize(("content", "kwargs", "message"), [
    ('{"q": "a", "a": "b"}\n{bad\n', {}, r"d\.jsonl:2: not valid JSON"),
    ('{"q": "a"}\n', {}, r"d\.jsonl:1: missing field 'a'"),
    ('[1, 2]\n', {}, r"d\.jsonl:1: expected a JSON object"),
    ('{"q": "a", "a": "b", "id": "x"}\n{"q": "c", "a": "d", "id": "x"}\n', {"id_field": "id"},
     "duplicate id"),
    ('{"q": "a", "a": "b", "c": "nope"}\n', {"choices_field": "c"}, "not a list of strings"),
    ("\n\n", {}, "no items"),
])
def test_bad_jsonl(tmp_path: Path, content: str, kwargs: dict, message: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(BadInputError, match=message):
        load_jsonl(path, prompt_field="q", answer_field="a", **kwargs)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file"):
        load_gsm8k(tmp_path / "missing.jsonl")
    gsm = tmp_path / "g.jsonl"
    gsm.write_text(json.dumps({"question": "q", "answer": "no final line"}) + "\n")
    with pytest.raises(BadInputError, match=r"g\.jsonl:1: answer has no final"):
        load_gsm8k(gsm)
    task = tmp_path / "task.json"
    task.write_text("{not json")
    with pytest.raises(BadInputError, match="task.json: not a valid JSON"):
        load_bigbench(task)
    chat = tmp_path / "s.jsonl"
    chat.write_text(json.dumps({"input": 5, "ideal": "A"}) + "\n")
    with pytest.raises(BadInputError, match=r"s\.jsonl:1: 'input' is not a list"):
        load_openai_evals(chat)
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BadInputError, match="not UTF-8"):
        load_gsm8k(binary)


def test_load_dataset_dispatch_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="unknown dataset kind 'csv'"):
        load_dataset("csv", tmp_path / "x")
    with pytest.raises(BadInputError, match="takes no field options"):
        load_dataset("gsm8k", tmp_path / "x", prompt_field="q")
    with pytest.raises(BadInputError, match="needs prompt_field"):
        load_dataset("jsonl", tmp_path / "x")


# ---------------------------------------------------------------------------- split


def _items(n: int) -> list[Item]:
    return [Item(id=f"item-{k}", prompt=f"p{k}", answer="a") for k in range(n)]


def test_split_sizes_and_disjoint() -> None:
    items = _items(1000)
    train, test = seeded_split(items, 0.2, seed=3)
    assert len(test) == 200 and len(train) == 800
    assert {i.id for i in train}.isdisjoint({i.id for i in test})
    assert [i.id for i in test] == sorted((i.id for i in test), key=lambda s: int(s.split("-")[1]))


def test_split_is_stable_and_order_independent() -> None:
    items = _items(300)
    shuffled = items[:]
    random.Random(0).shuffle(shuffled)
    _, test_a = seeded_split(items, 0.3, seed=11)
    _, test_b = seeded_split(shuffled, 0.3, seed=11)
    assert {i.id for i in test_a} == {i.id for i in test_b}
    _, test_c = seeded_split(items, 0.3, seed=12)
    assert {i.id for i in test_a} != {i.id for i in test_c}


@given(st.integers(min_value=0, max_value=60), st.floats(min_value=0.01, max_value=0.99),
       st.integers(min_value=0, max_value=10**6))
def test_split_property(n: int, fraction: float, seed: int) -> None:
    items = _items(n)
    train, test = seeded_split(items, fraction, seed)
    assert len(test) == round(n * fraction) and len(train) + len(test) == n
    assert sorted(i.id for i in train + test) == sorted(i.id for i in items)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 2.0])
def test_split_bad_fraction(fraction: float) -> None:
    with pytest.raises(BadInputError, match="test fraction"):
        seeded_split(_items(10), fraction, 0)


def test_split_duplicate_ids() -> None:
    with pytest.raises(BadInputError, match="duplicate ids"):
        seeded_split(_items(3) + _items(1), 0.5, 0)
