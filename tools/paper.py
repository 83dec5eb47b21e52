"""The one normalized paper record every source (live arXiv, corpora, cache, store) returns."""

from __future__ import annotations

import re
from datetime import date

from pydantic import BaseModel, Field

# New-style ids (YYMM.NNNN[N]) and old-style ids (archive/YYMMNNN), with an optional version.
_NEW_ID = re.compile(r"^(?P<yy>\d{2})(?P<mm>\d{2})\.(?P<num>\d{4,5})(?:v(?P<v>\d+))?$")
_OLD_ID = re.compile(r"^(?P<arch>[a-z\-]+(?:\.[A-Z]{2})?)/(?P<yymm>\d{7})(?:v(?P<v>\d+))?$")


class Paper(BaseModel):
    """An arXiv paper, normalized. Facts in reports come from these fields, never from a model."""

    arxiv_id: str  # without version, e.g. "2410.18890"
    version: int | None = None
    title: str
    authors: list[str] = Field(default_factory=list)
    abstract: str = ""
    categories: list[str] = Field(default_factory=list)
    published: date | None = None
    updated: date | None = None
    comment: str | None = None
    doi: str | None = None
    links: list[str] = Field(default_factory=list)
    source: str = ""  # "arxiv-api", "cache", "corpus:<name>", "store"

    @property
    def abs_url(self) -> str:
        """The paper's arXiv abstract page."""
        return f"https://arxiv.org/abs/{self.arxiv_id}"


def split_version(raw_id: str) -> tuple[str, int | None]:
    """Split ``2410.18890v2`` into ``("2410.18890", 2)``; strip URL and ``arXiv:`` prefixes."""
    text = raw_id.strip()
    text = re.sub(r"^(https?://arxiv\.org/(abs|pdf)/|arxiv:)", "", text, flags=re.IGNORECASE)
    text = text.removesuffix(".pdf")
    match = re.match(r"^(.*?)v(\d+)$", text)
    if match and (_NEW_ID.match(text) or _OLD_ID.match(text)):
        return match.group(1), int(match.group(2))
    return text, None


def is_valid_arxiv_id(raw_id: str) -> bool:
    """Tell whether an id is well formed: a real month (01-12), a plausible year, digits.

    ``2513.01234`` is malformed (month 13); ``0704.0001`` and ``hep-th/9901001`` are fine.
    New-style ids started in April 2007 (0704); five-digit numbers started in 2015 (1501).
    """
    text, _ = split_version(raw_id)
    new = _NEW_ID.match(text)
    if new:
        yy, mm, num = int(new["yy"]), int(new["mm"]), new["num"]
        if not 1 <= mm <= 12 or (yy, mm) < (7, 4):
            return False
        return len(num) == (5 if yy >= 15 else 4)
    old = _OLD_ID.match(text)
    if old:
        month = int(old["yymm"][2:4])
        return 1 <= month <= 12
    return False


def normalize_arxiv_id(raw_id: str) -> str:
    """Return the id without prefix or version; raise ValueError when it is malformed."""
    text, _ = split_version(raw_id)
    if not is_valid_arxiv_id(text):
        raise ValueError(f"malformed arXiv id: {raw_id!r}")
    return text
