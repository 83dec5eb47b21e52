"""The headless periodic job behind ``retest schedule``: run a report every N, forever.

Each run writes a fresh output folder under the out root (and points ``latest`` at it), records
progress as JSON lines on stderr, survives a failed run, and runs the notification hook when a
verdict changed. A lock per prompt keeps one scheduler per prompt and data directory; the
data directory's run lock keeps one report at a time. A run killed half-way is resumed (same run
id and folder) by the next scheduler start.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.changes import diff_reports, verdicts_changed
from agent.checkpoints import run_lock
from agent.history import ReportHistory, parse_time
from agent.options import ReportOptions
from agent.parse import prompt_sha256 as prompt_sha256  # re-exported
from agent.parse import read_prompt_file
from core.duration import parse_duration as parse_duration  # re-exported (--every)
from core.errors import EXIT_FAILURE, EXIT_LOCKED, BadInputError, LockedError, RetestError
from core.fsutil import atomic_write_json
from core.settings import Settings

log = logging.getLogger("retest.schedule")

NOTIFY_TIMEOUT_S = 120.0
LOCKED_RETRY_S = 60.0
EXIT_INTERRUPTED = 130  # what the CLI answers to Ctrl-C, too

RunReport = Callable[..., Any]



def parse_notify(command: str | None) -> list[str] | None:
    """Split ``--notify`` into an argv (no shell); BadInputError if it cannot run."""
    if command is None or not command.strip():
        return None
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise BadInputError(f"bad --notify command {command!r}: {exc}") from None
    if shutil.which(argv[0]) is None:
        raise BadInputError(f"--notify program not found or not executable: {argv[0]}")
    return argv


class JsonLinesFormatter(logging.Formatter):
    """Format each record as one JSON object: ts, level, logger, event/msg and its fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a single JSON line."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            entry["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def use_json_logs(level: int = logging.INFO) -> None:
    """Send every log record (ours and the agent's progress) to stderr as JSON lines."""
    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLinesFormatter())
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The run context logs each progress event as text too; ours carry the same as fields.
    logging.getLogger("agent.nodes.context").setLevel(max(level, logging.WARNING))
    # One line per HTTP request to the LLM server drowns the events that matter.
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    # Loading the embedding model draws a "Loading weights" bar; the report's own bars are off
    # through ReportOptions.progress_bars.
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def _event(level: int, event: str, **fields: Any) -> None:
    log.log(level, event, extra={"fields": {"event": event, **fields}})


@dataclass
class ScheduleConfig:
    """What one scheduler runs, where it writes, how often."""

    prompt_file: Path
    every_s: float
    out_root: Path | None = None  # default <data_dir>/reports/<sha[:12]>
    once: bool = False
    notify: list[str] | None = None
    max_runs: int | None = None  # stop after this many runs (None: forever)
    options: ReportOptions | None = None  # handed to run_report, if set


@dataclass
class RunResult:
    """How one scheduled run ended."""

    exit_code: int
    out_dir: Path | None = None
    report: dict[str, Any] | None = None
    changes: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Scheduler:
    """Run ``run_report`` on a prompt every ``config.every_s`` seconds until stopped.

    ``run_fn`` defaults to :func:`agent.run.run_report`; tests may inject another with the
    same signature. ``stop`` ends the loop (set by SIGTERM/SIGINT in the CLI) and is handed to
    the run as its ``cancel``.
    """

    config: ScheduleConfig
    settings: Settings
    run_fn: RunReport | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    runs_done: int = 0

    def read_prompt(self) -> str:
        """Read the prompt file afresh (a user may edit it between runs)."""
        return read_prompt_file(self.config.prompt_file)

    def out_root(self, sha: str) -> Path:
        """Return the folder that receives one sub-folder per run."""
        # Absolute, so a restart from another working directory resumes into the same folder.
        return (self.config.out_root or self.settings.data_dir / "reports" / sha[:12]).absolute()

    def state_path(self, sha: str) -> Path:
        """Return the file recording the run in progress (for resume after a kill)."""
        return self.settings.data_dir / "schedule" / f"{sha}.json"

    def serve(self) -> int:
        """Run until stopped (or once); return the process exit code.

        Once: the run's own exit code. Forever: 0 when stopped by a signal or ``max_runs``;
        a bad prompt on the first run exits 2; later failures are logged and survived.
        """
        sha = prompt_sha256(self.read_prompt())
        if self.config.once:
            return self.run_one().exit_code
        with run_lock(self.settings, f"schedule-{sha[:16]}"):
            _event(logging.INFO, "scheduler_started", prompt=str(self.config.prompt_file),
                   every_s=self.config.every_s, pid=os.getpid())
            delay = self._initial_delay(sha)
            while not self.stop.is_set():
                if delay > 0:
                    _event(logging.INFO, "sleeping", seconds=round(delay, 3),
                           next_run_at=datetime.fromtimestamp(time.time() + delay, UTC))
                    if self.stop.wait(delay):
                        break
                started = time.monotonic()
                result = self.run_one()
                if result.exit_code == 2 and self.runs_done == 1:
                    return 2  # the prompt is unusable: do not retry it forever
                if self.config.max_runs is not None and self.runs_done >= self.config.max_runs:
                    break
                delay = max(0.0, self.config.every_s - (time.monotonic() - started))
                if result.exit_code == EXIT_LOCKED:
                    # Another prompt's report holds the data directory: retry soon, not in a week.
                    delay = min(delay, LOCKED_RETRY_S)
            _event(logging.INFO, "scheduler_stopped", runs=self.runs_done)
        return 0

    def _initial_delay(self, sha: str) -> float:
        """Wait out the rest of the interval when a restart follows a recent finished run."""
        if self._pending_run(sha) is not None:
            return 0.0
        last = ReportHistory(self.settings.data_dir).last_run_time(sha)
        if last is None:
            return 0.0
        elapsed = (datetime.now(UTC) - last).total_seconds()
        return max(0.0, self.config.every_s - elapsed)

    def _pending_run(self, sha: str) -> dict[str, Any] | None:
        try:
            state = json.loads(self.state_path(sha).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) and state.get("status") == "running" else None

    def run_one(self) -> RunResult:
        """Do one run under the data directory's run lock; never raise except on a signal."""
        self.runs_done += 1
        try:
            text = self.read_prompt()
            with run_lock(self.settings):
                return self._run_locked(text)
        except LockedError as exc:
            _event(logging.WARNING, "run_skipped", reason=str(exc), exit_code=exc.exit_code)
            return RunResult(exc.exit_code, error=str(exc))
        except RetestError as exc:
            _event(logging.ERROR, "run_failed", error=str(exc), error_type=type(exc).__name__,
                   exit_code=exc.exit_code)
            return RunResult(exc.exit_code, error=str(exc))
        except Exception as exc:  # survive anything a run throws; the next run starts clean
            log.error("run_failed", exc_info=True, extra={"fields": {
                "event": "run_failed", "error": f"{type(exc).__name__}: {exc}",
                "exit_code": EXIT_FAILURE}})
            return RunResult(EXIT_FAILURE, error=f"{type(exc).__name__}: {exc}")

    def _run_locked(self, text: str) -> RunResult:
        sha = prompt_sha256(text)
        # Only the first run of a process resumes: a run that failed in this process is not
        # retried forever, while one killed with its process is finished by the next start.
        pending = self._pending_run(sha) if self.runs_done == 1 else None
        if pending is not None:
            run_id, out_dir = pending["run_id"], Path(pending["out_dir"])
            _event(logging.INFO, "resuming", run_id=run_id, out_dir=str(out_dir))
        else:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            # The random tail keeps ids apart for runs started within the same second.
            run_id = f"sched-{sha[:12]}-{stamp}-{secrets.token_hex(3)}"
            out_dir = self._free_dir(self.out_root(sha) / stamp)
        atomic_write_json(self.state_path(sha), {"status": "running", "run_id": run_id,
                                                 "out_dir": str(out_dir), "pid": os.getpid()})
        _event(logging.INFO, "run_started", run_id=run_id, out_dir=str(out_dir),
               prompt_sha256=sha)
        began = time.monotonic()
        extra = {"options": self.config.options} if self.config.options is not None else {}
        try:
            outcome = self._run_fn()(text, self.settings, out_dir, run_id=run_id,
                                     on_event=_progress, cancel=self.stop, **extra)
        except Exception as exc:
            if self.stop.is_set():
                # Cancelled by SIGTERM: the state stays "running" so the next start resumes it.
                _event(logging.WARNING, "run_cancelled", run_id=run_id, reason=str(exc))
                return RunResult(EXIT_INTERRUPTED, out_dir, error=str(exc))
            atomic_write_json(self.state_path(sha), {"status": "failed", "run_id": run_id,
                                                     "out_dir": str(out_dir)})
            raise
        report = dict(getattr(outcome, "report", None) or {})
        exit_code = int(getattr(outcome, "exit_code", 0))
        if self.stop.is_set() and not (out_dir / "report.json").exists():
            _event(logging.WARNING, "run_cancelled", run_id=run_id)  # state stays: resume later
            return RunResult(exit_code, out_dir, report)
        atomic_write_json(self.state_path(sha), {"status": "done", "run_id": run_id,
                                                 "out_dir": str(out_dir)})
        changes = report.get("changes")
        if report and not isinstance(changes, dict):
            history = ReportHistory(self.settings.data_dir)
            previous = history.previous(report.get("prompt_sha256", sha),
                                        before=report.get("generated_at"))
            changes = diff_reports(previous, report)
            self._ensure_recorded(history, report, out_dir)
        self._point_latest(out_dir)
        _event(logging.INFO, "run_finished", run_id=run_id, out_dir=str(out_dir),
               exit_code=exit_code, degraded=list(report.get("degraded") or []),
               duration_s=round(time.monotonic() - began, 3),
               verdicts={c.get("id"): c.get("verdict") for c in report.get("claims") or []},
               new_papers=sum(len(g["papers"]) for g in (changes or {}).get("new_papers", [])),
               verdicts_changed=len((changes or {}).get("verdicts_changed", [])))
        if changes and verdicts_changed(changes):
            self._notify(out_dir)
        return RunResult(exit_code, out_dir, report, changes)

    @staticmethod
    def _ensure_recorded(history: ReportHistory, report: dict[str, Any], out_dir: Path) -> None:
        """Record the run in the history unless ``run_report`` already did."""
        sha = report.get("prompt_sha256")
        if not sha or not (out_dir / "report.json").exists():
            return
        when = report.get("generated_at")
        try:
            stamp = parse_time(when).isoformat() if when else None
        except (TypeError, ValueError):
            stamp = None
        if any(r.get("generated_at") == stamp or r.get("out_dir") == str(out_dir)
               for r in history.runs(sha)):
            return
        try:
            markdown = (out_dir / "report.md").read_text(encoding="utf-8")
        except OSError:
            markdown = ""
        history.record(report, markdown, out_dir)

    def _run_fn(self) -> RunReport:
        if self.run_fn is None:
            from agent.run import run_report

            self.run_fn = run_report
        return self.run_fn

    @staticmethod
    def _free_dir(candidate: Path) -> Path:
        base, n = candidate, 1
        while candidate.exists():
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")
        return candidate

    @staticmethod
    def _point_latest(out_dir: Path) -> None:
        """Point ``<out_root>/latest`` at the newest finished run (atomic symlink swap)."""
        link = out_dir.parent / "latest"
        tmp = out_dir.parent / f".latest.{os.getpid()}"
        try:
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            tmp.symlink_to(out_dir.name)
            os.replace(tmp, link)
        except OSError as exc:
            log.warning("cannot update %s: %s", link, exc)

    def _notify(self, out_dir: Path) -> None:
        """Run the notification hook with the report path; its failure never fails the run."""
        if not self.config.notify:
            return
        report_md = out_dir / "report.md"
        argv = [*self.config.notify, str(report_md)]
        env = {**os.environ, "RETEST_REPORT_DIR": str(out_dir),
               "RETEST_CHANGES_MD": str(out_dir / "changes.md")}
        try:
            done = subprocess.run(argv, env=env, timeout=NOTIFY_TIMEOUT_S, check=False,  # noqa: S603
                                  capture_output=True, text=True)
        except (OSError, subprocess.TimeoutExpired) as exc:
            _event(logging.WARNING, "notify_failed", argv=argv, error=str(exc))
            return
        level = logging.INFO if done.returncode == 0 else logging.WARNING
        _event(level, "notify_done" if done.returncode == 0 else "notify_failed", argv=argv,
               returncode=done.returncode, stderr=done.stderr[-500:])


def _progress(*args: Any, **kwargs: Any) -> None:
    """Log the agent's progress events as JSON lines (any shape: dict, text or keywords)."""
    fields: dict[str, Any] = {}
    for arg in args:
        if isinstance(arg, dict):
            fields.update(arg)
        else:
            fields.setdefault("detail", []).append(str(arg))
    fields.update(kwargs)
    name = str(fields.pop("event", None) or fields.get("stage") or "progress")
    log.info(name, extra={"fields": {"event": "progress", "step": name, **fields}})
