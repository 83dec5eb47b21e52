"""Caches that make a re-run cheap: LLM judgements per (claim, paper, model) and eval results.

Both live in one SQLite file, ``<data_dir>/cache/judgements.sqlite``. A re-run of the same prompt
looks up every (claim, paper, model) before asking the LLM, so papers it already judged cost no
LLM call; an evaluation whose spec, models and data are unchanged is reused by its key.
:func:`incremental_since` tells the arXiv search how far back a re-run needs to look.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from datetime import date, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from agent.history import ReportHistory
from core.fsutil import WriteError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgements (
    key TEXT PRIMARY KEY, claim_text TEXT NOT NULL, arxiv_id TEXT NOT NULL, model TEXT NOT NULL,
    judgement TEXT NOT NULL, created_at TEXT NOT NULL DEFAULT (datetime('now')));
"""


def _normalize_claim(text: str) -> str:
    # Re-wrapping a prompt file must not invalidate its judgements.
    return re.sub(r"\s+", " ", text).strip()


def judgement_key(claim_text: str, arxiv_id: str, model: str, variant: str = "") -> str:
    """Return the cache key of one judgement: sha256 over claim, paper id, model and variant."""
    parts = [_normalize_claim(claim_text), arxiv_id.strip(), model.strip(), variant]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


class JudgementCache:
    """SQLite cache of judgements and evaluation summaries; safe across threads and processes.

    ``hits`` and ``misses`` count judgement look-ups, so a report can say how many LLM calls the
    cache saved.
    """

    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir) / "cache" / "judgements.sqlite"
        self.hits = 0
        self.misses = 0
        self._guard = threading.Lock()
        db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            if db is not None:  # a full or read-only disk: do not keep the file open
                db.close()
            raise WriteError(f"cannot open judgement cache {self.path}: {exc}") from exc
        self._db = db

    def get(self, claim_text: str, arxiv_id: str, model: str,
            variant: str = "") -> dict[str, Any] | None:
        """Return the cached judgement of ``arxiv_id`` against the claim by ``model``, or None.

        ``variant`` separates judgements made with different prompt templates.
        """
        key = judgement_key(claim_text, arxiv_id, model, variant)
        row = self._query("SELECT judgement FROM judgements WHERE key = ?", (key,))
        with self._guard:
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return json.loads(row[0])

    def put(self, claim_text: str, arxiv_id: str, model: str, judgement: dict[str, Any],
            variant: str = "") -> None:
        """Store (or replace) the judgement of ``arxiv_id`` against the claim by ``model``."""
        key = judgement_key(claim_text, arxiv_id, model, variant)
        self._execute(
            "INSERT OR REPLACE INTO judgements (key, claim_text, arxiv_id, model, judgement) "
            "VALUES (?, ?, ?, ?, ?)",
            (key, _normalize_claim(claim_text), arxiv_id, model,
             json.dumps(judgement, default=str)))

    def close(self) -> None:
        """Close the database connection."""
        with self._guard:
            self._db.close()

    def _query(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        with self._guard:
            try:
                return self._db.execute(sql, args).fetchone()
            except sqlite3.Error as exc:
                raise WriteError(f"cannot read judgement cache {self.path}: {exc}") from exc

    def _execute(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._guard:
            try:
                self._db.execute(sql, args)
            except sqlite3.Error as exc:
                raise WriteError(f"cannot write judgement cache {self.path}: {exc}") from exc

    def __enter__(self) -> JudgementCache:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def is_live_source(corpus: str | None) -> bool:
    """Return True when a report's ``corpus`` field names the live arXiv API, not a file."""
    if not corpus:
        return True
    text = str(corpus).lower()
    return text.startswith(("arxiv", "http://", "https://")) and not text.endswith(
        (".jsonl", ".json", ".gz"))


def incremental_since(history: ReportHistory, prompt_sha256: str, overlap_days: int = 7, *,
                      corpus: str | Path | None = None) -> date | None:
    """Return the earliest publication date a re-run must ask arXiv for, or None for everything.

    That is the date of the last run of the prompt whose arXiv source was not degraded, minus
    ``overlap_days`` (arXiv lists papers days after submission, and a run may have been cut
    short). A local ``corpus`` gets None: its listing dates say nothing about when we last ran,
    reading it is cheap, and the judgement cache already spares the LLM calls.
    """
    if corpus is not None:
        return None
    for meta in reversed(history.runs(prompt_sha256)):
        if not is_live_source(meta.get("corpus")):
            continue  # a corpus run says nothing about what the live API has already shown us
        if any("arxiv" in str(d).lower() for d in meta.get("degraded") or []):
            continue
        return date.fromisoformat(meta["generated_at"][:10]) - timedelta(days=overlap_days)
    return None
