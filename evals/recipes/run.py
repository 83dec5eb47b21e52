"""Run one controlled recipe end to end: load its spec, lock its folder, run its analysis, write.

The analyses (:mod:`evals.recipes.analyses`) return a summary dict; this module adds the spec
block, makes the numbers JSON-safe and writes ``summary.json``/``summary.md`` and the plot.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from core.errors import BadInputError
from core.fsutil import atomic_write_text, storage_errors
from core.settings import Settings
from evals.recipes import analyses, passk, template_transfer
from evals.recipes.common import fixed_in_advance
from evals.recipes.spec import LoadedRecipe, load_recipe
from evals.stages import Stages, finite, output_lock
from evals.stats import READING_VERSION

log = logging.getLogger(__name__)


def run_recipe(spec_path: str | Path, out_dir: str | Path | None, settings: Settings, *,
               limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the recipe at ``spec_path``; write ``summary.json`` (+ md) in ``out_dir``; return it."""
    loaded = load_recipe(spec_path)
    out = Path(out_dir) if out_dir else settings.data_dir / "evals" / loaded.source.stem
    runner = {"dose_response": analyses.dose_response, "sft_vs_dpo": analyses.sft_vs_dpo,
              "self_verification": analyses.self_verification, "pass_at_k": passk.run,
              "template_transfer": template_transfer.run}[loaded.spec.recipe]
    timed = Stages()
    # A full or read-only output folder is one line naming the file, as for an evaluation.
    with storage_errors(out), output_lock(out):
        fixed = fixed_in_advance(loaded, limit)
        _check_same_recipe(out, loaded, fixed)
        summary = runner(loaded, out, settings, timed, limit=limit, progress=progress)
        summary.update({
            "spec": {"path": str(loaded.source), "sha256": loaded.sha256,
                     "description": loaded.spec.description,
                     "claim_kinds": loaded.spec.claim_kinds},
            "recipe": loaded.spec.recipe, "scoring": loaded.spec.scoring,
            "stages_s": timed.seconds, "out_dir": str(out.resolve()), "fixed": fixed,
            "reading_version": READING_VERSION,
        })
        summary = finite(summary)
        analyses.write_recipe_outputs(summary, out)
    log.info("recipe %s: supports_claim=%s (%s)", loaded.source.name, summary["supports_claim"],
             out)
    return summary


def _check_same_recipe(out: Path, loaded: LoadedRecipe, fixed: dict[str, Any]) -> None:
    marker = out / "run.json"
    if marker.exists():
        previous = json.loads(marker.read_text()).get("spec_sha256")
        if previous and previous != loaded.sha256:
            raise BadInputError(f"{out} holds results of a different spec (or an edited one);"
                                f" pass another --out")
    # Atomic, as the evaluation's run.json: a torn marker would make every later run fail.
    # It also records what the spec fixed before this run (sizes, steps, seeds, rule knobs).
    atomic_write_text(marker, json.dumps({"spec_sha256": loaded.sha256,
                                          "spec": str(loaded.source), "fixed": fixed}))
