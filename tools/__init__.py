"""Wrappers around the outside world: arXiv, the paper store, the LLM client, the vLLM server."""
