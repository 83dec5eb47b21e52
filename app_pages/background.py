"""Re-test runs in background threads, keyed by run id, so a browser refresh can reattach.

The app keeps one :class:`RunRegistry` per server process (``st.cache_resource``); the page stores
only the run id (in the URL's query string), reads the run's progress events from here and asks
it to cancel. The work itself is :func:`agent.run.run_report`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.settings import Settings

log = logging.getLogger(__name__)

_RUN_ID_CHARS = frozenset("0123456789abcdef")


@dataclass
class BackgroundRun:
    """One report run: its progress events, its outcome, and a cancel switch."""

    run_id: str
    out_dir: Path
    started_at: float = field(default_factory=time.time)
    events: list[dict[str, Any]] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    outcome: Any = None
    error: str | None = None
    cancelled: bool = False
    finished_at: float | None = None
    thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_event(self, event: dict[str, Any]) -> None:
        """Record one progress event (called from the worker thread)."""
        with self._lock:
            self.events.append(dict(event))

    def snapshot(self) -> list[dict[str, Any]]:
        """Return a copy of the events so far, safe to read while the run goes on."""
        with self._lock:
            return list(self.events)

    @property
    def running(self) -> bool:
        """Whether the worker thread is still going."""
        return self.thread is not None and self.thread.is_alive()

    def stages(self) -> dict[str, dict[str, Any]]:
        """Return the latest event of each stage, in the order the stages first appeared."""
        latest: dict[str, dict[str, Any]] = {}
        for event in self.snapshot():
            latest[str(event.get("stage", "run"))] = event
        return latest


class RunRegistry:
    """All report runs started by this app process."""

    def __init__(self) -> None:
        self._runs: dict[str, BackgroundRun] = {}
        self._lock = threading.Lock()

    def start(self, prompt_text: str, settings: Settings, runs_dir: Path,
              options: Any = None) -> BackgroundRun:
        """Start ``run_report`` on ``prompt_text`` in a daemon thread; return the run.

        ``options`` is an ``agent.nodes.context.ReportOptions`` (None: the agent's defaults).
        """
        from agent.run import run_report

        run_id = uuid.uuid4().hex[:16]
        out_dir = runs_dir / run_id
        run = BackgroundRun(run_id=run_id, out_dir=out_dir)

        def work() -> None:
            try:
                run.outcome = run_report(prompt_text, settings, out_dir, run_id=run_id,
                                         on_event=run.on_event, cancel=run.cancel,
                                         options=options)
            except Exception as exc:  # the page shows it; the thread must not die silently
                if run.cancel.is_set():
                    run.cancelled = True
                    log.info("report run %s cancelled", run_id)
                else:
                    log.exception("report run %s failed", run_id)
                run.error = f"{type(exc).__name__}: {exc}"
            finally:
                run.finished_at = time.time()

        run.thread = threading.Thread(target=work, name=f"retest-run-{run_id}", daemon=True)
        with self._lock:
            self._runs[run_id] = run
        run.thread.start()
        return run

    def get(self, run_id: str | None) -> BackgroundRun | None:
        """Return the run with this id, or None (ids from the URL are checked, not trusted)."""
        if not run_id or len(run_id) != 16 or not set(run_id) <= _RUN_ID_CHARS:
            return None
        with self._lock:
            return self._runs.get(run_id)

    def all(self) -> list[BackgroundRun]:
        """Every run, newest first."""
        with self._lock:
            return sorted(self._runs.values(), key=lambda r: r.started_at, reverse=True)
