"""Resolve one arXiv id to a paper: cache, then paper store, then local corpus, then the live API.

The answer says which source found it, or why it could not: ``malformed`` (not an arXiv id, e.g.
``2513.01234`` has month 13), ``not_found`` (the live API answered and has no such paper), or
``unverifiable`` (offline, or arXiv unreachable, and no local record: absence from local data
proves nothing). Facts in a report about an anchor id come only from the paper found here.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel

from core.settings import Settings
from tools.arxiv_source import ArxivBadRequest, ArxivSource, ArxivUnavailable
from tools.corpus import iter_corpus
from tools.paper import Paper, is_valid_arxiv_id, split_version
from tools.paper_cache import PaperCache
from tools.paper_store import PaperStore

logger = logging.getLogger(__name__)

Status = Literal["found", "not_found", "malformed", "unverifiable"]
SourceName = Literal["cache", "store", "corpus", "arxiv-api"]


class Resolution(BaseModel):
    """The outcome of resolving one id; ``paper`` is set exactly when ``status`` is found."""

    raw_id: str
    arxiv_id: str | None = None  # normalized, without version; None when malformed
    status: Status
    source: SourceName | None = None
    paper: Paper | None = None
    detail: str = ""


def resolve_paper(
    raw_id: str,
    settings: Settings,
    *,
    store: PaperStore | None = None,
    source: ArxivSource | None = None,
) -> Resolution:
    """Resolve ``raw_id`` (``2410.18890``, ``2410.18890v2``, ``arXiv:...``, an abs URL).

    Look in order at the arXiv cache, the paper store (the one given, or the data directory's
    when it exists), the corpus file of ``settings.corpus``, and finally the live API unless
    ``settings.offline``. Never raises for a bad or unknown id; the status says what happened.
    """
    text = str(raw_id).strip()
    base, _ = split_version(text)
    if not is_valid_arxiv_id(base):
        return Resolution(raw_id=text, status="malformed",
                          detail=f"{text!r} is not a well-formed arXiv id")
    cache = source.cache if source is not None else PaperCache.from_settings(settings)
    paper = cache.get_paper(base)
    if paper is not None:
        return _found(text, paper, "cache")

    store = store if store is not None else _existing_store(settings)
    if store is not None:
        paper = store.get(base)
        if paper is not None:
            return _found(text, paper, "store")

    if settings.corpus is not None and settings.corpus.is_file():
        paper = next((p for p in iter_corpus(settings.corpus) if p.arxiv_id == base), None)
        if paper is not None:
            return _found(text, paper, "corpus")

    if settings.offline:
        return Resolution(raw_id=text, arxiv_id=base, status="unverifiable",
                          detail="offline and no local record of this id")
    source = source if source is not None else ArxivSource(settings, cache)
    try:
        papers = source.fetch([base])
    except ArxivUnavailable as exc:
        return Resolution(raw_id=text, arxiv_id=base, status="unverifiable", detail=str(exc))
    except ArxivBadRequest as exc:  # arXiv itself says the id format is wrong
        return Resolution(raw_id=text, status="malformed", detail=str(exc))
    if base in papers:
        return _found(text, papers[base].model_copy(update={"source": "arxiv-api"}), "arxiv-api")
    return Resolution(raw_id=text, arxiv_id=base, status="not_found",
                      detail="the arXiv API has no paper with this id")


def _found(raw_id: str, paper: Paper, source: SourceName) -> Resolution:
    return Resolution(raw_id=raw_id, arxiv_id=paper.arxiv_id, status="found", source=source,
                      paper=paper)


def _existing_store(settings: Settings) -> PaperStore | None:
    """Open the data directory's store only if it exists (creating one just to look is waste)."""
    if not settings.store.chroma_url and not (settings.data_dir / "chroma").is_dir():
        return None
    return PaperStore(settings)
