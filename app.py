"""The retest Streamlit app: chat with the literature, run re-test reports, read them.

UI only: every page calls ``agent``/``tools`` and keeps nothing but view state here. Start it with
``streamlit run app.py`` (binds 127.0.0.1; see ``docs/app.md`` for exposing it safely).
"""

from __future__ import annotations

import os

# No code may fetch weights or data from a hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import streamlit as st  # noqa: E402

from app_pages import chat, reports, retest, settings_view  # noqa: E402
from core.errors import RetestError  # noqa: E402

PAGES = {"Chat": chat.render, "Re-test": retest.render, "Reports": reports.render,
         "Settings": settings_view.render}

st.set_page_config(page_title="retest", layout="wide")
if "goto_page" in st.session_state:  # a page asked to switch (set before the radio exists)
    st.session_state["page"] = st.session_state.pop("goto_page")
if "run" in st.query_params and "page" not in st.session_state:
    st.session_state["page"] = "Re-test"  # a refresh with ?run=ID reattaches to the run
st.sidebar.title("retest")
page = st.sidebar.radio("Page", list(PAGES), key="page")
try:
    PAGES[page]()
except RetestError as exc:
    st.error(str(exc))
