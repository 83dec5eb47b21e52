"""Corpus readers, the chromadb paper store, id resolution, and the paper commands.

Real data from ../shared/data/arxiv, a real chromadb directory in tmp, the real bundled
all-MiniLM-L6-v2 model; the live API is replaced by a 127.0.0.1 server replaying recorded answers.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import socket
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from core.errors import BadInputError
from core.settings import Settings, load_settings
from tools.corpus import CorpusReport, iter_corpus
from tools.paper import Paper
from tools.paper_cache import PaperCache
from tools.paper_store import PaperStore
from tools.resolve import resolve_paper
from tools.retrieval import LexicalIndex

LISTING = "arxiv/arxiv_cs_CL_LG_AI_2025-03_2026-07.jsonl.gz"
SNAPSHOT = "arxiv/kaggle_snapshot_format_sample.jsonl"
ATOM = "arxiv/atom/api_responses_2026"
GRPO = re.compile(r"\bGRPO\b")


def _listing_lines(shared: Path, n: int) -> list[str]:
    with gzip.open(shared / LISTING, "rt", encoding="utf-8") as handle:
        return list(itertools.islice(handle, n))


# ---------------------------------------------------------------- corpus readers (fast)

def test_listing_jsonl_with_malformed_lines(shared_data: Path, tmp_path: Path) -> None:
    good = _listing_lines(shared_data, 6)
    bad_id = json.loads(good[5]) | {"id": "2513.01234"}
    no_title = json.loads(good[4]) | {"title": "  "}
    bad_date = json.loads(good[3]) | {"listing_date": "2025-02-30"}
    lines = [good[0], "{not json\n", good[1], "\n", json.dumps(bad_id) + "\n", good[2],
             json.dumps(no_title) + "\n", json.dumps(bad_date) + "\n", "[1, 2]\n"]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    report = CorpusReport()
    papers = list(iter_corpus(path, report))
    assert [p.arxiv_id for p in papers] == [json.loads(g)["id"] for g in good[:3]]
    assert [n for n, _ in report.malformed] == [2, 5, 7, 8, 9]
    reasons = dict(report.malformed)
    assert "invalid JSON" in reasons[2] and "2513.01234" in reasons[5]
    assert "title" in reasons[7] and "not a JSON object" in reasons[9]
    assert report.papers == 3 and report.blank == 1 and report.malformed_count == 5
    assert "5 malformed (lines 2, 5, 7, 8, 9)" in report.summary()
    first = json.loads(good[0])
    assert papers[0].published == date.fromisoformat(first["listing_date"])
    assert papers[0].authors == first["authors"] and papers[0].categories == first["categories"]
    assert "\n" not in papers[0].abstract  # hard wraps collapsed


def test_gzip_and_plain_read_the_same(shared_data: Path, tmp_path: Path) -> None:
    lines = _listing_lines(shared_data, 40)
    plain, packed = tmp_path / "a.jsonl", tmp_path / "a.jsonl.gz"
    plain.write_text("".join(lines), encoding="utf-8")
    packed.write_bytes(gzip.compress("".join(lines).encode("utf-8")))
    unpacked = [p.model_dump(exclude={"source"}) for p in iter_corpus(plain)]
    assert len(unpacked) == 40
    assert unpacked == [p.model_dump(exclude={"source"}) for p in iter_corpus(packed)]


def test_snapshot_dump_format(shared_data: Path) -> None:
    report = CorpusReport()
    papers = list(iter_corpus(shared_data / SNAPSHOT, report))
    assert len(papers) == 200 and report.formats == {"snapshot": 200}
    first = papers[0]
    assert first.arxiv_id == "0704.0001" and first.version == 2
    assert first.published == date(2007, 4, 2) and first.updated == date(2008, 11, 26)
    assert first.authors[:2] == ["C. Balázs", "E. L. Berger"]
    assert first.categories == ["hep-ph"] and first.doi == "10.1103/PhysRevD.76.013009"
    assert first.title.startswith("Calculation of prompt diphoton production cross sections")


def test_atom_responses_and_the_error_feed(shared_data: Path) -> None:
    folder = shared_data / ATOM
    papers = list(iter_corpus(next(folder.glob("q_testing_s0_m10_*.xml"))))
    assert len(papers) == 10 and papers[0].arxiv_id == "2202.12139"
    report = CorpusReport()
    assert list(iter_corpus(next(folder.glob("id_abc_*.xml")), report)) == []
    assert report.malformed == [(9, "arXiv API error entry: incorrect id format for abc")]


def test_missing_or_foreign_files_fail_at_once(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not found"):
        iter_corpus(tmp_path / "absent.jsonl")  # before any iteration
    html = tmp_path / "page.xml"
    html.write_text("<html><body>no feed</body></html>")
    with pytest.raises(BadInputError, match="not an Atom feed"):
        list(iter_corpus(html))


# ---------------------------------------------------------------- the store (real model)

@pytest.fixture(scope="module")
def sample(shared_data: Path) -> list[Paper]:
    """~150 listing papers spread over the whole date range, the GRPO ones, 60 old ones."""
    spread, grpo = [], []
    for i, paper in enumerate(iter_corpus(shared_data / LISTING)):
        if i % 400 == 0:
            spread.append(paper)
        elif GRPO.search(paper.title + " " + paper.abstract) and len(grpo) < 3:
            grpo.append(paper)
    old = list(itertools.islice(iter_corpus(shared_data / SNAPSHOT), 60))
    return spread + grpo + old


@pytest.fixture(scope="module")
def store_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RETEST_CHROMA_URL", raising=False)
        mp.delenv("RETEST_STORE__CHROMA_URL", raising=False)
        yield load_settings(data_dir=tmp_path_factory.mktemp("store"), offline=True)


@pytest.fixture(scope="module")
def store(store_settings: Settings, sample: list[Paper]) -> PaperStore:
    paper_store = PaperStore(store_settings)
    assert paper_store.upsert(sample, progress=False) == len(sample)
    return paper_store


@pytest.mark.slow
def test_upsert_is_idempotent(store: PaperStore, sample: list[Paper]) -> None:
    assert store.upsert(sample[:50] + sample[:5], progress=False) == 0
    assert store.count() == len(sample)


@pytest.mark.slow
def test_get_returns_the_stored_record(store: PaperStore, sample: list[Paper]) -> None:
    original = sample[7]
    stored = store.get(original.arxiv_id + "v9")
    assert stored is not None and stored.source == "store"
    assert stored.model_dump(exclude={"source"}) == original.model_dump(exclude={"source"})
    assert store.get("2501.00001") is None


@pytest.mark.slow
def test_date_and_category_filters(store: PaperStore) -> None:
    old = store.search("particle physics cross sections", k=20, until=date(2010, 1, 1))
    assert old and all(p.published and p.published.year < 2010 for p, _ in old)
    window = store.search("language models", k=20, since=date(2025, 9, 1),
                          until=date(2025, 12, 31))
    assert window
    assert all(date(2025, 9, 1) <= p.published <= date(2025, 12, 31) for p, _ in window)
    hep = store.search("quantum", k=10, categories=["hep-th", "hep-ph"])
    assert hep and all({"hep-th", "hep-ph"} & set(p.categories) for p, _ in hep)
    assert store.search("quantum", since=date(2030, 1, 1)) == []
    with pytest.raises(BadInputError):
        store.search("x", since=date(2026, 1, 2), until=date(2026, 1, 1))


@pytest.mark.slow
def test_hybrid_finds_exact_terms_and_ids(store: PaperStore, sample: list[Paper]) -> None:
    with_term = {p.arxiv_id for p in sample if GRPO.search(p.title + " " + p.abstract)}
    assert len(with_term) >= 3
    top = [p.arxiv_id for p, _ in store.search("GRPO", k=len(with_term))]
    assert set(top) == with_term  # every paper that says GRPO, and only those, ranks first
    target = sample[42]
    hits = store.search(f"what is {target.arxiv_id} about", k=3)
    assert hits[0][0].arxiv_id == target.arxiv_id and hits[0][1] == 1.0
    scores = [s for _, s in store.search("retrieval augmented generation", k=10)]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


@pytest.mark.slow
def test_search_takes_lexical_candidates_from_a_kept_bm25_index(
        store: PaperStore, sample: list[Paper], monkeypatch: pytest.MonkeyPatch) -> None:
    indexed = PaperStore(store.settings, client=store.client,
                         lexical=[LexicalIndex.from_papers(sample, progress=False)])
    full_text: list[Any] = []
    original = indexed.collection.query

    def spy(*args: Any, **kwargs: Any) -> Any:
        full_text.append(kwargs.get("where_document"))
        return original(*args, **kwargs)

    monkeypatch.setattr(indexed.collection, "query", spy)
    with_term = {p.arxiv_id for p in sample if GRPO.search(p.title + " " + p.abstract)}
    top = [p.arxiv_id for p, _ in indexed.search("GRPO", k=len(with_term))]
    assert set(top) == with_term  # the same answer as the full-text path ...
    assert full_text and not any(full_text)  # ... with no full-text scan of the store
    old = indexed.search("particle physics cross sections", k=20, until=date(2010, 1, 1))
    assert old and all(p.published and p.published.year < 2010 for p, _ in old)
    hep = indexed.search("quantum", k=10, categories=["hep-th", "hep-ph"])
    assert hep and all({"hep-th", "hep-ph"} & set(p.categories) for p, _ in hep)
    # A paper that comes in through BM25 alone is scored with its true cosine to the query.
    target = sample[42]
    words = " ".join(target.title.split()[:4])
    candidates: dict[str, Any] = {}
    indexed._collect_ids(candidates, [target.arxiv_id], indexed.embedder([words])[0],
                         None, None, None)
    dense = dict(indexed.dense_search([words], n=len(sample))[0])
    assert candidates[target.arxiv_id][2] == pytest.approx(dense[target.arxiv_id], abs=1e-3)


@pytest.mark.slow
def test_known_item_recall_by_title(store: PaperStore, sample: list[Paper]) -> None:
    items = sample[::6]
    found = sum(p.arxiv_id in {h.arxiv_id for h, _ in store.search(p.title, k=10)}
                for p in items)
    assert found / len(items) >= 0.95


@pytest.mark.slow
def test_reopened_collection_rebuilds_the_registered_embedder(store_settings: Settings,
                                                             store: PaperStore) -> None:
    import chromadb

    # A bare client that passes no embedding function: chroma must rebuild ours from its
    # persisted config (not fall back to its downloadable default, which fails offline).
    client = chromadb.PersistentClient(path=str(store_settings.data_dir / "chroma"))
    collection = client.get_collection(store_settings.store.collection)
    result = collection.query(query_texts=["policy optimization for reasoning"], n_results=3)
    assert len(result["ids"][0]) == 3
    again = PaperStore(store_settings)
    assert again.count() == store.count()


@pytest.mark.slow
def test_dense_search_ranks_by_cosine_and_filters_by_date(store: PaperStore,
                                                          sample: list[Paper]) -> None:
    listing = [p for p in sample if p.published and p.published.year >= 2025]
    queries = [listing[3].title, listing[20].title, "particle physics cross sections"]
    results = store.dense_search(queries, n=8)
    assert [len(r) for r in results] == [8, 8, 8]
    assert results[0][0][0] == listing[3].arxiv_id and results[1][0][0] == listing[20].arxiv_id
    for ranked in results:
        scores = [score for _, score in ranked]
        assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    # The old hep-ph dump papers answer the physics query; a date floor removes them all.
    unfiltered = store.get_many([i for i, _ in results[2]])
    assert any(p.published and p.published.year < 2010 for p in unfiltered.values())
    since = date(2025, 9, 1)
    recent = store.dense_search(["particle physics cross sections"], n=8, since=since)[0]
    assert len(recent) == 8
    assert all(p.published >= since for p in store.get_many([i for i, _ in recent]).values())
    assert store.dense_search(["anything"], n=5, since=date(2030, 1, 1)) == [[]]
    assert store.dense_search([], n=5) == []
    with pytest.raises(BadInputError):
        store.dense_search(["ok", "  "], n=5)


def test_feedback_search_moves_the_query_toward_the_feedback_papers(store: PaperStore,
                                                                    sample: list[Paper]) -> None:
    query = "particle physics cross sections"
    plain = store.dense_search([query], n=len(sample))[0]
    # Without feedback papers (or with unknown ids) it is the plain dense ranking.
    assert store.feedback_search(query, [], n=8) == plain[:8]
    assert store.feedback_search(query, ["2999.99999"], n=8) == plain[:8]
    # Rocchio: a paper far down the plain ranking, used as feedback, rises toward the top, and
    # so do its nearest neighbours; the date floor still holds.
    listing = [p for p in sample if p.published and p.published.year >= 2025]
    target = listing[7].arxiv_id
    before = [pid for pid, _ in plain].index(target)
    after = [pid for pid, _ in store.feedback_search(query, [target], n=len(sample))]
    assert before > 20 and after.index(target) < before / 2
    since = date(2025, 9, 1)
    moved = store.feedback_search(query, [target], n=8, since=since)
    assert all(p.published >= since for p in store.get_many([i for i, _ in moved]).values())
    with pytest.raises(BadInputError):
        store.feedback_search("  ", [target], n=5)


@pytest.mark.slow
def test_parallel_document_embedding_keeps_input_order(shared_data: Path) -> None:
    import numpy as np

    from tools.embedder import MiniLMEmbeddingFunction
    from tools.paper_store import document_text

    texts = [document_text(p) for p in itertools.islice(iter_corpus(shared_data / LISTING), 48)]
    embedder = MiniLMEmbeddingFunction(document_tokens=32)
    together = embedder.embed_documents(texts)  # split over the cores, then reassembled
    alone = np.stack([embedder.embed_documents([t])[0] for t in texts[:6]])
    assert together.shape == (48, 384)
    assert np.allclose((together[:6] * alone).sum(axis=1), 1.0, atol=1e-3)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-3)
    # Truncation is real: the 32-token window loses what a query's 128-token window keeps.
    assert (embedder.embed_queries(texts[:6]) * alone).sum(axis=1).max() < 0.999


@pytest.mark.slow
def test_get_many_returns_stored_papers_by_bare_id(store: PaperStore,
                                                   sample: list[Paper]) -> None:
    wanted = [sample[1].arxiv_id + "v3", sample[2].arxiv_id, sample[2].arxiv_id, "2501.00001",
              "not-an-id"]
    found = store.get_many(wanted)
    assert set(found) == {sample[1].arxiv_id, sample[2].arxiv_id}
    assert found[sample[2].arxiv_id] == sample[2].model_copy(update={"source": "store"})
    assert store.get_many([]) == {}


def _small_corpus(shared: Path, folder: Path, n: int) -> Path:
    lines = _listing_lines(shared, n)
    path = folder / "small.jsonl"
    # A malformed line and a repeated record: counted, never stored twice.
    path.write_text("".join(lines[:5]) + "{oops\n" + "".join(lines[5:]) + lines[0],
                    encoding="utf-8")
    return path


@pytest.mark.slow
def test_ingest_resumes_after_an_interruption_and_reruns_as_a_noop(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tools.paper_store

    corpus = _small_corpus(shared_data, tmp_path, 50)  # 51 papers, 50 distinct ids
    settings = load_settings(data_dir=tmp_path / "data", offline=True)
    monkeypatch.setattr(tools.paper_store, "INGEST_CHUNK", 12)
    commits: list[int] = []
    real_save = tools.paper_store.save_cursor

    def interrupted_save(path: Path, cursor: object) -> None:
        commits.append(1)
        if len(commits) == 3:  # chunk 3 is in Chroma, its cursor never written: a kill here
            raise KeyboardInterrupt
        real_save(path, cursor)

    monkeypatch.setattr(tools.paper_store, "save_cursor", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        PaperStore(settings).ingest_corpus(corpus, progress=False)
    monkeypatch.setattr(tools.paper_store, "save_cursor", real_save)
    assert PaperStore(settings).count() == 36

    resumed = PaperStore(settings).ingest_corpus(corpus, progress=False)
    assert (resumed.resumed_at, resumed.added, resumed.papers) == (24, 14, 51)
    assert resumed.already_stored == 37 and not resumed.noop
    assert resumed.malformed_count == 1 and resumed.malformed[0][0] == 6
    store = PaperStore(settings)
    assert store.count() == 50  # no duplicates, nothing lost
    ids = [json.loads(line)["id"] for line in _listing_lines(shared_data, 50)]
    assert set(store.get_many(ids)) == set(ids)

    again = PaperStore(settings).ingest_corpus(corpus, progress=False)
    assert again.noop and again.added == 0 and again.already_stored == again.papers == 51
    assert again.malformed == resumed.malformed and again.lines == 52

    # The same bytes under another name are the same corpus; an edited file is a new one.
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(corpus.read_bytes())
    assert PaperStore(settings).ingest_corpus(copy, progress=False).noop
    extra = _listing_lines(shared_data, 52)[50:]
    copy.write_text(corpus.read_text(encoding="utf-8") + "".join(extra), encoding="utf-8")
    grown = PaperStore(settings).ingest_corpus(copy, progress=False)
    assert (grown.noop, grown.added, grown.already_stored) == (False, 2, 51)


@pytest.mark.slow
def test_ingest_cursor_does_not_outlive_its_store(shared_data: Path, tmp_path: Path) -> None:
    corpus = _small_corpus(shared_data, tmp_path, 10)
    settings = load_settings(data_dir=tmp_path / "data", offline=True)
    first = PaperStore(settings)
    assert first.ingest_corpus(corpus, progress=False).added == 10
    first.client.delete_collection(settings.store.collection)
    rebuilt = PaperStore(settings).ingest_corpus(corpus, progress=False)
    assert (rebuilt.noop, rebuilt.added) == (False, 10)


# ---------------------------------------------------------------- id resolution

@pytest.fixture(autouse=True)
def _fresh_unreachable_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no API URL remembered as unreachable."""
    import tools.arxiv_source

    monkeypatch.setattr(tools.arxiv_source, "_UNREACHABLE_SINCE", {})


class _OneFileServer:
    """Answer every request with one recorded API body (enough for a single id look-up)."""

    def __init__(self, body: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/query"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _online(data_dir: Path, url: str) -> Settings:
    return load_settings(data_dir=data_dir, arxiv={"base_url": url, "request_spacing_s": 0.0,
                                                   "max_retries": 0, "timeout_s": 2.0})


def test_resolution_malformed_offline_and_unreachable(isolated_env: Path) -> None:
    offline = load_settings(offline=True)
    assert resolve_paper("2513.01234", offline).status == "malformed"
    assert resolve_paper("not-an-id", offline).status == "malformed"
    res = resolve_paper("2501.00001", offline)
    assert (res.status, res.arxiv_id, res.paper) == ("unverifiable", "2501.00001", None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    res = resolve_paper("2501.00001", _online(isolated_env, f"http://127.0.0.1:{port}/q"))
    assert res.status == "unverifiable" and "unreachable" in res.detail


def test_resolution_from_api_then_cache_and_not_found(shared_data: Path,
                                                      isolated_env: Path) -> None:
    body = next((shared_data / ATOM).glob("id_1605.08386_*.xml")).read_bytes()
    server = _OneFileServer(body)
    try:
        settings = _online(isolated_env, server.url)
        first = resolve_paper("arXiv:1605.08386v1", settings)
        assert (first.status, first.source) == ("found", "arxiv-api")
        assert first.paper and first.paper.title == "Heat-bath random walks with Markov bases"
        second = resolve_paper("1605.08386", settings)
        assert (second.status, second.source) == ("found", "cache")
    finally:
        server.close()
    empty = _OneFileServer(next((shared_data / ATOM).glob("id_0000.0000_*.xml")).read_bytes())
    try:
        res = resolve_paper("2501.00001", _online(isolated_env, empty.url))
        assert (res.status, res.paper) == ("not_found", None)
    finally:
        empty.close()


def test_resolution_from_corpus(shared_data: Path, isolated_env: Path) -> None:
    settings = load_settings(offline=True, corpus=shared_data / SNAPSHOT)
    res = resolve_paper("0704.0100", settings)
    assert (res.status, res.source) == ("found", "corpus")
    assert res.paper and res.paper.arxiv_id == "0704.0100"
    PaperCache.from_settings(settings).put_papers([res.paper])
    assert resolve_paper("0704.0100", settings).source == "cache"


@pytest.mark.slow
def test_resolution_from_store(store_settings: Settings, store: PaperStore,
                               sample: list[Paper]) -> None:
    res = resolve_paper(sample[3].arxiv_id, store_settings, store=store)
    assert (res.status, res.source) == ("found", "store")
    assert res.paper and res.paper.title == sample[3].title


# ---------------------------------------------------------------- the commands

@pytest.mark.slow
def test_cli_ingest_search_paper(shared_data: Path, isolated_env: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    lines = _listing_lines(shared_data, 40)
    corpus = isolated_env.parent / "small.jsonl"
    corpus.write_text("".join(lines[:2]) + "{oops\n" + "".join(lines[2:30]), encoding="utf-8")
    assert main(["ingest", str(corpus), "--quiet"]) == 0
    out = capsys.readouterr()
    assert "30 papers" in out.out and "1 malformed (lines 3)" in out.out
    assert "30 new, 0 already stored" in out.out and "line 3: invalid JSON" in out.err
    assert main(["ingest", str(corpus), "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["new"], report["already_stored"], report["store_count"]) == (0, 30, 30)
    assert report["malformed"][0]["line"] == 3
    assert report["bm25_indexed"] == 30  # the kept index `search` takes lexical hits from
    # A second file gets its own index; search draws on both, so the first file's papers
    # stay findable by their words after the second ingest.
    second = isolated_env.parent / "second.jsonl"
    second.write_text("".join(lines[30:]), encoding="utf-8")
    assert main(["ingest", str(second), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bm25_indexed"] == 10
    store = PaperStore(load_settings())
    assert sorted(len(index) for index in store.lexical_indexes()) == [10, 30]
    first = json.loads(lines[7])
    found = [p.arxiv_id for p, _ in store.search(" ".join(first["title"].split()[:5]), k=5)]
    assert first["id"] in found

    title = json.loads(lines[5])["title"]
    assert main(["search", title, "--json", "--k", "3", "--since", "2025-01-01"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["arxiv_id"] == json.loads(lines[5])["id"] and len(rows) == 3
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", r["published"]) for r in rows)
    assert all(isinstance(r["score"], float) and r["title"] for r in rows)

    assert main(["paper", json.loads(lines[0])["id"], "--json", "--offline"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert (found["status"], found["source"]) == ("found", "store")
    assert found["title"] == json.loads(lines[0])["title"]
    assert main(["paper", "2501.00001", "--offline", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "unverifiable"


@pytest.mark.parametrize(
    "argv",
    [
        ["paper", "2513.01234"],
        ["ingest", "missing-file.jsonl"],
        ["search", "x", "--since", "2025-02-30"],
        ["search", "x", "--since", "2025-03-02", "--until", "2025-03-01"],
        ["search", "x", "--k", "0"],
        ["paper", "0704.0001", "--corpus", "nowhere.jsonl"],
    ],
)
def test_cli_bad_input_is_one_line_exit_2(argv: list[str], isolated_env: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("retest: error:") and len(err.splitlines()) == 1


# ---------------------------------------------------------------- a Chroma server (HttpClient)

@pytest.fixture()
def chroma_server(tmp_path: Path) -> Iterator[str]:
    """A real Chroma server (the ``chroma`` CLI of the chromadb package) on 127.0.0.1."""
    from scale_servers import chroma_server as start_chroma
    from scale_servers import or_skip

    with or_skip(start_chroma(tmp_path / "srv")) as server:
        yield server.url


@pytest.mark.slow
def test_store_through_a_chroma_server(chroma_server: str, tmp_path: Path,
                                       sample: list[Paper]) -> None:
    settings = load_settings(data_dir=tmp_path / "data", store={"chroma_url": chroma_server})
    remote = PaperStore(settings)
    assert remote.upsert(sample[:12], progress=False) == 12
    assert remote.upsert(sample[:12], progress=False) == 0
    assert not (tmp_path / "data" / "chroma").exists()  # nothing stored locally
    hits = remote.search(sample[4].title, k=3)
    assert hits[0][0].arxiv_id == sample[4].arxiv_id
    assert PaperStore(settings).get(sample[2].arxiv_id) == sample[2].model_copy(
        update={"source": "store"})
