"""Start a re-test report: paste or upload a prompt, check the parse, run it in the background.

The uploaded file is read as bytes, size-checked and decoded as UTF-8 text; it is never executed
and its name is never used as a path. The run id lives in the URL (``?run=ID``) so a refresh
reattaches to the run that keeps going in the server process.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from agent.options import ReportOptions
from agent.parse import MAX_PROMPT_BYTES, decode_prompt, parse_prompt
from app_pages import resources
from app_pages.background import BackgroundRun
from app_pages.render import escape_md, md_cell
from core.errors import BadInputError, RetestError


def prompt_from_upload(data: bytes) -> str:
    """Return the uploaded bytes as text under the one prompt rule; raise ValueError if not."""
    try:
        return decode_prompt(data, "upload")
    except BadInputError as exc:
        raise ValueError(str(exc)) from None


def _show_brief(brief: dict[str, Any]) -> None:
    st.markdown(f"**Question:** {escape_md(brief['question']) or '—'}")
    rows = ["| id | claim | dated |", "|---|---|---|"]
    rows += [f"| {c['id']} | {md_cell(c['text'])} | {md_cell(c['dated'] or '—')} |"
             for c in brief["claims"]]
    st.markdown("\n".join(rows) if brief["claims"] else "_No dated claims found._")
    if brief["anchors"]:
        st.markdown("**Anchors:** " + ", ".join(
            f"{escape_md(a['arxiv_id'])}" + ("" if a["valid"] else " (malformed)")
            for a in brief["anchors"]))


def _progress(run: BackgroundRun) -> None:
    """Draw the run's stages; called again every two seconds while it runs."""
    stages = run.stages()
    state = "running" if run.running else ("error" if run.error else "complete")
    label = {"running": "Running the re-test…", "error": "The run failed",
             "complete": "Run finished"}[state]
    if run.cancelled:
        label = "Run cancelled (the checkpoint keeps finished steps)"
    with st.status(label, state=state, expanded=True):
        for stage, event in stages.items():
            done, total = event.get("done"), event.get("total")
            count = f" ({done}/{total})" if total else ""
            st.markdown(f"**{escape_md(stage)}**{count}: {escape_md(event.get('message', ''))}")
            if total:
                st.progress(min(1.0, float(done or 0) / float(total)))
    if run.error and not run.cancelled:
        st.error(escape_md(run.error))
    if run.running:
        if st.button("Cancel run", key="cancel_run", disabled=run.cancel.is_set()):
            run.cancel.set()
            st.info("Cancelling after the current step…")
    elif run.outcome is not None:
        outcome = run.outcome
        degraded = getattr(outcome, "degraded", None)
        st.success(f"Report written (exit code {getattr(outcome, 'exit_code', '?')}).")
        if degraded:
            st.warning("Degraded sources: " + escape_md(", ".join(map(str, degraded))))
        if st.button("Open this report", key="open_report"):
            st.session_state["open_report_dir"] = str(outcome.out_dir)
            st.session_state["goto_page"] = "Reports"
            st.rerun()


def render() -> None:
    """Draw the re-test page."""
    st.header("Re-test a research prompt")
    registry = resources.run_registry()
    run = registry.get(st.query_params.get("run"))
    if run is not None:
        st.caption(f"Run {run.run_id}")
        st.fragment(run_every=2.0 if run.running else None)(_progress)(run)
        if not run.running and st.button("Start another run", key="new_run"):
            del st.query_params["run"]
            st.rerun()
        return
    upload = st.file_uploader(
        f"Upload a prompt (.txt/.md, up to {MAX_PROMPT_BYTES // 1024} KiB)", type=["txt", "md"],
        key="prompt_upload")
    text = st.text_area("…or paste it", height=240, max_chars=MAX_PROMPT_BYTES,
                        key="prompt_text")
    if upload is not None:
        try:
            text = prompt_from_upload(upload.getvalue())
        except ValueError as exc:
            st.error(str(exc))
            return
    if not text or not text.strip():
        st.info("Paste or upload a research prompt to see its claims and anchors.")
        return
    try:
        brief = parse_prompt(text)
    except RetestError as exc:
        st.error(escape_md(str(exc)))
        return
    _show_brief(dict(brief))
    if not brief["claims"]:
        st.warning("No dated claims were found, so there is nothing to re-test.")
        return
    left, right = st.columns(2)
    papers = left.number_input("Papers per claim", min_value=1, max_value=10, value=10,
                               key="papers_per_claim")
    retests = right.checkbox("Run local re-tests (slow on CPU)", value=True, key="run_retests")
    if st.button("Run re-test", type="primary", key="start_run"):

        current = resources.settings()
        options = ReportOptions(papers_per_claim=int(papers), retest_limit=None if retests else 0,
                                progress_bars=False)
        started = registry.start(text, current, current.data_dir / "app_runs", options)
        st.query_params["run"] = started.run_id
        st.rerun()
