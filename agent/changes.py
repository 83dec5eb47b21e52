"""What changed between two reports of the same prompt (pure functions over report.json dicts).

:func:`diff_reports` compares the previous report with the current one: papers that are new
since the last run (per claim), verdicts that changed and why, anchors whose status changed, and
re-test results that moved beyond their confidence intervals. :func:`render_changes_md` writes
the ``changes.md`` a user reads. Every id, title, date and number here is copied from the two
reports; nothing is generated.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

Report = dict[str, Any]

# Keys under which a summary may carry an interval beside a point estimate.
_CI_KEYS = ("ci", "ci95", "ci_95", "confidence_interval", "interval")
_CI_PAIRS = (("ci_low", "ci_high"), ("ci_lo", "ci_hi"), ("lo", "hi"), ("low", "high"),
             ("lower", "upper"))
_POINT_KEYS = ("value", "mean", "estimate", "point", "accuracy", "score", "gap", "delta", "diff")


def _claim_key(claim: dict[str, Any]) -> str:
    # The prompt is the same (same sha256), so its claim texts match; ids are the fallback.
    return (claim.get("text") or "").strip() or str(claim.get("id"))


def _paper_ids(report: Report) -> set[str]:
    """Every paper id the report retrieved or cited."""
    ids = {str(i) for i in report.get("citations") or []}
    for claim in report.get("claims") or []:
        ids.update(str(e.get("arxiv_id")) for e in claim.get("evidence") or [])
    for tension in report.get("tensions") or []:
        ids.update(str(i) for i in tension.get("arxiv_ids") or [])
    ids.update(str(i) for i in report.get("retrieved") or [])
    return ids


def _paper_entry(evidence: dict[str, Any]) -> dict[str, Any]:
    return {k: evidence.get(k) for k in ("arxiv_id", "title", "published", "stance")}


def diff_reports(previous: Report | None, current: Report) -> dict[str, Any]:
    """Return the ``changes`` block of ``current`` against ``previous`` (None on a first run).

    The block holds ``has_previous``, both timestamps, and lists ``new_papers`` (per claim:
    evidence papers the previous report never retrieved), ``verdicts_changed`` (with ``why``:
    the new evidence and re-test movement behind it), ``anchors_changed``, ``retests_moved``
    (metrics whose new value lies outside the previous CI), ``claims_added``/``claims_removed``,
    and a one-line ``summary``.
    """
    changes: dict[str, Any] = {
        "has_previous": previous is not None,
        "previous_generated_at": previous.get("generated_at") if previous else None,
        "current_generated_at": current.get("generated_at"),
        "new_papers": [], "verdicts_changed": [], "anchors_changed": [], "retests_moved": [],
        "claims_added": [], "claims_removed": [],
    }
    if previous is None:
        changes["summary"] = "First recorded run of this prompt: there is nothing to compare with."
        return changes

    seen_before = _paper_ids(previous)
    old_claims = {_claim_key(c): c for c in previous.get("claims") or []}
    new_claims = {_claim_key(c): c for c in current.get("claims") or []}
    for key, claim in new_claims.items():
        old = old_claims.get(key)
        if old is None:
            changes["claims_added"].append({"claim_id": claim.get("id"), "text": claim.get("text")})
        fresh = [_paper_entry(e) for e in claim.get("evidence") or []
                 if str(e.get("arxiv_id")) not in seen_before]
        if fresh:
            changes["new_papers"].append({"claim_id": claim.get("id"),
                                          "claim_text": claim.get("text"), "papers": fresh})
        if old is None:
            continue
        moved = _retest_moves(old.get("retest"), claim.get("retest"))
        for move in moved:
            changes["retests_moved"].append({"claim_id": claim.get("id"), **move})
        if old.get("verdict") != claim.get("verdict"):
            changes["verdicts_changed"].append({
                "claim_id": claim.get("id"), "text": claim.get("text"),
                "from": old.get("verdict"), "to": claim.get("verdict"),
                "why": _why(old, claim, fresh, moved),
            })
    for key, claim in old_claims.items():
        if key not in new_claims:
            changes["claims_removed"].append({"claim_id": claim.get("id"),
                                              "text": claim.get("text")})
    changes["anchors_changed"] = _anchor_changes(previous.get("anchors") or [],
                                                 current.get("anchors") or [])
    changes["summary"] = _summary(changes)
    return changes


def _why(old: dict[str, Any], new: dict[str, Any], fresh: list[dict[str, Any]],
         moved: list[dict[str, Any]]) -> list[str]:
    """Reasons for a verdict change, built only from the reports' own records."""
    reasons = [f"new paper {p['arxiv_id']} ({p.get('published') or 'undated'}) "
               f"{p.get('stance') or 'unjudged'}: {p.get('title') or ''}".rstrip(": ")
               for p in fresh if p.get("stance") != "unrelated"]
    old_stances = {str(e.get("arxiv_id")): e.get("stance") for e in old.get("evidence") or []}
    for e in new.get("evidence") or []:
        before = old_stances.get(str(e.get("arxiv_id")))
        if before is not None and before != e.get("stance"):
            reasons.append(f"stance of {e.get('arxiv_id')} changed from {before} to "
                           f"{e.get('stance')}")
    for m in moved:
        reasons.append(f"re-test {m['spec']} {m['metric']} moved from {m['previous']:.4g} to "
                       f"{m['current']:.4g} (outside the previous CI "
                       f"[{m['previous_ci'][0]:.4g}, {m['previous_ci'][1]:.4g}])")
    old_rt, new_rt = old.get("retest") or {}, new.get("retest") or {}
    if old_rt.get("supports_claim") != new_rt.get("supports_claim"):
        reasons.append(f"re-test support changed from {old_rt.get('supports_claim')} to "
                       f"{new_rt.get('supports_claim')}")
    if new.get("verdict_reason") and new.get("verdict_reason") != old.get("verdict_reason"):
        reasons.append(f"verdict rule now reads: {new['verdict_reason']}")
    if not reasons:
        reasons.append("same evidence re-judged: the judging model changed its mind")
    return reasons


def _anchor_changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    before = {str(a.get("arxiv_id")): a for a in old}
    after = {str(a.get("arxiv_id")): a for a in new}
    changed = []
    for anchor_id in sorted(before.keys() | after.keys()):
        was, now = before.get(anchor_id), after.get(anchor_id)
        was_status = was.get("status") if was else None
        now_status = now.get("status") if now else None
        if was_status != now_status:
            changed.append({"arxiv_id": anchor_id, "from": was_status, "to": now_status,
                            "title": (now or was or {}).get("title")})
    return changed


def _as_interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list | tuple) and len(value) == 2 and all(_is_num(v) for v in value):
        return float(value[0]), float(value[1])
    if isinstance(value, dict):
        for lo, hi in _CI_PAIRS:
            if _is_num(value.get(lo)) and _is_num(value.get(hi)):
                return float(value[lo]), float(value[hi])
    return None


def _interval(node: dict[str, Any], prefix: str) -> tuple[float, float] | None:
    """Find an interval in ``node`` under ``<prefix>ci``-style keys or ``<prefix>ci_low/high``."""
    for key in _CI_KEYS:
        found = _as_interval(node.get(prefix + key))
        if found is not None:
            return found
    for lo, hi in _CI_PAIRS:
        if _is_num(node.get(prefix + lo)) and _is_num(node.get(prefix + hi)):
            return float(node[prefix + lo]), float(node[prefix + hi])
    return None


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numeric_items(node: dict[str, Any]) -> list[str]:
    skip = {lo for pair in _CI_PAIRS for lo in pair} | {"n", "count", "k", "seed"}
    return [k for k, v in node.items() if _is_num(v) and k not in skip]


def metrics_with_ci(summary: Any, path: str = "") -> Iterator[tuple[str, float, float, float]]:
    """Yield ``(path, value, low, high)`` for each point estimate in ``summary`` that has a CI.

    Understands ``{"accuracy": .7, "ci": [.6, .8]}``, ``{"accuracy": .7, "accuracy_ci": [..]}``,
    ``{"value": .1, "ci_low": .0, "ci_high": .2}`` and the same nested under model/split keys.
    """
    if not isinstance(summary, dict):
        return
    for key, value in summary.items():
        if _is_num(value) and key in _numeric_items(summary):
            interval = _interval(summary, f"{key}_")
            # A bare "ci" belongs to the node's point estimate: its only number or a known name.
            if interval is None and (key in _POINT_KEYS or len(_numeric_items(summary)) == 1):
                interval = _interval(summary, "")
            # NaN estimates (an empty split) carry no information to compare.
            if interval is not None and all(map(math.isfinite, (value, *interval))):
                yield (f"{path}.{key}" if path else key), float(value), *interval
        elif isinstance(value, dict):
            yield from metrics_with_ci(value, f"{path}.{key}" if path else key)


def _retest_moves(old: Any, new: Any) -> list[dict[str, Any]]:
    """Metrics present in both re-tests whose new value lies outside the previous CI."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []
    before = {p: (v, lo, hi) for p, v, lo, hi in metrics_with_ci(old.get("summary"))}
    moves = []
    for metric, value, lo, hi in metrics_with_ci(new.get("summary")):
        if metric not in before:
            continue
        prev, plo, phi = before[metric]
        if not plo <= value <= phi:
            moves.append({"spec": new.get("spec") or old.get("spec"), "metric": metric,
                          "previous": prev, "current": value, "previous_ci": [plo, phi],
                          "current_ci": [lo, hi], "direction": "up" if value > prev else "down"})
    return moves


def _summary(changes: dict[str, Any]) -> str:
    n_papers = sum(len(group["papers"]) for group in changes["new_papers"])
    parts = [f"{n_papers} new paper{'s' if n_papers != 1 else ''}",
             f"{len(changes['verdicts_changed'])} verdict change(s)",
             f"{len(changes['anchors_changed'])} anchor status change(s)",
             f"{len(changes['retests_moved'])} re-test result(s) moved beyond their CIs"]
    return "Since the run of " + str(changes["previous_generated_at"]) + ": " + ", ".join(parts)


def verdicts_changed(changes: dict[str, Any]) -> bool:
    """Return True when the block records at least one changed verdict (the notify trigger)."""
    return bool(changes.get("verdicts_changed"))


def render_changes_md(changes: dict[str, Any]) -> str:
    """Render the ``changes`` block as the Markdown of ``changes.md``."""
    lines = ["# Changes since the last report", ""]
    if not changes.get("has_previous"):
        lines += ["First recorded run of this prompt: there is nothing to compare with.", ""]
        return "\n".join(lines)
    lines += [f"Previous report: {changes.get('previous_generated_at')}  ",
              f"This report: {changes.get('current_generated_at')}", "",
              changes.get("summary", ""), ""]
    lines += ["## New papers since the last run", ""]
    if not changes["new_papers"]:
        lines += ["No new papers.", ""]
    for group in changes["new_papers"]:
        lines.append(f"### {group['claim_id']}: {group.get('claim_text') or ''}".rstrip(": "))
        lines.append("")
        for p in group["papers"]:
            lines.append(f"- arXiv:{p['arxiv_id']} ({p.get('published') or 'undated'}) "
                         f"{p.get('title') or ''} — {p.get('stance') or 'unjudged'}")
        lines.append("")
    lines += ["## Verdicts that changed", ""]
    if not changes["verdicts_changed"]:
        lines += ["No verdict changed.", ""]
    for v in changes["verdicts_changed"]:
        lines.append(f"- **{v['claim_id']}** {v['from']} → {v['to']}: {v.get('text') or ''}")
        lines += [f"  - {reason}" for reason in v.get("why") or []]
    if changes["verdicts_changed"]:
        lines.append("")
    lines += ["## Anchors whose status changed", ""]
    if not changes["anchors_changed"]:
        lines += ["No anchor changed status.", ""]
    for a in changes["anchors_changed"]:
        lines.append(f"- arXiv:{a['arxiv_id']}: {a['from']} → {a['to']}"
                     + (f" ({a['title']})" if a.get("title") else ""))
    if changes["anchors_changed"]:
        lines.append("")
    lines += ["## Re-test results that moved beyond their CIs", ""]
    if not changes["retests_moved"]:
        lines += ["No re-test result moved beyond its confidence interval.", ""]
    for m in changes["retests_moved"]:
        lines.append(f"- {m['claim_id']} `{m['spec']}` {m['metric']}: {m['previous']:.4g} "
                     f"(CI {m['previous_ci'][0]:.4g}–{m['previous_ci'][1]:.4g}) → "
                     f"{m['current']:.4g} (CI {m['current_ci'][0]:.4g}–{m['current_ci'][1]:.4g})")
    if changes["retests_moved"]:
        lines.append("")
    for title, key in (("Claims added", "claims_added"), ("Claims removed", "claims_removed")):
        if changes[key]:
            lines += [f"## {title}", ""]
            lines += [f"- {c['claim_id']}: {c.get('text') or ''}" for c in changes[key]]
            lines.append("")
    return "\n".join(lines)
