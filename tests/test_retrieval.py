"""Hybrid retrieval: the pure fusion and date rules, the kept BM25 index, and the retrieve node
on a slice of the real shared corpus (chromadb in tmp_path, the bundled MiniLM)."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import pytest
from langgraph.runtime import Runtime

from agent.nodes.context import ReportOptions, RunContext
from agent.nodes.search import claim_clauses, claim_queries, retrieve, select_evidence
from agent.parse import parse_prompt
from core.settings import load_settings
from tools.paper import Paper
from tools.ranking import (
    date_floor,
    prefer_newer,
    recency_label,
    reciprocal_rank_fusion,
)
from tools.retrieval import HybridRetriever, LexicalIndex, corpus_fingerprint

CORPUS_NAME = "arxiv_cs_CL_LG_AI_2025-03_2026-07.jsonl.gz"
# A relevant paper for the seed's claim C5 ("RL post-training amplifies pretraining behaviors
# rather than teaching novel reasoning", ~2024-2025), labelled in evals/devset. Published
# 2025-04-21, inside the claim's range: the old "newer than date_to" cut never let it through.
IN_RANGE_RELEVANT = "2504.13837"


# --- reciprocal rank fusion -----------------------------------------------------------------------
@pytest.mark.parametrize(("rankings", "weights", "k", "expected"), [
    ([], None, 60, []),
    ([["a", "b", "c"]], None, 60, ["a", "b", "c"]),
    # b is second in both lists: 2/62 beats a's 1/61 + nothing.
    ([["a", "b"], ["c", "b"]], None, 60, ["b", "a", "c"]),
    # k=0: rank 1 of one list (1.0) beats rank 2 of two lists (0.5 + 0.5 ties, id breaks it).
    ([["a", "b"], ["c", "b"]], None, 0, ["a", "b", "c"]),
    # A zero weight silences a list; a heavy one dominates.
    ([["a"], ["b"]], [0.0, 1.0], 60, ["b", "a"]),
    ([["a", "b"], ["b", "a"]], [3.0, 1.0], 60, ["a", "b"]),
    # A duplicate inside one list counts once, at its best rank.
    ([["a", "a", "a"], ["b"]], None, 60, ["a", "b"]),
])
def test_rrf_orders(rankings, weights, k, expected):
    assert [doc for doc, _ in reciprocal_rank_fusion(rankings, weights, k)] == expected


def test_rrf_scores_and_duplicates():
    fused = dict(reciprocal_rank_fusion([["a", "b", "a"], ["b"]], k=60))
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)


@pytest.mark.parametrize(("weights", "k"), [([1.0], 60), ([1.0, -1.0], 60), ([1.0, 1.0], -1)])
def test_rrf_rejects_bad_arguments(weights, k):
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([["a"], ["b"]], weights, k)


# --- dates: a floor at the start of the range, a label, a slight preference ----------------------
@pytest.mark.parametrize(("published", "start", "end", "label"), [
    ("2026-01-01", "2024-01-01", "2025-12-31", "newer"),
    ("2025-12-31", "2024-01-01", "2025-12-31", "contemporaneous"),
    ("2024-01-01", "2024-01-01", "2025-12-31", "contemporaneous"),
    ("2025-06-15", "2024-01-01", "2025-12-31", "contemporaneous"),
    ("2023-12-31", "2024-01-01", "2025-12-31", "older"),
    ("2023-12-31", None, "2025-12-31", "contemporaneous"),
    (None, "2024-01-01", "2025-12-31", "undated"),
    ("2025-06-15", "2024-01-01", None, "undated"),
    (date(2026, 3, 1), date(2025, 1, 1), date(2025, 12, 31), "newer"),
])
def test_recency_label(published, start, end, label):
    assert recency_label(published, start, end) == label


def test_date_floor_is_the_start_of_the_range():
    assert date_floor("2024-01-01") == date(2024, 1, 1)
    assert date_floor(None) is None


def test_newer_papers_rank_slightly_higher_but_do_not_jump_far():
    fused = [("old1", 0.050), ("old2", 0.046), ("new", 0.044), ("old3", 0.020)]
    labels = {"old1": "contemporaneous", "old2": "contemporaneous", "new": "newer",
              "old3": "contemporaneous"}
    # 0.044 * 1.1 = 0.0484: past old2 (a near tie), not past old1.
    assert [d for d, _ in prefer_newer(fused, labels)] == ["old1", "new", "old2", "old3"]


def _paper(pid: str, day: str) -> Paper:
    return Paper(arxiv_id=pid, title=f"T {pid}", abstract="A.", authors=[], categories=[],
                 published=date.fromisoformat(day), source="test")


def test_select_evidence_keeps_in_range_papers_and_drops_older_ones():
    claim = {"id": "C1", "text": "x", "dated": "~2024-2025", "date_from": "2024-01-01",
             "date_to": "2025-12-31"}
    papers = {"in": _paper("in", "2025-06-01"), "new": _paper("new", "2026-02-01"),
              "old": _paper("old", "2023-05-01")}
    fused = [("old", 0.05), ("in", 0.04), ("new", 0.03), ("gone", 0.02)]
    kept = select_evidence(fused, papers, claim, None, keep=10)
    assert [pid for pid, _ in kept] == ["in", "new"]  # "gone" has no record, "old" predates
    floor = select_evidence(fused, papers, claim, lambda rows: [0.9 if p.arxiv_id == "new"
                                                                else 0.1 for p in rows],
                            keep=10, floor=0.5)
    assert [pid for pid, _ in floor] == ["new"]
    assert select_evidence(fused, papers, claim, None, keep=1) == [("in", 0.04)]


# --- the kept BM25 index ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus_slice(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 150 records of the shared corpus plus the in-range relevant paper."""
    out = tmp_path_factory.mktemp("slice") / "slice.jsonl"
    rows: list[str] = []
    target = None
    with gzip.open(shared_data / "arxiv" / CORPUS_NAME, "rt", encoding="utf-8") as handle:
        for line in handle:
            if len(rows) < 150:
                rows.append(line.strip())
            if json.loads(line)["id"] == IN_RANGE_RELEVANT:
                target = line.strip()
                break
    assert target is not None, f"{IN_RANGE_RELEVANT} is not in the shared corpus"
    out.write_text("\n".join([*rows, target]) + "\n", encoding="utf-8")
    return out


def test_bm25_index_is_built_once_and_loaded_after(corpus_slice: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    built = LexicalIndex.for_corpus(corpus_slice, tmp_path, progress=False)
    assert len(built) == 151
    folder = tmp_path / "bm25" / corpus_fingerprint(corpus_slice)
    assert (folder / "meta.json").is_file() and built.path == folder

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the saved index should have been loaded")

    monkeypatch.setattr(LexicalIndex, "build", no_rebuild)
    loaded = LexicalIndex.for_corpus(corpus_slice, tmp_path, progress=False)
    query = "reinforcement learning incentivize reasoning capacity beyond the base model"
    first = loaded.search([query], 5)[0]
    assert first[0][0] == IN_RANGE_RELEVANT
    assert first == built.search([query], 5)[0]
    # The date floor is inclusive and drops everything earlier.
    assert loaded.search([query], 5, since=date(2025, 4, 21))[0][0][0] == IN_RANGE_RELEVANT
    assert all(pid != IN_RANGE_RELEVANT
               for pid, _ in loaded.search([query], 151, since=date(2025, 4, 22))[0])
    # A query of stop words or unknown words finds nothing rather than everything.
    assert loaded.search(["the of and", "zzqxv"], 5) == [[], []]


def test_a_changed_corpus_gets_its_own_index(corpus_slice: Path, tmp_path: Path):
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(corpus_slice.read_text().splitlines()[:50]) + "\n")
    assert corpus_fingerprint(other) != corpus_fingerprint(corpus_slice)
    assert len(LexicalIndex.for_corpus(other, tmp_path, progress=False)) == 50


def test_hybrid_fuses_lexical_and_an_outside_list(corpus_slice: Path, tmp_path: Path):
    from tools.retrieval import WeightedQuery

    index = LexicalIndex.for_corpus(corpus_slice, tmp_path, progress=False)
    retriever = HybridRetriever(index, None)
    queries = [WeightedQuery("reinforcement learning reasoning capacity base model")]
    fused = retriever.rank(queries, 3, None, extra=[(["outside"], 5.0)])
    assert fused[0][0] == "outside"  # weight 5 at rank 1 beats any single weight-1 list
    assert IN_RANGE_RELEVANT in [pid for pid, _ in fused]
    with pytest.raises(ValueError):
        HybridRetriever(None, None)


def test_feedback_expands_a_query_with_the_heaviest_terms_of_the_top_papers(
        corpus_slice: Path, tmp_path: Path):
    from tools.corpus import iter_corpus
    from tools.retrieval import WeightedQuery, _stemmer, _tokenize, document_text

    index = LexicalIndex.for_corpus(corpus_slice, tmp_path, progress=False)
    paper = next(p for p in iter_corpus(corpus_slice) if p.arxiv_id == IN_RANGE_RELEVANT)
    own = set(_tokenize([document_text(paper.title, paper.abstract)], _stemmer(), ids=False)[0])
    terms = index.expansion_terms([IN_RANGE_RELEVANT], "reinforcement learning", 10)
    # Ten of the paper's own (stemmed) terms, none of the query's.
    assert len(terms) == 10 and set(terms) <= own
    assert not {"reinforc", "learn"} & set(terms)
    assert index.expansion_terms(["2999.99999"], "reinforcement learning", 10) == []
    # A query whose words the paper lacks finds it only through the expansion.
    query = "quantum annealing hardware"
    assert IN_RANGE_RELEVANT not in [pid for pid, _ in index.search([query], 151)[0]]
    assert index.feedback_search(query, [IN_RANGE_RELEVANT], 5)[0][0] == IN_RANGE_RELEVANT
    # In the retriever, feedback adds the expanded lead query's list to the fusion; off (0),
    # the ranking is the plain one.
    lead = [WeightedQuery("reasoning capacity of the base model")]
    plain = HybridRetriever(index, None, feedback_papers=0).rank(lead, 20)
    fed = HybridRetriever(index, None, feedback_papers=3).rank(lead, 20)
    assert plain == HybridRetriever(index, None, feedback_papers=0).rank(lead, 20)
    assert fed != plain and {pid for pid, _ in plain[:3]} <= {pid for pid, _ in fed[:10]}


# --- the retrieve node on the real slice ----------------------------------------------------------
def test_retrieve_finds_an_in_range_relevant_paper(isolated_env: Path, corpus_slice: Path,
                                                   seed_prompt: Path, tmp_path: Path):
    text = seed_prompt.read_text(encoding="utf-8")
    brief = parse_prompt(text)
    settings = load_settings(offline=True, corpus=corpus_slice)
    ctx = RunContext(settings=settings, out_dir=tmp_path / "out", run_id="r1",
                     options=ReportOptions(papers_per_claim=10, progress_bars=False))
    state = {"prompt_text": text, "brief": brief, "queries": {}}
    out = retrieve(state, Runtime(context=ctx))
    assert out["degraded"] == []
    c5 = next(c for c in brief["claims"] if c["id"] == "C5")
    kept = [pid for pid, _ in out["candidates"]["C5"]]
    assert IN_RANGE_RELEVANT in kept[:3]  # among the best of 151 for this claim
    assert len(kept) <= 10
    record = out["papers"][IN_RANGE_RELEVANT]
    assert recency_label(record["published"], c5["date_from"], c5["date_to"]) == \
        "contemporaneous"
    # No claim gets a paper from before its range; every candidate has its record.
    for claim in brief["claims"]:
        for pid, _ in out["candidates"][claim["id"]]:
            assert out["papers"][pid]["published"] >= claim["date_from"]
    # A second run loads the kept index and finds the corpus already in the store.
    assert len(list((settings.data_dir / "bm25").iterdir())) >= 1
    again = retrieve(state, Runtime(context=ctx))
    assert again["candidates"] == out["candidates"]



def test_a_claim_of_several_clauses_also_queries_each_clause() -> None:
    text = ("Fine-tuned models rely on template-matching and memorization rather than installed "
            "reasoning; removing in-distribution repeats exposes sharp drops versus base models.")
    assert claim_clauses(text) == [
        "Fine-tuned models rely on template-matching and memorization rather than installed "
        "reasoning", "removing in-distribution repeats exposes sharp drops versus base models"]
    assert claim_clauses("One clause: short") == []  # a fragment under 4 words is no query
    assert claim_clauses("A claim of a single clause only, with a comma.") == []
    brief = {"question": "Why?", "tasks": [], "claims": [], "anchors": []}
    claim = {"id": "C1", "text": text, "date_from": None, "date_to": None}
    queries = claim_queries(claim, [], brief)  # type: ignore[arg-type]
    assert [q.text for q in queries][:3] == [text, *claim_clauses(text)]
    assert [q.weight for q in queries][:3] == [1.0, 0.5, 0.5]
