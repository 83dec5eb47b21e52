"""Run the report agent end to end: the one entry point for the CLI, the app and the scheduler.

``run_report`` compiles the graph with the checkpointer settings choose (SQLite in the data
directory, or PostgreSQL: :mod:`agent.checkpoints`) and runs it
under a thread id equal to the run id, so a killed run continues with the same id (finished
nodes, LLM calls and evaluations are not redone). It then writes report.md, report.json and
references.bib (atomically), records the run in the history and, when an earlier report of the
same prompt exists, writes changes.md and a ``changes`` block.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from agent.changes import diff_reports, render_changes_md
from agent.checkpoints import open_checkpointer, run_lock
from agent.graph import build_graph
from agent.history import ReportHistory
from agent.nodes.context import ProgressEvent, ReportOptions, RunContext
from agent.parse import parse_prompt
from agent.report import render_bibtex, render_markdown
from core.errors import EXIT_DEGRADED, EXIT_OK, BadInputError, RetestError
from core.fsutil import atomic_write_files, json_text, storage_errors
from core.settings import Settings

log = logging.getLogger(__name__)

@dataclass
class ReportOutcome:
    """What a finished run produced."""

    report: dict[str, Any]
    out_dir: Path
    exit_code: int  # 0, or 3 when degraded
    degraded: list[str] = field(default_factory=list)
    run_id: str = ""


def new_run_id() -> str:
    """Return a short, unique run id."""
    return uuid.uuid4().hex[:12]


# Each step's checkpoint is on disk before the next step starts. LangGraph's default ("async")
# writes it while the next step runs, so a SIGKILL just after a node's progress line could lose
# the node's finished work, or even the run's first checkpoint, leaving `--resume` with nothing
# to resume (seen once in a full test run under load). The cost is one SQLite commit per step.
DURABILITY: Final = "sync"


def run_report(prompt_text: str, settings: Settings, out_dir: Path, *, run_id: str | None = None,
               on_event: Callable[[ProgressEvent], None] | None = None,
               cancel: threading.Event | None = None, options: ReportOptions | None = None,
               llm_factory: Callable[[], Any] | None = None) -> ReportOutcome:
    """Run (or, when ``run_id`` has a checkpoint, resume) a report and write its files.

    Raise BadInputError for an empty or claim-less prompt, or when resuming a run of another
    prompt; LockedError when another run holds the data directory; CancelledError when
    ``cancel`` is set (the checkpoint keeps what finished); WriteError (exit 5) naming the path
    when the data directory or ``out_dir`` is full or read-only (resume once there is room).
    """
    parse_prompt(prompt_text)  # fail fast, before any server starts, on an empty prompt
    run_id = run_id or new_run_id()
    out_dir = Path(out_dir)
    data_dir = Path(settings.data_dir)
    ctx = RunContext(settings=settings, out_dir=out_dir, run_id=run_id,
                     options=options or ReportOptions(), on_event=on_event, cancel=cancel,
                     llm_factory=llm_factory)
    config: dict[str, Any] = {"configurable": {"thread_id": run_id}, "max_concurrency": 8,
                              "recursion_limit": 200}
    # A full or read-only data directory (checkpoints, caches) becomes one line naming it; the
    # lock creates the directory. Checkpoints and lock: data_dir, or PostgreSQL when
    # settings.checkpoint_url is set (agent/checkpoints.py).
    with storage_errors(data_dir), run_lock(settings), open_checkpointer(settings) as saver:
        graph = build_graph(saver)
        snapshot = graph.get_state(config)
        # A run killed before its first node finished has only the pending input checkpoint
        # (default values, no prompt yet): start it afresh under the same id.
        if snapshot.values and snapshot.values.get("prompt_text") is not None:
            if snapshot.values.get("prompt_text") != prompt_text:
                raise BadInputError(f"run {run_id} was started with a different prompt")
            ctx.emit("resume", f"resuming run {run_id} at {list(snapshot.next) or 'end'}")
            graph.invoke(None, config, context=ctx, durability=DURABILITY)
        else:
            ctx.emit("start", f"run {run_id}")
            graph.invoke({"prompt_text": prompt_text}, config, context=ctx,
                         durability=DURABILITY)
        state = graph.get_state(config).values
        report = dict(state["report"])
        report["usage"] = ctx.usage()
        return _write_outputs(report, settings, out_dir, ctx)


def _write_outputs(report: dict[str, Any], settings: Settings, out_dir: Path,
                   ctx: RunContext) -> ReportOutcome:
    """Write report files, record the history, and diff against the previous report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    changes_md = _changes(report, settings)
    markdown = render_markdown(report)
    files: dict[Path, bytes | str] = {
        out_dir / "report.json": json_text(report),
        out_dir / "report.md": markdown,
        out_dir / "references.bib": render_bibtex(report)}
    if changes_md is not None:
        files[out_dir / "changes.md"] = changes_md
    # All or none: a full disk must not leave this run's report.json beside an older report.md.
    atomic_write_files(files)
    try:
        ReportHistory(settings.data_dir).record(report, markdown, out_dir)
    except (OSError, RetestError) as exc:
        log.warning("report history not recorded: %s", exc)
    degraded = list(report["degraded"])
    ctx.emit("done", f"wrote {out_dir}" + (" (degraded)" if degraded else ""), 1, 1)
    return ReportOutcome(report=report, out_dir=out_dir,
                         exit_code=EXIT_DEGRADED if degraded else EXIT_OK, degraded=degraded,
                         run_id=ctx.run_id)


def _changes(report: dict[str, Any], settings: Settings) -> str | None:
    """Attach a ``changes`` block and return changes.md when an earlier report exists."""
    previous = ReportHistory(settings.data_dir).previous(report["prompt_sha256"])
    if previous is None:
        return None
    changes = diff_reports(previous, report)
    report["changes"] = changes
    return render_changes_md(changes)
