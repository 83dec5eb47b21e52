"""Building blocks of the recipes: items, serving, training and the gap numbers.

Stages read like the eval pipeline's: load -> plan -> train -> serve -> run -> summarize, each
timed. Fine-tuned models are trained by :mod:`evals.recipes.finetune` into ``<out>/models/<label>``
(each with its manifest; a finished one is reused), served one at a time through vLLM from their
merged folders (and stopped afterwards), and answer through :class:`evals.runner.OpenAISampler` into
one ``results.jsonl`` (so a rerun resumes). Statistics come from :mod:`evals.stats`;
``supports_claim`` uses its rule. See :mod:`evals.recipes.spec` for the spec format.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import BadInputError
from core.settings import Settings
from evals.datasets import load_dataset, seeded_split
from evals.items import Item
from evals.recipes import contamination as cont
from evals.recipes.finetune import FinetuneParams, FinetuneResult, finetune, resolve_base_model
from evals.recipes.spec import LoadedRecipe, RecipeSpec
from evals.runner import GenerationSettings, OpenAISampler, Task, read_results, run_eval
from tools.embedded_models import EMBEDDED_MODELS
from tools.vllm_server import EmbeddedServer

log = logging.getLogger(__name__)

LOCAL_KV_CACHE_GIB = 1
LOCAL_MAX_MODEL_LEN = 1024


def load_items(loaded: LoadedRecipe) -> tuple[list[Item], list[Item]]:
    """Return the recipe dataset's ``(train, test)`` items; raise BadInputError when empty."""
    ds = loaded.spec.dataset
    if loaded.data_path is not None:
        train, test = seeded_split(load_dataset(ds.kind, loaded.data_path, **ds.fields),
                                   ds.test_fraction, loaded.spec.seed)
    else:
        train = load_dataset(ds.kind, str(loaded.train_path), **ds.fields)
        test = load_dataset(ds.kind, str(loaded.test_path), **ds.fields)
    if not train or not test:
        raise BadInputError(f"spec {loaded.source.name}: the train or test side is empty")
    return train, test


def pick_test_items(test: list[Item], n: int, seed: int) -> list[Item]:
    """Return the first ``n`` test items in seeded-hash order (the same at every dose)."""
    by_id = {item.id: item for item in test}
    return [by_id[i] for i in cont.rank_ids(list(by_id), seed)[:n]]


def generation_settings(spec: RecipeSpec) -> GenerationSettings:
    """Return the sampling settings the recipe's spec fixes for every model it queries."""
    gen = spec.generation
    return GenerationSettings(max_tokens=gen.max_tokens, temperature=gen.temperature,
                              seed=spec.seed, stop=list(gen.stop), timeout_s=gen.timeout_s,
                              max_retries=gen.max_retries)


@contextlib.contextmanager
def serve(settings: Settings, model: str | Path, label: str,
          gen: GenerationSettings) -> Iterator[OpenAISampler]:
    """Yield a sampler for a packaged model key or a local folder served through vLLM.

    A packaged model uses the shared embedded server (left running for others); a local folder
    gets its own server, stopped by pid when the block ends.
    """
    if isinstance(model, str) and model in EMBEDDED_MODELS:
        server = EmbeddedServer(settings, model)
        api = "chat" if server.model.has_chat_template else "completions"
        yield OpenAISampler(label, server.ensure_running(), server.served_name, api=api, gen=gen,
                            restart=server.ensure_running)
        return
    # A fine-tune answers short prompts: a small KV cache lets it start beside other servers.
    small = settings.model_copy(update={"server": settings.server.model_copy(
        update={"kv_cache_gib": LOCAL_KV_CACHE_GIB, "max_model_len": LOCAL_MAX_MODEL_LEN})})
    server = EmbeddedServer(small, folder=Path(model), served_name=label)
    api = "chat" if server.model.has_chat_template else "completions"
    try:
        yield OpenAISampler(label, server.ensure_running(), label, api=api, gen=gen,
                            restart=server.ensure_running)
    finally:
        server.stop()


def _answers(records: list[dict[str, Any]], model: str) -> dict[str, dict[str, Any]]:
    return {str(r["item_id"]) + "::" + str(r["variant"]): r for r in records
            if r["model"] == model}


def correct_by_item(records: list[dict[str, Any]], model: str, keys: list[str]) -> dict[str, float]:
    """Return ``{pair key: 0/1}`` of ``model`` on the keys it answered."""
    answered = _answers(records, model)
    return {k: 1.0 if answered[k]["correct"] else 0.0 for k in keys if k in answered}


def _train_dose(spec: RecipeSpec, train: list[Item], test_items: list[Item], dose: float,
                params: FinetuneParams, out: Path, settings: Settings, progress: bool,
                method_rows: str = "sft", own: dict[str, str] | None = None) -> FinetuneResult:
    c = spec.contamination
    plan = cont.plan_contamination([t.id for t in test_items], dose, spec.seed,
                                   control_fraction=c.control_fraction)
    tset = cont.build_training_set(train, test_items, plan, budget=c.budget, copy=c.copy_kind)
    if method_rows == "dpo":
        rows, sources = cont.dpo_rows(tset.items, spec.scoring, spec.seed, own_outputs=own)
    else:
        rows, sources = cont.sft_rows(tset.items, spec.scoring), {}
    extra = {"recipe": spec.recipe, "contamination": tset.as_dict(), "dpo_rejected": sources,
             "dataset": spec.dataset.model_dump()}
    return finetune(rows, params, out, settings=settings, extra_manifest=extra,
                    progress=progress)


def train_models(loaded: LoadedRecipe, out: Path, settings: Settings, *,
                 limit: int | None = None, progress: bool = True) -> dict[str, FinetuneResult]:
    """Fine-tune every model the recipe needs (reusing finished ones); return them by label."""
    spec = loaded.spec
    if spec.recipe == "self_verification":
        raise BadInputError(f"spec {loaded.source.name}: recipe self_verification trains no model")
    if spec.recipe not in ("dose_response", "sft_vs_dpo"):  # they train inside their own run
        raise BadInputError(f"spec {loaded.source.name}: recipe {spec.recipe} trains its model "
                            "inside 'retest eval'; run that instead")
    train, test = load_items(loaded)
    test_items = pick_test_items(test, _n_test(spec, limit), spec.seed)
    models: dict[str, FinetuneResult] = {}
    if spec.recipe == "dose_response":
        for dose in spec.contamination.doses:
            label = dose_label(dose)
            models[label] = _train_dose(spec, train, test_items, dose, spec.finetune,
                                        out / "models" / label, settings, progress)
        return models
    dose = max(spec.contamination.doses)
    sft = spec.finetune.model_copy(update={"method": "sft"})
    dpo = spec.finetune.model_copy(update={
        "method": "dpo",
        "learning_rate": spec.dpo.learning_rate or spec.finetune.learning_rate})
    models["sft"] = _train_dose(spec, train, test_items, dose, sft, out / "models" / "sft",
                                settings, progress)
    own = _own_outputs(loaded, train, test_items, dose, out, settings, progress) \
        if spec.dpo.rejected == "own_output" else None
    models["dpo"] = _train_dose(spec, train, test_items, dose, dpo, out / "models" / "dpo",
                                settings, progress, method_rows="dpo", own=own)
    return models


def lowered_size(size: int, limit: int | None) -> int:
    """Return a spec's fixed ``size``, lowered to ``limit`` when one is given (``--limit``)."""
    return min(size, limit) if limit else size


def _n_test(spec: RecipeSpec, limit: int | None) -> int:
    if limit is not None and limit < 4:
        raise BadInputError("--limit must be at least 4 for a recipe (control and pool items)")
    return lowered_size(spec.contamination.test_items, limit)


def dose_label(dose: float) -> str:
    """Return the model label of a dose, e.g. ``dose-025`` for 0.25."""
    return f"dose-{round(dose * 100):03d}"


def _own_outputs(loaded: LoadedRecipe, train: list[Item], test_items: list[Item], dose: float,
                 out: Path, settings: Settings, progress: bool) -> dict[str, str]:
    """Answer the DPO training items with the base model; its wrong answers become rejected."""
    spec = loaded.spec
    c = spec.contamination
    plan = cont.plan_contamination([t.id for t in test_items], dose, spec.seed,
                                   control_fraction=c.control_fraction)
    tset = cont.build_training_set(train, test_items, plan, budget=c.budget, copy=c.copy_kind)
    tasks = [Task(item, item.id, "train", "train") for item in tset.items]
    path = out / "base_on_train.jsonl"
    base = resolve_base_model(settings, spec.finetune.base_model)
    model_ref: str | Path = spec.finetune.base_model if spec.finetune.base_model in \
        EMBEDDED_MODELS else base
    with serve(settings, model_ref, "base", generation_settings(spec)) as sampler:
        run_eval(tasks, [sampler], spec.scoring, path, concurrency=spec.generation.concurrency,
                 progress=progress)
    return {str(r["item_id"]): str(r["prediction"]) for r in read_results(path)}


def gap_entry(summary: dict[str, Any]) -> dict[str, Any]:
    """Pick the gap's numbers out of a :func:`evals.stats.summarize` result."""
    gap = summary.get("gap") or {}
    return {"gap": gap.get("gap", math.nan), "ci": gap.get("ci"), "p_value": gap.get("p_value"),
            "supports_claim": summary.get("supports_claim")}



def fixed_in_advance(loaded: LoadedRecipe, limit: int | None) -> dict[str, Any]:
    """Return what the spec fixed before the run: its sha256 and every resolved value.

    The resolved spec (defaults filled in: sizes, steps, seeds, doses, the verifier's margin)
    goes into ``run.json`` and the summary, so a reader can check that nothing was chosen after
    the results were seen; ``limit`` is the one size a caller may lower at run time.
    """
    resolved = json.loads(loaded.spec.model_dump_json())
    return {"spec_sha256": loaded.sha256, "spec": str(loaded.source), "limit": limit,
            "test_items": _n_test(loaded.spec, limit), "seed": loaded.spec.seed,
            "training_seed": loaded.spec.finetune.seed, "resolved_spec": resolved}
