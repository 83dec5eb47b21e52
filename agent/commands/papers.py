"""``retest ingest``, ``retest search`` and ``retest paper``: the paper store from the shell."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.commands.common import print_json, settings_from_flags
from core.errors import BadInputError
from tools.paper import Paper


def _parse_day(value: str | None, flag: str) -> date | None:
    """Parse a YYYY-MM-DD flag value; raise BadInputError naming the flag otherwise."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise BadInputError(f"{flag} must be a date as YYYY-MM-DD, got {value!r}") from None


def _row(paper: Paper, score: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "arxiv_id": paper.arxiv_id,
        "title": paper.title,
        "published": paper.published.isoformat() if paper.published else None,
        "categories": paper.categories,
        "authors": paper.authors,
        "url": paper.abs_url,
    }
    if score is not None:
        row["score"] = score
    return row


def ingest(
    path: Annotated[Path, typer.Argument(help="Corpus file: JSONL(.gz) listing or snapshot "
                                               "dump, or a saved arXiv API response (.xml).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Load a corpus file into the paper store; resumes after a kill, and a rerun adds nothing."""
    from tools.corpus import CorpusReport
    from tools.paper_store import PaperStore
    from tools.retrieval import LexicalIndex

    if not path.is_file():
        raise BadInputError(f"corpus file not found: {path}")
    settings = settings_from_flags()
    store = PaperStore(settings)
    stats = store.ingest_corpus(path, progress=not quiet)
    if stats.papers == 0 and stats.malformed_count == 0:
        raise BadInputError(f"no records in {path}")
    # The kept BM25 index of this file: `search` takes its lexical candidates from it instead
    # of scanning chroma's full text (loaded, not rebuilt, when the file is unchanged).
    indexed = (len(LexicalIndex.for_corpus(path, settings.data_dir, progress=not quiet))
               if stats.papers else 0)
    report = CorpusReport(path=str(path), lines=stats.lines, papers=stats.papers,
                          formats=stats.formats, malformed_count=stats.malformed_count,
                          malformed=stats.malformed)
    if as_json:
        print_json({
            "path": str(path), "sha256": stats.sha256, "lines": stats.lines,
            "papers": stats.papers, "new": stats.added, "already_stored": stats.already_stored,
            "noop": stats.noop, "resumed_at": stats.resumed_at, "formats": stats.formats,
            "malformed_count": stats.malformed_count,
            "malformed": [{"line": n, "reason": r} for n, r in stats.malformed],
            "seconds": round(stats.seconds, 2), "embed_seconds": round(stats.embed_seconds, 2),
            "store_count": store.count(), "bm25_indexed": indexed,
        })
        return
    typer.echo(f"read {report.summary()}")
    for line_no, reason in stats.malformed[:20]:
        typer.echo(f"  line {line_no}: {reason}", err=True)
    typer.echo(f"{stats.summary()}; the store holds {store.count()} papers; "
               f"BM25 index of {indexed} papers")


def search(
    query: Annotated[str, typer.Argument(help="Words, an exact term, or an arXiv id.")],
    since: Annotated[str | None, typer.Option("--since", help="On or after YYYY-MM-DD.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="On or before YYYY-MM-DD.")] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="How many papers to list.")] = 10,
    category: Annotated[list[str] | None,
                        typer.Option("--category", help="Keep papers in this category.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the papers of the store that best match QUERY (dense + exact-term hybrid)."""
    from tools.paper_store import PaperStore

    if not query.strip():
        raise BadInputError("empty search query")
    if k < 1:
        raise BadInputError(f"--k must be >= 1, got {k}")
    start, end = _parse_day(since, "--since"), _parse_day(until, "--until")
    if start and end and start > end:
        raise BadInputError(f"--since {start} is after --until {end}")
    store = PaperStore(settings_from_flags())
    if store.count() == 0:
        raise BadInputError("the paper store is empty: run `retest ingest PATH` first")
    hits = store.search(query, k=k, since=start, until=end, categories=category or None)
    if as_json:
        print_json([_row(paper, score) for paper, score in hits])
        return
    if not hits:
        typer.echo("no matching papers")
    for paper, score in hits:
        day = paper.published.isoformat() if paper.published else "????-??-??"
        typer.echo(f"{score:.3f}  {paper.arxiv_id:<12} {day}  {paper.title}")


def paper(
    arxiv_id: Annotated[str, typer.Argument(help="An arXiv id (2410.18890, ...v2, or a URL).")],
    offline: Annotated[bool, typer.Option("--offline", help="Never use the network.")] = False,
    corpus: Annotated[Path | None,
                      typer.Option("--corpus", help="Also look in this corpus file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the resolution as JSON.")] = False,
) -> None:
    """Resolve one arXiv id: cache, paper store, corpus, then the live API."""
    from tools.resolve import resolve_paper

    if corpus is not None and not corpus.is_file():
        raise BadInputError(f"corpus file not found: {corpus}")
    settings = settings_from_flags(offline=offline, corpus=corpus)
    result = resolve_paper(arxiv_id, settings)
    if result.status == "malformed":
        raise BadInputError(f"malformed arXiv id: {arxiv_id!r}")
    if as_json:
        payload = json.loads(result.model_dump_json(exclude={"paper"}))
        payload.update(_row(result.paper) if result.paper else {"title": None, "published": None})
        if result.paper:
            payload["abstract"] = result.paper.abstract
        print_json(payload)
        return
    if result.paper is None:
        typer.echo(f"{result.status}: {result.arxiv_id} ({result.detail})")
        return
    p = result.paper
    typer.echo(f"found ({result.source}): {p.arxiv_id}  "
               f"{p.published.isoformat() if p.published else '????-??-??'}  {p.title}")
    typer.echo(f"  {', '.join(p.authors[:6])}{' et al.' if len(p.authors) > 6 else ''}")
    typer.echo(f"  {' '.join(p.categories)}  {p.abs_url}")


def register(app: typer.Typer) -> None:
    """Add the paper commands to ``app``."""
    app.command("ingest")(ingest)
    app.command("search")(search)
    app.command("paper")(paper)
