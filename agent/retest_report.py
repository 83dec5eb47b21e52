"""The re-test part of the report: each claim's re-test object and its lines in report.md.

Per claim, report.json's ``retest`` holds the run's record (``agent.state.Retest``: spec,
summary, supports_claim, decides, design, n, effect, ci, p_value, p_holm, wall_s, plots) plus
``budget_s``; a claim whose re-test was skipped gets an object with ``skipped_reason`` and no
summary. report.md shows, per claim, the design in one line, n, the effect with its 95% CI, p
raw and Holm-adjusted, whether it decides, the time spent and the plot. Every number comes from
the re-test's summary, none from a model.
"""

from __future__ import annotations

from typing import Any

from agent.nodes.retest_budget import human_duration
from agent.state import Retest, RetestPlan


def retest_json(plan: RetestPlan | None, retest: Retest | None,
                budget_s: float) -> dict[str, Any] | None:
    """Return a claim's report.json ``retest`` object, or None when nothing ran or was skipped."""
    if retest is not None:
        return {**dict(retest), "budget_s": budget_s, "skipped_reason": None}
    if plan and plan.get("spec") and plan["status"].startswith("skipped"):
        return {"spec": f"{plan['spec']}.toml", "summary": {}, "supports_claim": None,
                "decides": bool(plan.get("decides")), "design": plan.get("description", ""),
                "n": None, "effect": None, "ci": None, "p_value": None, "p_holm": None,
                "expected_s": plan.get("expected_s"), "wall_s": 0.0, "budget_s": budget_s,
                "skipped_reason": plan.get("skipped_reason") or plan["status"]}
    return None


def budget_json(claims: list[dict[str, Any]], budget_s: float) -> dict[str, Any]:
    """Return report.json's ``retest_budget``: the budget, what was spent, ran and skipped."""
    ran = [c for c in claims if c["retest"] and not c["retest"].get("skipped_reason")]
    return {"budget_s": budget_s,
            "spent_s": round(sum(float(c["retest"].get("wall_s") or 0.0) for c in ran), 1),
            "ran": [c["id"] for c in ran
                    if not (c["retest"].get("reused") or c["retest"].get("reread"))],
            "reread": [c["id"] for c in ran if c["retest"].get("reread")],
            "reused": [c["id"] for c in ran if c["retest"].get("reused")],
            "skipped": {c["id"]: c["retest"]["skipped_reason"] for c in claims
                        if c["retest"] and c["retest"].get("skipped_reason")}}


def budget_line(block: dict[str, Any] | None) -> str:
    """Say in one line what the re-test budget bought (for the top of report.md)."""
    if not block:
        return ""
    if not block["budget_s"]:
        return "Re-tests: off (--retest-budget 0)."
    skipped = block["skipped"]
    reread = block.get("reread") or []  # absent from reports written before it existed
    read_again = (f", {len(reread)} read an earlier run's answers again by today's rules"
                  if reread else "")
    line = (f"Re-tests: {len(block['ran'])} ran{read_again} and {len(block['reused'])} reused "
            f"finished results, in {human_duration(block['spent_s'])} of a "
            f"{human_duration(block['budget_s'])} budget (cheapest first)")
    if skipped:
        line += "; skipped: " + "; ".join(f"{cid} ({why})" for cid, why in skipped.items())
    return line + "."


def _points(value: Any) -> str:
    # Every recipe's effect is a difference of accuracy shares (or pass rates); a reader
    # compares it with the headline below it, which says points.
    return "n/a" if value is None else f"{100 * float(value):+.1f}"


def _p(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{float(value):.2g}" if float(value) < 0.001 else f"{float(value):.4f}"


def verdict_word(retest: dict[str, Any]) -> str:
    """Say what the re-test's reading is, for the summary table."""
    if retest.get("skipped_reason"):
        return "skipped"
    word = {True: "supports", False: "contradicts", None: "inconclusive"}[
        retest.get("supports_claim")]
    return word + ("" if retest.get("decides", True) else " (descriptive)")


def retest_lines(claim_id: str, retest: dict[str, Any], cell: Any) -> list[str]:
    """Return the head of a claim's re-test block in report.md (``cell`` escapes outside text).

    The recipe's own summary (tables, rule) follows it, rendered by the caller.
    """
    spec = retest["spec"]
    role = ("controlled comparison: decides the verdict" if retest.get("decides")
            else "descriptive comparison: does not decide the verdict")
    if retest.get("skipped_reason"):
        return [f"Re-test `{spec}` ({role}) **skipped**: {cell(retest['skipped_reason'])}.",
                "", f"- Design: {cell(retest.get('design') or 'see the spec')}", ""]
    ci = retest.get("ci")
    ci_text = f" [{_points(ci[0])}, {_points(ci[1])}] (95% CI)" if ci else " (no CI)"
    p_text = f"p = {_p(retest.get('p_value'))}"
    if retest.get("p_source") and retest["p_source"] not in ("recipe", "none"):
        p_text += f" ({retest['p_source']})"
    p_text += f"; Holm-adjusted p = {_p(retest.get('p_holm'))}"
    if retest.get("holm_note"):
        p_text += f" ({cell(retest['holm_note'])})"
    reading = {True: "supports the claim", False: "contradicts the claim",
               None: "inconclusive"}[retest.get("supports_claim")]
    untestable = (retest.get("summary") or {}).get("untestable")
    if untestable:  # e.g. a model that got every item wrong leaves its verifier nothing to sort
        reading += f" ({cell(untestable)})"
    took = human_duration(float(retest.get("wall_s") or 0.0))
    time_text = ("reused a finished result" if retest.get("reused") else
                 f"an earlier run's models and answers read again by today's rules in {took}"
                 if retest.get("reread") else f"ran in {took}")
    if retest.get("expected_s") is not None and not (retest.get("reused") or retest.get("reread")):
        time_text += f" (expected ~{human_duration(float(retest['expected_s']))}"
        time_text += (f", budget {human_duration(float(retest['budget_s']))})"
                      if retest.get("budget_s") is not None else ")")
    lines = [f"Re-test `{spec}` ({role}; all outputs in `retests/{claim_id}/`):", "",
             f"- Design: {cell(retest.get('design') or 'see the spec')}",
             f"- n = {retest.get('n') if retest.get('n') is not None else 'n/a'}; effect "
             f"{_points(retest.get('effect'))} points{ci_text}; {p_text}.",
             f"- Reading: {reading}; {time_text}.", ""]
    for plot in retest.get("plots") or []:
        lines += [f"![{plot.rsplit('/', 1)[-1]}]({plot})", ""]
    return lines


# Lines of a recipe's own summary that the block above already says (design, role).
_SAID_ABOVE = ("Design: ", "Controlled comparison: ", "Descriptive only: ")


def drop_repeated_lines(summary_lines: list[str]) -> list[str]:
    """Drop the summary's design and role lines (and the blank after each): said above it."""
    out: list[str] = []
    skip_blank = False
    for line in summary_lines:
        if line.startswith(_SAID_ABOVE):
            skip_blank = True
            continue
        if skip_blank and not line.strip():
            skip_blank = False
            continue
        skip_blank = False
        out.append(line)
    return out
