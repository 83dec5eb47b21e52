"""Issue 7 end to end: a periodic re-run over a corpus that grew, with the real agent and LLM.

The shared corpus is split by listing date (before / after 2026-05-01). The first run (through
``retest schedule --once``) sees the older part, the second (``retest report``) all of it.
``changes.md`` must list exactly the new papers that made it into the evidence, and no old one;
the LLM requests (recorded by a pass-through proxy in front of the real embedded vLLM server) of
the second run must judge only (claim, paper) pairs the first did not: no LLM call for a paper
already judged. report.json's ``usage`` must count the same requests.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SPLIT = "2026-05-01"
JUDGE_MARKER = "Paper (title and abstract)"
_TOPIC = re.compile(r"memoriz|GRPO|\bDPO\b|generation-verification|self-improv", re.IGNORECASE)


class RecordingProxy:
    """Forward every request to the real LLM server and keep the JSON bodies sent to it."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.bodies: list[dict[str, Any]] = []
        self._guard = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else None
                path = self.path[len("/v1"):] if self.path.startswith("/v1") else self.path
                request = urllib.request.Request(  # noqa: S310 - a local test server
                    proxy.upstream + path, data=raw, method=self.command,
                    headers={"Content-Type": self.headers.get("Content-Type",
                                                               "application/json")})
                try:
                    with urllib.request.urlopen(request, timeout=1800) as reply:  # noqa: S310
                        status, payload = reply.status, reply.read()
                except urllib.error.HTTPError as exc:
                    status, payload = exc.code, exc.read()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up; like report.json's usage, do not count it
                if raw and self.path.endswith("/completions"):
                    with proxy._guard:
                        proxy.bodies.append(json.loads(raw))

            do_GET = do_POST = _forward  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self) -> list[dict[str, Any]]:
        """Return and forget the request bodies recorded so far."""
        with self._guard:
            taken, self.bodies = self.bodies, []
        return taken


@pytest.fixture()
def proxy(llm_env: Path, llm_base_url: str,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingProxy]:
    recording = RecordingProxy(llm_base_url)
    monkeypatch.setenv("RETEST_LLM_BASE_URL", recording.url)
    # A shared server on a busy machine can take minutes per batch; a client timeout would
    # resend requests and blur the count this test is about.
    monkeypatch.setenv("RETEST_LLM__TIMEOUT_S", "1500")
    yield recording
    recording.server.shutdown()


def _write_corpora(shared_data: Path, tmp_path: Path) -> tuple[Path, Path, dict[str, dict]]:
    """Topic papers listed 2026-04-10 .. 2026-05-20, plus an anchor; older part and all."""
    records: dict[str, dict] = {}
    source = shared_data / "arxiv" / "arxiv_cs_CL_LG_AI_2025-03_2026-07.jsonl.gz"
    with gzip.open(source, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record["id"] == "2603.03415" or (
                    "2026-04-10" <= record["listing_date"] < "2026-05-20"
                    and _TOPIC.search(record["title"])):
                records[record["id"]] = record
    old = [r for r in records.values() if r["listing_date"] < SPLIT]
    assert 8 <= len(old) < len(records) <= 40, "the slice must stay small and straddle the split"
    old_path, all_path = tmp_path / "old.jsonl", tmp_path / "all.jsonl"
    old_path.write_text("".join(json.dumps(r) + "\n" for r in old))
    all_path.write_text("".join(json.dumps(r) + "\n" for r in records.values()))
    return old_path, all_path, records


def _retest(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(REPO / ".venv" / "bin" / "retest"), *args], env=dict(os.environ),
                          capture_output=True, text=True, timeout=1500, check=False)
    assert done.returncode in (0, 3), done.stderr[-3000:]
    return done


def _judged_pairs(bodies: list[dict[str, Any]], records: dict[str, dict],
                  claims: list[str]) -> list[tuple[str, str]]:
    """(claim text, paper id) of every judge request among ``bodies``."""
    pairs = []
    for body in bodies:
        text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        if JUDGE_MARKER not in text:
            continue
        flat = re.sub(r"\s+", " ", text)
        papers = [i for i, r in records.items() if re.sub(r"\s+", " ", r["title"]) in flat]
        claim = [c for c in claims if c in flat]
        assert len(papers) == 1 and len(claim) == 1, flat[:400]
        pairs.append((claim[0], papers[0]))
    return pairs


def _evidence_pairs(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["text"], e["arxiv_id"]) for c in report["claims"] for e in c["evidence"]}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_rerun_on_grown_corpus_reports_and_judges_only_new_papers(
        shared_data: Path, seed_prompt: Path, proxy: RecordingProxy, tmp_path: Path) -> None:
    old_corpus, all_corpus, records = _write_corpora(shared_data, tmp_path)
    flags = ["--offline", "--retest-limit", "0", "--papers-per-claim", "2"]

    first = _retest("schedule", str(seed_prompt), "--once", "--corpus", str(old_corpus),
                    "--out-root", str(tmp_path / "runs"), *flags)
    assert '"event": "run_finished"' in first.stderr
    out1 = (tmp_path / "runs" / "latest").resolve()
    report1 = json.loads((out1 / "report.json").read_text())
    bodies1 = proxy.take()
    claims = [c["text"] for c in report1["claims"]]
    assert not (out1 / "changes.md").exists(), "a first run has nothing to compare with"
    assert report1["usage"]["calls"] == len(bodies1)
    judged1 = _judged_pairs(bodies1, records, claims)
    assert judged1, "the first run judges the papers it found"
    assert set(judged1) == _evidence_pairs(report1)

    _retest("report", str(seed_prompt), "--corpus", str(all_corpus), "--out",
            str(tmp_path / "out2"), *flags)
    report2 = json.loads((tmp_path / "out2" / "report.json").read_text())
    bodies2 = proxy.take()
    assert report2["usage"]["calls"] == len(bodies2)
    # Only (claim, paper) pairs not judged in the first run reach the model.
    new_pairs = _evidence_pairs(report2) - _evidence_pairs(report1)
    judged2 = _judged_pairs(bodies2, records, claims)
    assert sorted(judged2) == sorted(new_pairs)
    # changes.md lists exactly the new papers in the evidence, and no paper listed before the split.
    listed = {p["arxiv_id"] for g in report2["changes"]["new_papers"] for p in g["papers"]}
    expected = {pid for _, pid in _evidence_pairs(report2) if records[pid]["listing_date"] >= SPLIT}
    assert listed == expected
    assert expected, "the newer half of the corpus must bring at least one relevant paper"
    changes_md = (tmp_path / "out2" / "changes.md").read_text()
    for pid, record in records.items():
        assert (f"arXiv:{pid}" in changes_md) == (pid in listed), (pid, record["listing_date"])

    print(f"LLM calls per run: {len(bodies1)}, {len(bodies2)}; judge calls: {len(judged1)}, "
          f"{len(judged2)} ({len(_evidence_pairs(report2))} pairs in the second report)",
          file=sys.stderr)
