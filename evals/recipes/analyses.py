"""The three recipe runners and their outputs (``summary.json``, ``summary.md``, a plot).

Each runner takes a loaded recipe, the output folder, settings and a stage timer, and returns the
summary dict; :func:`evals.recipes.run.run_recipe` adds the spec block and writes it.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.fsutil import atomic_write_text
from core.settings import Settings
from evals import stats
from evals.recipes import contamination as cont
from evals.recipes import passk, selfverify, template_transfer
from evals.recipes.common import (
    correct_by_item,
    gap_entry,
    generation_settings,
    load_items,
    lowered_size,
    pick_test_items,
    serve,
    train_models,
)
from evals.recipes.spec import LoadedRecipe, RecipeSpec
from evals.runner import Task, read_results, run_eval
from evals.stages import Stages
from evals.variants import make_variants
from tools.embedded_models import EMBEDDED_MODELS

log = logging.getLogger(__name__)

DOSE_RULE = ("supports_claim reads the memorization gap at the largest dose: true when its 95% "
             "CI lies above 0, false when below 0 (either only if its permutation p < 0.05 agrees) "
             "or inside +-5 points with power for a 10-point gap, else null (inconclusive).")


def _base_ref(loaded: LoadedRecipe) -> str | Path:
    base = loaded.spec.finetune.base_model
    return base if base in EMBEDDED_MODELS else Path(base)


def _run_models(loaded: LoadedRecipe, tasks: list[Task], models: dict[str, Path | str],
                results: Path, settings: Settings, timed: Stages, progress: bool) -> None:
    """Serve each model in turn (fine-tuned folders stopped after use) and answer ``tasks``."""
    spec = loaded.spec
    for name, ref in models.items():
        with timed(f"run:{name}"), serve(settings, ref, name, generation_settings(spec)) as sampler:
            run_eval(tasks, [sampler], spec.scoring, results,
                     concurrency=spec.generation.concurrency, progress=progress)


def _model_name(label: str, manifest: dict[str, Any]) -> str:
    # The fingerprint in the name keeps a retrained model from resuming an old model's answers.
    return f"{label}@{str(manifest['fingerprint'])[:8]}"


def dose_response(loaded: LoadedRecipe, out: Path, settings: Settings, timed: Stages, *,
                  limit: int | None, progress: bool) -> dict[str, Any]:
    """Fine-tune at each dose; compare repeated (planted) with novel (control) items per dose."""
    spec = loaded.spec
    with timed("load"):
        _, test = load_items(loaded)
        test_items = pick_test_items(test, lowered_size(spec.contamination.test_items, limit),
                                     spec.seed)
    with timed("train"):
        trained = train_models(loaded, out, settings, limit=limit, progress=progress)
    names = {label: _model_name(label, r.manifest) for label, r in trained.items()}
    tasks = [Task(item, item.id, "original", "test") for item in test_items]
    results = out / "results.jsonl"
    refs: dict[str, Path | str] = {"base": _base_ref(loaded)}
    refs.update({names[label]: r.model_dir for label, r in trained.items()})
    _run_models(loaded, tasks, refs, results, settings, timed, progress)
    records = read_results(results)
    per_dose = []
    with timed("summarize"):
        for dose, label in zip(spec.contamination.doses, trained, strict=True):
            plan = cont.plan_contamination([t.id for t in test_items], dose, spec.seed,
                                           control_fraction=spec.contamination.control_fraction)
            per_dose.append(_dose_summary(records, plan, names[label], trained[label].manifest,
                                          spec.seed))
    largest = max((d for d in per_dose if d["n_planted"]), key=lambda d: d["dose"], default=None)
    n_control = len(cont.plan_contamination([t.id for t in test_items], 0.0, spec.seed,
                                            control_fraction=spec.contamination.control_fraction
                                            ).control_ids)
    head = {} if largest is None else {**largest["gap"],
                                       "n": largest["n_planted"] + n_control}
    return {
        "decides": True,
        "design": dose_design(spec, len(test_items), n_control),
        "headline": _headline("memorization gap at the largest dose (planted minus "
                              "never-planted advantage over the base)", head, "gap",
                              largest["supports_claim"] if largest else None),
        "doses": per_dose,
        "gap_by_dose": [{"dose": d["dose"], **d["gap"]} for d in per_dose],
        "supports_claim": largest["supports_claim"] if largest else None,
        "rule": DOSE_RULE,
        "counts": {"test_items": len(test_items), "budget": spec.contamination.budget},
        "training_wall_s": {k: r.manifest["wall_s"] for k, r in trained.items()},
    }


def dose_design(spec: RecipeSpec, n_test: int, n_control: int) -> str:
    """Return the one-line design of a dose-response run (what was trained on what)."""
    c, ft = spec.contamination, spec.finetune
    tuning = f"LoRA-{ft.method.upper()}" if ft.lora else f"full-weight {ft.method.upper()}"
    return (f"{ft.base_model} {tuning} once per dose {list(c.doses)} on {c.budget} training "
            f"items with that share of a {n_test - n_control}-item test pool planted "
            f"({c.copy_kind}), {ft.max_steps} steps each; compared: tuned minus untuned base "
            f"accuracy on planted vs {n_control} never-planted test items.")


def sft_dpo_design(spec: RecipeSpec, n_planted: int, n_unseen: int) -> str:
    """Return the one-line design of an SFT-vs-DPO run (what was trained on what)."""
    ft = spec.finetune
    return (f"{ft.base_model} trained twice on the same {spec.contamination.budget} items "
            f"({n_planted} test items among them), {ft.max_steps} steps each: SFT on the right "
            f"answers vs DPO against {spec.dpo.rejected.replace('_', ' ')} rejected answers; "
            f"compared: DPO minus SFT, paired by item, on {n_unseen} unseen items (novel + "
            f"variants).")


def _keys(ids: tuple[str, ...] | list[str], variant: str = "original") -> list[str]:
    return [f"{i}::{variant}" for i in ids]


def _dose_summary(records: list[dict[str, Any]], plan: cont.ContaminationPlan, model: str,
                  manifest: dict[str, Any], seed: int) -> dict[str, Any]:
    rep, nov, pool = _keys(plan.planted_ids), _keys(plan.control_ids), _keys(plan.pool_ids)
    entry: dict[str, Any] = {
        "dose": plan.dose, "model": model, "n_planted": len(plan.planted_ids),
        "planted_ids": list(plan.planted_ids), "manifest": manifest.get("model_dir"),
        "train_loss": {"first": manifest.get("first_loss"), "last": manifest.get("last_loss")},
        "accuracy": {}, "base_accuracy": {},
    }
    for split, keys in (("repeated", rep), ("novel", nov), ("pool", pool)):
        for field, who in (("accuracy", model), ("base_accuracy", "base")):
            values = list(correct_by_item(records, who, keys).values())
            entry[field][split] = stats.accuracy(values, seed=seed)
    if not plan.planted_ids:
        entry["gap"] = {"gap": None, "ci": None, "p_value": None, "supports_claim": None}
        entry["supports_claim"] = None
        return entry
    table = {(who, split): correct_by_item(records, who, keys)
             for who in (model, "base") for split, keys in (("repeated", rep), ("novel", nov))}
    summary = stats.summarize(table, seen="repeated", unseen="novel", base="base",
                              fine_tuned=model, seed=seed)
    entry["gap"] = gap_entry(summary)
    entry["paired_difference"] = summary["paired_difference"]
    entry["power_warnings"] = summary["power_warnings"]
    entry["supports_claim"] = summary["supports_claim"]
    return entry


def sft_vs_dpo(loaded: LoadedRecipe, out: Path, settings: Settings, timed: Stages, *,
               limit: int | None, progress: bool) -> dict[str, Any]:
    """Train SFT and DPO on the same items; compare them on novel items and N-1 variants."""
    spec = loaded.spec
    with timed("load"):
        _, test = load_items(loaded)
        test_items = pick_test_items(test, lowered_size(spec.contamination.test_items, limit),
                                     spec.seed)
        plan = cont.plan_contamination([t.id for t in test_items],
                                       max(spec.contamination.doses), spec.seed,
                                       control_fraction=spec.contamination.control_fraction)
        by_id = {t.id: t for t in test_items}
        tasks = [Task(by_id[i], i, "original", "novel") for i in plan.control_ids]
        tasks += [Task(by_id[i], i, "original", "repeated") for i in plan.planted_ids]
        for i in plan.planted_ids:
            for v in make_variants(by_id[i], spec.compare.variant_kinds, spec.seed):
                tasks.append(Task(v.item, v.parent_id, v.kind, "variant"))
    with timed("train"):
        trained = train_models(loaded, out, settings, limit=limit, progress=progress)
    names = {label: _model_name(label, r.manifest) for label, r in trained.items()}
    refs: dict[str, Path | str] = {"base": _base_ref(loaded)}
    refs.update({names[label]: r.model_dir for label, r in trained.items()})
    results = out / "results.jsonl"
    _run_models(loaded, tasks, refs, results, settings, timed, progress)
    records = read_results(results)
    splits = {s: [t.pair_key for t in tasks if t.split == s]
              for s in ("novel", "variant", "repeated")}
    accuracy = {who: {s: stats.accuracy(list(correct_by_item(records, who, k).values()),
                                        seed=spec.seed)
                      for s, k in splits.items()} for who in ("base", *names.values())}
    sft, dpo = names["sft"], names["dpo"]
    diffs = {s: _paired(records, dpo, sft, k, spec.seed) for s, k in splits.items()}
    unseen = splits["novel"] + splits["variant"]
    diffs["unseen"] = _paired(records, dpo, sft, unseen, spec.seed)
    supports = stats.supports_claim({"gap": diffs["unseen"]})
    return {
        "decides": True,
        "design": sft_dpo_design(spec, len(plan.planted_ids), len(unseen)),
        "headline": _headline("DPO minus SFT on unseen items (novel + variants)",
                              diffs["unseen"], "diff", supports),
        "models": {"sft": sft, "dpo": dpo, "base": "base"},
        "accuracy": accuracy,
        "dpo_minus_sft": diffs,
        "gap": diffs["unseen"],
        "supports_claim": supports,
        "rule": ("supports_claim reads DPO minus SFT on unseen items (novel + variants), paired "
                 "by item, with the memorization-gap CI rule of evals.stats."),
        "counts": {s: len(k) for s, k in splits.items()},
        "dpo_rejected": trained["dpo"].manifest.get("dpo_rejected"),
        "training_wall_s": {k: r.manifest["wall_s"] for k, r in trained.items()},
    }


def _paired(records: list[dict[str, Any]], a: str, b: str, keys: list[str],
            seed: int) -> dict[str, Any]:
    got_a, got_b = correct_by_item(records, a, keys), correct_by_item(records, b, keys)
    both = [k for k in keys if k in got_a and k in got_b]
    return stats.paired_difference([got_a[k] for k in both], [got_b[k] for k in both], seed=seed)


def self_verification(loaded: LoadedRecipe, out: Path, settings: Settings, timed: Stages, *,
                      limit: int | None, progress: bool) -> dict[str, Any]:
    """Let one model answer, then score its own answers; measure the verification gap."""
    spec = loaded.spec
    with timed("load"):
        _, test = load_items(loaded)
        items = pick_test_items(test, lowered_size(spec.contamination.test_items, limit), spec.seed)
    tasks = [Task(item, item.id, "original", "test") for item in items]
    ref: str | Path = spec.model.model if spec.model.model in EMBEDDED_MODELS else \
        Path(spec.model.model)
    results, scores_path = out / "results.jsonl", out / "verifier_scores.jsonl"
    gen = generation_settings(spec)
    with serve(settings, ref, "answer", gen) as sampler:
        with timed("answer"):
            run_eval(tasks, [sampler], spec.scoring, results,
                     concurrency=spec.generation.concurrency, progress=progress)
        answers = {str(r["item_id"]): r for r in read_results(results) if r["model"] == "answer"}
        with timed("verify"):
            scored = _score_answers(sampler, items, answers, scores_path,
                                    spec.generation.concurrency, progress)
    answered = [i for i in items if i.id in answers and i.id in scored]
    calib = selfverify.calibration_ids([i.id for i in answered],
                                       spec.verify.calibration_fraction, spec.seed)
    with timed("summarize"):
        summary = selfverify.verification_gap(
            [bool(answers[i.id]["correct"]) for i in answered],
            [scored[i.id]["score"] for i in answered], [i.id in calib for i in answered],
            margin=spec.verify.margin, seed=spec.seed)
    margin = _pct(spec.verify.margin)
    summary.update({
        "model": str(spec.model.model),
        "decides": True,
        "design": (f"{spec.model.model} answers {len(answered)} items, then scores its own "
                   f"answers (log P(yes) - log P(no)); threshold fixed on "
                   f"{summary['n_calibration']} calibration items; compared on the other "
                   f"{summary['n']}: self-accepted vs all answers (same model, paired by item)."),
        "rule": (f"gap = accuracy of self-accepted answers minus accuracy of all answers on the "
                 f"evaluation items (the threshold maximizes Youden's J on the calibration "
                 f"items); supports_claim ('the model cannot reliably validate its own answers') "
                 f"is true when the gap's 95% CI lies below +{margin} points, false when above, "
                 f"else null; null as well with fewer than {selfverify.MIN_OUTCOMES} right or "
                 f"{selfverify.MIN_OUTCOMES} wrong evaluation answers (untestable)."),
        "headline": _headline("generation-verification gap (self-accepted minus all answers)",
                              summary["gap"], "diff", summary["supports_claim"]),
    })
    return summary


def _headline(name: str, block: dict[str, Any], key: str,
              supports: bool | None) -> dict[str, Any]:
    """Return the uniform block a report reads: the effect the rule reads, CI, p and n."""
    return {"name": name, "effect": block.get(key), "ci": block.get("ci"),
            "p_value": block.get("p_value"), "n": block.get("n"), "supports_claim": supports}


def _score_answers(sampler: Any, items: list[Any], answers: dict[str, dict[str, Any]],
                   path: Path, concurrency: int, progress: bool) -> dict[str, dict[str, Any]]:
    """Score each answer with the model's own verifier; append score lines (resumable)."""
    done = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["item_id"]] = row
    todo = [i for i in items if i.id in answers and i.id not in done]
    options = [*selfverify.YES_OPTIONS, *selfverify.NO_OPTIONS]

    def ask(item: Any) -> dict[str, Any]:
        prompt = selfverify.judge_prompt(item, str(answers[item.id]["prediction"]))
        reply = sampler.option_logprobs(prompt, options)
        logprobs = list(reply.option_logprobs or [])
        return {"item_id": item.id, "options": options, "logprobs": logprobs,
                "score": selfverify.verifier_score(logprobs)}

    with ThreadPoolExecutor(max_workers=concurrency) as pool, path.open("a") as handle:
        for row in tqdm(pool.map(ask, todo), total=len(todo), desc="verify",
                        disable=not progress, leave=False):
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            done[row["item_id"]] = row
    return done


def write_recipe_outputs(summary: dict[str, Any], out: Path) -> None:
    """Write ``summary.json``, ``summary.md`` and, for dose-response, ``dose_response.png``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "summary.md", render_markdown(summary))
    if summary.get("recipe") == "dose_response":
        _plot_doses(summary, out / "dose_response.png")
    elif summary.get("recipe") == "self_verification":
        _plot_curve(summary, out / "self_verification.png")


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}"


def _acc(cell: dict[str, Any]) -> str:
    if not cell.get("n"):  # e.g. dose 0 plants no item: nothing was measured, not "n/a [n/a]"
        return "none (n=0)"
    ci = cell.get("ci") or [None, None]
    return f"{_pct(cell.get('accuracy'))} [{_pct(ci[0])}, {_pct(ci[1])}] (n={cell.get('n')})"


def render_markdown(summary: dict[str, Any]) -> str:
    """Render a recipe summary as short Markdown (percentages, 95% CIs)."""
    lines = [f"# Recipe {summary['recipe']}: {summary['spec']['description']}", "",
             f"Design: {summary.get('design', 'n/a')}", "",
             "Controlled comparison: it may decide a verdict." if summary.get("decides") else
             "Descriptive only: it does not decide a verdict.", "",
             f"supports_claim: **{summary['supports_claim']}**. {summary.get('rule', '')}", ""]
    if summary.get("untestable"):
        lines += [f"**{summary['untestable']}.**", ""]
    head = summary.get("headline") or {}
    if head.get("effect") is not None:
        ci = head.get("ci") or [None, None]
        p = head.get("p_value")
        lines += [f"Headline: {head['name']} {_pct(head['effect'])} points, 95% CI "
                  f"[{_pct(ci[0])}, {_pct(ci[1])}], "
                  f"p = {'n/a' if p is None else f'{p:.4f}'}, n = {head.get('n')}.", ""]
    if summary["recipe"] == "dose_response":
        lines += ["| dose | repeated acc % | novel acc % | base repeated % | base novel % | gap |",
                  "|---|---|---|---|---|---|"]
        for d in summary["doses"]:
            acc, base = d["accuracy"], d["base_accuracy"]
            gap = d["gap"]
            gap_txt = "n/a" if gap["gap"] is None else \
                f"{_pct(gap['gap'])} [{_pct(gap['ci'][0])}, {_pct(gap['ci'][1])}]"
            lines.append(f"| {d['dose']} | {_acc(acc['repeated'])} | {_acc(acc['novel'])} | "
                         f"{_acc(base['repeated'])} | {_acc(base['novel'])} | {gap_txt} |")
    elif summary["recipe"] == "pass_at_k":
        lines += passk.render_lines(summary)
    elif summary["recipe"] == "template_transfer":
        lines += template_transfer.render_lines(summary)
    elif summary["recipe"] == "sft_vs_dpo":
        for who, row in summary["accuracy"].items():
            lines.append(f"- {who}: " + "; ".join(f"{s} {_acc(c)}" for s, c in row.items()))
        for split, diff in summary["dpo_minus_sft"].items():
            ci = diff.get("ci") or [None, None]
            lines.append(f"- DPO minus SFT on {split}: {_pct(diff.get('diff'))} "
                         f"[{_pct(ci[0])}, {_pct(ci[1])}] points")
    else:
        lines.append(f"- threshold {summary['threshold']:.3f} ({summary['threshold_basis']}); "
                     f"self-accepted {summary['n_self_accepted']} of {summary['n']}")
        for key in ("generation_accuracy", "self_accepted_accuracy",
                    "external_accepted_accuracy", "verification_accuracy"):
            lines.append(f"- {key}: {_acc(summary[key])}")
        for key in ("gap", "shortfall"):
            diff = summary[key]
            ci = diff.get("ci") or [None, None]
            p = diff.get("p_value")
            lines.append(f"- {key}: {_pct(diff.get('diff'))} [{_pct(ci[0])}, {_pct(ci[1])}] "
                         f"points" + ("" if p is None else f", permutation p = {p:.4f}"))
        auc = summary["auroc"]
        if auc.get("auroc") is not None:
            lines.append(f"- AUROC of the verifier score: {auc['auroc']:.3f} "
                         f"[{auc['ci'][0]:.3f}, {auc['ci'][1]:.3f}] (0.5 = chance)")
    return "\n".join(lines) + "\n"


def _plot_doses(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    doses = [d["dose"] for d in summary["doses"]]
    for split in ("repeated", "novel"):
        accs = [d["accuracy"][split]["accuracy"] for d in summary["doses"]]
        ax.plot(doses, [a if a is not None else float("nan") for a in accs], marker="o",
                label=f"fine-tuned, {split}")
    ax.set_xlabel("contamination dose (fraction of pool planted)")
    ax.set_ylabel("accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_curve(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary.get("curve") or [] if r.get("precision") is not None]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    n = max(summary.get("n") or 1, 1)
    ax.plot([r["n_accepted"] / n for r in rows], [r["precision"] for r in rows], marker="o",
            label="self-accepted answers")
    gen = summary["generation_accuracy"]["accuracy"]
    if gen is not None:
        ax.axhline(gen, linestyle="--", color="grey", label="all answers")
    ax.set_xlabel("share of answers the model's verifier accepts")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
