"""Nodes of the report graph, one module per group; :mod:`agent.graph` wires them."""
