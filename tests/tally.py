"""Counts of reliability cases, printed once at the end of a pytest run (tests/conftest.py).

Each case still asserts its own outcome; the counts only say how many ran, so the README's
reliability figures come from a command (``pytest tests/test_reliability_*.py``) rather than
from a test that asserts nothing of its own.
"""

from __future__ import annotations

from collections import Counter

_SUITES: dict[str, Counter[str]] = {}


def counter(suite: str) -> Counter[str]:
    """Return the (shared) counter of ``suite``, created empty on first use."""
    return _SUITES.setdefault(suite, Counter())


def summary_lines() -> list[str]:
    """One line per suite that counted something, keys sorted."""
    return [f"{suite}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            for suite, counts in sorted(_SUITES.items()) if counts]
