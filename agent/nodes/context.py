"""The run-scoped context every node receives through LangGraph's ``Runtime``.

It carries what is not state: settings, the one LLM client (built lazily by
:func:`tools.llm.make_llm`, so a run that needs no model never starts one), the paper store and
arXiv source when they exist, the output folder, the progress callback and the cancel flag. It is
never checkpointed; a resumed run builds a fresh one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from agent.options import ReportOptions
from core.errors import RetestError, ServiceError
from core.settings import Settings

log = logging.getLogger(__name__)

ProgressEvent = dict[str, Any]
ModelT = TypeVar("ModelT", bound=BaseModel)
MAX_LLM_FAILURES = 3


class CancelledError(RetestError):
    """The caller asked the run to stop; the checkpoint lets ``--resume`` continue it."""


@dataclass
class RunContext:
    """Everything a node needs that is not graph state."""

    settings: Settings
    out_dir: Path
    run_id: str
    options: ReportOptions = field(default_factory=ReportOptions)
    on_event: Callable[[ProgressEvent], None] | None = None
    cancel: threading.Event | None = None
    llm_factory: Callable[[], Any] | None = None  # tests hand a fake; default make_llm
    _llm: Any = None
    _llm_error: str | None = None
    _failures: int = 0  # LLM calls that failed after all their retries
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def llm(self) -> Any:
        """Return the chat client, starting the embedded server on first use.

        Raise ServiceError (remembered, so later nodes fail fast) when no model can be reached.
        """
        with self._lock:
            if self._llm is None and self._llm_error is None:
                try:
                    if self.llm_factory is not None:
                        self._llm = self.llm_factory()
                    else:
                        from tools.llm import make_llm

                        self._llm = make_llm(self.settings)
                except RetestError as exc:
                    self._llm_error = str(exc)
            if self._llm is None:
                raise ServiceError(f"no LLM available: {self._llm_error}")
            return self._llm

    def complete_json(self, messages: list[dict[str, str]], schema: type[ModelT],
                      **kwargs: Any) -> ModelT:
        """Ask the model for JSON under ``schema``; fail fast once the model looks down.

        After ``MAX_LLM_FAILURES`` consecutive calls failed beyond their retries (each already
        waited out its timeouts), later calls raise at once, so a dead server degrades the run in
        minutes instead of hours.
        """
        if self._failures >= MAX_LLM_FAILURES:
            raise ServiceError(f"LLM skipped after {self._failures} failed calls")
        from tools.llm import StructuredOutputError

        try:
            reply = self.llm().complete_json(messages, schema, **kwargs)
        except StructuredOutputError:
            raise  # the model answered, badly: not a sign that it is down
        except ServiceError:
            with self._lock:
                self._failures += 1
            raise
        with self._lock:
            self._failures = 0  # consecutive failures only: a restarted server is fine again
        return reply

    @property
    def model_name(self) -> str:
        """Name of the judging model, or a note that none answered."""
        return getattr(self._llm, "model", None) or self.settings.llm.model or "unavailable"

    def usage(self) -> dict[str, int]:
        """LLM calls and tokens spent by this process."""
        if self._llm is None:
            return {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
        return dict(self._llm.usage.as_dict())

    def emit(self, stage: str, message: str, done: int = 0, total: int = 0) -> None:
        """Send one progress event to the caller (never lets a broken callback kill the run)."""
        log.info("[%s] %s (%d/%d)", stage, message, done, total)
        if self.on_event is not None:
            try:
                self.on_event({"stage": stage, "message": message, "done": done, "total": total})
            except Exception:  # noqa: BLE001 - a UI callback must not break the report
                log.exception("progress callback failed")

    def check_cancel(self) -> None:
        """Raise CancelledError when the caller asked to stop."""
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError(f"run {self.run_id} cancelled; continue it with --resume "
                                 f"{self.run_id}")
