"""``retest judge-eval LABELS.jsonl``: measure the judging model against hand-labelled stances."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from tqdm import tqdm

from agent.commands.common import print_json, settings_from_flags
from agent.judge_eval import attach_abstracts, evaluate, load_rows, save_quality
from agent.judging import DEFAULT_METHOD, METHODS, Judge
from core.errors import BadInputError
from tools.llm import make_llm
from tools.paper import Paper


def _store_lookup(settings: Any) -> Any:
    """Return a paper-store look-up when a store exists (opening it loads the embedder)."""
    from tools.paper_store import PaperStore

    store: list[PaperStore] = []

    def lookup(arxiv_id: str) -> Paper | None:
        if not store:
            store.append(PaperStore(settings))
        return store[0].get(arxiv_id)

    return lookup


def judge_eval(
    labels: Annotated[Path, typer.Argument(help="JSONL rows: claim, stance, and arxiv_id or "
                                                "inline title + abstract.")],
    corpus: Annotated[Path | None, typer.Option(
        "--corpus", help="Corpus file holding the abstracts.")] = None,
    method: Annotated[str, typer.Option(
        "--method", help=f"Judge method: {' or '.join(METHODS)}.")] = DEFAULT_METHOD,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    save: Annotated[bool, typer.Option(
        "--save/--no-save", help="Keep the figures for reports (<data_dir>/judge_eval).")] = True,
) -> None:
    """Judge every labelled row with the configured model; print agreement with the labels."""
    if method not in METHODS:
        raise BadInputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    rows = load_rows(labels)
    settings = settings_from_flags(corpus=corpus)
    has_store = bool(settings.store.chroma_url) or (settings.data_dir / "chroma").exists()
    lookup = _store_lookup(settings) if has_store else None
    inputs = attach_abstracts(rows, settings.corpus, lookup)
    judge = Judge(make_llm(settings), method)
    with tqdm(total=len(rows), desc=f"judging ({method})", unit="row", disable=None) as bar:
        result = evaluate(judge, rows, inputs, bar.update)
    if save:
        result["saved_to"] = str(save_quality(settings, result))
    if as_json:
        print_json(result)
        return
    lo, hi = result["kappa_ci"]
    typer.echo(f"model {result['model']}  method {result['method']}  n {result['n']}")
    typer.echo(f"accuracy {result['accuracy']:.3f}  macro_f1 {result['macro_f1']:.3f}  "
               f"kappa {result['kappa']:.3f} [{lo:.3f}, {hi:.3f}]")
    typer.echo(f"majority baseline (always '{result['majority_label']}'): accuracy "
               f"{result['majority_baseline']:.3f}")
    labels_order = list(result["confusion"])
    typer.echo("confusion (rows gold, columns judge): " + " ".join(labels_order))
    for gold, row in result["confusion"].items():
        typer.echo(f"  {gold:>10} " + " ".join(f"{row[p]:>5}" for p in labels_order))
    if lo <= 0.0:
        typer.echo("kappa's 95% CI includes 0: this judge is no better than chance here.")


def register(app: typer.Typer) -> None:
    """Add the judge-eval command to the CLI."""
    app.command("judge-eval")(judge_eval)
