"""The graph as LangGraph Server loads it (``langgraph.json``): compiled once, no checkpointer.

LangGraph Server and Platform bring their own persistence (PostgreSQL), so the graph is compiled
without one; the CLI, app and scheduler keep compiling it through :func:`agent.run.run_report`
with the saver :mod:`agent.checkpoints` chooses. Each run still needs its
:class:`agent.nodes.context.RunContext` (settings, output folder, run id) as the run's context.
"""

from __future__ import annotations

from agent.graph import build_graph

graph = build_graph()
