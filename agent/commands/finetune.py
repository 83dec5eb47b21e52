"""``retest finetune SPEC.toml``: fine-tune the models a recipe spec needs, with manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.commands.common import print_json, settings_from_flags


def finetune_command(
    spec: Annotated[Path, typer.Argument(help="Recipe spec (TOML) or a shipped recipe's name.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Output folder (default <data dir>/evals/NAME, shared with retest eval).")
    ] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", min=4, help="At most N test items (control + pool).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifests as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Train (or reuse) every model of SPEC; each gets model/ and manifest.json under --out."""
    from evals.recipes.common import train_models
    from evals.recipes.spec import load_recipe  # heavy imports only when the command runs

    settings = settings_from_flags()
    loaded = load_recipe(spec)
    folder = out or settings.data_dir / "evals" / loaded.source.stem
    trained = train_models(loaded, folder, settings, limit=limit, progress=not quiet)
    if as_json:
        print_json({label: r.manifest for label, r in trained.items()})
        return
    for label, result in trained.items():
        m = result.manifest
        planted = m.get("contamination", {}).get("n_planted")
        typer.echo(f"{label}: {m['method']} loss {m['first_loss']:.3f} -> {m['last_loss']:.3f}, "
                   f"{planted} planted, {m['wall_s']:.0f} s"
                   f"{' (reused)' if result.reused else ''}; "
                   f"{result.model_dir.parent / 'manifest.json'}")


def register(app: typer.Typer) -> None:
    """Add ``finetune`` to ``app``."""
    app.command("finetune")(finetune_command)
