"""Helpers shared by the command modules: settings from flags, JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from core.settings import Settings, load_settings


def settings_from_flags(*, offline: bool | None = None, corpus: Path | None = None,
                        **extra: Any) -> Settings:
    """Build Settings with CLI flags on top (a flag left unset does not override)."""
    return load_settings(offline=True if offline else None, corpus=corpus, **extra)


def print_json(payload: Any) -> None:
    """Write ``payload`` as indented JSON on stdout (dates and paths as strings)."""
    json.dump(payload, sys.stdout, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write("\n")
