"""The knobs of one report run, typed where the CLI, the scheduler and the app can all import them.

Plain data with no imports of the agent's machinery, so a caller can build options without
loading the graph, the LLM client or the paper store.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ReportOptions:
    """Knobs of one report run (CLI flags or app controls; defaults keep a 2-CPU run short)."""

    papers_per_claim: int = 10  # at most: none below the relevance floor (agent/nodes/search.py)
    candidates_per_claim: int = 40  # fused candidates per claim held to the relevance floor
    # Wall time the re-tests may take, run cheapest first (agent.nodes.retest_plan); 0 turns
    # re-tests off. 45 min re-tests the seed's five claims on 2 cores.
    retest_budget_s: float = 2700.0
    retest_limit: int | None = None  # at most this many claims re-tested (None: the budget decides)
    # At most this many items per split in each re-test; None runs each spec at the sizes it
    # fixed in advance (the default: a report's re-tests are the experiments their specs state).
    retest_items: int | None = None
    tension_window_days: int = 183
    # Terminal progress bars (corpus scan, embedding); off where stderr carries JSON-line logs
    # (the scheduler) or nobody watches it (the app). Bars also hide when stderr is no terminal.
    progress_bars: bool = True
