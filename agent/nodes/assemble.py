"""Assemble report.json from the final state (the files are written by :mod:`agent.run`)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from agent.nodes.context import RunContext
from agent.report import build_report_json
from agent.state import AgentState


def assemble(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Build the report dict (DESIGN schema plus run metadata) from the state."""
    ctx = runtime.context
    report = build_report_json(state, ctx)
    ctx.emit("report", f"report assembled: {len(report['claims'])} claims", 1, 1)
    return {"report": report}
