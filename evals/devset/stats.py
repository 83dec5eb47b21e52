"""Print the development set's counts: rows per prompt, per claim, per stance, and relevant share.

Usage: python evals/devset/stats.py [PATH]   (default: claims_papers.jsonl beside this file)
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

STANCES = ("supports", "relaxes", "overturns", "unrelated")


def load(path: Path) -> list[dict]:
    """Read the JSONL rows."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def table(rows: list[dict]) -> str:
    """Format counts per prompt and claim (rows, relevant, each stance) with totals."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["prompt"], row["claim_id"]), []).append(row)
    head = f"{'prompt':<28} {'claim':<5} {'rows':>4} {'rel':>4} " + " ".join(
        f"{s[:9]:>9}" for s in STANCES)
    lines = [head, "-" * len(head)]

    def line(label: str, claim: str, group: list[dict]) -> str:
        stances = Counter(r["stance"] for r in group)
        relevant = sum(r["relevant"] for r in group)
        return (f"{label:<28} {claim:<5} {len(group):>4} {relevant:>4} "
                + " ".join(f"{stances[s]:>9}" for s in STANCES))

    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], int(kv[0][1][1:])))
    for prompt in sorted({p for p, _ in groups}):
        members = [r for (p, _), g in groups.items() if p == prompt for r in g]
        for (p, claim), group in ordered:
            if p == prompt:
                lines.append(line(prompt, claim, group))
        lines.append(line(prompt, "all", members))
    lines.append("-" * len(head))
    lines.append(line("TOTAL", "", rows))
    relevant = sum(r["relevant"] for r in rows)
    lines.append(f"relevant share: {relevant}/{len(rows)} = {relevant / max(len(rows), 1):.0%}; "
                 f"distinct papers: {len({r['arxiv_id'] for r in rows})}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the table for the file named on the command line, or the default one."""
    path = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("claims_papers.jsonl")
    print(table(load(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
