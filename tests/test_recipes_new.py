"""The pass@k and template-transfer recipes: estimator, rules, specs, and tiny real runs."""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path

import pytest

from core.errors import BadInputError
from evals.items import Item
from evals.recipes import passk, template_transfer

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- pass@k estimator


def _exact(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (10, 0, 1, 0.0), (10, 0, 10, 0.0),  # nothing right: never passes
    (10, 10, 1, 1.0), (64, 64, 64, 1.0),  # everything right: always passes
    (10, 8, 3, 1.0), (5, 1, 5, 1.0),  # k > n - c: every draw of k holds a correct reply
    (2, 1, 1, 0.5), (5, 2, 2, 0.7), (64, 1, 1, 1 / 64), (64, 1, 64, 1.0),
])
def test_pass_at_k_edge_cases(n: int, c: int, k: int, expected: float) -> None:
    assert passk.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_the_binomial_formula_and_grows_with_k() -> None:
    for n in (4, 16, 64):
        for c in range(n + 1):
            values = [passk.pass_at_k(n, c, k) for k in range(1, n + 1)]
            for k, value in enumerate(values, 1):
                assert value == pytest.approx(_exact(n, c, k), abs=1e-9)
            assert all(b >= a - 1e-12 for a, b in zip(values, values[1:], strict=False))
            assert values[0] == pytest.approx(c / n)  # pass@1 is the per-sample accuracy


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_inputs(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        passk.pass_at_k(n, c, k)


# ----------------------------------------------------------------------------- curves and rule


def test_sharpening_without_new_coverage_supports_the_claim() -> None:
    """Tuned: most samples right on items the base solves only rarely; coverage the same."""
    n = 64
    base = [(n, 4)] * 30 + [(n, 0)] * 10
    tuned = [(n, 40)] * 30 + [(n, 0)] * 10
    result = passk.compare_curves(base, tuned, [1, 8, 64], seed=0)
    first, last = result["advantage_first"], result["advantage_last"]
    assert first["mean"] == pytest.approx(0.75 * (40 - 4) / 64)
    assert first["ci"][0] > 0 and first["p_value"] < 0.01
    assert last["mean"] == pytest.approx(0.0) and last["ci"] == [0.0, 0.0]
    assert result["shrink"]["diff"] == pytest.approx(first["mean"])
    assert result["shrink"]["ci"][0] > 0
    assert result["supports_claim"] is True
    base_curve = [row["base"]["mean"] for row in result["curve"]]
    assert base_curve == sorted(base_curve)  # pass@k never falls as k grows


def test_new_coverage_at_large_k_refutes_the_claim() -> None:
    n = 64
    base = [(n, 2)] * 20 + [(n, 0)] * 20
    tuned = [(n, 30)] * 40  # solves the 20 items the base never does
    result = passk.compare_curves(base, tuned, [1, 64], seed=0)
    assert result["advantage_last"]["ci"][0] > 0
    assert result["supports_claim"] is False


def test_no_gain_at_k1_is_inconclusive_and_mismatched_items_fail() -> None:
    same = [(16, 3), (16, 0), (16, 9), (16, 1)] * 5
    result = passk.compare_curves(same, same, [1, 16], seed=0)
    assert result["advantage_first"]["mean"] == 0.0
    assert result["supports_claim"] is None
    with pytest.raises(ValueError):
        passk.compare_curves(same, same[:-1], [1, 16])
    with pytest.raises(ValueError):
        passk.compare_curves([], [], [1])


@pytest.mark.parametrize(("first", "last", "expected"), [
    ([0.1, 0.3], [-0.02, 0.04], True),
    ([0.1, 0.3], [-0.3, -0.1], True),  # reversed: the base covers more at large k
    ([0.1, 0.3], [-0.02, 0.08], None),  # could still be a real persisting gain
    ([0.1, 0.3], [0.01, 0.2], False),
    ([-0.1, 0.2], [0.02, 0.2], False),
    ([-0.1, 0.2], [-0.1, 0.0], None),  # no gain at k=1 to shrink
    ([math.nan, 0.1], [0.0, 0.0], None),
])
def test_decide(first: list[float], last: list[float], expected: bool | None) -> None:
    assert passk.decide(first, last, margin=0.05) is expected


def test_reward_filter_keeps_only_distinct_correct_replies() -> None:
    items = [Item("a", "What is 2 plus 3?", "5"), Item("b", "What is 4 plus 4?", "8"),
             Item("c", "What is 1 plus 1?", "2")]
    drawn = {
        "a": {"replies": ["2 + 3 = 5", "It is 6", "2 + 3 = 5", " The answer is 5.", "5"],
              "correct": [True, False, True, True, True]},
        "b": {"replies": ["7", "9"], "correct": [False, False]},
    }
    rows = passk.reward_filtered_rows(items, drawn, "numeric", keep_per_item=2)
    assert [r["id"] for r in rows] == ["a#0", "a#1"]
    assert [r["completion"][0]["content"] for r in rows] == ["2 + 3 = 5", "The answer is 5."]
    assert rows[0]["prompt"][0]["content"].endswith("Answer:")


# ----------------------------------------------------------------------------- template transfer


def _record(item: str, model: str, variant: str, correct: bool) -> dict:
    return {"item_id": item, "model": model, "variant": variant, "correct": correct}


def test_drop_difference_is_paired_by_item() -> None:
    records = []
    for i in range(20):
        # tuned: right on every original, wrong on every numbers variant; base: wrong on both
        records += [_record(f"q{i}", "tuned", "original", True),
                    _record(f"q{i}", "tuned", "numbers", False),
                    _record(f"q{i}", "base", "original", i % 5 == 0),
                    _record(f"q{i}", "base", "numbers", i % 5 == 0)]
    ids = [f"q{i}" for i in range(20)] + ["missing"]
    tuned = template_transfer.drops(records, "tuned", ids, "numbers")
    base = template_transfer.drops(records, "base", ids, "numbers")
    assert set(tuned) == set(base) == {f"q{i}" for i in range(20)}
    diff = template_transfer.drop_difference(tuned, base, seed=0)
    assert diff["n"] == 20 and diff["diff"] == pytest.approx(1.0)
    assert diff["ci"][0] > 0.9 and diff["p_value"] < 0.001


def test_picked_gsm8k_items_all_have_a_recomputed_variant(shared_data: Path) -> None:
    from evals.datasets import load_gsm8k

    train = load_gsm8k(shared_data / "benchmarks" / "gsm8k" / "train.jsonl")[:300]
    items, variants, report = template_transfer.pick_items(
        train, 12, ["numbers", "name_swap"], "numbers", seed=0)
    assert len(items) == 12 and len({i.id for i in items}) == 12
    for item in items:
        numbers = next(v for v in variants[item.id] if v.kind == "numbers")
        assert numbers.parent_id == item.id and numbers.item.prompt != item.prompt
        assert numbers.item.answer != item.answer or numbers.item.prompt != item.prompt
    again, _, _ = template_transfer.pick_items(train, 12, ["numbers"], "numbers", seed=0)
    assert [i.id for i in again] == [i.id for i in items]  # the seed fixes the choice
    assert report.made["numbers"] == 12


# ----------------------------------------------------------------------------- specs

SPECS = ["passk_base_vs_tuned", "gsm8k_template_transfer"]


@pytest.mark.parametrize("name", SPECS)
def test_shipped_specs_load_and_validate(name: str, shared_data: Path) -> None:
    from evals.recipes.spec import is_recipe_file, load_recipe, recipe_index_entry

    loaded = load_recipe(name)
    assert is_recipe_file(loaded.source) and loaded.spec.claim_kinds
    assert recipe_index_entry(loaded.source)["split_mode"] == f"recipe:{loaded.spec.recipe}"
    if loaded.spec.recipe == "pass_at_k":
        assert loaded.spec.passk.ks[0] == 1 and loaded.spec.passk.ks[-1] == 64
        assert loaded.spec.passk.samples >= 64
    else:
        assert loaded.spec.transfer.primary_kind == "numbers"


@pytest.mark.parametrize(("table", "fragment"), [
    ("[passk]\nks = [1, 128]\nsamples = 64", "exceeds samples"),
    ("[passk]\nks = [4, 2]", "increasing"),
    ("[passk]\nkz = [1]", "passk.kz"),
    ("[transfer]\nprimary_kind = 'numbers'\nvariant_kinds = ['name_swap']", "primary_kind"),
    ("[transfer]\nvariant_kinds = ['shuffle']", "unknown variant kind"),
])
def test_bad_specs_fail_with_one_line(table: str, fragment: str, tmp_path: Path) -> None:
    from evals.recipes.spec import load_recipe

    spec = tmp_path / "bad.toml"
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "1"}\n')
    recipe = "pass_at_k" if "passk" in table else "template_transfer"
    spec.write_text(f"description = 'd'\nclaim_kinds = ['k']\nscoring = 'numeric'\n"
                    f"recipe = '{recipe}'\n[dataset]\nkind = 'jsonl'\npath = '{data}'\n"
                    f"{table}\n")
    with pytest.raises(BadInputError) as err:
        load_recipe(spec)
    assert fragment in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- tiny real runs


def _tiny_spec(name: str, tmp_path: Path, overrides: dict[str, str]) -> Path:
    """Copy a shipped spec into tmp_path with some tables' keys replaced (tiny sizes)."""
    text = (REPO / "evals" / "specs" / f"{name}.toml").read_text()
    text = text.replace("${SHARED_DATA}", str(REPO.parent / "shared" / "data"))
    for key, value in overrides.items():
        text, count = re.subn(rf"(?m)^{re.escape(key)} = .*$", f"{key} = {value}", text)
        assert count == 1, key
    tomllib.loads(text)  # still valid TOML
    path = tmp_path / f"{name}_tiny.toml"
    path.write_text(text)
    return path


def _check_summary(out: Path, summary: dict, plot: str) -> None:
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["recipe"] == summary["recipe"]
    assert on_disk["decides"] is True and on_disk["supports_claim"] in (True, False, None)
    assert len(on_disk["design"].splitlines()) == 1 and "vs" in on_disk["design"]
    head = on_disk["headline"]
    assert head["n"] == on_disk["n"] and head["n"] >= 2
    assert len(head["ci"]) == 2 and head["ci"][0] <= head["ci"][1]
    assert 0 < on_disk["p_value"] <= 1
    assert (out / plot).stat().st_size > 1000
    assert "Design:" in (out / "summary.md").read_text()


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.timeout(2400)  # 8-15 min measured on a loaded, shared 2-core box
def test_tiny_pass_at_k_run(shared_data: Path, llm_base_url: str, tmp_path: Path) -> None:
    """A real run: the base samples, is tuned on its own correct replies (2 LoRA steps), and
    both models' pass@1..4 on 3 held-out items land in summary.json with CIs and a plot."""
    from core.settings import load_settings
    from evals.dispatch import run_spec_file

    spec = _tiny_spec("passk_base_vs_tuned", tmp_path, {
        "path": f'"{shared_data}/benchmarks/bigbench/arithmetic/1_digit_addition"',
        "ks": "[1, 2, 4]", "samples": "4", "test_items": "3", "train_items": "6",
        "train_samples": "8", "max_steps": "2", "batch_size": "2"})
    settings = load_settings(data_dir=REPO / ".retest")  # where llm_base_url's server is recorded
    out = tmp_path / "out"
    summary = run_spec_file(spec, out, settings, progress=False)
    _check_summary(out, summary, passk.PLOT)
    assert summary["ks"] == [1, 2, 4] and summary["n"] == 3
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and {len(x["replies"]) for x in lines} == {4}
    assert {x["model"] for x in lines} == {"base", summary["models"]["tuned"]}
    for row in summary["curve"]:
        assert 0 <= row["base"]["mean"] <= 1 and 0 <= row["tuned"]["mean"] <= 1
    manifest = json.loads((out / "models" / "tuned" / "manifest.json").read_text())
    assert manifest["reward_filter"]["rows"] == summary["training"]["rows"] > 0
    assert len(manifest["losses"]) == 2


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.timeout(2400)  # 8-15 min measured on a loaded, shared 2-core box
def test_tiny_template_transfer_run(shared_data: Path, llm_base_url: str,
                                    tmp_path: Path) -> None:
    """A real run on 3 GSM8K train items and their numbers variants, 1 LoRA step."""
    from core.settings import load_settings
    from evals.dispatch import run_spec_file

    spec = _tiny_spec("gsm8k_template_transfer", tmp_path, {
        "items": "3", "variant_kinds": '["numbers"]', "max_steps": "1", "batch_size": "2",
        "max_tokens": "12"})
    settings = load_settings(data_dir=REPO / ".retest")
    out = tmp_path / "out"
    summary = run_spec_file(spec, out, settings, progress=False)
    _check_summary(out, summary, template_transfer.PLOT)
    assert summary["n"] == 3 and set(summary["by_kind"]) == {"numbers"}
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 12  # 3 items x (original + numbers) x 2 models
    assert {x["variant"] for x in lines} == {"original", "numbers"}
