"""A tiny quartz dedup spec for tests that need a real but short ``retest eval`` run.

Eight two-option items per split (log-likelihood scoring: one completion call each) against one
served SmolLM2 under two names, so a run has 16 result lines and finishes in seconds.
"""

from __future__ import annotations

from pathlib import Path

_TINY_QUARTZ = """
description = "{description}"
claim_kinds = ["memorization"]
seed = 5
scoring = "mc_loglik"
[dataset]
kind = "openai_evals"
path = "${{SHARED_DATA}}/benchmarks/openai_evals/quartz/samples.jsonl"
test_fraction = 0.2
[sample]
per_split = 4
[generation]
concurrency = 1
[[models]]
role = "fine_tuned"
endpoint = "{url}"
model = "SmolLM2-135M-Instruct"
name = "smol-a"
api = "completions"
[[models]]
role = "base"
endpoint = "{url}"
model = "SmolLM2-135M-Instruct"
name = "smol-b"
api = "completions"
"""


def write_tiny_quartz_spec(path: Path, url: str, description: str) -> Path:
    """Write the tiny spec pointing both models at ``url``; return ``path``."""
    path.write_text(_TINY_QUARTZ.format(url=url, description=description))
    return path
