"""The re-test budget: parse it, and pick re-tests cheapest first until it is spent (pure).

Claims are run cheapest first until the budget is spent; a claim whose re-test would not fit is
skipped with the reason ("needs ~10 min, 3 min of budget left"). Kept apart from the registry
and its scoring so the CLI can check ``--retest-budget`` without loading either.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from core.duration import parse_duration
from core.errors import BadInputError

DEFAULT_BUDGET = "45m"  # re-tests the seed's five claims on 2 cores (issue 14)


def parse_budget(text: str) -> float:
    """Return the seconds of a re-test budget: ``0`` (no re-tests), ``90s``, ``45m``, ``1h30m``.

    Raise BadInputError with one line on anything else (a bare number other than 0, an unknown
    unit, a negative value).
    """
    if re.fullmatch(r"0+(\.0*)?[smh]?", text.strip().lower()):
        return 0.0
    try:
        return parse_duration(text)
    except BadInputError:
        raise BadInputError(f"bad --retest-budget {text!r}: use 0 or a number and a unit "
                            "s/m/h, e.g. 90s, 45m, 1h30m") from None


def human_duration(seconds: float) -> str:
    """Say a duration the way the report does: ``40 s``, ``10 min``, ``1.5 h``."""
    if seconds < 120:
        return f"{max(0, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def skip_reason(needed_s: float, left_s: float) -> str:
    """Say why a re-test did not run: ``needs ~10 min, 3 min of budget left``."""
    return f"needs ~{human_duration(needed_s)}, {human_duration(max(0.0, left_s))} of budget left"


@dataclass(frozen=True)
class Planned:
    """A claim's chosen re-test with its expected cost, for the budget."""

    claim_id: str
    order: int  # the claim's position in the prompt: ties run in prompt order
    expected_s: float


def select_within_budget(planned: Sequence[Planned], budget_s: float,
                         limit: int | None = None) -> tuple[list[Planned], dict[str, str]]:
    """Pick re-tests cheapest first until ``budget_s`` is spent (at most ``limit`` of them).

    Return the ones to run, in run order, and a skip reason per claim left out. Pure: a re-test
    runs only when its expected cost fits in what the cheaper ones left, so the expected total
    never exceeds the budget.
    """
    run: list[Planned] = []
    skipped: dict[str, str] = {}
    left = budget_s
    for p in sorted(planned, key=lambda p: (p.expected_s, p.order)):
        if limit is not None and len(run) >= limit:
            skipped[p.claim_id] = f"re-test limit {limit} reached (--retest-limit)"
        elif budget_s <= 0:
            skipped[p.claim_id] = "re-tests off (--retest-budget 0)"
        elif p.expected_s <= left:
            run.append(p)
            left -= p.expected_s
        else:
            skipped[p.claim_id] = skip_reason(p.expected_s, left)
    return run, skipped
