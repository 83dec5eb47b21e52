"""The top of ``evals``: run or render any spec file, an evaluation or a controlled recipe.

An evaluation spec runs through :mod:`evals.pipeline`; a recipe (a TOML with ``recipe``) through
:mod:`evals.recipes.run`. This is the only module that knows both, so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.settings import Settings
from evals import outputs, pipeline
from evals.recipes import analyses
from evals.recipes.run import run_recipe
from evals.recipes.spec import is_recipe_file


def run_spec_file(spec_path: str | Path, out_dir: str | Path | None, settings: Settings, *,
                  limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the evaluation or recipe at ``spec_path``; write its outputs; return its summary.

    ``out_dir`` defaults to ``<data_dir>/evals/<spec name>``; ``limit`` caps the items per split.
    The summary includes ``supports_claim``.
    """
    if is_recipe_file(spec_path):  # a controlled re-test (fine-tunes or queries its own models)
        return run_recipe(spec_path, out_dir, settings, limit=limit, progress=progress)
    return pipeline.run_spec(spec_path, out_dir, settings, limit=limit, progress=progress)


def render_any_summary(summary: dict[str, Any]) -> str:
    """Render an evaluation's or a recipe's summary (it has ``recipe``) as Markdown."""
    if "recipe" in summary:
        return analyses.render_markdown(summary)
    return outputs.render_markdown(summary)
