"""How much of the dev set a report found: relevant papers cited per claim, and stance agreement.

Matches the report's claims to the dev set's by claim text (whitespace-normalized), then prints,
per claim: the dev set's relevant papers, how many of them the report cites as evidence, what else
it cites (labelled unrelated, or not labelled at all), and how often the report's stance equals
the hand label on the relevant papers it cites. The last line is the share of all relevant papers
of the matched claims that the report cites (issue 13 asks for at least 40% on the seed).

The pooled judgements (``pooled_top10.jsonl``: papers a ranker put in a claim's top 10 that the
dev set left out) do not count toward that share; they do say how much of what the report cites
is on topic: the second line counts the cited papers judged relevant, judged not relevant, and
never judged, by either file.

Usage: python evals/devset/coverage.py REPORT_JSON [--devset PATH] [--pooled PATH] [--json]
Exit 2 with one line when the report is unreadable or shares no claim with the dev set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats import load  # noqa: E402  (the sibling script's row reader)

DEFAULT_DEVSET = Path(__file__).resolve().parent / "claims_papers.jsonl"
DEFAULT_POOLED = Path(__file__).resolve().parent / "pooled_top10.jsonl"


def _norm(text: str) -> str:
    return " ".join(text.split())


def coverage(report: dict[str, Any], rows: list[dict[str, Any]],
             pooled: list[dict[str, Any]] = ()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    """Return one dict per report claim that the dev set labels (pure: data in, data out).

    ``pooled`` rows only add to ``on_topic`` / ``off_topic`` (judged relevant or not by either
    file) and ``unjudged``; the coverage counts use ``rows`` alone.
    """
    by_claim: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_claim.setdefault(_norm(row["claim"]), {})[row["arxiv_id"]] = row
    judged: dict[str, dict[str, bool]] = {}
    for row in [*rows, *pooled]:
        judged.setdefault(_norm(row["claim"]), {})[row["arxiv_id"]] = bool(row["relevant"])
    out: list[dict[str, Any]] = []
    for claim in report.get("claims", []):
        labels = by_claim.get(_norm(claim.get("text", "")))
        if labels is None:
            continue
        relevant = {pid for pid, row in labels.items() if row["relevant"]}
        cited = {e["arxiv_id"]: e.get("stance") for e in claim.get("evidence", [])}
        hits = sorted(relevant & set(cited))
        agree = sum(cited[pid] == labels[pid]["stance"] for pid in hits)
        verdicts = [judged[_norm(claim["text"])].get(pid) for pid in cited]
        out.append({
            "claim_id": claim.get("id"), "relevant": len(relevant), "cited": len(cited),
            "cited_relevant": len(hits),
            "cited_unrelated": sum(1 for pid in cited if pid in labels and pid not in relevant),
            "cited_unlabelled": sum(1 for pid in cited if pid not in labels),
            "stance_agrees": agree, "verdict": claim.get("verdict"),
            "on_topic": verdicts.count(True), "off_topic": verdicts.count(False),
            "unjudged": verdicts.count(None)})
    return out


def main() -> int:
    """Print the coverage table (or JSON); return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--devset", type=Path, default=DEFAULT_DEVSET)
    parser.add_argument("--pooled", type=Path, default=DEFAULT_POOLED)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        report = json.loads(args.report.read_text(encoding="utf-8"))
        rows = load(args.devset)
        pooled = load(args.pooled) if args.pooled.is_file() else []
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.report} or {args.devset}: {exc}", file=sys.stderr)
        return 2
    table = coverage(report, rows, pooled)
    if not table:
        print(f"error: no claim of {args.report} is in the dev set", file=sys.stderr)
        return 2
    relevant = sum(r["relevant"] for r in table)
    found = sum(r["cited_relevant"] for r in table)
    share = found / relevant if relevant else 0.0
    on, off, unjudged = (sum(r[k] for r in table) for k in ("on_topic", "off_topic", "unjudged"))
    if args.json:
        print(json.dumps({"claims": table, "relevant": relevant, "cited_relevant": found,
                          "share": round(share, 3), "on_topic": on, "off_topic": off,
                          "unjudged": unjudged}, indent=2))
        return 0
    print(f"{'claim':<6}{'relevant':>9}{'cited':>7}{'cited rel':>10}{'unrelated':>10}"
          f"{'unlabelled':>11}{'stance =':>9}  verdict")
    for r in table:
        print(f"{r['claim_id']:<6}{r['relevant']:>9}{r['cited']:>7}{r['cited_relevant']:>10}"
              f"{r['cited_unrelated']:>10}{r['cited_unlabelled']:>11}{r['stance_agrees']:>9}"
              f"  {r['verdict']}")
    print(f"the report cites {found} of the dev set's {relevant} relevant papers for these "
          f"claims ({share:.0%})")
    cited = on + off + unjudged
    print(f"of the {cited} papers it cites, {on} are judged on topic, {off} off topic and "
          f"{unjudged} were never judged (with {args.pooled.name}): "
          f"{on / (on + off) if on + off else 0.0:.0%} of the judged ones bear on their claim")
    return 0


if __name__ == "__main__":
    sys.exit(main())
