"""``retest schedule PROMPT_FILE --every 7d``: periodic re-test reports, headless.

Runs in the foreground (a container's main process, a systemd service) until SIGTERM/SIGINT,
or once with ``--once`` (for cron or a systemd timer). Logs are JSON lines on stderr.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from agent.commands.common import settings_from_flags
from agent.nodes.retest_budget import DEFAULT_BUDGET, parse_budget
from agent.options import ReportOptions
from agent.scheduler import (
    EXIT_INTERRUPTED,
    ScheduleConfig,
    Scheduler,
    parse_duration,
    parse_notify,
    use_json_logs,
)
from core.errors import BadInputError


def schedule(
    prompt_file: Annotated[Path, typer.Argument(help="The research prompt file.")],
    every: Annotated[str, typer.Option(
        "--every", help="Interval between runs: 30m, 12h, 7d, 2w, 1h30m.")] = "7d",
    corpus: Annotated[Path | None, typer.Option(
        "--corpus", help="Use this local corpus file instead of the live arXiv API.")] = None,
    out_root: Annotated[Path | None, typer.Option(
        "--out-root", help="Folder receiving one sub-folder per run and a 'latest' link "
        "(default: <data_dir>/reports/<prompt hash>).")] = None,
    once: Annotated[bool, typer.Option(
        "--once", help="Do one run now and exit with its code (for cron / systemd timers).")]
        = False,
    notify: Annotated[str | None, typer.Option(
        "--notify", help="Command run (no shell) with the report.md path as its last argument "
        "when a verdict changed.")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the network.")] = False,
    max_runs: Annotated[int | None, typer.Option(
        "--max-runs", min=1, help="Stop after this many runs (default: run forever).")] = None,
    retest_budget: Annotated[str, typer.Option(
        "--retest-budget", help="Wall time for each run's re-tests (e.g. 45m; 0: none).")
    ] = DEFAULT_BUDGET,
    retest_limit: Annotated[int | None, typer.Option(
        "--retest-limit", min=0, help="At most this many claims re-tested (0: none).")] = None,
    papers_per_claim: Annotated[int, typer.Option(
        "--papers-per-claim", min=1, max=50,
        help="Most papers judged per claim (fewer when fewer pass the relevance floor).")] = 10,
) -> None:
    """Re-run PROMPT_FILE's report every --every, forever (or --once); JSON-line logs on stderr.

    Exit codes: 0 stopped cleanly (or the run succeeded with --once), 2 bad input, 3 the --once
    run was degraded, 4 another run or scheduler holds the lock.
    """
    every_s = parse_duration(every)
    budget_s = parse_budget(retest_budget)
    argv = parse_notify(notify)
    if not prompt_file.is_file():
        raise BadInputError(f"prompt file not found: {prompt_file}")
    if corpus is not None and not corpus.is_file():
        raise BadInputError(f"corpus file not found: {corpus}")
    settings = settings_from_flags(offline=offline, corpus=corpus)
    use_json_logs(getattr(logging, os.environ.get("RETEST_LOG_LEVEL", "INFO").upper(),
                          logging.INFO))

    # No progress bars: they would interleave with the JSON-line log on stderr.
    options = ReportOptions(retest_budget_s=budget_s, retest_limit=retest_limit,
                            papers_per_claim=papers_per_claim, progress_bars=False)
    scheduler = Scheduler(ScheduleConfig(prompt_file=prompt_file, every_s=every_s,
                                         out_root=out_root, once=once, notify=argv,
                                         max_runs=max_runs, options=options), settings)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        if scheduler.stop.is_set():
            # A second signal: stop now. Worker threads blocked in LLM calls would delay a
            # normal exit; writes are atomic and the lock is the kernel's, so nothing is torn.
            logging.getLogger("retest.schedule").warning(
                "stopping now", extra={"fields": {"event": "stopping_now", "signal": signum}})
            os._exit(EXIT_INTERRUPTED)
        logging.getLogger("retest.schedule").info(
            "stopping", extra={"fields": {"event": "stopping", "signal": signum}})
        scheduler.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    code = scheduler.serve()
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``schedule`` to the CLI."""
    app.command("schedule")(schedule)
