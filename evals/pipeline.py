"""Run an eval spec end to end: load -> fingerprint -> split -> sample -> run -> summarize.

Each stage is timed and logged. Output goes to one folder: ``results.jsonl`` (one line per item x
model x variant, appended as requests finish, so a rerun resumes), ``summary.json``,
``summary.md`` and ``accuracy.png`` (accuracy by split and model with 95% CI bars). A lock file
keeps two runs from appending to the same results, and ``run.json`` records a fingerprint of the
result-shaping spec fields so a folder never mixes the results of two different specs (a changed
sample size is fine: samples are nested, so a larger one reuses every line).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

from core.errors import BadInputError
from core.fsutil import atomic_write_text, storage_errors
from core.settings import Settings
from evals import stats
from evals.datasets import load_dataset, seeded_split
from evals.dedup import label_test_items
from evals.items import Item
from evals.outputs import write_outputs
from evals.runner import GenerationSettings, OpenAISampler, Task, read_results, run_eval
from evals.spec import EvalSpec, LoadedSpec, ModelSpec, load_spec, spec_summary
from evals.stages import Stages, finite, output_lock
from evals.variants import VariantReport, make_variants
from tools.embedded_models import get_embedded_model
from tools.vllm_server import EmbeddedServer

log = logging.getLogger(__name__)

SEEN_UNSEEN = {"dedup": ("repeated", "novel"), "variants": ("original", "variant")}


def load_items(loaded: LoadedSpec) -> tuple[list[Item], list[Item]]:
    """Return ``(train, test)`` items of the spec's dataset; raise BadInputError when empty."""
    ds = loaded.spec.dataset
    if loaded.data_path is not None:
        items = load_dataset(ds.kind, loaded.data_path, **ds.fields)
        train, test = seeded_split(items, ds.test_fraction, loaded.spec.seed)
    else:
        train = load_dataset(ds.kind, str(loaded.train_path), **ds.fields)
        test = load_dataset(ds.kind, str(loaded.test_path), **ds.fields)
    for name, side in (("train", train), ("test", test)):
        if not side:
            raise BadInputError(f"spec {loaded.source.name}: the {name} side is empty")
    return train, test


def split_test_items(spec: EvalSpec, train: list[Item],
                     test: list[Item]) -> tuple[dict[str, list[Item]], dict[str, Any]]:
    """Label test items against train (dedup mode); return items per split and the dedup summary.

    In variants mode every test item is an ``original``; its rewrites are made after sampling.
    """
    if spec.split.mode == "variants":
        return {"original": list(test)}, {}
    params = spec.dedup
    result = label_test_items([t.prompt for t in train], [t.prompt for t in test],
                              threshold=params.threshold, num_perm=params.num_perm,
                              shingle=params.shingle, n=params.n,
                              mask_numbers=params.mask_numbers)
    splits: dict[str, list[Item]] = {"repeated": [], "novel": []}
    for label in result.items:
        splits[label.label].append(test[label.index])
    return splits, dict(result.summary)


def sample_splits(splits: dict[str, list[Item]], per_split: int, seed: int,
                  spec_name: str) -> dict[str, list[Item]]:
    """Draw up to ``per_split`` items from each split (seeded); raise on an empty split."""
    sampled = {}
    for name, items in splits.items():
        if not items:
            raise BadInputError(f"spec {spec_name}: split '{name}' is empty (no test item is "
                                f"{name}); change the dedup threshold or the dataset")
        # A seeded shuffle cut at per_split: a larger sample extends a smaller one, so raising
        # the knob reuses every result line already written.
        order = list(range(len(items)))
        random.Random(f"{seed}:{name}").shuffle(order)  # noqa: S311 - sampling, not security
        sampled[name] = [items[i] for i in sorted(order[:per_split])]
    return sampled


def build_tasks(spec: EvalSpec, sampled: dict[str, list[Item]]) -> tuple[list[Task], dict]:
    """Turn sampled items into tasks; in variants mode add each item's rewrites."""
    if spec.split.mode == "dedup":
        tasks = [Task(item, item.id, "original", split)
                 for split, items in sampled.items() for item in items]
        return tasks, {}
    tasks, report = [], VariantReport()
    for item in sampled["original"]:
        tasks.append(Task(item, item.id, "original", "original"))
        for variant in make_variants(item, spec.variants.kinds, spec.seed, report):
            tasks.append(Task(variant.item, variant.parent_id, variant.kind, "variant"))
    counts = {"originals": len(sampled["original"]), "variants": len(tasks) -
              len(sampled["original"]), **report.as_dict()}
    if counts["variants"] == 0:
        raise BadInputError("split 'variant' is empty: no sampled item admits the variant kinds "
                            f"{spec.variants.kinds}")
    return tasks, counts


def make_sampler(model: ModelSpec, spec: EvalSpec, settings: Settings) -> OpenAISampler:
    """Build the sampler of one model, starting its embedded server when needed."""
    gen = spec.generation
    settings_gen = GenerationSettings(max_tokens=gen.max_tokens, temperature=gen.temperature,
                                      seed=spec.seed, stop=list(gen.stop),
                                      timeout_s=gen.timeout_s, max_retries=gen.max_retries)
    if model.endpoint == "embedded":
        server = EmbeddedServer(settings, model.model)
        embedded = get_embedded_model(model.model)
        api = model.api if model.api != "auto" else (
            "chat" if embedded.has_chat_template else "completions")
        return OpenAISampler(model.label, server.ensure_running(), embedded.served_name,
                             api=api, gen=settings_gen, restart=server.ensure_running)
    api = "chat" if model.api == "auto" else model.api
    return OpenAISampler(model.label, model.endpoint, model.model, api=api, gen=settings_gen,
                         api_key=model.api_key())


def correctness_table(records: list[dict[str, Any]],
                      tasks: list[Task]) -> dict[tuple[str, str], dict[str, float]]:
    """Index result lines of the current tasks as ``{(model, split): {pair_key: 0/1}}``."""
    wanted = {(t.item_id, t.variant): t for t in tasks}
    table: dict[tuple[str, str], dict[str, float]] = {}
    for record in records:
        task = wanted.get((str(record["item_id"]), str(record["variant"])))
        if task is None:
            continue  # a line of an earlier, larger --limit: not part of this summary
        table.setdefault((record["model"], task.split), {})[task.pair_key] = \
            1.0 if record["correct"] else 0.0
    return table


def results_fingerprint(spec: EvalSpec) -> str:
    """Hash the spec fields that shape result lines (not the sample size, wording, concurrency).

    Two specs with the same fingerprint may share a results file: a larger sample simply adds
    lines.
    """
    shaping = spec.model_dump(exclude={"sample": True, "description": True,
                                       "claim_kinds": True, "generation": {"concurrency"},
                                       "decides": True, "design": True})
    # A role names a position (first/second), not a result: relabelling fine_tuned/base as
    # model_a/model_b keeps the folder's results (and the fingerprint it had before roles grew).
    position = {"model_a": "fine_tuned", "model_b": "base"}
    for model in shaping["models"]:
        model["role"] = position.get(model["role"], model["role"])
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()


def _check_same_spec(out_dir: Path, loaded: LoadedSpec) -> None:
    marker = out_dir / "run.json"
    fingerprint = results_fingerprint(loaded.spec)
    if marker.exists():
        previous = json.loads(marker.read_text()).get("results_fingerprint")
        if previous and previous != fingerprint:
            raise BadInputError(f"{out_dir} holds results of a different spec (dataset, models, "
                                f"scoring or generation differ); pass another --out")
    # Atomic: a run.json torn by a full disk would make every later run of the folder fail.
    atomic_write_text(marker, json.dumps({"results_fingerprint": fingerprint,
                                          "spec": str(loaded.source)}))


def run_spec(spec_path: str | Path, out_dir: str | Path | None, settings: Settings, *,
             limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the eval described by ``spec_path``; write outputs to ``out_dir``; return the summary.

    ``out_dir`` defaults to ``<data_dir>/evals/<spec name>``. ``limit`` caps the items per split
    below the spec's ``sample.per_split``. The summary includes ``supports_claim``.
    """
    loaded = load_spec(spec_path)
    spec = loaded.spec
    if limit is not None and limit < 1:
        raise BadInputError("--limit must be at least 1")
    per_split = min(spec.sample.per_split, limit) if limit else spec.sample.per_split
    out = Path(out_dir) if out_dir else settings.data_dir / "evals" / loaded.source.stem
    timed = Stages()
    # A full or read-only output folder is one line naming the file (results.jsonl, run.json).
    with storage_errors(out), output_lock(out):
        _check_same_spec(out, loaded)
        with timed("load"):
            train, test = load_items(loaded)
        with timed("fingerprint"):
            splits, dedup_summary = split_test_items(spec, train, test)
        with timed("sample"):
            sampled = sample_splits(splits, per_split, spec.seed, loaded.source.name)
            tasks, variant_counts = build_tasks(spec, sampled)
        with timed("start_models"):
            samplers = [make_sampler(m, spec, settings) for m in spec.models]
        results_path = out / "results.jsonl"
        with timed("run"):
            run_stats = run_eval(tasks, samplers, spec.scoring, results_path,
                                 concurrency=spec.generation.concurrency, progress=progress)
        with timed("summarize"):
            seen, unseen = SEEN_UNSEEN[spec.split.mode]
            table = correctness_table(read_results(results_path), tasks)
            first, second = spec.compared()
            # stats.summarize names its positions base/fine_tuned; model_roles says what each
            # model really is (model_a/model_b when the spec is descriptive).
            summary = stats.summarize(table, seen=seen, unseen=unseen, base=second.label,
                                      fine_tuned=first.label, seed=spec.seed)
            gap = summary["gap"]
            summary.update({
                "headline": {
                    "name": ("memorization gap" if spec.decides else "difference in "
                             "differences (descriptive)") + f" ({seen} minus {unseen} "
                             f"advantage of {first.label} over {second.label})",
                    "effect": gap["gap"], "ci": gap["ci"], "p_value": gap["p_value"],
                    "n": sum(int(d["n"]) for d in summary["paired_difference"].values()),
                    "supports_claim": summary["supports_claim"]},
                "decides": spec.decides,
                "design": spec.design_line(),
                "model_roles": {m.label: m.role for m in spec.models},
                "spec": spec_summary(loaded),
                "scoring": spec.scoring,
                "split_mode": spec.split.mode,
                "counts": {"train": len(train), "test": len(test),
                           "per_split_available": {k: len(v) for k, v in splits.items()},
                           "per_split_sampled": {k: len(v) for k, v in sampled.items()},
                           "tasks": len(tasks), "variants": variant_counts},
                "dedup": dedup_summary,
                "generation": {s.name: s.settings() for s in samplers},
                "run": {"completed": run_stats.completed, "skipped_done": run_stats.done_before,
                        "wall_s": round(run_stats.wall_s, 2)},
            })
        with timed("write"):
            summary["stages_s"] = timed.seconds
            summary["out_dir"] = str(out.resolve())
            summary["reading_version"] = stats.READING_VERSION
            write_outputs(finite(summary), out)
    log.info("eval %s: supports_claim=%s (%s)", loaded.source.name, summary["supports_claim"],
             out)
    return finite(summary)
