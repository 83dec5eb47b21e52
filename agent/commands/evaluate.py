"""``retest eval SPEC.toml``: run a dedup evaluation and print where its outputs went."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.commands.common import print_json, settings_from_flags


def evaluate(
    spec: Annotated[Path, typer.Argument(help="Eval spec (TOML), or a shipped spec's name.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Output folder (default <data dir>/evals/NAME).")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", min=1, help="At most N items per split.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Run the evaluation in SPEC; write results.jsonl, summary.json, summary.md, accuracy.png."""
    from evals.dispatch import run_spec_file  # heavy imports only when the command runs

    settings = settings_from_flags()
    summary = run_spec_file(spec, out, settings, limit=limit, progress=not quiet)
    if as_json:
        print_json(summary)
        return
    if "recipe" in summary:  # a controlled re-test (evals.recipes) has its own summary shape
        typer.echo((Path(summary["out_dir"]) / "summary.md").read_text(encoding="utf-8"))
        typer.echo(f"outputs: {summary['out_dir']}")
        return
    gap = summary["gap"]
    for model, by_split in summary["accuracy"].items():
        cells = ", ".join(f"{split} {cell['accuracy']:.3f} (n={cell['n']})"
                          for split, cell in by_split.items() if cell["accuracy"] is not None)
        typer.echo(f"{model}: {cells}")
    gap_text = "n/a" if gap["gap"] is None else f"{gap['gap']:+.3f}"
    typer.echo(f"memorization gap {gap_text} CI {gap['ci']} p={gap['p_value']}")
    for warning in summary["power_warnings"]:
        typer.echo(f"warning: {warning}")
    typer.echo(f"supports_claim: {summary['supports_claim']}")
    typer.echo(f"outputs: {summary['out_dir']}")


def register(app: typer.Typer) -> None:
    """Add ``eval`` to ``app``."""
    app.command("eval")(evaluate)
