"""Does tuning on items teach a procedure or a template? Tuned vs base on N-1 variants (claim 2).

The claim under test: "fine-tuning (RL/GRPO in the source) sharpens template-matching rather than
installing a procedure: the tuned model drops sharply on N-1 variants of the problems it was
tuned on". Design (fixed by the spec's ``[transfer]`` and ``[finetune]`` tables):

1. ``items`` GSM8K training-side items are picked in seeded-hash order among those that
   ``primary_kind`` can rewrite (for ``numbers``: new numbers, answer recomputed from the
   solution's calculator annotations, :mod:`evals.variants`).
2. The base is LoRA-fine-tuned on those originals (question -> "The answer is N.", the SFT rows of
   :mod:`evals.recipes.contamination`). This is supervised tuning, not RL; it is the cheapest way
   on two CPU cores to give a model items it has been trained on.
3. Base and tuned model answer each original and each of its variants (greedy, the eval runner).
4. Per item, a model's drop = correct on the original minus correct on its ``primary_kind``
   variant; the effect is the tuned drop minus the base drop, paired by item, with a bootstrap
   CI and a sign-flip p (:func:`evals.stats.paired_difference`).

``supports_claim`` follows :func:`evals.stats.supports_claim` on that effect: true when its 95%
CI lies above 0, false when below 0 (either only when its sign-flip p < 0.05 agrees) or within
+-5 points with power for 10, else null.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from core.errors import BadInputError
from core.settings import Settings
from evals import stats
from evals.items import Item
from evals.recipes import contamination as cont
from evals.recipes.common import (
    correct_by_item,
    generation_settings,
    load_items,
    lowered_size,
    serve,
)
from evals.recipes.finetune import finetune
from evals.recipes.spec import LoadedRecipe
from evals.runner import Task, read_results, run_eval
from evals.stages import Stages
from evals.variants import Variant, VariantReport, make_variants
from tools.embedded_models import EMBEDDED_MODELS

log = logging.getLogger(__name__)

PLOT = "template_transfer.png"


def pick_items(pool: list[Item], n: int, kinds: list[str], primary: str,
               seed: int) -> tuple[list[Item], dict[str, list[Variant]], VariantReport]:
    """Return the first ``n`` items (seeded-hash order) that ``primary`` can rewrite.

    Also returns each picked item's variants of every kind (by item id) and the report of what
    was made and skipped, so the summary says how many candidates were passed over.
    """
    order = sorted(pool, key=lambda i: hashlib.sha256(f"{seed}\x00{i.id}".encode()).digest())
    report = VariantReport()
    picked: list[Item] = []
    variants: dict[str, list[Variant]] = {}
    for item in order:
        if len(picked) >= n:
            break
        made = make_variants(item, kinds, seed, report)
        if any(v.kind == primary for v in made):
            picked.append(item)
            variants[item.id] = made
    return picked, variants, report


def drops(records: list[dict[str, Any]], model: str, ids: list[str],
          kind: str) -> dict[str, float]:
    """Return ``{item id: correct(original) - correct(kind variant)}`` where both were answered."""
    orig = correct_by_item(records, model, [f"{i}::original" for i in ids])
    var = correct_by_item(records, model, [f"{i}::{kind}" for i in ids])
    return {i: orig[f"{i}::original"] - var[f"{i}::{kind}"] for i in ids
            if f"{i}::original" in orig and f"{i}::{kind}" in var}


def drop_difference(tuned: dict[str, float], base: dict[str, float], *,
                    seed: int = 0) -> dict[str, Any]:
    """Return the tuned drop minus the base drop over items both have, with CI and p."""
    both = sorted(set(tuned) & set(base))
    return stats.paired_difference([tuned[i] for i in both], [base[i] for i in both], seed=seed)


def run(loaded: LoadedRecipe, out: Path, settings: Settings, timed: Stages, *,
        limit: int | None, progress: bool) -> dict[str, Any]:
    """Tune the base on original items; compare tuned and base drops on their N-1 variants."""
    spec, t = loaded.spec, loaded.spec.transfer
    if spec.finetune.method != "sft":
        raise BadInputError(f"spec {loaded.source.name}: template_transfer trains with "
                            "method = 'sft'")
    with timed("load"):
        train, _ = load_items(loaded)
        n = lowered_size(t.items, limit)
        items, variants, report = pick_items(train, n, t.variant_kinds, t.primary_kind,
                                             spec.seed)
        if len(items) < 2:
            raise BadInputError(f"spec {loaded.source.name}: only {len(items)} items have a "
                                f"'{t.primary_kind}' variant")
        tasks = [Task(item, item.id, "original", "original") for item in items]
        tasks += [Task(v.item, v.parent_id, v.kind, "variant")
                  for item in items for v in variants[item.id]]
    with timed("train"):
        rows = cont.sft_rows(items, spec.scoring)
        tuned = finetune(rows, spec.finetune, out / "models" / "tuned", settings=settings,
                         extra_manifest={"recipe": spec.recipe,
                                         "dataset": spec.dataset.model_dump(),
                                         "trained_ids": [i.id for i in items]},
                         progress=progress)
    name = f"tuned@{str(tuned.manifest['fingerprint'])[:8]}"
    base_model = spec.finetune.base_model
    refs: dict[str, str | Path] = {
        "base": base_model if base_model in EMBEDDED_MODELS else Path(base_model),
        name: tuned.model_dir}
    results = out / "results.jsonl"
    for label, ref in refs.items():
        with timed(f"run:{label}"), serve(settings, ref, label,
                                          generation_settings(spec)) as sampler:
            run_eval(tasks, [sampler], spec.scoring, results,
                     concurrency=spec.generation.concurrency, progress=progress)
    records = read_results(results)
    ids = [i.id for i in items]
    with timed("summarize"):
        summary = _summarize(loaded, records, ids, name, tuned.manifest, report)
        plot_bars(summary, out / PLOT)
    return summary


def _summarize(loaded: LoadedRecipe, records: list[dict[str, Any]], ids: list[str],
               name: str, manifest: dict[str, Any], report: VariantReport) -> dict[str, Any]:
    spec, t = loaded.spec, loaded.spec.transfer
    seed = spec.seed
    accuracy: dict[str, dict[str, Any]] = {}
    for label, who in (("base", "base"), ("tuned", name)):
        accuracy[label] = {variant: stats.accuracy(list(correct_by_item(
            records, who, [f"{i}::{variant}" for i in ids]).values()), seed=seed)
            for variant in ("original", *t.variant_kinds)}
    by_kind = {}
    for kind in t.variant_kinds:
        tuned_drop, base_drop = drops(records, name, ids, kind), drops(records, "base", ids, kind)
        by_kind[kind] = {
            "tuned_drop": stats.accuracy(list(tuned_drop.values()), seed=seed),
            "base_drop": stats.accuracy(list(base_drop.values()), seed=seed),
            "tuned_minus_base": drop_difference(tuned_drop, base_drop, seed=seed)}
    effect = by_kind[t.primary_kind]["tuned_minus_base"]
    supports = stats.supports_claim({"gap": effect})
    design = (f"{spec.finetune.base_model} LoRA SFT ({spec.finetune.max_steps} steps) on "
              f"{len(ids)} GSM8K train items (question -> 'The answer is N.'; supervised, not "
              f"RL) vs the same untuned base, both asked those originals and their N-1 variants "
              f"({', '.join(t.variant_kinds)}); effect = tuned drop minus base drop "
              f"(original - {t.primary_kind} variant), paired by item.")
    return {
        "decides": True,
        "design": design,
        "rule": ("supports_claim reads the tuned model's drop (original minus "
                 f"{t.primary_kind} variant) minus the base model's drop, paired by item: true "
                 "when its 95% CI lies above 0, false when below 0 (either only when its "
                 "sign-flip p < 0.05 agrees) or within +-5 points with power for 10, else "
                 "null."),
        "models": {"base": spec.finetune.base_model, "tuned": name},
        "n": effect["n"],
        "accuracy": accuracy,
        "by_kind": by_kind,
        "effect": {"name": f"tuned drop minus base drop ({t.primary_kind} variants)",
                   "diff": effect["diff"], "ci": effect["ci"]},
        "p_value": effect.get("p_value"),
        "supports_claim": supports,
        "headline": {"name": f"tuned drop minus base drop on {t.primary_kind} variants",
                     "effect": effect["diff"], "ci": effect["ci"],
                     "p_value": effect.get("p_value"), "n": effect["n"],
                     "supports_claim": supports},
        "variants": report.as_dict(),
        "training": {"items": len(ids), "first_loss": manifest.get("first_loss"),
                     "last_loss": manifest.get("last_loss"), "wall_s": manifest.get("wall_s"),
                     "model_dir": manifest.get("model_dir")},
        "plot": PLOT,
    }


def render_lines(summary: dict[str, Any]) -> list[str]:
    """Return Markdown rows: accuracy per model and variant, and the drops per kind."""
    def pct(value: Any) -> str:
        return "n/a" if value is None else f"{100 * float(value):.1f}"

    lines = []
    for who, row in summary["accuracy"].items():
        lines.append(f"- {who}: " + "; ".join(
            f"{variant} {pct(c['accuracy'])} [{pct(c['ci'][0])}, {pct(c['ci'][1])}] (n={c['n']})"
            for variant, c in row.items()))
    for kind, block in summary["by_kind"].items():
        diff = block["tuned_minus_base"]
        p = diff.get("p_value")
        lines.append(f"- {kind}: tuned drop {pct(block['tuned_drop']['accuracy'])}, base drop "
                     f"{pct(block['base_drop']['accuracy'])}; tuned minus base "
                     f"{pct(diff['diff'])} [{pct(diff['ci'][0])}, {pct(diff['ci'][1])}] points"
                     + ("" if p is None else f", p = {p:.4f}"))
    return lines


def plot_bars(summary: dict[str, Any], path: Path) -> None:
    """Draw accuracy on originals and on each variant kind for base and tuned, with 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    variants = list(next(iter(summary["accuracy"].values())))
    x = np.arange(len(variants))
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for offset, who in ((-0.2, "base"), (0.2, "tuned")):
        cells = [summary["accuracy"][who][v] for v in variants]
        mean = np.array([c["accuracy"] if c["accuracy"] is not None else np.nan for c in cells])
        low = np.array([c["ci"][0] if c["ci"][0] is not None else np.nan for c in cells])
        high = np.array([c["ci"][1] if c["ci"][1] is not None else np.nan for c in cells])
        ax.bar(x + offset, mean, width=0.4, label=who,
               yerr=[np.nan_to_num(mean - low), np.nan_to_num(high - mean)], capsize=3)
    ax.set_xticks(x, variants)
    ax.set_ylabel("accuracy on the trained items")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
