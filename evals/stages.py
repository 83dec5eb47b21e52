"""Helpers shared by an evaluation and a controlled recipe.

Stage timing, JSON-safe numbers and the output-folder lock, kept apart so that neither the
evaluation pipeline nor the recipes have to import the other.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.lock import FileLock

log = logging.getLogger(__name__)


class Stages:
    """Time named stages and log each as it ends."""

    def __init__(self) -> None:
        """Start with no stages timed."""
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as stage ``name``."""
        log.info("stage %s: start", name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 3)
            log.info("stage %s: %.2f s", name, self.seconds[name])

def output_lock(out_dir: Path) -> FileLock:
    """Return the lock that keeps a second eval from writing into ``out_dir`` at the same time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(out_dir / ".lock", f"eval writing to {out_dir}")

def finite(value: Any) -> Any:
    """Replace NaN and infinities (not valid JSON) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
