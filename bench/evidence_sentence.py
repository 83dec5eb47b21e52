"""Which abstract sentence an evidence line should show: measured against the hand-written reasons.

When the judging model's summary fails the grounding check, a report shows one sentence of the
abstract instead (``agent.judging.claim_sentence``). A reader wants the sentence that says what
the paper found about the claim. Every relevant row of the dev set carries a reason written by
hand from the abstract (what the paper found that bears on the claim), so for each way of
picking a sentence this prints, over those rows:

* ``reason stems``: the mean share of the reason's content-word stems that the chosen sentence
  holds (higher: closer to the finding a person picked out);
* ``first sentence``: how often it is the abstract's first sentence, mostly field background;
* a paired bootstrap 95% CI of each method's difference to the claim-overlap pick without the
  finding bonus, and how many rows it does better and worse on.

The picks: the first sentence; the claim overlap alone (``finding_bonus=0``); the claim overlap
with the finding bonus of 1 (what reports use) and of 2. The bonus was chosen on these same rows,
so its gain is an upper estimate.

Usage: ``python bench/evidence_sentence.py [--corpus PATH]`` (reads the abstracts from
the shared corpus; exit 2 with one line when it is missing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from retrieval_bench import DEFAULT_CORPUS, DEFAULT_DEVSET, DEFAULT_POOLED, load_devset  # noqa: E402

from agent.ask import split_sentences  # noqa: E402
from agent.judging import FINDING_BONUS, claim_sentence, content_stems  # noqa: E402
from tools.corpus import iter_corpus  # noqa: E402

BOOTSTRAP = 2000


def relevant_rows() -> list[dict]:
    """Return the relevant rows of both dev-set files (each has a hand-written reason)."""
    return [row for path in (DEFAULT_DEVSET, DEFAULT_POOLED) for row in load_devset(path)
            if row["relevant"]]


def abstracts(corpus: Path, ids: set[str]) -> dict[str, str]:
    """Read the abstracts of ``ids`` from the corpus in one pass."""
    return {paper.arxiv_id: paper.abstract for paper in iter_corpus(corpus)
            if paper.arxiv_id in ids}


def stem_recall(sentence: str, reason: str) -> float:
    """Share of the reason's content-word stems that ``sentence`` holds."""
    wanted = content_stems(reason)
    return len(wanted & content_stems(sentence)) / len(wanted) if wanted else 0.0


def main() -> int:
    """Print the table; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = parser.parse_args()
    if not args.corpus.is_file():
        print(f"corpus not found: {args.corpus}", file=sys.stderr)
        return 2
    rows = relevant_rows()
    text = abstracts(args.corpus, {r["arxiv_id"] for r in rows})
    rows = [r for r in rows if text.get(r["arxiv_id"])]
    first = {pid: split_sentences(abstract)[0] for pid, abstract in text.items() if abstract}
    picks = {
        "first sentence": lambda a, c: split_sentences(a)[0],  # as claim_sentence splits
        "claim overlap": lambda a, c: claim_sentence(a, c, finding_bonus=0),
        f"+ finding bonus {FINDING_BONUS} (reports)": lambda a, c: claim_sentence(a, c),
        "+ finding bonus 2": lambda a, c: claim_sentence(a, c, finding_bonus=2),
    }
    scores: dict[str, np.ndarray] = {}
    firsts: dict[str, float] = {}
    for name, pick in picks.items():
        chosen = [pick(text[r["arxiv_id"]], r["claim"]) for r in rows]
        scores[name] = np.array([stem_recall(s, r["reason"]) for s, r in zip(chosen, rows,
                                                                               strict=True)])
        firsts[name] = float(np.mean([s == first[r["arxiv_id"]]
                                      for s, r in zip(chosen, rows, strict=True)]))
    base = scores["claim overlap"]
    rng = np.random.default_rng(0)
    print(f"{len(rows)} relevant dev-set rows with a hand-written reason")
    print(f"{'pick':<30} {'reason stems':>12} {'first sentence':>15}  vs claim overlap")
    for name, values in scores.items():
        diff = values - base
        boots = [rng.choice(diff, len(diff)).mean() for _ in range(BOOTSTRAP)]
        low, high = np.percentile(boots, [2.5, 97.5])
        print(f"{name:<30} {values.mean():>12.3f} {firsts[name]:>15.0%}  {diff.mean():+.3f} "
              f"[{low:+.3f}, {high:+.3f}], better on {int((diff > 0).sum())}, worse on "
              f"{int((diff < 0).sum())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
