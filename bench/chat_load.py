"""Shared set-up of the chat load benchmarks (``app_load.py``, ``app_load_http.py``).

A small store in a temporary data directory (the first ``--papers`` records of the shared
corpus), the embedded SmolLM2 server of the repository's ``.retest`` directory, one question per
paper ("What does the paper 'TITLE' propose?"), and the p50/p95 of a list of latencies. The
server is stopped at the end only if this run started it; the temporary directory is removed.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import logging
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "arxiv" / "arxiv_cs_CL_LG_AI_2025-03_2026-07.jsonl.gz"
MODEL = "SmolLM2-135M-Instruct"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

log = logging.getLogger(__name__)


@dataclass
class ChatLoad:
    """What a load run needs: its data directory, corpus, papers and their questions."""

    tmp: Path
    corpus: Path
    base_url: str
    papers: list  # list[tools.paper.Paper], in corpus order
    questions: list[str]  # one per paper, same order


def question_for(title: str) -> str:
    """Return the question a session asks about the paper titled ``title`` (one line)."""
    # One line: a newline typed into st.chat_input would send the question early.
    return f"What does the paper '{' '.join(title.split())}' propose?"


@contextlib.contextmanager
def chat_load(n_papers: int, n_questions: int) -> Iterator[ChatLoad]:
    """Build the store, point ``RETEST_*`` at it and at the embedded server; clean up after.

    ``os.environ`` is updated in place (``RETEST_DATA_DIR``, ``RETEST_CORPUS``,
    ``RETEST_LLM_BASE_URL``, ``RETEST_LLM_MODEL``) so in-process sessions and child processes
    see the same settings.
    """
    if not CORPUS.is_file():
        sys.exit(f"needs {CORPUS}")
    if n_questions > n_papers:
        sys.exit(f"--papers must be at least {n_questions} (one paper per question)")
    from core.settings import load_settings
    from tools.corpus import iter_corpus
    from tools.paper_store import PaperStore
    from tools.vllm_server import EmbeddedServer

    tmp = Path(tempfile.mkdtemp(prefix="retest-app-load-"))
    server = EmbeddedServer(load_settings(data_dir=REPO / ".retest"))
    ours = None
    try:
        corpus = tmp / "small.jsonl"
        with gzip.open(CORPUS, "rt") as src:
            corpus.write_text("".join(itertools.islice(src, n_papers)))
        os.environ["RETEST_DATA_DIR"] = str(tmp / "data")
        os.environ["RETEST_CORPUS"] = str(corpus)
        already = server.running()
        base_url = server.ensure_running()
        if already is None:
            ours = server.running()
            log.info("started the embedded server (pid %s); it is stopped at the end",
                     ours.pid if ours else "?")
        os.environ["RETEST_LLM_BASE_URL"] = base_url
        os.environ["RETEST_LLM_MODEL"] = MODEL
        papers = list(iter_corpus(corpus))
        PaperStore(load_settings()).upsert(papers, progress=False)
        questions = [question_for(p.title) for p in papers[:n_questions]]
        yield ChatLoad(tmp, corpus, base_url, papers, questions)
    finally:
        record = server.running()
        if ours is not None and record is not None and record.pid == ours.pid:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def p50_p95(latencies: list[float]) -> tuple[float, float]:
    """Return the median and the 95th percentile (nearest rank) of ``latencies``."""
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return statistics.median(ordered), p95
