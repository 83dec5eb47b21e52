"""Time to the first token of a chat answer (the app's chat and ``retest ask``), median of 10.

Measures, per question, with the embedded SmolLM2-135M vLLM server and a chromadb store of real
corpus records:
- ``first_piece``: from calling ``agent.ask.stream_answer`` to its first grounded text piece
  (retrieval + prompt prefill + the grounding hold-back of partial citations); the app shows
  this piece;
- ``baseline``: the same messages sent straight to ``LLMClient.stream_chat`` right after (first
  raw token, no retrieval, no grounding; vLLM's prefix cache favours it, as the prompt was
  just seen), measured in the same run;
- ``total`` (only with ``--full``): the whole grounded answer. Without it the stream is closed
  after the first piece, which aborts the request on the server, so the run stays short.
Target: median first_piece < 5 s on 2 cores. Needs ``../shared/data``.

    .venv/bin/python bench/app_first_token.py [--papers 1000] [--k 6]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import logging
import statistics
import time
from pathlib import Path

from agent.ask import Answer, build_messages, stream_answer
from core.settings import load_settings
from tools.corpus import iter_corpus
from tools.llm import make_llm
from tools.paper_store import PaperStore

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared/data/arxiv/arxiv_cs_CL_LG_AI_2025-03_2026-07.jsonl.gz"
QUESTIONS = [
    "Does benchmark contamination inflate language model accuracy?",
    "How are reasoning models evaluated on math word problems?",
    "What methods reduce hallucination in retrieval-augmented generation?",
    "Do small language models benefit from chain-of-thought prompting?",
    "How is data deduplication done for pretraining corpora?",
    "What are recent results on LLM agents using tools?",
    "How do vision-language models handle spatial reasoning?",
    "Which techniques make LLM inference faster on CPUs?",
    "What do papers report about reinforcement learning from human feedback?",
    "How robust are LLM-as-a-judge evaluations?",
]


def _store(data_dir: Path, n_papers: int) -> PaperStore:
    settings = load_settings(data_dir=data_dir)
    store = PaperStore(settings)
    if store.count() < n_papers:
        with gzip.open(CORPUS, "rt") as src:
            lines = list(itertools.islice(src, n_papers))
        sample = data_dir / "sample.jsonl"
        sample.write_text("".join(lines))
        store.upsert(iter_corpus(sample))
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=1000)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--full", action="store_true", help="also time whole answers")
    parser.add_argument("--data-dir", type=Path, default=REPO / ".retest" / "bench_chat")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    store = _store(args.data_dir, args.papers)
    # The embedded server lives in the repository's data dir (shared with tests and commands).
    settings = load_settings(data_dir=REPO / ".retest")
    llm = make_llm(settings)
    list(llm.stream_chat([{"role": "user", "content": "Hi"}], max_tokens=4))  # warm up
    first, base, total = [], [], []
    for question in QUESTIONS:
        hits = store.search(question, k=args.k)
        start = time.perf_counter()
        seen = False
        stream = stream_answer(question, settings, llm=llm, store=store, k=args.k)
        for item in stream:
            if not seen and isinstance(item, str):
                first.append(time.perf_counter() - start)
                seen = True
                if not args.full:
                    stream.close()  # closes the HTTP stream: the server stops generating
                    break
            if isinstance(item, Answer):
                total.append(time.perf_counter() - start)
                if not seen:  # an answer with no streamed piece: count its completion
                    first.append(total[-1])
                print(f"{first[-1]:6.2f} s first piece, {total[-1]:6.2f} s total, "
                      f"{len(item.cited)} cited, {len(item.removed_ids)} removed: {question}")
        start = time.perf_counter()
        for _ in llm.stream_chat(build_messages(question, [p for p, _ in hits]), max_tokens=8):
            base.append(time.perf_counter() - start)
            break
        print(f"{first[-1]:6.2f} s first piece, {base[-1]:6.2f} s raw: {question}")
    med_first, med_base = statistics.median(first), statistics.median(base)
    print(f"store: {store.count()} papers; k={args.k}; model {llm.model}")
    print(f"median first piece (stream_answer): {med_first:.2f} s  (target < 5 s: "
          f"{'PASS' if med_first < 5 else 'FAIL'})")
    print(f"median first raw token (baseline, same prompt): {med_base:.2f} s; "
          f"ratio {med_first / med_base:.2f}x")
    if total:
        print(f"median whole answer: {statistics.median(total):.2f} s")


if __name__ == "__main__":
    main()
