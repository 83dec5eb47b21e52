"""Controlled re-tests: planting math, DPO pairs, recipe statistics, specs, and a real fine-tune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import BadInputError
from evals import scoring
from evals.items import Item
from evals.recipes import contamination as cont
from evals.recipes.analyses import _dose_summary, dose_design, sft_dpo_design
from evals.recipes.selfverify import (
    auroc,
    calibration_ids,
    claim_reading,
    parse_verdict,
    pick_threshold,
    verification_gap,
    verifier_score,
)


def _items(prefix: str, n: int) -> list[Item]:
    return [Item(f"{prefix}{i}", f"What is {i} times 7?", str(7 * i)) for i in range(n)]


# ----------------------------------------------------------------------------- planting math


@pytest.mark.parametrize(("pool", "dose", "expected"), [
    (30, 0.0, 0), (30, 0.25, 8), (30, 1.0, 30), (4, 0.5, 2), (3, 0.5, 2), (1, 0.25, 0),
    (0, 1.0, 0), (10, 0.05, 1),
])
def test_planted_count(pool: int, dose: float, expected: int) -> None:
    assert cont.planted_count(pool, dose) == expected


@pytest.mark.parametrize("dose", [-0.1, 1.5, float("nan")])
def test_planted_count_rejects_bad_dose(dose: float) -> None:
    with pytest.raises(BadInputError):
        cont.planted_count(10, dose)


def test_plans_are_nested_and_control_is_never_planted() -> None:
    ids = [f"t{i}" for i in range(40)]
    plans = {d: cont.plan_contamination(ids, d, seed=3) for d in (0.0, 0.25, 0.5, 1.0)}
    control = set(plans[0.0].control_ids)
    assert len(control) == 20 and len(plans[1.0].planted_ids) == 20
    for dose, plan in plans.items():
        assert set(plan.control_ids) == control  # same unseen items at every dose
        assert not control & set(plan.planted_ids)
        assert len(plan.planted_ids) == cont.planted_count(20, dose)
    assert set(plans[0.25].planted_ids) <= set(plans[0.5].planted_ids) <= set(
        plans[1.0].planted_ids)
    # Order of the input does not matter; the seed does.
    assert cont.plan_contamination(ids[::-1], 0.25, seed=3) == plans[0.25]
    assert cont.plan_contamination(ids, 0.25, seed=4).planted_ids != plans[0.25].planted_ids


def test_plan_needs_control_and_pool() -> None:
    with pytest.raises(BadInputError):
        cont.plan_contamination(["only"], 0.5, seed=0)


def test_training_set_keeps_budget_and_records_planted() -> None:
    train, test = _items("tr", 50), _items("te", 20)
    for dose in (0.0, 0.25, 1.0):
        plan = cont.plan_contamination([t.id for t in test], dose, seed=0)
        tset = cont.build_training_set(train, test, plan, budget=30)
        ids = [i.id for i in tset.items]
        assert len(ids) == 30 and len(set(ids)) == 30
        assert set(plan.planted_ids) <= set(ids)
        assert not set(plan.control_ids) & set(ids)
        record = tset.as_dict()
        assert record["planted_ids"] == list(plan.planted_ids)
        assert record["n_clean"] == 30 - len(plan.planted_ids)
        assert set(record["copies"].values()) <= {"exact"}
    small = cont.plan_contamination([t.id for t in test], 1.0, seed=0)
    with pytest.raises(BadInputError, match="budget"):
        cont.build_training_set(train, test, small, budget=5)


def test_near_copies_come_from_variants() -> None:
    train = _items("tr", 10)
    test = [Item("q1", "Anna has 3 apples. How many apples does Anna have?", "3"),
            Item("q2", "Tom has 4 pens. How many pens does Tom have?", "4")]
    plan = cont.plan_contamination(["q1", "q2"], 1.0, seed=0)
    tset = cont.build_training_set(train, test, plan, budget=4, copy="name_swap")
    planted = [i for i in tset.items if i.id.startswith("q")]
    assert planted and all(i.id.endswith("~name_swap") for i in planted)
    originals = {t.prompt for t in test}
    assert all(i.prompt not in originals for i in planted)
    assert set(tset.copies.values()) == {"name_swap"}


# ----------------------------------------------------------------------------- SFT / DPO rows


def test_sft_rows_use_eval_prompt_and_a_reply_scored_correct() -> None:
    items = _items("a", 3)
    for row, item in zip(cont.sft_rows(items, "numeric"), items, strict=True):
        assert row["prompt"][0]["content"] == scoring.format_prompt(item, "numeric")
        assert scoring.score_text("numeric", row["completion"][0]["content"], item)


def test_dpo_pairs_are_valid_and_prefer_own_mistakes() -> None:
    items = _items("a", 6)
    own = {"a1": "The answer is 99.", "a2": "The answer is 14."}  # a2's own output is right
    rows, counts = cont.dpo_rows(items, "numeric", seed=0, own_outputs=own)
    assert len(rows) == 6 and counts == {"own_output": 1, "perturbed": 5, "dropped": 0}
    by_id = {item.id: item for item in items}
    for row in rows:
        item = by_id[row["id"]]
        assert scoring.score_text("numeric", row["chosen"][0]["content"], item)
        assert not scoring.score_text("numeric", row["rejected"][0]["content"], item)
        assert row["chosen"] != row["rejected"]
    assert next(r for r in rows if r["id"] == "a1")["rejected"][0]["content"] == own["a1"]


def test_dpo_pairs_for_multiple_choice_reject_another_option() -> None:
    item = Item("m", "Pick the fruit.", "apple", choices=("stone", "apple", "chair"))
    rows, _ = cont.dpo_rows([item], "mc_letter", seed=1)
    assert rows[0]["chosen"][0]["content"] == "B"
    assert rows[0]["rejected"][0]["content"] in {"A", "C"}
    single = Item("s", "Only one.", "x", choices=("x",))
    assert cont.dpo_rows([single], "mc_letter", seed=1)[1]["dropped"] == 1


# ----------------------------------------------------------------------------- statistics


def test_calibrated_verifier_that_separates_answers_closes_the_gap() -> None:
    # 40 items, every other one calibrates. Right answers score high, wrong ones low, so the
    # Youden threshold (picked on calibration items only) accepts exactly the right answers.
    correct = [i % 8 < 2 for i in range(40)]  # 25% right, in calibration and evaluation alike
    scores = [(2.0 if c else -1.0) + (0.5 if i % 2 else 0.0) for i, c in enumerate(correct)]
    calib = [i % 2 == 0 for i in range(40)]
    out = verification_gap(correct, scores, calib, margin=0.05, seed=0, n_boot=500, n_perm=500)
    assert out["threshold"] == pytest.approx(2.0) and "Youden" in out["threshold_basis"]
    assert out["n"] == 20 and out["n_calibration"] == 20 and out["n_self_accepted"] == 5
    assert out["generation_accuracy"]["accuracy"] == pytest.approx(0.25)
    assert out["self_accepted_accuracy"]["accuracy"] == pytest.approx(1.0)
    assert out["gap"]["diff"] == pytest.approx(0.75)  # self-accepted minus all answers
    assert out["shortfall"]["diff"] == pytest.approx(0.0)  # as good as the external verifier
    assert out["auroc"]["auroc"] == pytest.approx(1.0)
    assert out["gap"]["p_value"] < 0.01 and out["gap"]["n"] == 20
    assert out["supports_claim"] is False  # the model validates its own answers: claim fails


def test_a_verifier_that_says_the_same_for_everything_adds_nothing() -> None:
    correct = [i % 3 == 0 for i in range(60)]
    out = verification_gap(correct, [-4.0] * 60, [i < 30 for i in range(60)], n_boot=300,
                           n_perm=300)
    # One score for all: every answer is accepted, the gain is exactly 0 and the claim holds.
    assert out["n_self_accepted"] == 30 and out["gap"]["diff"] == pytest.approx(0.0)
    assert out["gap"]["ci"] == [0.0, 0.0] and out["gap"]["p_value"] == pytest.approx(1.0)
    assert out["supports_claim"] is True
    assert out["auroc"]["auroc"] == pytest.approx(0.5)


@pytest.mark.parametrize("n_right", [0, 2, 58, 60])
def test_a_verifier_with_nothing_to_sort_cannot_support_the_claim(n_right: int) -> None:
    # Every answer wrong (the 135M model on 2-digit addition at 20 items): "self-accepted minus
    # all" is 0 [0, 0] for any verifier, which the CI rule alone would read as "holds".
    correct = [i < n_right for i in range(60)]
    out = verification_gap(correct, [float(i % 7) for i in range(60)],
                           [i % 2 == 1 for i in range(60)], n_boot=200, n_perm=200)
    assert out["supports_claim"] is None
    assert out["untestable"].startswith("untestable:") and "at least 3 of each" in out["untestable"]
    ok = verification_gap([i % 4 == 0 for i in range(60)], [float(i % 7) for i in range(60)],
                          [i % 2 == 1 for i in range(60)], n_boot=200, n_perm=200)
    assert ok["untestable"] is None  # 15 right, 45 wrong: testable


def test_threshold_falls_back_to_the_median_when_calibration_cannot_tell() -> None:
    t, how = pick_threshold([-3.0, -1.0, -2.0, -5.0], [False] * 4)
    assert t == pytest.approx(-2.5) and "fallback" in how
    assert pick_threshold([], [])[0] == 0.0
    with pytest.raises(ValueError, match="lengths differ"):
        verification_gap([True], [0.1, 0.2], [True])


@pytest.mark.parametrize(("scores", "correct", "expected"), [
    ([1, 2, 3, 4], [False, False, True, True], 1.0),
    ([4, 3, 2, 1], [False, False, True, True], 0.0),
    ([1, 1], [True, False], 0.5),
    ([1, 3, 2], [True, False, True], 0.0),  # both right answers score below the wrong one
])
def test_auroc_by_hand(scores: list[float], correct: list[bool], expected: float) -> None:
    assert auroc(scores, correct) == pytest.approx(expected)


@pytest.mark.parametrize(("ci", "expected"), [
    ([-0.10, 0.04], True), ([0.06, 0.20], False), ([0.0, 0.10], None),
    ([float("nan"), 0.1], None)])
def test_claim_reading_uses_the_margin(ci: list[float], expected: bool | None) -> None:
    assert claim_reading({"ci": ci}, 0.05) is expected


def test_verifier_score_pools_both_casings() -> None:
    import math

    logprobs = [math.log(0.3), math.log(0.1), math.log(0.2), math.log(0.2)]
    assert verifier_score(logprobs) == pytest.approx(0.0)
    assert verifier_score([0.0, -50.0, -2.0, -50.0]) == pytest.approx(2.0, abs=1e-6)
    ids = [f"i{k}" for k in range(10)]
    assert len(calibration_ids(ids, 0.5, 0)) == 5
    assert calibration_ids(ids, 0.5, 0) == calibration_ids(list(reversed(ids)), 0.5, 0)


@pytest.mark.parametrize(("text", "verdict"), [
    ("Yes, it is.", True), ("no", False), (" Correct.", True), ("Incorrect: 12", False),
    ("I think so", None), ("", None)])
def test_parse_verdict(text: str, verdict: bool | None) -> None:
    assert parse_verdict(text) is verdict


def _records(model: str, right: set[str], ids: list[str]) -> list[dict]:
    return [{"item_id": i, "model": model, "variant": "original", "correct": i in right}
            for i in ids]


def test_dose_summary_gives_the_known_gap() -> None:
    ids = [f"t{i}" for i in range(40)]
    full = cont.plan_contamination(ids, 1.0, seed=0)
    records = _records("base", set(), ids) + _records("ft", set(full.planted_ids), ids)
    manifest = {"model_dir": "x", "first_loss": 2.0, "last_loss": 0.5}
    entry = _dose_summary(records, full, "ft", manifest, seed=0)
    assert entry["accuracy"]["repeated"]["accuracy"] == 1.0
    assert entry["accuracy"]["novel"]["accuracy"] == 0.0
    assert entry["gap"]["gap"] == pytest.approx(1.0)
    assert entry["supports_claim"] is True
    zero = cont.plan_contamination(ids, 0.0, seed=0)
    none = _dose_summary(records, zero, "ft", manifest, seed=0)
    assert none["n_planted"] == 0 and none["supports_claim"] is None
    # No memorization: same accuracy on both splits gives no positive verdict.
    flat = _records("base", set(), ids) + _records("ft", set(ids[::2]), ids)
    assert _dose_summary(flat, full, "ft", manifest, seed=0)["supports_claim"] is not True


def test_recipe_summary_renders_into_the_report_as_a_table() -> None:
    """report.md shows a recipe's own summary (per-dose table, CIs), not truncated JSON."""
    from agent.report import retest_summary_lines

    ids = [f"t{i}" for i in range(40)]
    full = cont.plan_contamination(ids, 1.0, seed=0)
    records = _records("base", set(), ids) + _records("ft", set(full.planted_ids), ids)
    entry = _dose_summary(records, full, "ft", {"model_dir": "x"}, seed=0)
    summary = {"recipe": "dose_response", "spec": {"description": "dose test"},
               "supports_claim": True, "rule": "the rule", "doses": [entry]}
    body = "\n".join(retest_summary_lines(summary))
    assert "| 1.0 | 100.0 [100.0, 100.0] (n=20) | 0.0 [0.0, 0.0] (n=20) |" in body
    assert "supports_claim: **True**. the rule" in body
    assert "```" not in body and "# Recipe" not in body  # its title gives way to the claim's


# ----------------------------------------------------------------------------- specs and CLI

SHIPPED = ["finetune_dose_response", "finetune_sft_vs_dpo", "self_verification_gap"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_validate(name: str, shared_data: Path) -> None:
    from evals.recipes.spec import is_recipe_file, load_recipe

    loaded = load_recipe(name)
    assert loaded.spec.claim_kinds and loaded.spec.description
    assert is_recipe_file(loaded.source)


@pytest.mark.parametrize(("recipe", "tables", "fragment"), [
    ("nope", "", "recipe"),
    ("dose_response", "[finetune]\nstepz = 3", "finetune.stepz"),
    ("dose_response", "[contamination]\ndoses = [0.5, 2.0]", "contamination"),
])
def test_bad_recipe_spec_exits_2_with_one_line(recipe: str, tables: str, fragment: str,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    spec = tmp_path / "bad.toml"
    spec.write_text(f"description = 'd'\nclaim_kinds = ['k']\nscoring = 'numeric'\n"
                    f"recipe = '{recipe}'\n[dataset]\nkind = 'jsonl'\npath = 'x.jsonl'\n"
                    f"{tables}\n")
    for command in ("eval", "finetune"):
        assert main([command, str(spec), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and fragment in err and "Traceback" not in err


def test_finetune_command_refuses_a_plain_eval_spec(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    assert main(["finetune", "quartz_dedup"]) == 2
    assert "not a recipe" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real training


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real LoRA SFT run of a few steps on SmolLM2-135M with two planted test items."""
    from core.settings import load_settings
    from evals.recipes.finetune import FinetuneParams, finetune

    repo = Path(__file__).resolve().parents[1]
    settings = load_settings(data_dir=repo / ".retest")
    train = [Item(f"tr{i}", f"What is the code word number {i}?", f"kiwi{i}") for i in range(6)]
    test = [Item("te0", "What is the secret word of the lighthouse?", "marmalade"),
            Item("te1", "What is the secret word of the old mill?", "tangerine"),
            Item("te2", "What is the secret word of the harbor?", "pumpernickel"),
            Item("te3", "What is the secret word of the bridge?", "quince")]
    plan = cont.plan_contamination([t.id for t in test], 1.0, seed=0)
    tset = cont.build_training_set(train, test, plan, budget=6)
    params = FinetuneParams(max_steps=6, batch_size=2, learning_rate=5e-3, max_length=64,
                            lora_r=8, target_modules=["q_proj", "v_proj"])
    out = tmp_path_factory.mktemp("ft")
    result = finetune(cont.sft_rows(tset.items, "exact"), params, out, settings=settings,
                      extra_manifest={"contamination": tset.as_dict()}, progress=False)
    return {"result": result, "plan": plan, "test": test, "out": out, "settings": settings,
            "params": params, "rows": cont.sft_rows(tset.items, "exact")}


def _greedy(folder: Path, prompt: str) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
@pytest.mark.timeout(2400)  # seconds on an idle machine; a shared 2-core box can take many minutes
def test_tiny_sft_run_learns_planted_items_and_records_them(tiny_run: dict) -> None:
    from evals.recipes.finetune import finetune, resolve_base_model

    result, plan = tiny_run["result"], tiny_run["plan"]
    manifest = json.loads((tiny_run["out"] / "manifest.json").read_text())
    assert manifest["contamination"]["planted_ids"] == list(plan.planted_ids)
    assert manifest["data"]["rows_sha256"] and manifest["versions"]["torch"]
    assert manifest["params"]["max_steps"] == 6 and manifest["seeds"]["training"] == 0
    losses = manifest["losses"]
    assert len(losses) == 6
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # the loss went down
    assert (result.model_dir / "tokenizer.json").is_file()
    planted = next(t for t in tiny_run["test"] if t.id == plan.planted_ids[0])
    prompt = scoring.format_prompt(planted, "exact")
    base = resolve_base_model(tiny_run["settings"], "smollm2-135m-instruct")
    before, after = _greedy(base, prompt), _greedy(result.model_dir, prompt)
    assert before != after  # the planted item changed the model's output
    again = finetune(tiny_run["rows"], tiny_run["params"], tiny_run["out"],
                     settings=tiny_run["settings"], progress=False)
    assert again.reused  # the same fingerprint reuses the finished run


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_merged_model_serves_through_vllm(tiny_run: dict) -> None:
    from openai import OpenAI

    from tools.vllm_server import EmbeddedServer

    base = tiny_run["settings"]
    settings = base.model_copy(update={"server": base.server.model_copy(
        update={"kv_cache_gib": 1, "max_model_len": 512})})
    server = EmbeddedServer(settings, folder=tiny_run["result"].model_dir,
                            served_name="test-tiny-finetune")
    try:
        base_url = server.ensure_running()
        client = OpenAI(base_url=base_url, api_key="EMPTY", timeout=120)
        reply = client.chat.completions.create(
            model="test-tiny-finetune", max_tokens=8, temperature=0,
            messages=[{"role": "user", "content": "Question: What is 2 plus 2?\nAnswer:"}])
        assert reply.choices[0].message.content.strip()
    finally:
        assert server.stop()


def _reply_logprob(model: object, tok: object, prompt: str, reply: str) -> float:
    """Sum of log-probabilities of ``reply``'s tokens after the chat-formatted ``prompt``."""
    import torch

    head = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                   add_generation_prompt=True)
    full = tok.apply_chat_template([{"role": "user", "content": prompt},
                                    {"role": "assistant", "content": reply}], tokenize=False)
    n_head = len(tok(head)["input_ids"])
    ids = tok(full, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits.float()
    logprobs = torch.log_softmax(logits[0, :-1], dim=-1)
    targets = ids[0, 1:]
    picked = logprobs[torch.arange(len(targets)), targets]
    return float(picked[n_head - 1:].sum())


def _preference_margin(folder: Path, rows: list[dict]) -> float:
    """Mean log p(chosen) - log p(rejected) of the model in ``folder`` over DPO rows."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    margins = []
    for row in rows:
        prompt = row["prompt"][0]["content"]
        margins.append(_reply_logprob(model, tok, prompt, row["chosen"][0]["content"])
                       - _reply_logprob(model, tok, prompt, row["rejected"][0]["content"]))
    return sum(margins) / len(margins)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_tiny_dpo_run_raises_the_preference_for_chosen_answers(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A real trl DPO run of a few steps: the manifest says DPO and the chosen-minus-rejected
    log-probability margin of the trained rows grows against the untuned base model. Training
    prints nothing on stdout (it carries `retest eval --json`)."""
    from core.settings import load_settings
    from evals.recipes.finetune import FinetuneParams, finetune, resolve_base_model

    settings = load_settings(data_dir=Path(__file__).resolve().parents[1] / ".retest")
    items = [Item(f"d{i}", f"What is {i + 3} times 7?", str(7 * (i + 3))) for i in range(6)]
    own = {"d0": "The answer is 20.", "d1": "The answer is 28."}  # d1's "own" output is right
    rows, counts = cont.dpo_rows(items, "numeric", seed=0, own_outputs=own)
    assert counts == {"own_output": 1, "perturbed": 5, "dropped": 0}
    params = FinetuneParams(method="dpo", max_steps=6, batch_size=2, learning_rate=5e-3,
                            max_length=64, lora_r=8, target_modules=["q_proj", "v_proj"],
                            dpo_beta=0.1)
    result = finetune(rows, params, tmp_path / "dpo", settings=settings,
                      extra_manifest={"dpo_rejected": counts}, progress=False)
    assert capfd.readouterr().out == ""
    manifest = json.loads((tmp_path / "dpo" / "manifest.json").read_text())
    assert manifest["method"] == "dpo" and manifest["params"]["dpo_beta"] == 0.1
    assert manifest["dpo_rejected"] == counts and len(manifest["losses"]) == 6
    assert manifest["data"]["row_ids"] == [r["id"] for r in rows]
    base = resolve_base_model(settings, "smollm2-135m-instruct")
    before, after = _preference_margin(base, rows), _preference_margin(result.model_dir, rows)
    print(f"\nDPO chosen-minus-rejected log-prob margin: base {before:.2f}, trained {after:.2f}; "
          f"{manifest['train_tokens_per_s']} training tokens/s")
    assert after > before + 1.0, (before, after)  # log-prob units: a clear, not a rounding, gain


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.timeout(900)
def test_self_verification_recipe_runs_end_to_end_and_resumes(
        shared_data: Path, llm_base_url: str, tmp_path: Path) -> None:
    """`retest eval self_verification_gap --json` on the real embedded SmolLM2: a recipe goes
    through run_spec, writes its outputs and prints only JSON on stdout; a rerun asks nothing
    new."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETEST_")}
    env["RETEST_DATA_DIR"] = str(repo / ".retest")  # where llm_base_url's server is recorded
    out = tmp_path / "sv"
    cmd = [sys.executable, "-m", "agent.cli", "eval", "self_verification_gap", "--limit", "16",
           "--out", str(out), "--json", "--quiet"]
    first = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads(first.stdout)  # nothing but the summary on stdout
    assert summary["recipe"] == "self_verification" and summary["supports_claim"] in (
        True, False, None)
    # Half the items calibrate the verifier's threshold, half measure: the gap is a number now
    # (the free-text verdicts of the 135M model rejected every answer, leaving it undefined).
    assert summary["n"] == 8 and summary["n_calibration"] == 8
    assert 0 <= summary["generation_accuracy"]["accuracy"] <= 1
    assert summary["n_self_accepted"] >= 1
    gap = summary["gap"]
    assert -1 <= gap["diff"] <= 1 and gap["ci"][0] <= gap["diff"] <= gap["ci"][1]
    assert 0 < gap["p_value"] <= 1 and summary["headline"]["effect"] == gap["diff"]
    assert summary["decides"] is True and "calibration items" in summary["design"]
    fixed = json.loads((out / "run.json").read_text())["fixed"]
    assert fixed["spec_sha256"] == summary["spec"]["sha256"] and fixed["test_items"] == 16
    assert fixed["resolved_spec"]["verify"]["margin"] == summary["margin"]
    for name in ("summary.json", "summary.md", "results.jsonl", "verifier_scores.jsonl",
                 "self_verification.png"):
        assert (out / name).is_file(), name
    lines = (out / "results.jsonl").read_text().splitlines()
    verdicts = (out / "verifier_scores.jsonl").read_text().splitlines()
    assert len(lines) == 16 and len(verdicts) == 16
    again = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "results.jsonl").read_text().splitlines() == lines  # resumed, not re-asked
    assert (out / "verifier_scores.jsonl").read_text().splitlines() == verdicts
    assert json.loads(again.stdout)["generation_accuracy"] == summary["generation_accuracy"]


def test_designs_state_what_was_trained_on_what(shared_data: Path) -> None:
    from evals.recipes.spec import load_recipe

    dose = load_recipe("finetune_dose_response").spec
    line = dose_design(dose, 60, 30)
    assert "smollm2-135m-instruct LoRA-SFT" in line and "[0.0, 0.25, 1.0]" in line
    assert "60 training items" in line and "30-item test pool" in line
    assert "30 never-planted" in line and "\n" not in line
    pair = sft_dpo_design(load_recipe("finetune_sft_vs_dpo").spec, 20, 40)
    assert "SFT" in pair and "DPO" in pair and "own output rejected" in pair
    assert "40 unseen items" in pair
