"""Hybrid retrieval over a local corpus: a kept BM25 index fused with dense store rankings.

Dense vectors (MiniLM in the paper store) blur rare exact terms ("GRPO", "DPO"); BM25 misses
paraphrase. Each query is ranked by both, and every list (several queries per claim, times two
rankers, plus any outside list such as live arXiv) is fused by reciprocal rank
(:func:`tools.ranking.reciprocal_rank_fusion`).

The BM25 side is :class:`LexicalIndex`: built once per corpus file over title + abstract with
``bm25s`` (Snowball-stemmed, English stop words dropped), saved under
``<data_dir>/bm25/<fingerprint>/`` where the fingerprint is the SHA-256 of the corpus bytes and
the index format, and loaded in well under a second on later runs. Built into a temporary folder
and renamed into place under a file lock, so a killed build leaves nothing half-written and two
processes never build the same index at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import BadInputError
from core.fsutil import atomic_write_text
from core.lock import FileLock
from tools.corpus import iter_corpus
from tools.paper import Paper
from tools.ranking import reciprocal_rank_fusion

log = logging.getLogger(__name__)


def _bm25s() -> Any:
    """Import bm25s (heavy, so lazily) with its DEBUG build messages kept off stderr.

    bm25s sets its own logger to DEBUG when imported, so the level is reset after the import.
    """
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s

# Bump when the tokenization or the saved layout changes: old indexes are then rebuilt.
INDEX_FORMAT = "bm25s-0.3/title2-abstract/snowball-en/stop-en/v1"
# Ranked ids taken from each (query, ranker) list before fusion. RRF only needs the head of
# each list; 100 keeps a paper that several queries rank moderately well.
LIST_DEPTH = 100
DENSE_WEIGHT = 1.0
LEXICAL_WEIGHT = 1.0

# Pseudo-relevance feedback: the first fused ranking's top papers are taken as relevant and the
# claim is searched again, by BM25 with their ten heaviest terms added and by a dense vector
# moved halfway toward their mean (Rocchio, beta 0.5: PaperStore.feedback_search). It finds
# papers the claim's own words miss ("reasoning boundary", "RLVR" for a claim about RL
# post-training): dev-set recall@20 0.246 -> 0.296 (bench/retrieval_bench.py); ten feedback
# papers did better than three or five.
FEEDBACK_PAPERS = 10
FEEDBACK_TERMS = 10

# (queries, n, since) -> per query, [(arxiv_id, score)] best first; the paper store's shape.
DenseSearch = Callable[[list[str], int, "date | None"], list[list[tuple[str, float]]]]
# (query, feedback ids, n, since) -> [(arxiv_id, score)] best first; PaperStore.feedback_search.
DenseFeedback = Callable[[str, list[str], int, "date | None"], list[tuple[str, float]]]


def corpus_fingerprint(path: Path | str) -> str:
    """Return a hex digest naming this corpus file's exact bytes and the index format."""
    digest = hashlib.sha256(INDEX_FORMAT.encode())
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise BadInputError(f"cannot read corpus {path}: {exc}") from None
    return digest.hexdigest()[:24]


def _day_int(day: date | None) -> int:
    return day.year * 10000 + day.month * 100 + day.day if day else 0


def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def _tokenize(texts: list[str], stemmer: Any, *, ids: bool) -> Any:
    bm25s = _bm25s()

    return bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=ids,
                          show_progress=False)


def document_text(title: str, abstract: str) -> str:
    """Return the text BM25 indexes for one paper: the title twice (it names the topic)."""
    return f"{title} {title} {abstract}"


class LexicalIndex:
    """BM25 over the title and abstract of every paper of one corpus file.

    ``ids[i]`` and ``days[i]`` (YYYYMMDD, 0 when undated) describe document ``i``.
    """

    def __init__(self, retriever: Any, ids: list[str], days: np.ndarray, path: Path | None
                 ) -> None:
        """Wrap a built ``bm25s.BM25``; use :meth:`for_corpus` or :meth:`build` instead."""
        self.retriever = retriever
        self.ids = ids
        self.days = days
        self.path = path
        self._stemmer = _stemmer()
        self._rows: dict[str, int] | None = None  # arxiv id -> document row, built on demand
        self._names: dict[int, str] | None = None  # token id -> token, built on demand

    def __len__(self) -> int:
        """Return how many papers the index holds."""
        return len(self.ids)

    @classmethod
    def for_corpus(cls, corpus: Path | str, data_dir: Path | str, *, progress: bool = True
                   ) -> LexicalIndex:
        """Load this corpus's saved index from ``data_dir``; build and save it first if none.

        Building takes about 40 s for the 46,696-record shared corpus on 2 cores.
        """
        root = Path(data_dir) / "bm25"
        folder = root / corpus_fingerprint(corpus)
        if (folder / "meta.json").is_file():
            return cls.load(folder)
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(root / f"{folder.name}.lock", "bm25 index build", wait=True):
            if (folder / "meta.json").is_file():  # another process built it while we waited
                return cls.load(folder)
            index = cls.build(corpus, progress=progress)
            index.save(folder)
        log.info("built BM25 index of %d papers at %s", len(index), folder)
        return index

    @classmethod
    def build(cls, corpus: Path | str, *, progress: bool = True) -> LexicalIndex:
        """Build an index in memory from every readable record of ``corpus`` (first id wins)."""
        return cls.from_papers(iter_corpus(corpus), progress=progress, source=f"corpus {corpus}")

    @classmethod
    def from_papers(cls, papers: Iterable[Paper], *, progress: bool = True,
                    source: str = "the paper list") -> LexicalIndex:
        """Build an index in memory over ``papers`` (first of each id wins).

        Raise BadInputError naming ``source`` when there is no paper to index.
        """
        bm25s = _bm25s()

        ids: list[str] = []
        days: list[int] = []
        texts: list[str] = []
        seen: set[str] = set()
        for paper in papers:
            if paper.arxiv_id in seen:
                continue
            seen.add(paper.arxiv_id)
            ids.append(paper.arxiv_id)
            days.append(_day_int(paper.published))
            texts.append(document_text(paper.title, paper.abstract))
        if not ids:
            raise BadInputError(f"{source} holds no readable papers to index")
        tokens = _tokenize(texts, _stemmer(), ids=True)
        retriever = bm25s.BM25()
        # Bars only on a terminal: in logs (cron, the scheduler's JSON lines) they are noise.
        retriever.index(tokens, show_progress=progress and sys.stderr.isatty())
        return cls(retriever, ids, np.asarray(days, dtype=np.int32), None)

    def save(self, folder: Path) -> None:
        """Write the index to ``folder`` atomically (a temporary sibling renamed into place)."""
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.retriever.save(str(tmp), show_progress=False)
        np.save(tmp / "days.npy", self.days)
        atomic_write_text(tmp / "ids.json", json.dumps(self.ids))
        # meta.json last: its presence marks a complete index.
        atomic_write_text(tmp / "meta.json", json.dumps({"format": INDEX_FORMAT,
                                                         "papers": len(self.ids)}))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        self.path = folder

    @classmethod
    def kept(cls, data_dir: Path | str) -> list[LexicalIndex]:
        """Load every complete index saved under ``data_dir``, newest first; never build one.

        One per corpus file that a report or ``retest ingest`` indexed there: together they
        cover the papers the store under the same ``data_dir`` was filled from. Ids they list
        that the caller does not hold are the caller's to drop.
        """
        saved = sorted((Path(data_dir) / "bm25").glob("*/meta.json"),
                       key=lambda meta: meta.stat().st_mtime, reverse=True)
        return [cls.load(meta.parent) for meta in saved]

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        """Load an index saved by :meth:`save`."""
        bm25s = _bm25s()

        retriever = bm25s.BM25.load(str(folder))
        ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
        days = np.load(folder / "days.npy")
        return cls(retriever, ids, days, folder)

    def _row_of(self) -> dict[str, int]:
        if self._rows is None:
            self._rows = {pid: row for row, pid in enumerate(self.ids)}
        return self._rows

    def expansion_terms(self, paper_ids: Sequence[str], query: str, m: int) -> list[str]:
        """Return the ``m`` index terms carrying the most BM25 weight in ``paper_ids``.

        Pseudo-relevance feedback (RM3-like, with the index's own BM25 weights as term
        weights): each term's weight summed over the given papers, terms of ``query`` left out.
        Terms are the index's stemmed tokens; papers not in the index are ignored.
        """
        rows = [self._row_of()[i] for i in paper_ids if i in self._row_of()]
        if not rows or m < 1:
            return []
        scores = self.retriever.scores
        indptr, indices, data = scores["indptr"], scores["indices"], scores["data"]
        # Column t of the token-by-paper matrix is indices[indptr[t]:indptr[t + 1]].
        positions = np.flatnonzero(np.isin(indices, np.asarray(rows, dtype=indices.dtype)))
        tokens = np.searchsorted(indptr, positions, side="right") - 1
        weight = np.bincount(tokens, weights=data[positions], minlength=len(indptr))
        if self._names is None:
            self._names = {tid: tok for tok, tid in self.retriever.vocab_dict.items()}
        have = set(_tokenize([query], self._stemmer, ids=False)[0])
        out: list[str] = []
        for tid in np.argsort(-weight, kind="stable"):
            if weight[tid] <= 0 or len(out) == m:
                break
            token = self._names.get(int(tid), "")
            if token and token not in have:
                out.append(token)
        return out

    def feedback_search(self, query: str, paper_ids: Sequence[str], n: int,
                        since: date | None = None, terms: int = 10
                        ) -> list[tuple[str, float]]:
        """Rank papers by BM25 of ``query`` plus the ``terms`` best terms of ``paper_ids``."""
        tokens = _tokenize([query], self._stemmer, ids=False)[0]
        tokens = list(tokens) + self.expansion_terms(paper_ids, query, terms)
        return self._ranked(tokens, n, since)

    def _ranked(self, tokens: list[str], n: int, since: date | None
                ) -> list[tuple[str, float]]:
        if not tokens or n < 1:
            return []
        mask = None
        if since is not None:
            mask = (self.days >= _day_int(since)).astype(np.float32)
        docs, scores = self.retriever.retrieve([tokens], k=min(n, len(self.ids)),
                                               show_progress=False, weight_mask=mask,
                                               n_threads=0)
        return [(self.ids[int(d)], float(s)) for d, s in zip(docs[0], scores[0], strict=True)
                if s > 0]

    def search(self, queries: Sequence[str], n: int, since: date | None = None
               ) -> list[list[tuple[str, float]]]:
        """Rank papers for each query by BM25; keep at most ``n`` with a positive score.

        ``since`` keeps papers published on or after it (undated papers are then left out).
        Return one ``[(arxiv_id, score)]`` list per query, best first.
        """
        if n < 1 or not queries:
            return [[] for _ in queries]
        return [self._ranked(list(tokens), n, since)
                for tokens in _tokenize(list(queries), self._stemmer, ids=False)]


@dataclass(frozen=True)
class WeightedQuery:
    """A query and how much its rankings count in the fusion (the claim itself counts most)."""

    text: str
    weight: float = 1.0


class HybridRetriever:
    """Fuse BM25 and dense rankings of several queries by reciprocal rank.

    Either side may be None (the bench measures each alone); ``dense`` has the shape of the
    paper store's dense search (:data:`DenseSearch`).
    """

    def __init__(self, lexical: LexicalIndex | None, dense: DenseSearch | None,
                 *, dense_feedback: DenseFeedback | None = None,
                 feedback_papers: int = FEEDBACK_PAPERS, depth: int = LIST_DEPTH,
                 lexical_weight: float = LEXICAL_WEIGHT, dense_weight: float = DENSE_WEIGHT
                 ) -> None:
        """Keep the rankers; ``depth`` ids are taken from each list before fusion.

        With ``feedback_papers`` > 0, :meth:`rank` searches the lead query a second time with
        pseudo-relevance feedback from that many top papers: BM25 expansion when there is a
        lexical index, Rocchio when ``dense_feedback`` is given. 0 turns feedback off.
        """
        if lexical is None and dense is None:
            raise ValueError("hybrid retrieval needs a lexical index, a dense search or both")
        self.lexical = lexical
        self.dense = dense
        self.dense_feedback = dense_feedback
        self.feedback_papers = feedback_papers
        self.depth = depth
        self.lexical_weight = lexical_weight
        self.dense_weight = dense_weight

    def rank(self, queries: Sequence[WeightedQuery], n: int, since: date | None = None,
             extra: Sequence[tuple[list[str], float]] = ()) -> list[tuple[str, float]]:
        """Return the ``n`` best ``(arxiv_id, fused score)`` for the queries, best first.

        ``since`` bounds the publication date below (inclusive); ``extra`` adds ranked id lists
        from elsewhere (e.g. live arXiv) with their weights. Blank queries are ignored. The
        first query is the lead (the claim itself): feedback, when on, expands it alone.
        """
        queries = [q for q in queries if q.text.strip()]
        texts = [q.text for q in queries]
        rankings: list[list[str]] = []
        weights: list[float] = []
        for ranker, side_weight in ((self.lexical.search if self.lexical else None,
                                     self.lexical_weight),
                                    (self.dense, self.dense_weight)):
            if ranker is None or not texts:
                continue
            for query, hits in zip(queries, ranker(texts, self.depth, since), strict=True):
                rankings.append([doc_id for doc_id, _ in hits])
                weights.append(side_weight * query.weight)
        for ids, weight in extra:
            rankings.append(list(ids))
            weights.append(weight)
        fused = reciprocal_rank_fusion(rankings, weights)
        if self.feedback_papers > 0 and queries and fused:
            lead = queries[0]
            top = [pid for pid, _ in fused[:self.feedback_papers]]
            if self.lexical is not None:
                hits = self.lexical.feedback_search(lead.text, top, self.depth, since,
                                                    FEEDBACK_TERMS)
                rankings.append([pid for pid, _ in hits])
                weights.append(self.lexical_weight * lead.weight)
            if self.dense_feedback is not None:
                hits = self.dense_feedback(lead.text, top, self.depth, since)
                rankings.append([pid for pid, _ in hits])
                weights.append(self.dense_weight * lead.weight)
            fused = reciprocal_rank_fusion(rankings, weights)
        return fused[:n]


def cosine_relevance(embed: Callable[[list[str]], Any], claim: str, documents: list[str]
                     ) -> list[float]:
    """Return the cosine similarity of ``claim`` to each document under ``embed``.

    ``embed`` maps texts to unit vectors (the paper store's embedder); this is the absolute
    relevance the evidence floor is applied to, since fused scores only order papers.
    """
    if not documents:
        return []
    vectors = np.asarray(embed([claim, *documents]), dtype=np.float32)
    return [float(v) for v in vectors[1:] @ vectors[0]]


class ClaimRelevance:
    """The cosine of one claim to papers, for the evidence floor.

    Papers in the head (``depth``) of the store's dense ranking of the claim text take the
    cosine the store computed; only the others are embedded here, so a run embeds a handful of
    abstracts instead of every shortlisted one.
    """

    def __init__(self, claim: str, embed: Callable[[list[str]], Any],
                 dense: DenseSearch | None = None, since: date | None = None,
                 depth: int = 2 * LIST_DEPTH) -> None:
        """Ask ``dense`` (when given) once for the claim's ranking; keep its cosines."""
        self.claim = claim
        self.embed = embed
        self.known: dict[str, float] = dict(dense([claim], depth, since)[0]) if dense else {}

    def __call__(self, papers: Sequence[Any]) -> list[float]:
        """Return the cosine of the claim to each paper (objects with arxiv_id/title/abstract)."""
        missing = [p for p in papers if p.arxiv_id not in self.known]
        docs = [f"{p.title}\n\n{p.abstract}".strip() for p in missing]
        self.known.update({p.arxiv_id: s for p, s in zip(
            missing, cosine_relevance(self.embed, self.claim, docs), strict=True)})
        return [self.known[p.arxiv_id] for p in papers]
