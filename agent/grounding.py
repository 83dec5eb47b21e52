"""Grounding enforced in code: arXiv ids in generated text must be ids the run retrieved.

:func:`strip_ungrounded` removes (and returns) every id-looking token that is not allowed;
:func:`ground_markdown` is the final pass over the rendered report, which may also mention the
user's own anchor ids in the flagged-anchors section (they are input, never cited as evidence).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from tools.paper import split_version

log = logging.getLogger(__name__)

# Anything that looks like an arXiv id: new style (even with an impossible month, such as
# 2513.01234) or old style, with version, and with whatever names it as one in front: "arXiv:",
# "arXiv" glued on, or an arxiv.org abs/pdf URL (the whole URL is one match, so no bare URL
# survives around a removed id). This is the project's one id rule: reports, evidence and `ask`
# answers all go through it.
ARXIV_ID_PATTERN = re.compile(
    r"(?:https?://(?:www\.|export\.)?arxiv\.org/(?:abs|pdf)/|arxiv\s*:?\s*)?"
    r"(?<![\d.])(?P<id>\d{4}\.\d{4,5}(?:v\d+)?|[a-z][a-z\-]+(?:\.[A-Z]{2})?/\d{7}(?:v\d+)?)"
    r"(?![\d])(?:\.pdf)?",
    re.IGNORECASE,
)
# Characters that render as nothing: a model (or a poisoned abstract) can split an id with them.
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")
REMOVED_MARK = "[unverified id removed]"


def strip_invisible(text: str) -> str:
    """Remove zero-width and other invisible characters (so ``2599\u200b.99999`` is an id)."""
    return _INVISIBLE.sub("", text)


def find_arxiv_ids(text: str) -> list[str]:
    """Return the ids (without version) that look like arXiv ids in ``text``, in order."""
    return [split_version(m["id"])[0] for m in ARXIV_ID_PATTERN.finditer(strip_invisible(text))]


def strip_ungrounded(text: str, allowed: Iterable[str]) -> tuple[str, list[str]]:
    """Replace each id-looking token not in ``allowed`` by a marker; return text, removed ids."""
    allowed_set = {split_version(a)[0] for a in allowed}
    removed: list[str] = []

    def repl(match: re.Match[str]) -> str:
        base = split_version(match["id"])[0]
        if base in allowed_set:
            return match.group(0)
        removed.append(base)
        return REMOVED_MARK

    return ARXIV_ID_PATTERN.sub(repl, strip_invisible(text)), removed


def ground_markdown(markdown: str, retrieved: Iterable[str],
                    anchor_ids: Iterable[str]) -> tuple[str, list[str]]:
    """Run the final pass over a rendered report.

    Rows of the anchors table (marked with an ``<!-- anchor -->`` comment) may name the
    user's anchor ids; everywhere else only retrieved ids survive. Removed ids are logged.
    """
    retrieved_set = set(retrieved)
    anchors_set = retrieved_set | set(anchor_ids)
    out: list[str] = []
    removed_all: list[str] = []
    for line in markdown.splitlines():
        allowed = anchors_set if "<!-- anchor -->" in line else retrieved_set
        cleaned, removed = strip_ungrounded(line, allowed)
        removed_all += removed
        out.append(cleaned)
    if removed_all:
        log.warning("grounding pass removed ids not retrieved by this run: %s", removed_all)
    return "\n".join(out) + ("\n" if markdown.endswith("\n") else ""), removed_all
