"""Read finished reports: verdicts, evidence, tensions, anchors, re-test plots, downloads, history.

Reports are found in two places of the data directory: the report history
(``history/<prompt sha>/<stamp>/``, via :class:`agent.history.ReportHistory`) and the app's own
run folders (``app_runs/<run id>/``). Every field shown is escaped; ids become links only when
well formed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import streamlit as st

from agent.changes import diff_reports
from agent.history import ReportHistory
from agent.report import retest_summary_lines
from app_pages import resources
from app_pages.render import (
    ANCHOR_COLORS,
    STANCE_COLORS,
    VERDICT_COLORS,
    badge,
    escape_md,
    md_cell,
)
from tools.paper import is_valid_arxiv_id

log = logging.getLogger(__name__)

MAX_PLOTS = 12
DOWNLOADS = (("report.md", "text/markdown"), ("report.json", "application/json"),
             ("references.bib", "application/x-bibtex"), ("changes.md", "text/markdown"))


def find_reports(data_dir: Path) -> list[tuple[str, Path]]:
    """List (label, folder) of every readable report under ``data_dir``, newest first."""
    found: dict[Path, tuple[str, str]] = {}
    for path in data_dir.glob("app_runs/*/report.json"):
        found[path.parent.resolve()] = (_generated_at(path), f"app run {path.parent.name}")
    for path in data_dir.glob("history/*/*/report.json"):
        if path.parent.name.startswith("."):
            continue
        found.setdefault(path.parent.resolve(),
                         (_generated_at(path), f"history {path.parent.parent.name[:10]}"))
    ordered = sorted(found.items(), key=lambda item: item[1][0], reverse=True)
    return [(f"{when or 'undated'} · {where}", folder) for folder, (when, where) in ordered]


def _generated_at(path: Path) -> str:
    try:
        return str(json.loads(path.read_text("utf-8")).get("generated_at") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def _link(arxiv_id: Any) -> str:
    text = str(arxiv_id)
    if is_valid_arxiv_id(text):
        return f"[arXiv\\:{escape_md(text)}](https://arxiv.org/abs/{text})"
    return escape_md(text)


def _summary_table(report: dict[str, Any]) -> None:
    rows = ["| claim | dated | verdict | evidence | re-test |", "|---|---|---|---|---|"]
    for claim in report.get("claims", []):
        retest = claim.get("retest")
        supports = "—" if not retest else "skipped" if retest.get("skipped_reason") else {
            True: "supports", False: "contradicts", None: "inconclusive"}.get(
            retest.get("supports_claim"), "—")
        rows.append(f"| {md_cell(claim.get('id'))}: {md_cell(claim.get('text'), 160)} | "
                    f"{md_cell(claim.get('dated') or '—')} | "
                    f"{badge(str(claim.get('verdict')), VERDICT_COLORS)} | "
                    f"{len(claim.get('evidence') or [])} | {supports} |")
    st.markdown("\n".join(rows))


def _stance_badge(stance: str, weighed: bool) -> str:
    """Return a stance badge: gray and marked as the judge's when stances decide nothing."""
    return badge(stance, STANCE_COLORS) if weighed else badge(f"judge said {stance}", {})


def _claim_details(report: dict[str, Any]) -> None:
    weighed = bool((report.get("judge") or {}).get("decides_verdicts"))
    for claim in report.get("claims", []):
        label = f"{claim.get('id')}: {md_cell(claim.get('text'), 90)} — {claim.get('verdict')}"
        with st.expander(label):
            if claim.get("evidence") and not weighed:
                st.caption("The judge's stances carry no weight here: it is unmeasured or no "
                           "better than chance (see the report's judge line).")
            for ev in claim.get("evidence") or []:
                st.markdown(f"{_stance_badge(str(ev.get('stance')), weighed)} "
                            f"{_link(ev.get('arxiv_id'))} · {md_cell(ev.get('published'))} · "
                            f"**{md_cell(ev.get('title'))}**")
                st.caption(md_cell(ev.get("summary"), 800))
            if not claim.get("evidence"):
                st.markdown("_No newer evidence was retrieved._")
            if claim.get("retest"):
                st.markdown(f"**Re-test** ({md_cell(claim['retest'].get('spec'))})")
                if claim["retest"].get("skipped_reason"):  # the budget left it out
                    st.markdown(f"Skipped: {md_cell(claim['retest']['skipped_reason'])}")
                    continue
                summary = claim["retest"].get("summary") or {}
                # The evaluation's own summary (accuracy table, CIs, gap), then the raw numbers.
                st.markdown("\n".join(retest_summary_lines(summary)))
                st.json(summary, expanded=False)


def _lists(report: dict[str, Any]) -> None:
    tensions = report.get("tensions") or []
    st.subheader("Tensions")
    for tension in tensions:
        ids = ", ".join(_link(i) for i in tension.get("arxiv_ids") or [])
        st.markdown(f"- {md_cell(tension.get('text'), 600)} ({ids})")
    if not tensions:
        st.markdown("_None recorded._")
    st.subheader("Research questions")
    for question in report.get("research_questions") or []:
        st.markdown(f"- {md_cell(question, 600)}")
    flagged = [a for a in report.get("anchors") or [] if a.get("status") != "verified"]
    st.subheader("Anchors")
    for anchor in report.get("anchors") or []:
        st.markdown(f"{badge(str(anchor.get('status')), ANCHOR_COLORS)} "
                    f"{_link(anchor.get('arxiv_id'))} {md_cell(anchor.get('title') or '')}")
    if flagged:
        st.warning(f"{len(flagged)} anchor(s) could not be grounded; they are never cited as "
                   "evidence.")


def _plots(folder: Path, report: dict[str, Any]) -> None:
    pngs = sorted(folder.rglob("*.png"))[:MAX_PLOTS]
    if pngs:
        st.subheader("Re-test plots")
        for png in pngs:
            st.image(str(png), caption=png.name)


def _downloads(folder: Path) -> None:
    present = [(name, mime) for name, mime in DOWNLOADS if (folder / name).is_file()]
    for column, (name, mime) in zip(st.columns(max(1, len(present))), present, strict=False):
        with column:
            st.download_button(name, (folder / name).read_bytes(), file_name=name, mime=mime,
                               key=f"dl_{name}")


def _history(data_dir: Path, report: dict[str, Any]) -> None:
    sha = report.get("prompt_sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        return
    history = ReportHistory(data_dir)
    runs = history.runs(sha)
    st.subheader(f"Past reports of this prompt ({len(runs)})")
    rows = ["| generated | model | verdicts |", "|---|---|---|"]
    for meta in reversed(runs):
        verdicts = ", ".join(f"{k}: {v}" for k, v in (meta.get("verdicts") or {}).items())
        rows.append(f"| {md_cell(meta.get('generated_at'))} | {md_cell(meta.get('model'))} | "
                    f"{md_cell(verdicts)} |")
    if runs:
        st.markdown("\n".join(rows))
    changes = diff_reports(history.previous(sha, before=report.get("generated_at")), report)
    st.markdown(f"**What changed:** {md_cell(changes.get('summary'), 600)}")
    for change in changes.get("verdicts_changed", []):
        st.markdown(f"- {md_cell(change.get('claim_id'))}: {md_cell(change.get('from'))} → "
                    f"{md_cell(change.get('to'))} ({md_cell('; '.join(change.get('why') or []))})")


def show_report(folder: Path, data_dir: Path) -> None:
    """Render the report stored in ``folder`` (which holds report.json)."""
    try:
        report = json.loads((folder / "report.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        st.error(f"Cannot read this report: {escape_md(exc)}")
        return
    st.caption(f"Generated {md_cell(report.get('generated_at'))} · judged by "
               f"{md_cell(report.get('model'))} · corpus {md_cell(report.get('corpus'))}")
    if report.get("degraded"):
        st.warning("Degraded: " + md_cell("; ".join(map(str, report["degraded"]))))
    _downloads(folder)
    st.subheader("Summary")
    _summary_table(report)
    _claim_details(report)
    _lists(report)
    _plots(folder, report)
    _history(data_dir, report)


def render() -> None:
    """Draw the reports page."""
    st.header("Reports")
    data_dir = resources.settings().data_dir
    reports = find_reports(data_dir)
    if not reports:
        st.info("No reports yet: run one on the Re-test page or with `retest report`.")
        return
    labels = [label for label, _ in reports]
    wanted = st.session_state.pop("open_report_dir", None)
    if wanted:
        matches = [lab for lab, folder in reports if folder == Path(wanted).resolve()]
        if matches:
            st.session_state["report_choice"] = matches[0]
    if st.session_state.get("report_choice") not in labels:
        st.session_state.pop("report_choice", None)
    label = st.selectbox("Report", labels, key="report_choice")
    show_report(reports[labels.index(label)][1], data_dir)
