"""The report agent's graph: the map of the whole agent. It only wires and compiles.

parse -> plan_claim (one per claim) -> retrieve -> judge (one per claim x paper)
      -> resolve_anchors -> plan_retests -> run_retests -> measure_judge -> verdicts -> tensions
      -> research_questions -> assemble
"""

from __future__ import annotations

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from agent.nodes.anchors import resolve_anchors
from agent.nodes.assemble import assemble
from agent.nodes.brief import fan_out_plans, parse
from agent.nodes.context import RunContext
from agent.nodes.judge import fan_out_judges, judge, measure_judge
from agent.nodes.retest import plan_retests, run_retests
from agent.nodes.search import plan_claim, retrieve
from agent.nodes.synthesis import research_questions, tensions, verdicts
from agent.state import AgentState, InputState, OutputState


def build_graph(checkpointer: BaseCheckpointSaver | None = None) -> CompiledStateGraph:
    """Wire the nodes and compile, with ``checkpointer`` saving state after every step."""
    g = StateGraph(AgentState, context_schema=RunContext, input_schema=InputState,
                   output_schema=OutputState)
    g.add_node("parse", parse)
    g.add_node("plan_claim", plan_claim)
    g.add_node("retrieve", retrieve)
    g.add_node("judge", judge)
    g.add_node("resolve_anchors", resolve_anchors)
    g.add_node("plan_retests", plan_retests)
    g.add_node("run_retests", run_retests)
    g.add_node("measure_judge", measure_judge)
    g.add_node("verdicts", verdicts)
    g.add_node("tensions", tensions)
    g.add_node("research_questions", research_questions)
    g.add_node("assemble", assemble)

    g.add_edge(START, "parse")
    g.add_conditional_edges("parse", fan_out_plans, ["plan_claim"])
    g.add_edge("plan_claim", "retrieve")
    g.add_conditional_edges("retrieve", fan_out_judges, ["judge", "resolve_anchors"])
    g.add_edge("judge", "resolve_anchors")
    g.add_edge("resolve_anchors", "plan_retests")
    g.add_edge("plan_retests", "run_retests")
    g.add_edge("run_retests", "measure_judge")
    g.add_edge("measure_judge", "verdicts")
    g.add_edge("verdicts", "tensions")
    g.add_edge("tensions", "research_questions")
    g.add_edge("research_questions", "assemble")
    g.add_edge("assemble", END)
    return g.compile(checkpointer=checkpointer)
