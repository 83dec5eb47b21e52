"""``retest report PROMPT_FILE``: the re-test report, with progress lines on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.commands.common import settings_from_flags
from agent.nodes.context import ProgressEvent, ReportOptions
from agent.nodes.retest_budget import DEFAULT_BUDGET, parse_budget
from agent.parse import parse_prompt, read_prompt_file
from core.errors import EXIT_DEGRADED, BadInputError


def _show(event: ProgressEvent) -> None:
    count = f" ({event['done']}/{event['total']})" if event.get("total") else ""
    typer.echo(f"[{event['stage']}] {event['message']}{count}", err=True)


def report(
    prompt_file: Annotated[Path, typer.Argument(help="Research prompt (text file).")],
    corpus: Annotated[Path | None, typer.Option(
        "--corpus", help="Local corpus file (JSONL[.gz], snapshot).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("out/report"),
    offline: Annotated[bool, typer.Option("--offline", help="Never call live arXiv.")] = False,
    resume: Annotated[str | None, typer.Option(
        "--resume", help="Continue the interrupted run RUN_ID.")] = None,
    retest_budget: Annotated[str, typer.Option(
        "--retest-budget", help="Wall time for re-tests, run cheapest first (e.g. 90s, 45m, "
        "1h30m; 0: none). Claims that would not fit are skipped with the reason.")
    ] = DEFAULT_BUDGET,
    retest_limit: Annotated[int | None, typer.Option(
        "--retest-limit", min=0, help="At most this many claims re-tested (default: as many "
        "as the budget allows; 0: none).")] = None,
    retest_items: Annotated[int | None, typer.Option(
        "--retest-items", min=4, help="Lower each re-test to at most N items per split "
        "(default: the sizes each spec fixes in advance).")] = None,
    papers_per_claim: Annotated[int, typer.Option(
        "--papers-per-claim", min=1, max=50,
        help="Most papers judged per claim (fewer when fewer pass the relevance floor).")] = 10,
) -> None:
    """Re-test the prompt's dated claims; write report.md, report.json, references.bib."""
    from agent.checkpoints import checkpoint_exists
    from agent.run import run_report

    budget_s = parse_budget(retest_budget)  # a bad value is one line and exit 2, before any run
    if corpus is not None and not corpus.is_file():
        raise BadInputError(f"corpus file not found: {corpus}")
    text = read_prompt_file(prompt_file)
    parse_prompt(text)  # an empty or binary prompt fails here, before any output
    settings = settings_from_flags(offline=offline, corpus=corpus)
    if resume is not None and not checkpoint_exists(settings, resume):
        raise BadInputError(f"no run {resume!r} to resume in {settings.data_dir}")
    run_id = resume
    if run_id is None:
        from agent.run import new_run_id

        run_id = new_run_id()
    typer.echo(f"run id: {run_id} (continue an interrupted run with --resume {run_id})", err=True)
    outcome = run_report(text, settings, out, run_id=run_id, on_event=_show,
                         options=ReportOptions(papers_per_claim=papers_per_claim,
                                               retest_budget_s=budget_s,
                                               retest_limit=retest_limit,
                                               retest_items=retest_items))
    typer.echo(str(outcome.out_dir / "report.md"))
    if outcome.exit_code == EXIT_DEGRADED:
        typer.echo("retest: degraded: " + "; ".join(outcome.degraded), err=True)
        raise typer.Exit(EXIT_DEGRADED)


def register(app: typer.Typer) -> None:
    """Add ``report`` to the CLI."""
    app.command("report")(report)
