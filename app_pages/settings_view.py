"""The read-only settings panel: where answers come from and what the app can reach."""

from __future__ import annotations

import streamlit as st

from app_pages import resources
from app_pages.render import escape_md


def render() -> None:
    """Draw the read-only settings page (RETEST_* variables or retest.toml change it)."""
    st.header("Settings")
    current = resources.settings()
    if current.llm.base_url:
        endpoint = ", ".join(current.llm.base_urls())  # several: spread, with failover
        model = current.llm.model or "(first model the server lists)"
    else:
        endpoint = f"embedded vLLM on {current.server.host} (started on demand)"
        model = current.server.model
    rows = {
        "LLM endpoint": endpoint,
        "LLM model": model,
        "Corpus": str(current.corpus) if current.corpus else "(none; live arXiv unless offline)",
        "Data directory": str(current.data_dir.resolve()),
        "Paper store": current.store.chroma_url or f"embedded chromadb, collection "
                                                   f"'{current.store.collection}'",
        "Offline": "yes" if current.offline else "no",
        "arXiv API": resources.arxiv_reachable(current.arxiv.base_url, current.offline),
    }
    st.markdown("\n".join(["| setting | value |", "|---|---|"]
                          + [f"| {k} | {escape_md(v)} |" for k, v in rows.items()]))
    st.caption("Read-only. Change settings with RETEST_* environment variables or retest.toml "
               "and restart the app.")
