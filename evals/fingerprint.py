"""The fingerprint of an experiment: what a spec fixes about a run, without how it is routed.

A spec's ``claim_kinds``, ``description`` and ``design`` only say which claims it fits and how it
is described; editing them changes no number a run produces. Everything else (data, sizes, steps,
seeds, models, the analysis rule's knobs) does. Work folders, finished-result markers and measured
wall times are keyed by this fingerprint, so re-wording routing keeps finished results while any
change to the experiment starts afresh.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

ROUTING_KEYS = frozenset({"claim_kinds", "description", "design"})


def experiment_sha256(spec: Mapping[str, Any]) -> str:
    """Return the SHA-256 of a parsed spec (TOML as a dict) without its routing keys.

    Canonical JSON (sorted keys, dates as strings), so key order and formatting of the file do
    not matter either.
    """
    body = {k: v for k, v in spec.items() if k not in ROUTING_KEYS}
    blob = json.dumps(body, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
