""""N-1" variants of benchmark items: same structure, different specifics, tagged by kind.

Kinds:
- ``name_swap``: a known first name is replaced everywhere by another of the same list (female or
  male, so pronouns still fit); the answer is unchanged.
- ``irrelevant_clause``: a number-free sentence that bears on nothing is inserted before the final
  sentence of the question; the answer is unchanged.
- ``numbers`` (GSM8K): the question's numbers change and the answer is recomputed by replaying the
  solution's ``<<a*b=c>>`` calculator annotations with an exact arithmetic evaluator (no eval).

An item a kind cannot be applied to is skipped and counted, with the reason, in a
:class:`VariantReport`; a variant is never emitted on a guess.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from fractions import Fraction

from evals.items import Item

KINDS = ("name_swap", "irrelevant_clause", "numbers")

FEMALE_NAMES = (
    "Natalia", "Betty", "Julie", "Janet", "Mary", "Emma", "Olivia", "Sophia", "Ava", "Mia",
    "Alice", "Sarah", "Linda", "Karen", "Nancy", "Lisa", "Anna", "Maria", "Rose", "Grace",
    "Lily", "Chloe", "Ella", "Hannah", "Laura", "Rachel", "Emily", "Jessica", "Amy", "Kate",
    "Jane", "Susan", "Carla", "Tina", "Megan", "Jenny", "Sally", "Maggie", "Claire", "Helen",
)
MALE_NAMES = (
    "James", "John", "Robert", "Michael", "David", "William", "Richard", "Joseph", "Thomas",
    "Mark", "Paul", "Steven", "Kevin", "Brian", "George", "Tom", "Jack", "Ben", "Sam", "Eric",
    "Peter", "Adam", "Henry", "Carlos", "Tony", "Mike", "Daniel", "Frank", "Oliver", "Leo",
    "Bob", "Bill", "Jim", "Joe", "Tim", "Greg", "Jason", "Matt", "Ryan", "Alex",
)
# Number-free, so they cannot leak a quantity into a word problem; neutral to any question.
IRRELEVANT_CLAUSES = (
    "The weather was pleasant that day.",
    "A radio was playing quietly in the background.",
    "Someone had painted the front door blue the week before.",
    "The street outside was busy with traffic.",
    "There was a faint smell of coffee in the air.",
    "Nobody remembered exactly who had suggested the idea first.",
)

_NUMBER = re.compile(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w)")
_ANNOTATION = re.compile(r"<<([^<>]*)>>")
_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?|\.\d+)|(.))")
# Literals a solution may use without taking them from the question (halves, hours, percent...).
_COMMON_CONSTANTS = frozenset(Fraction(v) for v in (
    *range(0, 13), 15, 20, 24, 25, 30, 31, 40, 50, 52, 60, 75, 90, 100, 365, 1000))


@dataclass(frozen=True)
class Variant:
    """One variant item (its own id ``<parent>~<kind>``), its kind and its parent's id."""

    item: Item
    kind: str
    parent_id: str


@dataclass
class VariantReport:
    """How many variants each kind made, and how many items it skipped, by reason."""

    made: Counter[str] = field(default_factory=Counter)
    skipped: dict[str, Counter[str]] = field(default_factory=dict)

    def skip(self, kind: str, reason: str) -> None:
        """Count one item ``kind`` could not be applied to, and why."""
        self.skipped.setdefault(kind, Counter())[reason] += 1

    def as_dict(self) -> dict[str, object]:
        """Return a JSON-ready summary."""
        return {"made": dict(self.made),
                "skipped": {k: dict(v) for k, v in self.skipped.items()}}


class _Skip(Exception):
    """A variant kind does not apply to this item (the message is the reason)."""


# ---------------------------------------------------------------------------- arithmetic


def evaluate(expression: str) -> Fraction:
    """Evaluate ``+ - * /``, unary minus and parentheses over decimal literals, exactly.

    Raises ValueError on anything else (names, ``**``, unbalanced parentheses) and
    ZeroDivisionError on division by zero.
    """
    tokens = _tokenize(expression)
    value, pos = _parse_sum(tokens, 0)
    if pos != len(tokens):
        raise ValueError(f"unexpected {tokens[pos]!r} in {expression!r}")
    return value


def _tokenize(expression: str) -> list[Fraction | str]:
    tokens: list[Fraction | str] = []
    for number, symbol in _TOKEN.findall(expression.strip()):
        if number:
            tokens.append(Fraction(number))
        elif symbol.strip():
            if symbol not in "+-*/()":
                raise ValueError(f"unsupported character {symbol!r} in {expression!r}")
            tokens.append(symbol)
    return tokens


def _parse_sum(tokens: list[Fraction | str], pos: int) -> tuple[Fraction, int]:
    value, pos = _parse_product(tokens, pos)
    while pos < len(tokens) and tokens[pos] in ("+", "-"):
        op = tokens[pos]
        rhs, pos = _parse_product(tokens, pos + 1)
        value = value + rhs if op == "+" else value - rhs
    return value, pos


def _parse_product(tokens: list[Fraction | str], pos: int) -> tuple[Fraction, int]:
    value, pos = _parse_unary(tokens, pos)
    while pos < len(tokens) and tokens[pos] in ("*", "/"):
        op = tokens[pos]
        rhs, pos = _parse_unary(tokens, pos + 1)
        value = value * rhs if op == "*" else value / rhs
    return value, pos


def _parse_unary(tokens: list[Fraction | str], pos: int) -> tuple[Fraction, int]:
    if pos >= len(tokens):
        raise ValueError("expression ends early")
    token = tokens[pos]
    if token in ("-", "+"):  # operators, not passwords (S105)
        value, pos = _parse_unary(tokens, pos + 1)
        return (-value if token == "-" else value), pos  # noqa: S105
    if token == "(":  # noqa: S105
        value, pos = _parse_sum(tokens, pos + 1)
        if pos >= len(tokens) or tokens[pos] != ")":
            raise ValueError("unbalanced parentheses")
        return value, pos + 1
    if isinstance(token, Fraction):
        return token, pos + 1
    raise ValueError(f"unexpected {token!r}")


# ---------------------------------------------------------------------------- numbers


def _number_value(text: str) -> Fraction:
    return Fraction(text.replace(",", ""))


def _format_number(value: Fraction, like: str) -> str:
    """Format ``value`` in the style of ``like`` (thousands commas, decimal places)."""
    decimals = len(like.split(".")[1]) if "." in like else 0
    if value.denominator == 1 and not decimals:
        text = f"{int(value):,}" if "," in like else str(int(value))
        return text
    return f"{float(value):,.{max(decimals, 2)}f}" if "," in like else \
        f"{float(value):.{max(decimals, 2)}f}".rstrip("0").rstrip(".")


def _parse_annotations(solution: str) -> list[tuple[str, Fraction]]:
    steps = []
    for body in _ANNOTATION.findall(solution):
        if "=" not in body:
            raise _Skip("annotation without '='")
        expr, _, result = body.rpartition("=")
        try:
            steps.append((expr, _number_value(result.strip())))
        except (ValueError, ZeroDivisionError) as exc:
            raise _Skip("annotation result is not a number") from exc
    if not steps:
        raise _Skip("no calculator annotations")
    return steps


def _close(a: Fraction, b: Fraction) -> bool:
    # Annotations round their results (33.33); a cent's tolerance, relative for big numbers.
    return abs(a - b) <= Fraction(1, 100) * max(1, abs(b))


def replay(steps: list[tuple[str, Fraction]], mapping: dict[Fraction, Fraction]) -> list[Fraction]:
    """Re-run annotation ``steps`` with question numbers replaced per ``mapping``.

    A literal equal to an earlier step's stated result takes that step's recomputed value; one
    equal to a question number takes its new value; any other literal must be a common constant
    (2 for halves, 60 minutes, 100 percent...) and is kept, else the item is skipped: an
    unexplained literal means the chain depends on reasoning outside the annotations.
    """
    new_results: list[Fraction] = []
    for expr, _stated in steps:
        earlier = {old: new for (_, old), new in zip(steps, new_results, strict=False)}
        pieces: list[str] = []
        for number, symbol in _TOKEN.findall(expr):
            if not number:
                pieces.append(symbol)
                continue
            literal = Fraction(number)
            sources = {earlier[literal]} if literal in earlier else set()
            if literal in mapping:
                sources.add(mapping[literal])
            if len(sources) > 1:
                raise _Skip("ambiguous literal")
            if not sources and literal not in _COMMON_CONSTANTS:
                raise _Skip("unexplained literal in annotations")
            value = sources.pop() if sources else literal
            pieces.append(f"({value.numerator}/{value.denominator})")
        try:
            new_results.append(evaluate("".join(pieces)))
        except ZeroDivisionError as exc:
            raise _Skip("division by zero") from exc
        except ValueError as exc:
            raise _Skip("annotation is not plain arithmetic") from exc
    return new_results


def numbers_variant(item: Item, rng: random.Random, tries: int = 25) -> Item:
    """Return ``item`` with new question numbers and the answer recomputed from its solution."""
    solution = item.metadata.get("solution")
    if not isinstance(solution, str):
        raise _Skip("no worked solution")
    steps = _parse_annotations(solution)
    try:
        gold = _number_value(item.answer)
    except (ValueError, ZeroDivisionError) as exc:
        raise _Skip("answer is not a number") from exc
    originals = {_number_value(m.group()): m.group() for m in _NUMBER.finditer(item.prompt)}
    if not originals:
        raise _Skip("no numbers in the question")
    identity = replay(steps, {v: v for v in originals})
    if not all(_close(new, stated) for new, (_, stated) in zip(identity, steps, strict=True)):
        raise _Skip("annotation arithmetic does not check")
    answer_steps = [k for k, (_, stated) in enumerate(steps) if _close(stated, gold)]
    if not answer_steps:
        raise _Skip("answer is not computed by an annotation")
    k_answer = answer_steps[-1]
    # Change only numbers the annotations use (a number used only in prose reasoning would change
    # the answer unseen) and that cannot be mistaken for a constant (a question's "2" and a
    # solution's "/2" for half are the same literal).
    used = {Fraction(n) for expr, _ in steps for n, _sym in _TOKEN.findall(expr) if n}
    changeable = [v for v in originals if v in used and v not in _COMMON_CONSTANTS]
    if not changeable:
        raise _Skip("no changeable number (all constant-like or unused)")
    for _ in range(tries):
        mapping = {old: old for old in originals} | {old: _perturb(old, rng) for old in changeable}
        results = replay(steps, mapping)
        # Whole quantities stay whole and non-negative ones non-negative (45 hours -> 28 would
        # make "hours over 40" negative: the story no longer holds).
        if any((stated.denominator == 1 and new.denominator != 1) or (stated >= 0 > new)
               for new, (_, stated) in zip(results, steps, strict=True)):
            continue
        new_answer = results[k_answer]
        if new_answer < 0 or new_answer == gold:
            continue
        prompt = _NUMBER.sub(lambda m, table=mapping: _format_number(
            table[_number_value(m.group())], m.group()), item.prompt)
        return replace(item, prompt=prompt, answer=_format_number(new_answer, item.answer),
                       metadata=item.metadata | {"number_mapping": {
                           originals[o]: _format_number(n, originals[o])
                           for o, n in mapping.items() if o != n}})
    raise _Skip("no whole-number assignment found")


def recompute_gsm8k_answer(item: Item, new_numbers: dict[str, str] | None = None) -> str:
    """Replay ``item``'s solution annotations with question numbers replaced; return the answer.

    ``new_numbers`` maps a number as written in the question ("1,200") to its replacement; numbers
    not named keep their value. With no replacements the result is the gold answer whenever the
    item's annotations are self-consistent. Raises ValueError (with the reason) when the answer
    cannot be recomputed from the annotations.
    """
    solution = item.metadata.get("solution")
    try:
        if not isinstance(solution, str):
            raise _Skip("no worked solution")
        steps = _parse_annotations(solution)
        gold = _number_value(item.answer)
        answer_steps = [k for k, (_, stated) in enumerate(steps) if _close(stated, gold)]
        if not answer_steps:
            raise _Skip("answer is not computed by an annotation")
        originals = {_number_value(m.group()) for m in _NUMBER.finditer(item.prompt)}
        mapping = {v: v for v in originals} | {
            _number_value(k): _number_value(v) for k, v in (new_numbers or {}).items()}
        result = replay(steps, mapping)[answer_steps[-1]]
    except _Skip as why:
        raise ValueError(str(why)) from why
    return _format_number(result, item.answer)


def _perturb(value: Fraction, rng: random.Random) -> Fraction:
    """Draw a new value of the same kind and magnitude (integers stay integers, cents cents)."""
    if value.denominator == 1:
        n = int(value)
        low, high = max(1, n // 2), max(n + 3, n * 3 // 2)
        pick = rng.randint(low, high - 1)
        return Fraction(pick if pick < n else pick + 1)  # uniform over [low, high] minus n
    cents = int(value * 100)
    return Fraction(max(1, cents + rng.choice([-1, 1]) * rng.randint(1, max(2, cents // 2))), 100)


# ---------------------------------------------------------------------------- text edits


def name_swap_variant(item: Item, rng: random.Random) -> Item:
    """Return ``item`` with every known first name replaced by another of the same list."""
    text = "\n".join((item.prompt, item.answer, *item.choices))
    found = [n for n in (*FEMALE_NAMES, *MALE_NAMES) if re.search(rf"\b{n}\b", text)]
    if not found:
        raise _Skip("no known first name")
    taken = set(found)
    swaps: dict[str, str] = {}
    for name in found:
        pool = [n for n in (FEMALE_NAMES if name in FEMALE_NAMES else MALE_NAMES) if n not in taken]
        swaps[name] = rng.choice(pool)
        taken.add(swaps[name])
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, swaps)) + r")\b")

    def sub(text: str) -> str:
        return pattern.sub(lambda m: swaps[m.group()], text)

    return replace(item, prompt=sub(item.prompt), answer=sub(item.answer),
                   choices=tuple(sub(c) for c in item.choices),
                   metadata=item.metadata | {"name_swaps": swaps})


def irrelevant_clause_variant(item: Item, rng: random.Random) -> Item:
    """Return ``item`` with a neutral sentence inserted before the question's final sentence."""
    clause = rng.choice(IRRELEVANT_CLAUSES)
    # Options after a blank line (quartz) stay where they are; edit only the question stem.
    stem, sep, rest = item.prompt.partition("\n\n")
    boundaries = [m.end() for m in re.finditer(r"[.!?]\s+(?=[A-Z])", stem)]
    if boundaries:
        at = boundaries[-1]
        stem = f"{stem[:at]}{clause} {stem[at:]}"
    else:
        stem = f"{clause} {stem}"
    return replace(item, prompt=stem + sep + rest,
                   metadata=item.metadata | {"irrelevant_clause": clause})


_MAKERS = {
    "name_swap": name_swap_variant,
    "irrelevant_clause": irrelevant_clause_variant,
    "numbers": numbers_variant,
}


def make_variants(item: Item, kinds: list[str], seed: int,
                  report: VariantReport | None = None) -> list[Variant]:
    """Return one variant of ``item`` per kind that applies, in ``kinds`` order.

    Each kind draws from its own RNG seeded by ``(seed, item id, kind)``, so a variant does not
    depend on which other kinds or items were requested. Skips are counted in ``report``.
    """
    unknown = [k for k in kinds if k not in _MAKERS]
    if unknown:
        raise ValueError(f"unknown variant kind(s) {unknown}; expected some of {list(KINDS)}")
    variants = []
    for kind in kinds:
        rng = random.Random(f"{seed}\x00{item.id}\x00{kind}")
        try:
            changed = _MAKERS[kind](item, rng)
        except _Skip as why:
            if report is not None:
                report.skip(kind, str(why))
            continue
        new = replace(changed, id=f"{item.id}~{kind}",
                      metadata=changed.metadata | {"parent_id": item.id, "variant": kind})
        variants.append(Variant(item=new, kind=kind, parent_id=item.id))
        if report is not None:
            report.made[kind] += 1
    return variants


def make_all_variants(items: list[Item], kinds: list[str],
                      seed: int) -> tuple[list[Variant], VariantReport]:
    """Return the variants of every item and the report of what was made and skipped."""
    report = VariantReport()
    variants = [v for item in items for v in make_variants(item, kinds, seed, report)]
    return variants, report
