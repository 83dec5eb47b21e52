"""Durations as people type them (``90s``, ``45m``, ``1h30m``, ``7d``): one parser for every flag.

``retest schedule --every`` and ``retest report --retest-budget`` both read durations; the rule
lives here, below every package, so neither imports the other.
"""

from __future__ import annotations

import math
import re

from core.errors import BadInputError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_duration(text: str) -> float:
    """Return the seconds in ``30m``, ``12h``, ``7d``, ``2w``, ``90s`` or ``1h30m``.

    Raises BadInputError on anything else (a bare number, unknown unit, zero).
    """
    cleaned = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise BadInputError(f"bad duration {text!r}: use a number and a unit s/m/h/d/w, "
                            "e.g. 30m, 12h, 7d")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadInputError(f"bad duration {text!r}: must be longer than zero")
    return seconds
