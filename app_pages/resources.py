"""Heavy objects built once per app process (``st.cache_resource``), never per message.

Each cache is keyed by plain strings (data directory, endpoint), so tests that switch data
directories in one process get their own store rather than a stale one.
"""

from __future__ import annotations

from typing import Any

import requests
import streamlit as st

from app_pages.background import RunRegistry
from core.settings import Settings, load_settings


def settings() -> Settings:
    """Load settings for this rerun (cheap; env may differ between test runs)."""
    return load_settings()


@st.cache_resource(show_spinner=False)
def _store(data_dir: str, chroma_url: str, collection: str) -> Any:
    from tools.paper_store import PaperStore

    return PaperStore(load_settings(data_dir=data_dir))


def paper_store(current: Settings) -> Any:
    """Return the paper store of ``current``'s data directory."""
    return _store(str(current.data_dir.resolve()), current.store.chroma_url,
                  current.store.collection)


@st.cache_resource(show_spinner="Starting the language model…")
def _llm(base_url: str, model: str, data_dir: str) -> Any:
    from tools.llm import make_llm

    # Started on purpose: the server outlives a page rerun and stops once idle.
    return make_llm(load_settings(data_dir=data_dir), server_purpose="detached")


def llm(current: Settings) -> Any:
    """Return the chat client (the embedded vLLM server starts on first use without an endpoint)."""
    return _llm(",".join(current.llm.base_urls()), current.llm.model,
                str(current.data_dir.resolve()))


@st.cache_resource(show_spinner=False)
def run_registry() -> RunRegistry:
    """Return the one registry of background report runs in this process."""
    return RunRegistry()


@st.cache_data(ttl=120, show_spinner=False)
def arxiv_reachable(url: str, offline: bool) -> str:
    """Say whether the arXiv API answers (a 5 s probe, cached for two minutes)."""
    if offline:
        return "offline mode: arXiv is not contacted"
    try:
        response = requests.get(url, params={"search_query": "all:test", "max_results": 1},
                                timeout=5)
    except requests.RequestException as exc:
        return f"unreachable ({type(exc).__name__})"
    return "reachable" if response.ok else f"answered HTTP {response.status_code}"
