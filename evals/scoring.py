"""Score model outputs against gold answers: pure functions over plain data.

Four methods, named as in eval specs:

- ``exact``: normalized exact match (case, punctuation, articles and whitespace ignored).
- ``numeric``: the final number of the output equals the gold number (commas, ``$``, units and a
  GSM8K-style ``#### N`` marker tolerated).
- ``mc_letter``: multiple choice by the letter the model generated ("B", "(B)", "Answer: B").
- ``mc_loglik``: multiple choice by the summed log-probability of each option's tokens given the
  prompt. The helpers here build the token-id prompts and read the logprobs back; the runner sends
  them to ``/v1/completions`` (``echo=True, logprobs=1, max_tokens=0``). Context and option are
  tokenized separately, because splitting a tokenized text by offsets goes wrong when the
  tokenizer adds a BOS token (see ``../shared/notes/LOCAL_LLM.md``).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

from evals.items import Item

SCORING_METHODS = ("exact", "numeric", "mc_letter", "mc_loglik")
LETTERS = string.ascii_uppercase

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
# A number with optional sign, currency, thousands separators and decimals: "-$1,234.50".
_NUMBER = re.compile(r"(?<![\w.])-?\$?\s?\d[\d,]*(?:\.\d+)?|(?<![\w.])-?\$?\s?\.\d+")
_HASH_ANSWER = re.compile(r"####\s*(.+)")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)\s*(.+)", re.IGNORECASE)


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation and English articles, and collapse whitespace."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answer: str) -> bool:
    """Tell whether ``prediction`` equals ``answer`` after :func:`normalize_text`."""
    return normalize_text(prediction) == normalize_text(answer)


def parse_number(text: str) -> float | None:
    """Parse one number written like ``-$1,234.50`` or ``72``; None when ``text`` has none."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    cleaned = match.group(0).replace("$", "").replace(",", "").replace(" ", "")
    try:
        return float(cleaned)
    except ValueError:
        return None


def extract_final_number(text: str) -> float | None:
    """Return the model's final numeric answer in ``text``, or None.

    Preference order, because models often restate intermediate numbers after the answer:
    a ``#### N`` marker, then "the answer is N", then the last number in the text.
    """
    for pattern in (_HASH_ANSWER, _ANSWER_IS):
        marked = pattern.findall(text)
        if marked:
            value = parse_number(marked[-1])
            if value is not None:
                return value
    numbers = _NUMBER.findall(text)
    for candidate in reversed(numbers):
        value = parse_number(candidate)
        if value is not None:
            return value
    return None


def numeric_match(prediction: str, answer: str, *, rel_tol: float = 1e-6) -> bool:
    """Tell whether the final number of ``prediction`` equals the number in ``answer``."""
    gold = extract_final_number(answer)
    got = extract_final_number(prediction)
    if gold is None or got is None:
        return False
    return math.isclose(got, gold, rel_tol=rel_tol, abs_tol=1e-9)


def choice_labels(n: int) -> list[str]:
    """Return the option letters ``A``, ``B``, ... for ``n`` options (at most 26)."""
    if not 0 < n <= len(LETTERS):
        raise ValueError(f"cannot label {n} options with letters")
    return list(LETTERS[:n])


def gold_index(item: Item) -> int:
    """Return the index of the correct option of a multiple-choice item.

    ``item.answer`` is the correct option's text; a bare letter (``"B"``) is accepted too, for
    sources such as OpenAI evals that store the letter. Raises ValueError when neither matches.
    """
    if not item.choices:
        raise ValueError(f"item {item.id} has no choices")
    if item.answer in item.choices:
        return item.choices.index(item.answer)
    normalized = [normalize_text(choice) for choice in item.choices]
    if normalize_text(item.answer) in normalized:
        return normalized.index(normalize_text(item.answer))
    letter = item.answer.strip().upper()
    if len(letter) == 1 and letter in LETTERS[: len(item.choices)]:
        return LETTERS.index(letter)
    raise ValueError(f"item {item.id}: answer {item.answer!r} is none of its choices")


def _letter_patterns(valid: str) -> list[re.Pattern[str]]:
    cls = f"[{valid}]"
    return [
        re.compile(rf"answer\s*(?:is|:)?\s*\(?({cls})\b\)?", re.IGNORECASE),
        re.compile(rf"^\s*\(?({cls})\)?(?:[\s:.)\]]|$)"),
        re.compile(rf"\(({cls})\)"),
        re.compile(rf"(?<![A-Za-z])({cls})(?![A-Za-z])"),
    ]


def extract_choice_letter(text: str, n_choices: int) -> int | None:
    """Return the option index the model picked by letter, or None when it named none.

    Looks, in order, for "answer is B" / "Answer: B", a leading "B" or "(B)", a "(B)" anywhere,
    then the first standalone capital letter among the valid ones.
    """
    valid = "".join(choice_labels(n_choices))
    for pattern in _letter_patterns(valid):
        match = pattern.search(text)
        if match:
            return LETTERS.index(match.group(1).upper())
    return None


def letter_match(prediction: str, item: Item) -> bool:
    """Tell whether the letter generated in ``prediction`` names the correct option."""
    picked = extract_choice_letter(prediction, len(item.choices))
    return picked is not None and picked == gold_index(item)


def has_listed_choices(prompt: str, choices: Sequence[str]) -> bool:
    """Tell whether ``prompt`` already lists every option with its letter (``A: ...``)."""
    return all(re.search(rf"\b{label}[:.)]\s*{re.escape(choice)}", prompt)
               for label, choice in zip(choice_labels(len(choices)), choices, strict=True))


def format_prompt(item: Item, method: str) -> str:
    """Return the text a model sees for ``item`` under scoring ``method``.

    Letter scoring lists the lettered options (unless the prompt already does) and asks for a
    letter; log-likelihood scoring ends with "Answer:" so each option continues the text; free-form
    methods end with "Answer:" as well so base models know where to continue.
    """
    if method == "mc_letter":
        body = item.prompt.rstrip()
        if not has_listed_choices(body, item.choices):
            options = "\n".join(f" {label}: {choice}" for label, choice in
                                zip(choice_labels(len(item.choices)), item.choices, strict=True))
            body = f"{body}\n\n{options}"
        return f"{body}\nAnswer with the letter of the correct option.\nAnswer:"
    return f"Question: {item.prompt.strip()}\nAnswer:"


def option_continuation(option: str) -> str:
    """Return the text an option adds after "Answer:" (one leading space, as a model writes)."""
    return " " + option.strip()


def loglik_token_prompts(context_ids: Sequence[int],
                         option_ids: Sequence[Sequence[int]]) -> list[list[int]]:
    """Return one token-id prompt per option: the context's ids followed by the option's ids."""
    if not option_ids or any(len(ids) == 0 for ids in option_ids):
        raise ValueError("every option needs at least one token")
    return [list(context_ids) + list(ids) for ids in option_ids]


def option_logprob(token_logprobs: Sequence[float | None], n_option_tokens: int) -> float:
    """Sum the log-probabilities of the last ``n_option_tokens`` prompt tokens.

    ``token_logprobs`` is what ``/v1/completions`` echoes for a token-id prompt: one entry per
    prompt token, the first being None (nothing precedes it). The option is the prompt's tail.
    """
    if n_option_tokens <= 0 or n_option_tokens >= len(token_logprobs):
        raise ValueError(f"{n_option_tokens} option tokens do not fit a prompt of "
                         f"{len(token_logprobs)} tokens with a non-empty context")
    tail = token_logprobs[-n_option_tokens:]
    if any(value is None for value in tail):
        raise ValueError("missing logprob inside the option")
    return float(sum(tail))  # type: ignore[arg-type]


def best_option(scores: Sequence[float]) -> int:
    """Return the index of the highest score (the first one on a tie, so ties are deterministic)."""
    if not scores:
        raise ValueError("no option scores")
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def score_text(method: str, prediction: str, item: Item) -> bool:
    """Score a generated ``prediction`` for ``item`` with a text method (not ``mc_loglik``)."""
    if method == "exact":
        return exact_match(prediction, item.answer)
    if method == "numeric":
        return numeric_match(prediction, item.answer)
    if method == "mc_letter":
        return letter_match(prediction, item)
    raise ValueError(f"scoring method {method!r} does not score generated text")
