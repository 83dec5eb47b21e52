"""A persistent SQLite cache of arXiv answers: result lists by normalized query, papers by id.

A repeated run asks the cache first and makes no new request; an offline run answers from it
alone. The file lives at ``<data_dir>/arxiv_cache.sqlite``. Each call opens its own short-lived
connection, so one cache object is safe to share between threads and processes (SQLite locks the
file; WAL mode lets readers run beside a writer).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

from core.settings import Settings
from tools.paper import Paper

CACHE_FILENAME = "arxiv_cache.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS papers (
    arxiv_id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    fetched_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS queries (
    key TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    arxiv_ids TEXT NOT NULL,
    fetched_at TEXT NOT NULL
);
"""


def query_key(
    query: str,
    *,
    since: date | None = None,
    until: date | None = None,
    categories: Iterable[str] | None = None,
    max_results: int | None = None,
    kind: str = "search",
) -> tuple[str, str]:
    """Return ``(key, description)`` for a query, equal for queries that differ only trivially.

    Case and runs of whitespace in the query text and the order of categories do not matter.
    """
    text = " ".join(query.split()).lower()
    cats = ",".join(sorted({c.strip() for c in categories or [] if c.strip()}))
    description = (
        f"{kind}|{text}|since={since.isoformat() if since else ''}"
        f"|until={until.isoformat() if until else ''}|cats={cats}|max={max_results or ''}"
    )
    return hashlib.sha256(description.encode("utf-8")).hexdigest(), description


class PaperCache:
    """SQLite cache of papers (by id) and query answers (by normalized query key)."""

    def __init__(self, path: Path) -> None:
        """Open (and create when missing) the cache file at ``path``."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @classmethod
    def from_settings(cls, settings: Settings) -> PaperCache:
        """Open the cache in the settings' data directory."""
        return cls(Path(settings.data_dir) / CACHE_FILENAME)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A generous busy timeout: several engineers' processes may share one data directory.
        conn = sqlite3.connect(self.path, timeout=30.0)
        try:
            with conn:  # commits on success, rolls back on error
                yield conn
        finally:
            conn.close()

    def get_paper(self, arxiv_id: str) -> Paper | None:
        """Return the cached paper with this (version-less) id, or None."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT record FROM papers WHERE arxiv_id = ?", (arxiv_id,)
            ).fetchone()
        return _load(row[0]) if row else None

    def get_papers(self, arxiv_ids: Iterable[str]) -> dict[str, Paper]:
        """Return the cached papers among ``arxiv_ids``, keyed by id (missing ids are absent)."""
        wanted = list(dict.fromkeys(arxiv_ids))
        found: dict[str, Paper] = {}
        with self._connect() as conn:
            # Chunked: SQLite limits the number of bound parameters per statement.
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT arxiv_id, record FROM papers WHERE arxiv_id IN ({marks})",  # noqa: S608
                    chunk,
                ).fetchall()
                found.update({arxiv_id: _load(record) for arxiv_id, record in rows})
        return found

    def put_papers(self, papers: Iterable[Paper]) -> int:
        """Store (or refresh) papers by id; return how many were written."""
        now = _now()
        rows = [(p.arxiv_id, p.model_dump_json(), now) for p in papers]
        with self._connect() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO papers (arxiv_id, record, fetched_at) VALUES (?, ?, ?)",
                rows,
            )
        return len(rows)

    def get_query(self, key: str) -> list[Paper] | None:
        """Return the cached answer of a query key in its original order, or None if unseen.

        An empty list is a real cached answer (the API found nothing), distinct from None.
        """
        with self._connect() as conn:
            row = conn.execute("SELECT arxiv_ids FROM queries WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        ids: list[str] = json.loads(row[0])
        papers = self.get_papers(ids)
        if len(papers) != len(set(ids)):
            return None  # a paper row went missing: treat the answer as not cached
        return [papers[i] for i in ids]

    def put_query(self, key: str, description: str, papers: list[Paper]) -> None:
        """Store a query's answer (the papers themselves are stored by id too)."""
        self.put_papers(papers)
        ids = json.dumps([p.arxiv_id for p in papers])
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO queries (key, description, arxiv_ids, fetched_at) "
                "VALUES (?, ?, ?, ?)",
                (key, description, ids, _now()),
            )

    def stats(self) -> dict[str, int]:
        """Return how many papers and queries the cache holds."""
        with self._connect() as conn:
            papers = conn.execute("SELECT COUNT(*) FROM papers").fetchone()[0]
            queries = conn.execute("SELECT COUNT(*) FROM queries").fetchone()[0]
        return {"papers": int(papers), "queries": int(queries)}


def _load(record: str) -> Paper:
    paper = Paper.model_validate_json(record)
    return paper.model_copy(update={"source": "cache"})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
