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
from evals.recipes import selfverify
from evals.recipes.common import (
    correct_by_item,
    gap_entry,
    generation_settings,
    load_items,
    pick_test_items,
    serve,
    train_models,
)
from evals.recipes.spec import LoadedRecipe
from evals.runner import Task, read_results, run_eval
from evals.stages import Stages
from evals.variants import make_variants
from tools.embedded_models import EMBEDDED_MODELS

log = logging.getLogger(__name__)

DOSE_RULE = ("supports_claim reads the memorization gap at the largest dose: true when its 95% "
             "CI lies above 0, false when below 0 or inside +-5 points with power for a 10-point "
             "gap, else null (inconclusive).")


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
        test_items = pick_test_items(test, _n(spec.contamination.test_items, limit), spec.seed)
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
    return {
        "doses": per_dose,
        "gap_by_dose": [{"dose": d["dose"], **d["gap"]} for d in per_dose],
        "supports_claim": largest["supports_claim"] if largest else None,
        "rule": DOSE_RULE,
        "counts": {"test_items": len(test_items), "budget": spec.contamination.budget},
        "training_wall_s": {k: r.manifest["wall_s"] for k, r in trained.items()},
    }


def _n(default: int, limit: int | None) -> int:
    return min(default, limit) if limit else default


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
        test_items = pick_test_items(test, _n(spec.contamination.test_items, limit), spec.seed)
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
    return {
        "models": {"sft": sft, "dpo": dpo, "base": "base"},
        "accuracy": accuracy,
        "dpo_minus_sft": diffs,
        "gap": diffs["unseen"],
        "supports_claim": stats.supports_claim({"gap": diffs["unseen"]}),
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
    """Let one model answer, then judge its own answers; measure the verification gap."""
    spec = loaded.spec
    with timed("load"):
        _, test = load_items(loaded)
        items = pick_test_items(test, _n(spec.contamination.test_items, limit), spec.seed)
    tasks = [Task(item, item.id, "original", "test") for item in items]
    ref: str | Path = spec.model.model if spec.model.model in EMBEDDED_MODELS else \
        Path(spec.model.model)
    results, verdicts_path = out / "results.jsonl", out / "verdicts.jsonl"
    gen = generation_settings(spec)
    with serve(settings, ref, "answer", gen) as sampler:
        with timed("answer"):
            run_eval(tasks, [sampler], spec.scoring, results,
                     concurrency=spec.generation.concurrency, progress=progress)
        answers = {str(r["item_id"]): r for r in read_results(results) if r["model"] == "answer"}
        with timed("verify"):
            verdicts = _judge(sampler, items, answers, verdicts_path,
                              spec.generation.concurrency, progress)
    answered = [i for i in items if i.id in answers and i.id in verdicts]
    correct = [bool(answers[i.id]["correct"]) for i in answered]
    accepted = [verdicts[i.id]["accepted"] for i in answered]
    with timed("summarize"):
        summary = selfverify.verification_gap(correct, accepted, seed=spec.seed)
    summary["model"] = str(spec.model.model)
    summary["rule"] = ("gap = accuracy of answers accepted by the exact-match verifier minus "
                       "accuracy of self-accepted answers; supports_claim reads the "
                       "self-verification gain (self-accepted minus all answers) by the CI rule "
                       "of evals.stats.")
    return summary


def _judge(sampler: Any, items: list[Any], answers: dict[str, dict[str, Any]], path: Path,
           concurrency: int, progress: bool) -> dict[str, dict[str, Any]]:
    """Ask the model about each of its answers; append verdict lines (resumable)."""
    done = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["item_id"]] = row
    todo = [i for i in items if i.id in answers and i.id not in done]

    def ask(item: Any) -> dict[str, Any]:
        reply = sampler.generate(selfverify.judge_prompt(item, answers[item.id]["prediction"]))
        return {"item_id": item.id, "reply": reply.text,
                "accepted": selfverify.parse_verdict(reply.text)}

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


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}"


def _acc(cell: dict[str, Any]) -> str:
    ci = cell.get("ci") or [None, None]
    return f"{_pct(cell.get('accuracy'))} [{_pct(ci[0])}, {_pct(ci[1])}] (n={cell.get('n')})"


def render_markdown(summary: dict[str, Any]) -> str:
    """Render a recipe summary as short Markdown (percentages, 95% CIs)."""
    lines = [f"# Recipe {summary['recipe']}: {summary['spec']['description']}", "",
             f"supports_claim: **{summary['supports_claim']}**. {summary.get('rule', '')}", ""]
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
    elif summary["recipe"] == "sft_vs_dpo":
        for who, row in summary["accuracy"].items():
            lines.append(f"- {who}: " + "; ".join(f"{s} {_acc(c)}" for s, c in row.items()))
        for split, diff in summary["dpo_minus_sft"].items():
            ci = diff.get("ci") or [None, None]
            lines.append(f"- DPO minus SFT on {split}: {_pct(diff.get('diff'))} "
                         f"[{_pct(ci[0])}, {_pct(ci[1])}] points")
    else:
        for key in ("generation_accuracy", "self_accepted_accuracy",
                    "external_accepted_accuracy", "verification_accuracy"):
            lines.append(f"- {key}: {_acc(summary[key])}")
        for key in ("gap", "self_verification_gain"):
            diff = summary[key]
            ci = diff.get("ci") or [None, None]
            lines.append(f"- {key}: {_pct(diff.get('diff'))} [{_pct(ci[0])}, {_pct(ci[1])}]")
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
