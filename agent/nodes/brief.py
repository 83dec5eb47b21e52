"""Parse the research prompt into the Brief, and fan out one query-planning task per claim."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Send

from agent.nodes.context import RunContext
from agent.parse import parse_prompt, parse_with_fallback
from agent.state import AgentState, InputState, PlanTask
from core.errors import RetestError


def parse(state: InputState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Parse deterministically; only with no claims found ask the LLM (BadInputError if none)."""
    ctx = runtime.context
    brief = parse_prompt(state["prompt_text"])
    if not brief["claims"]:
        try:
            llm = ctx.llm()
        except RetestError:
            llm = None
        brief, _ = parse_with_fallback(state["prompt_text"], llm)
    ctx.emit("parse", f"{len(brief['claims'])} claims, {len(brief['anchors'])} anchors, "
             f"{len(brief['tasks'])} tasks", 1, 1)
    return {"brief": brief}


def fan_out_plans(state: AgentState) -> list[Send]:
    """Route to one planning task per claim."""
    return [Send("plan_claim", PlanTask(claim=c)) for c in state["brief"]["claims"]]
