"""``retest ask "QUESTION" [--corpus PATH] [--k N] [--json]``: a grounded answer from the store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from agent.ask import Answer, check_question, stream_answer
from agent.commands.common import print_json, settings_from_flags
from core.errors import BadInputError


def ingest_corpus(path: Path, settings: object) -> int:
    """Load the corpus file at ``path`` into the paper store; return how many were upserted."""
    if not path.is_file():
        raise BadInputError(f"corpus file not found: {path}")
    from tools.corpus import iter_corpus
    from tools.paper_store import PaperStore

    store = PaperStore(settings)
    return int(store.upsert(iter_corpus(path)))


def ask(
    question: Annotated[str, typer.Argument(help="The question, in quotes.")],
    corpus: Annotated[Path | None, typer.Option(
        "--corpus", help="Load this corpus file into the store first (JSONL, .jsonl.gz, or the "
        "arXiv metadata snapshot).")] = None,
    k: Annotated[int, typer.Option("--k", help="How many papers to retrieve (1-50).")] = 6,
    as_json: Annotated[bool, typer.Option("--json", help="Print the Answer as JSON.")] = False,
) -> None:
    """Answer QUESTION from the paper store; every citation is a retrieved paper."""
    question = check_question(question)  # fail fast, before any model or store starts
    settings = settings_from_flags(corpus=corpus)
    if corpus is not None:
        ingest_corpus(corpus, settings)
    # Stream the draft to a terminal's stderr; stdout gets only the grounded final answer.
    live = not as_json and sys.stderr.isatty()
    final: Answer | None = None
    for item in stream_answer(question, settings, k=k):
        if isinstance(item, Answer):
            final = item
        elif live:
            typer.echo(item, nl=False, err=True)
    assert final is not None
    if as_json:
        print_json(final.model_dump(mode="json"))
        return
    if live:
        typer.echo("\n", err=True)
    typer.echo(final.text)
    if final.cited:
        typer.echo("\nSources:")
        for paper in final.cited:
            when = paper.published.isoformat() if paper.published else "undated"
            typer.echo(f"  [arXiv:{paper.arxiv_id}] {paper.title} ({when}) {paper.url}")
            typer.echo(f"      evidence: {paper.evidence}")
    if final.removed_ids:
        typer.echo(f"\n(removed {len(final.removed_ids)} citation(s) of papers that were not "
                   f"retrieved: {', '.join(final.removed_ids)})")


def register(app: typer.Typer) -> None:
    """Add ``ask`` to ``app``."""
    app.command("ask")(ask)
