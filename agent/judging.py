"""The judge: one paper's stance toward one claim, by one of two methods, grounded in the text.

Methods (``Judge.method``):
- ``generate``: the model writes JSON under a schema (summary, stance, quote).
- ``loglik``: each stance label is scored by the log-probability of its first token as the
  answer (one forward pass per paper; lower-case and capitalized spellings summed), then
  calibrated (Zhao et al. 2021, "Calibrate before use"): the label prior is estimated from
  content-free inputs (the same claim with an abstract of "N/A", "" or "[MASK]") and divided
  out, so a model that prefers one word whatever it reads no longer answers that word everywhere.
  The summary and quote behind the chosen stance are then asked for under a schema.

Grounding, applied to every judgement in code:
- Sentences of an abstract that address the judge (``addresses_judge``: "ignore previous
  instructions", "classify this as <label>", "answer with <label>", a quoted stance label, the
  reader told to label or answer) are removed from what the model sees and can never serve as a
  quote. Abstracts are data, not instructions. The patterns are narrow on purpose: over all
  46,696 abstracts of the shared corpus they flag one sentence in each of 4 abstracts.
- A ``relaxes`` or ``overturns`` stance counts only with a quote that is in the abstract verbatim
  (``verify_quote``: case, whitespace, curly quotes and arXiv line-wrap hyphenation normalized;
  nothing fuzzy). ``supports`` and ``unrelated`` need none.
- The model's summary is shown only when each of its sentences is mostly verbatim from the
  abstract (``summary_is_grounded``: at least 75% of its word trigrams occur there); otherwise the
  abstract's own sentence that bears most on the claim is shown (``claim_sentence``: the most
  content-word stems shared with the claim, one more for a sentence that reports a finding, the
  earlier on ties, the first when none), and
  ``summary_source`` says which. An abstract's first sentence is mostly field background
  ("Large language models are increasingly ..."), which tells a reader nothing about the claim.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from agent.ask import content_words, split_sentences
from agent.prompts import (
    JUDGE_PROMPT_VERSION,
    STANCE_LABELS,
    judge_grounding_messages,
    judge_label_messages,
    judge_label_text,
    judge_messages,
)
from agent.state import Stance
from core.errors import ServiceError

METHODS: tuple[str, ...] = ("generate", "loglik")
DEFAULT_METHOD = "loglik"  # chosen by measured kappa: see docs/judge.md
CONTENT_FREE_ABSTRACTS: tuple[str, ...] = ("N/A", "", "[MASK]")
NEEDS_QUOTE = ("relaxes", "overturns")
TOP_LOGPROBS = 20  # vLLM's default cap on returned log-probs per position
MIN_QUOTE_WORDS = 5
SUMMARY_TRIGRAM_SHARE = 0.75

Method = Literal["generate", "loglik"]


class Judgement(BaseModel):
    """The model's reading of one paper against one claim (generation method)."""

    summary: str = Field(max_length=300, description="One sentence on what the paper finds")
    stance: Stance
    quote: str = Field(max_length=400, description="One abstract sentence, copied exactly")


class Grounding(BaseModel):
    """Summary and quote behind a stance already decided (log-likelihood method)."""

    summary: str = Field(max_length=300)
    quote: str = Field(max_length=400)


@dataclass(frozen=True)
class JudgeInput:
    """One (claim, paper) pair to judge; the abstract is data."""

    claim: str
    title: str
    abstract: str


@dataclass
class JudgeOutput:
    """A grounded judgement: ``stance`` is the model's, the rest checked against the abstract."""

    stance: str
    summary: str
    summary_source: Literal["model", "abstract"]
    quote: str | None
    stance_counts: bool
    removed_sentences: list[str]


# --- grounding: pure functions over text -----------------------------------------------------

_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'",
                         "\u2013": "-", "\u2014": "-"})
_LABEL = r"(supports|relaxes|overturns|unrelated)"
_JUDGE_ADDRESS = [
    re.compile(p, re.IGNORECASE) for p in (
        # "Ignore previous instructions ..."
        r"\b(ignore|disregard|forget|override)\s+(all\s+|any\s+|the\s+)?(previous|prior|above|"
        r"earlier|preceding|other|your)\s+(instructions?|prompts?|rules?|directions?)\b",
        # "... classify this paper as overturns", "label it as 'supports'"
        r"\b(classify|label|mark|rate|judge|tag|categori[sz]e)\w*\b[^.]{0,40}\bas\s+[\"'`]?"
        + _LABEL + r"\b",
        # "answer with overturns", "respond only: supports"
        r"\b(answer|respond|reply|output|say)\w*\s+(with|only|:)[^.]{0,30}\b" + _LABEL + r"\b",
        # a stance label in quotes, as a classifier's answer is written
        r"[\"'`]\s*" + _LABEL + r"\s*[\"'`]",
        # the reader addressed as the one who labels
        r"\b(you|your)\b[^.]{0,60}\b(answer|respond|classif\w*|label\w*|instructions?|"
        r"judge|stance)\b",
        r"\b(the|any)\s+(judge|classifier|grader|annotator|assistant)\s+(must|should)\s+"
        r"(answer|respond|output|label|classify)\b",
    )
]


def addresses_judge(sentence: str) -> bool:
    """Tell whether a sentence speaks to the reader or classifier instead of stating findings."""
    return any(p.search(sentence) for p in _JUDGE_ADDRESS)


def strip_instructions(abstract: str) -> tuple[str, list[str]]:
    """Return the abstract without sentences that address the judge, and those sentences."""
    kept, removed = [], []
    for sentence in split_sentences(abstract):
        (removed if addresses_judge(sentence) else kept).append(sentence)
    return " ".join(kept), removed


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.translate(_QUOTES)).strip().casefold()


def _abstract_forms(abstract: str) -> list[str]:
    # arXiv abstracts are hard-wrapped; a word split at a line end reads "multi- lingual" after
    # whitespace is collapsed. Accept either joining, never anything looser.
    flat = _norm(abstract)
    return [flat, re.sub(r"(?<=\w)- (?=\w)", "", flat), re.sub(r"(?<=\w)- (?=\w)", "-", flat)]


def verify_quote(quote: str | None, abstract: str) -> str | None:
    """Return ``quote`` (trimmed) when it occurs verbatim in the abstract and may serve, else None.

    It must have at least ``MIN_QUOTE_WORDS`` words and must not address the judge.
    """
    if not quote:
        return None
    text = re.sub(r"\s+", " ", quote).strip().strip("\"'\u201c\u201d").strip()
    text = re.sub(r"(\.\.\.|\u2026)$", "", text).strip()
    if len(text.split()) < MIN_QUOTE_WORDS or addresses_judge(text):
        return None
    needle = _norm(text).rstrip(".")
    return text if any(needle in form for form in _abstract_forms(abstract)) else None


def _trigrams(text: str) -> list[tuple[str, ...]]:
    words = re.findall(r"\w+", _norm(text))
    return [tuple(words[i:i + 3]) for i in range(len(words) - 2)]


def summary_is_grounded(summary: str, abstract: str) -> bool:
    """Tell whether every sentence of ``summary`` is mostly verbatim from ``abstract``."""
    sentences = split_sentences(summary)
    if not sentences:
        return False
    source = set()
    for form in _abstract_forms(abstract):
        source.update(_trigrams(form))
    for sentence in sentences:
        grams = _trigrams(sentence)
        if len(grams) < 2 or addresses_judge(sentence):
            return False
        if sum(g in source for g in grams) / len(grams) < SUMMARY_TRIGRAM_SHARE:
            return False
    return True


def content_stems(text: str) -> set[str]:
    """Return the six-letter prefixes of ``text``'s content words (crude stems)."""
    # Six-letter prefixes, so "memorized" meets "memorization" and "templates" "template".
    return {word[:6] for word in content_words(text)}


# A sentence that reports a finding ("we find", "results show") is worth one shared stem more:
# the reader wants what the paper found, not the background that shares the claim's words. On
# the dev set's 180 relevant rows, the shown sentence then holds 0.291 of the stems of the hand-
# written reason instead of 0.258, and is the abstract's first sentence in 41% of rows instead of
# 52% (python bench/evidence_sentence.py, 2026-12-05).
_FINDING = re.compile(
    r"\b(?:we (?:find|found|show|showed|observe|observed|demonstrate|demonstrated)"
    r"|results? (?:show|shows|indicate|indicates|suggest|suggests|reveal|reveals)"
    r"|our (?:findings|results|experiments|analysis|analyses)"
    r"|reveals?|find that|show that|demonstrate that)\b", re.IGNORECASE)
FINDING_BONUS = 1


def reports_finding(sentence: str) -> bool:
    """Tell whether ``sentence`` reads as a reported finding ("we find", "results show", ...)."""
    return _FINDING.search(sentence) is not None


def claim_sentence(abstract: str, claim: str, *, finding_bonus: int = FINDING_BONUS) -> str:
    """Return the abstract's sentence that bears most on ``claim``.

    Each sentence scores the content-word stems it shares with the claim, plus ``finding_bonus``
    when it reports a finding (:func:`reports_finding`). Sentences that address the judge are
    never chosen. Ties go to the earlier sentence, so with no shared stem and no finding the
    first sentence is returned; "" for an abstract with no sentence.
    """
    sentences = [s for s in split_sentences(abstract) if not addresses_judge(s)]
    if not sentences:
        return ""
    wanted = content_stems(claim)

    def score(i: int) -> tuple[int, int]:
        bonus = finding_bonus if reports_finding(sentences[i]) else 0
        return len(wanted & content_stems(sentences[i])) + bonus, -i

    return sentences[max(range(len(sentences)), key=score)]


def ground(stance: str, summary: str, quote: str | None, abstract: str,
           removed: list[str] | None = None, *, claim: str = "") -> JudgeOutput:
    """Check a model's judgement against the abstract (module docstring) and return it."""
    verified = verify_quote(quote, abstract)
    counts = stance not in NEEDS_QUOTE or verified is not None
    if summary_is_grounded(summary, abstract):
        shown, source = re.sub(r"\s+", " ", summary).strip(), "model"
    else:
        shown, source = claim_sentence(abstract, claim), "abstract"
    return JudgeOutput(stance=stance, summary=shown, summary_source=source,  # type: ignore[arg-type]
                       quote=verified, stance_counts=counts, removed_sentences=removed or [])


# --- calibration: pure ---------------------------------------------------------------------

def _normalize(logps: Sequence[float]) -> list[float]:
    top = max(logps)
    weights = [math.exp(v - top) for v in logps]
    total = sum(weights)
    return [w / total for w in weights]


def label_scores(tops: dict[int, float], labels: Sequence[set[int]]) -> list[float]:
    """Return each label's log-probability as the next token, from the ``tops`` a server gave.

    A label's score sums the probabilities of its first tokens (``labels[i]``) among ``tops``;
    a label with none of them there gets the smallest log-prob listed (an upper bound on its
    true value), so a rarely chosen label is never scored as impossible.
    """
    floor = min(tops.values()) if tops else -100.0
    out = []
    for ids in labels:
        present = [tops[i] for i in ids if i in tops]
        out.append(math.log(sum(math.exp(v) for v in present)) if present else floor)
    return out


def calibrated_choice(label_logps: Sequence[float],
                      content_free: Sequence[Sequence[float]]) -> int:
    """Return the index of the label with the highest calibrated probability.

    ``label_logps`` are one input's label log-likelihoods; ``content_free`` holds the same for
    each content-free input. The prior is the mean of the content-free label distributions;
    the calibrated score is p(label | input) / prior(label) (Zhao et al. 2021, diagonal W).
    With no content-free rows, the uncalibrated argmax.
    """
    probs = _normalize(label_logps)
    if content_free:
        dists = [_normalize(row) for row in content_free]
        prior = [sum(d[i] for d in dists) / len(dists) for i in range(len(probs))]
        probs = [p / max(q, 1e-12) for p, q in zip(probs, prior, strict=True)]
    return max(range(len(probs)), key=lambda i: (probs[i], -i))


# --- the judge: I/O at the edge --------------------------------------------------------------

def cache_variant(method: str) -> str:
    """Return the judgement-cache variant of ``method``: a new method or prompt is a new key."""
    return f"{method}:{JUDGE_PROMPT_VERSION}"


def judge_method_for(llm: Any) -> str:
    """Return :data:`DEFAULT_METHOD` when ``llm`` can score labels, else ``generate``.

    Log-likelihood scoring needs a server that tokenizes and returns prompt log-probs (vLLM);
    a hosted API without them still judges, by generation.
    """
    if DEFAULT_METHOD != "loglik":
        return DEFAULT_METHOD
    probe = getattr(llm, "tokenize", None)
    if not callable(probe) or not callable(getattr(llm, "next_token_logprobs", None)):
        return "generate"
    try:
        probe(text="probe")
    except ServiceError:
        return "generate"
    return "loglik"


class Judge:
    """Judge (claim, paper) pairs with an :class:`tools.llm.LLMClient` by ``method``."""

    def __init__(self, llm: Any, method: str = DEFAULT_METHOD, *, workers: int = 8,
                 complete_json: Callable[..., Any] | None = None) -> None:
        """Use ``llm`` (an LLMClient: complete_json, tokenize, next_token_logprobs).

        ``complete_json`` replaces ``llm.complete_json`` (the report passes its fail-fast one).
        """
        if method not in METHODS:
            raise ValueError(f"unknown judge method '{method}' (known: {', '.join(METHODS)})")
        self.llm = llm
        self.method = method
        self._complete_json = complete_json or llm.complete_json
        self.workers = workers
        self._chat: bool | None = None
        self._label_cache: dict[bool, list[set[int]]] = {}
        self._prior: dict[str, list[list[float]]] = {}

    # stance only, many at once (the eval)
    def stances(self, items: Sequence[JudgeInput],
                progress: Callable[[int], None] | None = None) -> list[str]:
        """Return the raw stance of each item (what judge-eval compares with hand labels)."""
        clean = [JudgeInput(i.claim, i.title, strip_instructions(i.abstract)[0]) for i in items]
        if self.method == "loglik":
            return self._loglik_stances(clean, progress)
        return self._map(lambda item: self._generate(item).stance, clean, progress)

    def judge(self, item: JudgeInput) -> JudgeOutput:
        """Return one grounded judgement (what the report's judge node records)."""
        abstract, removed = strip_instructions(item.abstract)
        clean = JudgeInput(item.claim, item.title, abstract)
        if self.method == "loglik":
            stance = self._loglik_stances([clean], None)[0]
            if stance == "unrelated":
                return ground(stance, "", None, abstract, removed, claim=clean.claim)
            reply = self._complete_json(
                judge_grounding_messages(clean.claim, clean.title, abstract, stance), Grounding,
                max_tokens=220)
            return ground(stance, reply.summary, reply.quote, abstract, removed,
                          claim=clean.claim)
        reply = self._generate(clean)
        return ground(reply.stance, reply.summary, reply.quote, abstract, removed,
                      claim=clean.claim)

    def _generate(self, item: JudgeInput) -> Judgement:
        return self._complete_json(judge_messages(item.claim, item.title, item.abstract),
                                      Judgement, max_tokens=260)

    def _map(self, fn: Callable[[JudgeInput], str], items: Sequence[JudgeInput],
             progress: Callable[[int], None] | None) -> list[str]:
        # Concurrent requests let the vLLM server batch them.
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            out = []
            for result in pool.map(fn, items):
                out.append(result)
                if progress is not None:
                    progress(1)
            return out

    def _is_chat(self) -> bool:
        if self._chat is None:
            try:
                self.llm.tokenize(messages=[{"role": "user", "content": "x"}])
                self._chat = True
            except ServiceError:
                self._chat = False  # a base model without a chat template
        return self._chat

    def _context_ids(self, claim: str, title: str, abstract: str) -> list[int]:
        if self._is_chat():
            return list(self.llm.tokenize(messages=judge_label_messages(claim, title, abstract)))
        return list(self.llm.tokenize(text=judge_label_text(claim, title, abstract),
                                      special=True))

    def _label_ids(self) -> list[set[int]]:
        chat = self._is_chat()
        if chat not in self._label_cache:
            # After an opened assistant turn the word starts the reply; after "Stance:" a space.
            # Lower-case and capitalized spellings both count for a label.
            lead = "" if chat else " "
            self._label_cache[chat] = [
                {self.llm.tokenize(text=lead + form)[0] for form in (label, label.capitalize())}
                for label in STANCE_LABELS]
        return self._label_cache[chat]

    def _label_logps(self, contexts: Sequence[list[int]]) -> list[list[float]]:
        labels = self._label_ids()
        return [label_scores(tops, labels)
                for tops in self.llm.next_token_logprobs(list(contexts), top=TOP_LOGPROBS)]

    def _content_free(self, claim: str) -> list[list[float]]:
        if claim not in self._prior:
            contexts = [self._context_ids(claim, "N/A", cf) for cf in CONTENT_FREE_ABSTRACTS]
            self._prior[claim] = self._label_logps(contexts)
        return self._prior[claim]

    def _loglik_stances(self, items: Sequence[JudgeInput],
                        progress: Callable[[int], None] | None, chunk: int = 12) -> list[str]:
        out: list[str] = []
        for first in range(0, len(items), chunk):
            part = items[first:first + chunk]
            contexts = [self._context_ids(i.claim, i.title, i.abstract) for i in part]
            for item, logps in zip(part, self._label_logps(contexts), strict=True):
                out.append(STANCE_LABELS[calibrated_choice(logps, self._content_free(item.claim))])
            if progress is not None:
                progress(len(part))
        return out
