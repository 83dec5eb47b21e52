"""Safe rendering helpers: paper and model text is escaped before Streamlit sees it as Markdown.

Nothing here uses ``unsafe_allow_html``. Outside text (titles, abstracts, model replies, report
fields) goes through :func:`escape_md`; the only links we create are ``[arXiv:ID]`` citations of
well-formed ids that the answer's grounding already checked, pointing at arxiv.org/abs/ID.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tools.paper import is_valid_arxiv_id

# Every character Streamlit's Markdown (CommonMark + GFM + its directives) gives meaning to.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$=&])")
_ESCAPED_CITATION = re.compile(r"\\\[arXiv\\:([A-Za-z0-9\\./\-]+?)\\\]")

VERDICT_COLORS = {"holds": "green", "relaxed": "orange", "overturned": "red",
                  "unresolved": "gray"}
STANCE_COLORS = {"supports": "green", "relaxes": "orange", "overturns": "red",
                 "unrelated": "gray"}
ANCHOR_COLORS = {"verified": "green", "not_found": "red", "malformed": "red",
                 "unverifiable": "orange"}


def escape_md(text: object) -> str:
    """Return ``text`` with every Markdown-special character backslash-escaped."""
    return _MD_SPECIAL.sub(r"\\\1", str(text if text is not None else ""))


def abs_url(arxiv_id: str) -> str:
    """Return the arXiv abstract page of a well-formed id (raise ValueError otherwise)."""
    if not is_valid_arxiv_id(arxiv_id):
        raise ValueError(f"not an arXiv id: {arxiv_id!r}")
    return f"https://arxiv.org/abs/{arxiv_id}"


def linked_answer(text: str, cited_ids: Iterable[str]) -> str:
    """Escape ``text`` and turn its ``[arXiv:ID]`` citations of ``cited_ids`` into links.

    Citations of any other id stay as inert escaped text (grounding has removed them already;
    this is the second line of defence).
    """
    allowed = {i for i in cited_ids if is_valid_arxiv_id(i)}

    def link(match: re.Match[str]) -> str:
        arxiv_id = match.group(1).replace("\\", "")
        if arxiv_id not in allowed:
            return match.group(0)
        return f"[\\[arXiv:{arxiv_id}\\]]({abs_url(arxiv_id)})"

    return _ESCAPED_CITATION.sub(link, escape_md(text))


def badge(label: str, colors: dict[str, str]) -> str:
    """Markdown for a coloured badge of a known label (unknown labels are gray and escaped)."""
    color = colors.get(label, "gray")
    return f":{color}-badge[{escape_md(label)}]"


def md_cell(text: object, limit: int = 300) -> str:
    """Escape ``text`` for a Markdown table cell, cut to ``limit`` characters, one line."""
    flat = " ".join(str(text if text is not None else "").split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return escape_md(flat)
