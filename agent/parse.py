"""Turn a research prompt into a Brief: question, dated claims, anchor ids, tasks.

The parser is deterministic and tolerant: any bullet style (``•``, ``-``, ``*``, ``–``), dates
in a trailing parenthesis or missing, extra prose anywhere. Dates become ISO ranges
(``~2024–2025`` -> 2024-01-01..2025-12-31, ``Oct 2024`` -> 2024-10-01..2024-10-31). Anchor ids are
validated with :func:`tools.paper.is_valid_arxiv_id` (``2513.01234`` is malformed). Only when it
finds no claim at all does :func:`parse_with_fallback` ask the LLM, and then it keeps only claims
whose words actually occur in the prompt.
"""

from __future__ import annotations

import calendar
import hashlib
import logging
import re
from datetime import date
from pathlib import Path

from pydantic import BaseModel, Field

from agent.state import Anchor, Brief, Claim
from core.errors import BadInputError
from tools.paper import is_valid_arxiv_id, split_version

log = logging.getLogger(__name__)

_BULLET = re.compile(r"^\s*(?:[•●◦▪‣∙·*+]|-{1,2}|–|—)\s+(?P<body>\S.*)$")
_NUMBERED = re.compile(r"^\s*(?:\((?P<a>\d{1,2})\)|(?P<b>\d{1,2})[.)])\s+(?P<body>\S.*)$")
# An anchor line: an arXiv id (possibly malformed) near the start of the line.
_ANCHOR = re.compile(
    r"^(?:arxiv\s*:?\s*|https?://arxiv\.org/(?:abs|pdf)/)?"
    r"(?P<id>\d{4}\.\d{3,6}(?:v\d+)?|[a-z][a-z\-]+(?:\.[A-Z]{2})?/\d{5,8}(?:v\d+)?"
    r"|(?<=arxiv:)\S+)(?P<rest>.*)$",
    re.IGNORECASE,
)
_TRAILING_PAREN = re.compile(r"\s*\((?P<inner>[^()]*)\)\s*[.;,]?\s*$")
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_DATE_TOKEN = re.compile(
    r"(?:(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+)?"
    r"(?P<year>(?:19|20)\d{2})(?:[-/](?P<num_mon>0[1-9]|1[0-2])(?!\d))?",
    re.IGNORECASE,
)
_TASK_HEADING = re.compile(r"^\s*(?:#+\s*)?(?:your\s+)?tasks?\b.*:?\s*$", re.IGNORECASE)
_ANCHOR_HEADING = re.compile(r"anchor|references?\b|papers?\s*(?:\(|:)", re.IGNORECASE)
# Bounds on what one prompt may hold: a research prompt is a page, not a corpus. Past these the
# run would take hours (every claim costs LLM calls), so refuse with one clear line instead.
# The one size limit of a research prompt, wherever it comes from (file, scheduler, app upload or
# paste). A real prompt is a few KB; 256 KiB leaves room for pasted notes and refuses a data dump.
MAX_PROMPT_BYTES = 256 * 1024
MAX_CLAIMS = 200


def parse_date_range(text: str) -> tuple[str, str] | None:
    """Return (first day, last day) covered by the dates in ``text``, or None if it has none.

    Years cover the whole year, month-years the whole month; the range spans the first to the
    last date mentioned (``~2024–2025``, ``Oct 2024``, ``2023-2026``, ``2025-03``).
    """
    points: list[tuple[int, int | None]] = []
    for match in _DATE_TOKEN.finditer(text):
        year = int(match["year"])
        month = None
        if match["mon"]:
            month = _MONTHS.get(match["mon"].lower()[:3])
        elif match["num_mon"]:
            month = int(match["num_mon"])
        points.append((year, month))
    if not points:
        return None
    (y0, m0), (y1, m1) = points[0], points[-1]
    if (y1, m1 or 12) < (y0, m0 or 1):
        (y0, m0), (y1, m1) = (y1, m1), (y0, m0)
    start = date(y0, m0 or 1, 1)
    end_month = m1 or 12
    end = date(y1, end_month, calendar.monthrange(y1, end_month)[1])
    return start.isoformat(), end.isoformat()


def _clean(text: str) -> str:
    """Drop markdown emphasis and squeeze whitespace."""
    text = re.sub(r"\*\*|__|`", "", text)
    return re.sub(r"\s+", " ", text).strip()


def _split_claim_date(body: str) -> tuple[str, str, tuple[str, str] | None]:
    """Split ``claim text (~2024–2025).`` into text, the date as written, and its range."""
    match = _TRAILING_PAREN.search(body)
    if match:
        rng = parse_date_range(match["inner"])
        if rng is not None:
            text = body[: match.start()].rstrip(" .;,")
            return _clean(text) + ".", _clean(match["inner"]), rng
    return _clean(body), "", None


def _parse_anchor(body: str) -> Anchor | None:
    """Read ``arXiv:2410.18890 (Oct 2024): note``; None when the line is not an anchor."""
    match = _ANCHOR.match(body.strip())
    if not match:
        return None
    raw = match["id"].rstrip(".,;:)")
    rest = match["rest"]
    dated = ""
    paren = re.match(r"\s*\((?P<inner>[^()]*)\)", rest)
    if paren and parse_date_range(paren["inner"]):
        dated = paren["inner"].strip()
        rest = rest[paren.end():]
    note = _clean(rest.lstrip(" :–—-"))
    valid = is_valid_arxiv_id(raw)
    arxiv_id = split_version(raw)[0] if valid else raw
    return Anchor(raw=raw, arxiv_id=arxiv_id, valid=valid, dated=dated, note=note)


def _logical_lines(text: str) -> list[str]:
    """Join indented continuation lines onto the bullet or numbered line they continue."""
    out: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        starts_item = bool(_BULLET.match(line) or _NUMBERED.match(line))
        if (out and stripped and line[:1].isspace() and not starts_item
                and (_BULLET.match(out[-1]) or _NUMBERED.match(out[-1]))):
            out[-1] = out[-1].rstrip() + " " + stripped
        else:
            out.append(line)
    return out


def _question(lines: list[str]) -> str:
    for i, line in enumerate(lines):
        if line.strip().lower().rstrip(":") in ("inquiring line", "question", "research question"):
            for nxt in lines[i + 1:]:
                if nxt.strip():
                    return _clean(nxt)
    for line in lines:
        if line.strip().endswith("?") and not _BULLET.match(line):
            return _clean(line)
    return next((_clean(line) for line in lines if line.strip()), "")


def prompt_sha256(text: str) -> str:
    """Return the sha256 of a research prompt's text: its identity in report.json and history."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def decode_prompt(data: bytes, source: str) -> str:
    """Return prompt bytes from ``source`` (a path or "upload") as text, or raise BadInputError.

    The one reading rule: at most :data:`MAX_PROMPT_BYTES`, UTF-8, no NUL bytes, not blank.
    """
    if len(data) > MAX_PROMPT_BYTES:
        raise BadInputError(f"prompt {source} is too large ({len(data):,} bytes; a research "
                            f"prompt holds at most {MAX_PROMPT_BYTES:,})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"prompt {source} is not UTF-8 text") from None
    if "\x00" in text:
        raise BadInputError(f"prompt {source} is not text (it contains NUL bytes)")
    if not text.strip():
        raise BadInputError(f"prompt {source} is empty")
    return text


def read_prompt_file(path: Path) -> str:
    """Read the research prompt at ``path`` under :func:`decode_prompt`'s rule.

    The size is checked before reading, so a 50 MB file is refused without loading it.
    """
    try:
        size = path.stat().st_size
        if size > MAX_PROMPT_BYTES:
            raise BadInputError(f"prompt file {path} is too large ({size:,} bytes; a research "
                                f"prompt holds at most {MAX_PROMPT_BYTES:,})")
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInputError(f"prompt file not found: {path}") from None
    except IsADirectoryError:
        raise BadInputError(f"prompt file {path} is a directory") from None
    except OSError as exc:
        raise BadInputError(f"cannot read prompt file {path}: {exc.strerror}") from None
    return decode_prompt(data, f"file {path}")


def parse_prompt(text: str) -> Brief:
    """Parse a research prompt into a Brief; raise BadInputError when it is empty or not text.

    The result may hold no claims (see :func:`parse_with_fallback`).
    """
    if not isinstance(text, str) or not text.strip():
        raise BadInputError("the research prompt is empty")
    if "\x00" in text:
        raise BadInputError("the research prompt is not text (it contains NUL bytes)")
    if len(text.encode("utf-8")) > MAX_PROMPT_BYTES:
        raise BadInputError(f"the research prompt is too large ({len(text.encode('utf-8')):,} "
                            f"bytes; at most {MAX_PROMPT_BYTES:,})")
    lines = _logical_lines(text)
    claims: list[Claim] = []
    anchors: list[Anchor] = []
    tasks: list[str] = []
    in_tasks = False
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if _TASK_HEADING.match(stripped) and len(stripped) < 60:
            in_tasks = True
            continue
        bullet = _BULLET.match(line)
        numbered = _NUMBERED.match(line)
        body = (bullet or numbered)["body"] if (bullet or numbered) else stripped
        anchor = _parse_anchor(body)
        if anchor is not None:
            if all(a["raw"] != anchor["raw"] for a in anchors):
                anchors.append(anchor)
            continue
        if numbered and (in_tasks or numbered["a"]):
            tasks.append(_clean(body))
            continue
        if bullet and not in_tasks and not _ANCHOR_HEADING.match(body[:30]):
            claim_text, dated, rng = _split_claim_date(body)
            if len(claim_text.split()) < 3:  # a stray word is not a claim
                continue
            if len(claims) >= MAX_CLAIMS:
                raise BadInputError(f"the research prompt has more than {MAX_CLAIMS} claims "
                                    "(split it into several prompts)")
            claims.append(Claim(id=f"C{len(claims) + 1}", text=claim_text, dated=dated,
                                date_from=rng[0] if rng else None,
                                date_to=rng[1] if rng else None))
    return Brief(question=_question(lines), claims=claims, anchors=anchors, tasks=tasks)


class _LLMClaim(BaseModel):
    text: str = Field(description="The claim, copied from the prompt")
    dated: str = Field(default="", description="The claim's date as written, or empty")


class _LLMClaims(BaseModel):
    claims: list[_LLMClaim] = Field(default_factory=list, max_length=12)


def _occurs_in(claim: str, prompt: str) -> bool:
    """Tell whether most of the claim's words occur in the prompt (guards against invention)."""
    words = {w for w in re.findall(r"[a-z]{4,}", claim.lower())}
    if len(words) < 2:
        return False
    present = set(re.findall(r"[a-z]{4,}", prompt.lower()))
    return len(words & present) / len(words) >= 0.8


def parse_with_fallback(text: str, llm: object | None) -> tuple[Brief, bool]:
    """Parse deterministically; when no claim is found and ``llm`` is given, ask it for claims.

    Return (brief, used_llm). Claims the model offers are kept only when their words occur in
    the prompt, and their dates are parsed here, not taken from the model. Raise BadInputError
    when no claim can be found either way.
    """
    brief = parse_prompt(text)
    if brief["claims"] or llm is None:
        if not brief["claims"]:
            raise BadInputError("no dated claims found in the research prompt")
        return brief, False
    from agent.prompts import claim_extraction_messages

    reply = llm.complete_json(claim_extraction_messages(text), _LLMClaims,  # type: ignore[attr-defined]
                              max_tokens=600)
    for item in reply.claims:
        if not _occurs_in(item.text, text):
            log.info("dropping a claim the model offered that is not in the prompt: %r", item.text)
            continue
        rng = parse_date_range(item.dated) if item.dated and item.dated in text else None
        brief["claims"].append(Claim(
            id=f"C{len(brief['claims']) + 1}", text=_clean(item.text),
            dated=_clean(item.dated) if rng else "", date_from=rng[0] if rng else None,
            date_to=rng[1] if rng else None))
    if not brief["claims"]:
        raise BadInputError("no dated claims found in the research prompt")
    return brief, True
