"""The one benchmark item record every loader returns and every eval consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Item:
    """One benchmark item.

    ``answer`` is the gold answer as text (for GSM8K the final number; for multiple choice the
    correct option's text). ``choices`` is empty for free-form items. ``metadata`` carries
    loader-specific fields (e.g. GSM8K's full solution, BIG-bench ``target_scores``).
    """

    id: str
    prompt: str
    answer: str
    choices: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
