"""Re-test planning (pure): which recipe tests which claim, the budget, work keys, Holm reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.nodes.retest_budget import Planned, parse_budget, select_within_budget, skip_reason
from agent.nodes.retest_plan import (
    Recipe,
    candidates,
    choose,
    cost_key,
    expected_seconds,
    load_registry,
    rank_recipes,
    work_key,
)
from agent.nodes.retest_read import CI_APPROX, headline, holm_read, p_from_ci
from agent.parse import parse_prompt
from core.errors import BadInputError

# Seed claim (prompt order) -> the recipe kind that tests it (issue 14).
SEED_KINDS = {
    "C1": "dose_response",  # memorization: planted repeats at several doses
    "C2": "template_transfer",  # RL/GRPO sharpens templates: tuned vs base on N-1 variants
    "C3": "sft_vs_dpo",  # DPO on negatives vs SFT on repeated positives
    "C4": "self_verification",  # the generation-verification gap
    "C5": "pass_at_k",  # RL amplifies pretraining: pass@k of base vs tuned
}


@pytest.fixture(scope="module")
def registry() -> list[Recipe]:
    return load_registry()


@pytest.fixture(scope="module")
def seed_claims(seed_prompt: Path) -> dict[str, str]:
    brief = parse_prompt(seed_prompt.read_text(encoding="utf-8"))
    return {c["id"]: c["text"] for c in brief["claims"]}


@pytest.mark.parametrize("claim_id", sorted(SEED_KINDS))
def test_each_seed_claim_maps_to_the_recipe_that_tests_it(claim_id, registry, seed_claims):
    kind = SEED_KINDS[claim_id]
    if not any(r.kind == kind for r in registry):
        pytest.skip(f"no spec with recipe = {kind!r} in evals/specs yet")
    ranked = rank_recipes(seed_claims[claim_id], registry)
    chosen, how = choose(ranked, llm_pick=None)
    assert chosen is not None and chosen.kind == kind, [(r.name, s) for r, s in ranked]
    assert how == "score" and chosen.decides
    # The model may only pick among close candidates of the same (controlled) tier; a pick of
    # anything else, e.g. a descriptive cross-family evaluation, falls back to the score.
    allowed = {r.name for r in candidates(ranked)}
    assert chosen.name in allowed
    for other in registry:
        if other.name not in allowed:
            assert choose(ranked, other.name)[0] is chosen


def test_descriptive_evaluations_never_outrank_a_fitting_controlled_recipe(registry, seed_claims):
    for text in seed_claims.values():
        ranked = rank_recipes(text, registry)
        tiers = [r.decides for r, _ in ranked]
        assert tiers == sorted(tiers, reverse=True)


def test_an_unrelated_claim_fits_no_recipe(registry):
    ranked = rank_recipes("Quantum error correction thresholds improve with surface codes.",
                          registry)
    assert ranked == [] and choose(ranked, "quartz_dedup") == (None, "none")


@pytest.mark.parametrize("text", [
    # No shipped recipe tests these: dose-response shows that contamination inflates scores, not
    # that dynamic benchmarks are the only guard; the self-verification gap is not a judge's
    # position bias. A shared word ("contamination", "judge") must not attach an experiment.
    "Dynamic or freshly written benchmarks are the only reliable guard against contamination.",
    "LLM judges show position bias: swapping the order of two candidate answers changes the "
    "verdict.",
])
def test_a_claim_sharing_one_word_with_a_recipe_fits_none(registry, text):
    assert rank_recipes(text, registry) == []


def test_rewording_which_claims_a_spec_fits_keeps_its_work_folder(tmp_path):
    spec = Path(__file__).resolve().parents[1] / "evals" / "specs" / "finetune_sft_vs_dpo.toml"
    text = spec.read_text(encoding="utf-8")
    (tmp_path / "a.toml").write_text(text, encoding="utf-8")
    (tmp_path / "b.toml").write_text(text.replace('claim_kinds = [', 'claim_kinds = ["x", '),
                                     encoding="utf-8")
    (tmp_path / "c.toml").write_text(text.replace("seed = 0", "seed = 1"), encoding="utf-8")
    shas = {r.name: r.sha256 for r in load_registry(tmp_path)}
    assert shas["a"] == shas["b"] != shas["c"]


@pytest.mark.parametrize(("text", "seconds"), [
    ("45m", 2700.0), ("90s", 90.0), ("1h30m", 5400.0), ("0", 0.0), ("0m", 0.0), (" 2h ", 7200.0)])
def test_parse_budget(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "45", "-5m", "ten minutes", "5x", "1.5.2h", "nan"])
def test_parse_budget_refuses_in_one_line(text):
    with pytest.raises(BadInputError) as err:
        parse_budget(text)
    assert "\n" not in str(err.value) and "--retest-budget" in str(err.value)


def test_cheapest_first_until_the_budget_is_spent():
    planned = [Planned("C1", 0, 600.0), Planned("C2", 1, 300.0), Planned("C3", 2, 480.0),
               Planned("C4", 3, 30.0), Planned("C5", 4, 900.0)]
    run, skipped = select_within_budget(planned, 900.0)
    assert [p.claim_id for p in run] == ["C4", "C2", "C3"]  # 30 + 300 + 480 = 810 s
    assert skipped == {"C1": "needs ~10 min, 90 s of budget left",
                       "C5": "needs ~15 min, 90 s of budget left"}
    assert sum(p.expected_s for p in run) <= 900.0


def test_budget_ties_run_in_prompt_order_and_zero_or_a_limit_skip_with_reasons():
    planned = [Planned("C2", 1, 60.0), Planned("C1", 0, 60.0)]
    assert [p.claim_id for p in select_within_budget(planned, 120.0)[0]] == ["C1", "C2"]
    run, skipped = select_within_budget(planned, 0.0)
    assert run == [] and set(skipped.values()) == {"re-tests off (--retest-budget 0)"}
    run, skipped = select_within_budget(planned, 3600.0, limit=1)
    assert [p.claim_id for p in run] == ["C1"] and "--retest-limit" in skipped["C2"]
    assert skip_reason(600, -5) == "needs ~10 min, 0 s of budget left"


def test_costs_order_the_seed_recipes_and_a_measured_time_wins(registry):
    by_kind = {r.kind: r for r in registry}
    verify, dpo, dose = (by_kind["self_verification"], by_kind["sft_vs_dpo"],
                         by_kind["dose_response"])
    costs = [expected_seconds(r, 40) for r in (verify, dpo, dose)]
    assert costs == sorted(costs) and costs[0] < 120 < costs[1]
    # The measurements on 2 cores: ~8 and ~10 minutes; the estimate is within 2x.
    assert 240 <= costs[1] <= 960 and 300 <= costs[2] <= 1200
    assert expected_seconds(dose, 40, {cost_key(dose, 40): 42.0}) == 42.0
    assert expected_seconds(dose, 40, {cost_key(dose, 5): 42.0}) != 42.0


def test_work_keys_are_per_claim_spec_and_size(registry):
    spec = next(r for r in registry if r.kind == "dose_response")
    a = work_key(spec, "Fine-tuned models memorize repeated items.", 40)
    b = work_key(spec, "RL fine-tuning sharpens templates.", 40)
    assert a != b and a.startswith(spec.name) and b.startswith(spec.name)
    assert work_key(spec, "Fine-tuned  models memorize repeated items.", 40) == a  # spacing
    assert work_key(spec, "Fine-tuned models memorize repeated items.", 5) != a
    assert "/" not in a and a.endswith("__n40")
    # By default a re-test runs at the sizes its spec fixed in advance: its own folder and cost.
    spec_size = work_key(spec, "Fine-tuned models memorize repeated items.", None)
    assert spec_size.endswith("__nspec") and spec_size != a
    assert cost_key(spec, None) != cost_key(spec, 40)


def test_estimate_at_spec_sizes_uses_the_declared_test_items(registry):
    verify = next(r for r in registry if r.kind == "self_verification")  # declares 120 items
    assert expected_seconds(verify, None) == expected_seconds(verify, 120)
    assert expected_seconds(verify, None) > expected_seconds(verify, 40)


def test_headline_reads_the_quantity_each_rule_reads():
    dose = {"recipe": "dose_response", "counts": {"test_items": 60},
            "gap_by_dose": [{"dose": 0.25, "gap": 0.1, "ci": [-0.1, 0.3], "p_value": 0.3},
                            {"dose": 1.0, "gap": 0.4, "ci": [0.23, 0.57], "p_value": 0.0002}]}
    assert headline(dose) == {"effect": 0.4, "ci": [0.23, 0.57], "p_value": 0.0002,
                              "p_source": "recipe", "n": 60}
    verify = {"recipe": "self_verification", "n": 120,
              "gap": {"diff": 0.5, "ci": [0.4, 0.6]},
              "self_verification_gain": {"diff": 0.1, "ci": [0.0, 0.2]}}
    got = headline(verify)
    assert got["effect"] == 0.1 and got["n"] == 120 and got["p_source"] == CI_APPROX
    assert got["p_value"] == pytest.approx(0.05, abs=0.001)  # a CI touching 0 sits at p ~ 0.05
    assert headline({"gap": {"gap": None, "ci": None}})["p_value"] is None
    assert p_from_ci(0.0, [-0.1, 0.1]) == pytest.approx(1.0)


def _rt(p, ci, raw):
    return {"p_value": p, "ci": ci, "supports_claim": raw, "supports_claim_raw": raw}


def test_holm_reads_supports_claim_at_the_adjusted_p():
    out = holm_read({"C1": _rt(0.03, [0.01, 0.3], True), "C2": _rt(0.04, [-0.3, -0.01], False),
                     "C3": _rt(0.9, [-0.02, 0.02], False), "C4": _rt(None, None, None)})
    assert out["C1"]["p_holm"] == pytest.approx(0.09)  # 3 x 0.03
    assert out["C1"]["supports_claim"] is None and out["C1"]["supports_claim_raw"] is True
    assert out["C2"]["supports_claim"] is None and out["C2"]["p_holm"] == pytest.approx(0.09)
    assert out["C3"]["supports_claim"] is False  # equivalence, not significance: it stands
    assert out["C4"]["p_holm"] is None and "not part" in out["C4"]["holm_note"]
    # The self-verification rule's true ("gap CI below +margin") does not rest on p: it stands.
    verify = holm_read({"C1": _rt(0.03, [-0.3, -0.1], True), "C2": _rt(0.04, [0.1, 0.3], True)})
    assert verify["C1"]["supports_claim"] is True and verify["C2"]["supports_claim"] is None
    strong = holm_read({"C1": _rt(0.001, [0.2, 0.5], True), "C2": _rt(0.6, [-0.2, 0.3], None)})
    assert strong["C1"]["supports_claim"] is True and strong["C1"]["p_holm"] == 0.002
    # pass@k's false ("the k=64 gain persists": its CI above 0) is a significance reading too.
    persists = holm_read({"C1": _rt(0.03, [0.05, 0.6], False), "C2": _rt(0.04, [0.2, 0.5], True),
                          "C3": _rt(0.001, [0.1, 0.6], False)})
    assert persists["C1"]["supports_claim"] is None
    assert persists["C1"]["p_holm"] == pytest.approx(0.06)  # 2 x 0.03
    assert persists["C3"]["supports_claim"] is False  # 3 x 0.001: still significant
    alone = holm_read({"C1": _rt(0.07, [0.01, 0.3], True)})  # one re-test: nothing to correct
    assert alone["C1"]["supports_claim"] is True and alone["C1"]["p_holm"] == 0.07


def test_registry_reads_claim_kinds_roles_and_training(registry):
    assert registry and all(r.claim_kinds and r.description for r in registry)
    by_name = {r.name: r for r in registry}
    assert by_name["finetune_dose_response"].finetunes and by_name["finetune_sft_vs_dpo"].finetunes
    assert not by_name["self_verification_gap"].finetunes
    # Controlled recipes decide; the cross-family dedup evaluations only describe.
    assert by_name["finetune_dose_response"].decides and not by_name["quartz_dedup"].decides


def test_report_lines_show_design_n_effect_ci_both_p_decides_and_plot():
    from agent.retest_report import budget_json, budget_line, retest_json, retest_lines

    ran = {"spec": "finetune_dose_response.toml", "summary": {"recipe": "dose_response"},
           "supports_claim": None, "supports_claim_raw": True, "decides": True,
           "design": "SmolLM2 LoRA-SFT at doses 0/0.25/1; planted vs novel items", "n": 60,
           "effect": 0.4, "ci": [0.23, 0.57], "p_value": 0.03, "p_source": "recipe",
           "p_holm": 0.09, "holm_note": "Holm-adjusted over 3 re-tests in this report",
           "expected_s": 636.0, "wall_s": 598.0, "reused": False,
           "plots": ["retests/C1/dose_response.png"]}
    plan = {"claim_id": "C3", "spec": "finetune_sft_vs_dpo", "status": "skipped: x",
            "decides": True, "description": "SFT vs DPO on the same budget", "expected_s": 407.0,
            "skipped_reason": "needs ~7 min, 2 min of budget left"}
    c1 = retest_json(None, ran, 900.0)
    c3 = retest_json(plan, None, 900.0)
    assert c1["budget_s"] == 900.0 and c1["skipped_reason"] is None
    assert c3["skipped_reason"] == plan["skipped_reason"] and c3["summary"] == {}
    assert c3["spec"] == "finetune_sft_vs_dpo.toml" and c3["p_holm"] is None
    assert retest_json({**plan, "status": "failed: boom"}, None, 900.0) is None
    md = "\n".join(retest_lines("C1", c1, str))
    assert "controlled comparison: decides the verdict" in md
    assert "- Design: SmolLM2 LoRA-SFT at doses 0/0.25/1; planted vs novel items" in md
    assert "n = 60; effect +40.0 points [+23.0, +57.0] (95% CI); p = 0.0300" in md
    assert "Holm-adjusted p = 0.0900" in md and "Reading: inconclusive; ran in 10 min" in md
    assert "![dose_response.png](retests/C1/dose_response.png)" in md
    skipped = "\n".join(retest_lines("C3", c3, str))
    assert "**skipped**: needs ~7 min, 2 min of budget left." in skipped
    block = budget_json([{"id": "C1", "retest": c1}, {"id": "C3", "retest": c3},
                         {"id": "C5", "retest": None}], 900.0)
    assert block == {"budget_s": 900.0, "spent_s": 598.0, "ran": ["C1"], "reread": [],
                     "reused": [], "skipped": {"C3": "needs ~7 min, 2 min of budget left"}}
    assert budget_line(block) == ("Re-tests: 1 ran and 0 reused finished results, in 10 min of "
                                  "a 15 min budget (cheapest first); skipped: C3 (needs ~7 "
                                  "min, 2 min of budget left).")
    reread = budget_json([{"id": "C1", "retest": {**c1, "reread": True, "wall_s": 27.0}}], 900.0)
    assert reread["ran"] == [] and reread["reread"] == ["C1"]
    assert budget_line(reread).startswith("Re-tests: 0 ran, 1 read an earlier run's answers "
                                          "again by today's rules and 0 reused finished results")


@pytest.mark.parametrize("budget", ["45", "ten minutes", "-1m"])
def test_cli_refuses_a_bad_budget_in_one_line_with_exit_2(budget, tmp_path, capsys):
    from agent.cli import main

    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Dated claims:\n- Fine-tuned models memorize repeated items (~2024).\n",
                      encoding="utf-8")
    assert main(["report", str(prompt), "--offline", "--retest-budget", budget]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "--retest-budget" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out").exists()


def test_summary_lines_said_in_the_claim_block_are_not_repeated():
    from agent.retest_report import drop_repeated_lines

    lines = ["Design: SFT on planted items", "", "Controlled comparison: it may decide a verdict.",
             "", "supports_claim: **True**.", "", "| dose | acc |"]
    assert drop_repeated_lines(lines) == ["supports_claim: **True**.", "", "| dose | acc |"]
