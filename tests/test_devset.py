"""The hand-labelled development set (evals/devset/claims_papers.jsonl and the pooled
judgements of hybrid's top 10 in pooled_top10.jsonl) is well formed.

Fast checks only: the rows parse, their claims are the ones the parser yields for each prompt,
their arXiv ids and titles are those of the shared corpus, stances are the four names, and every
claim has at least one relevant paper. Checks that need ``../shared`` skip when it is absent.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from agent.parse import parse_prompt

REPO = Path(__file__).resolve().parents[1]
DEVSET = REPO / "evals" / "devset" / "claims_papers.jsonl"
POOLED = REPO / "evals" / "devset" / "pooled_top10.jsonl"
# The rankers whose top 10 was pooled for judgement (bench/retrieval_bench.py, retrieval_tries.py).
POOL_SOURCES = {"hybrid top 10", "hybrid + sentence max-sim top 10"}
SEED_DIR = REPO.parent / "shared" / "seed"
CORPUS_NAME = "arxiv/arxiv_cs_CL_LG_AI_2025-03_2026-07.jsonl.gz"
STANCES = {"supports", "relaxes", "overturns", "unrelated"}
FIELDS = {"prompt", "claim_id", "claim", "arxiv_id", "title", "published", "relevant", "stance",
          "reason"}


def _read(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return _read(DEVSET)


@pytest.fixture(scope="module")
def pooled() -> list[dict]:
    return _read(POOLED)


def _prompt_path(name: str) -> Path:
    """The seed prompt lives in ../shared/seed/; every other prompt in examples/."""
    local = REPO / "examples" / name
    return local if local.is_file() else SEED_DIR / name


def test_rows_parse_with_all_fields_and_known_stances(rows: list[dict]) -> None:
    assert len(rows) >= 150
    for row in rows:
        assert set(row) == FIELDS, row
        assert row["stance"] in STANCES, row
        assert isinstance(row["relevant"], bool)
        # relevant rows take a side; irrelevant ones are "unrelated"
        assert row["relevant"] == (row["stance"] != "unrelated"), row
        assert row["reason"].strip() and row["title"].strip()
        assert len(row["published"]) == 10 and row["published"][4] == "-"


def test_no_duplicate_claim_paper_pairs(rows: list[dict], pooled: list[dict]) -> None:
    # A pooled row judges a pair the first labelling left out, never one it already holds.
    keys = Counter((r["prompt"], r["claim_id"], r["arxiv_id"]) for r in rows + pooled)
    assert [k for k, n in keys.items() if n > 1] == []


def test_pooled_rows_are_labelled_like_the_rest(rows: list[dict], pooled: list[dict]) -> None:
    assert pooled
    claims = {(r["prompt"], r["claim_id"]): r["claim"] for r in rows}
    for row in pooled:
        assert set(row) == FIELDS | {"pooled_from", "pooled_rank"}, row
        assert row["pooled_from"] in POOL_SOURCES and 1 <= row["pooled_rank"] <= 10, row
        assert row["stance"] in STANCES and row["relevant"] == (row["stance"] != "unrelated")
        assert row["reason"].strip() and claims[(row["prompt"], row["claim_id"])] == row["claim"]


def test_claims_are_the_parsers_and_each_has_a_relevant_row(rows: list[dict]) -> None:
    missing = []
    for name in sorted({r["prompt"] for r in rows}):
        path = _prompt_path(name)
        if not path.is_file():
            missing.append(name)
            continue
        claims = {c["id"]: c["text"] for c in parse_prompt(path.read_text())["claims"]}
        mine = [r for r in rows if r["prompt"] == name]
        for row in mine:
            assert claims.get(row["claim_id"]) == row["claim"], (name, row["claim_id"])
        relevant = {r["claim_id"] for r in mine if r["relevant"]}
        assert set(claims) <= relevant, f"{name}: claims without a relevant row"
    if missing:  # the examples were checked; the seed prompt needs ../shared
        pytest.skip(f"needs the prompts {missing} (looked in examples/ and {SEED_DIR})")


def test_ids_and_titles_match_the_shared_corpus(rows: list[dict], pooled: list[dict],
                                                shared_data: Path) -> None:
    rows = rows + pooled
    anchors = parse_prompt((REPO / "examples" / "llm_judge_reliability.txt").read_text())["anchors"]
    wanted = {r["arxiv_id"] for r in rows} | {a["arxiv_id"] for a in anchors}
    found: dict[str, dict] = {}
    with gzip.open(shared_data / CORPUS_NAME, "rt", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if record["id"] in wanted:
                found[record["id"]] = record
    assert wanted - set(found) == set()
    for row in rows:
        record = found[row["arxiv_id"]]
        assert row["title"] == " ".join(record["title"].split()), row["arxiv_id"]
        assert row["published"] == record["listing_date"], row["arxiv_id"]


def test_examples_prompt_of_our_own_parses_fully() -> None:
    brief = parse_prompt((REPO / "examples" / "llm_judge_reliability.txt").read_text())
    assert len(brief["claims"]) == 4
    assert all(c["date_from"] and c["date_to"] for c in brief["claims"])
    assert [a["arxiv_id"] for a in brief["anchors"]] == ["2504.03846", "2504.09946", "2506.13639"]
    assert all(a["valid"] for a in brief["anchors"])
    assert len(brief["tasks"]) == 3


def test_coverage_counts_cited_relevant_papers_and_stance_agreement(rows, tmp_path):
    import subprocess
    import sys

    claim = next(r for r in rows if r["relevant"])
    labelled = [r for r in rows if r["claim"] == claim["claim"]]
    relevant = [r for r in labelled if r["relevant"]]
    unrelated = [r for r in labelled if not r["relevant"]]
    evidence = [{"arxiv_id": relevant[0]["arxiv_id"], "stance": relevant[0]["stance"]},
                {"arxiv_id": "2999.99999", "stance": "supports"}]
    if len(relevant) > 1:  # a second relevant paper with the wrong stance
        evidence.append({"arxiv_id": relevant[1]["arxiv_id"], "stance": "unrelated"})
    if unrelated:
        evidence.append({"arxiv_id": unrelated[0]["arxiv_id"], "stance": "supports"})
    report = {"claims": [{"id": "X1", "text": "  " + claim["claim"], "verdict": "unresolved",
                          "evidence": evidence},
                         {"id": "X2", "text": "not a dev-set claim", "evidence": []}]}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report), encoding="utf-8")
    script = REPO / "evals" / "devset" / "coverage.py"
    done = subprocess.run([sys.executable, str(script), str(path), "--json"],
                          capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    cited = min(2, len(relevant))
    assert out["relevant"] == len(relevant) and out["cited_relevant"] == cited
    [row] = out["claims"]
    assert row["stance_agrees"] == 1 and row["cited_unlabelled"] == 1
    assert row["cited_unrelated"] == (1 if unrelated else 0)
    # on/off topic count every judged paper; a pooled judgement covers the unlabelled one
    assert (row["on_topic"], row["off_topic"], row["unjudged"]) == (
        cited, 1 if unrelated else 0, 1)
    pooled = tmp_path / "pooled.jsonl"
    pooled.write_text(json.dumps({**claim, "arxiv_id": "2999.99999", "relevant": False,
                                  "stance": "unrelated"}) + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), str(path), "--json", "--pooled",
                           str(pooled)], capture_output=True, text=True, check=True)
    [row] = json.loads(done.stdout)["claims"]
    assert (row["on_topic"], row["off_topic"], row["unjudged"]) == (
        cited, 2 if unrelated else 1, 0)
    assert json.loads(done.stdout)["cited_relevant"] == cited  # pooled rows never add coverage
    path.write_text(json.dumps({"claims": [report["claims"][1]]}), encoding="utf-8")
    bad = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
