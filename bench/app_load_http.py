"""Load over HTTP: N concurrent real browser chat sessions against one ``streamlit run app.py``.

One Streamlit server on 127.0.0.1 (a free port) over a small store; each session is its own
headless Chromium under its own chromedriver (its own websocket, its own Streamlit session),
started from its own thread. All sessions open the page, then ask at once, each its own question
about its own paper (as ``app_load.py`` does), and wait until the answer has finished streaming
(its "… papers retrieved" caption is drawn). When every session is done, each reads its own
page. Checks: no error or exception element and no connection-error status; the page's chat
history is exactly its own question and one answer, and no other session's question appears
anywhere on the page (cross-session leakage); every cited id (links and citation expanders) was
among the papers retrieved for that question (the page shows only their count, so the ids are
recomputed here with ``agent.ask.retrieve`` over the same store and ``k``).

Latency is measured in the page: from the Enter keydown that sends the question to the first DOM
mutation that shows the finished answer. One warm-up question (the app process loads its
embedding model and LLM client on first use) is reported but not counted. The baseline, measured
first in the same run, is sessions alone, one after another (``--baseline-sessions``, default N),
each asking about a paper of its own that the concurrent sessions do not ask about (so vLLM's
prefix cache favours neither side); then N at once. Prints p50/p95 of both, their ratio, errors,
leaks and the load average; ``--json PATH`` writes the summary.

Every wait has a timeout. Every process started here (Streamlit, each chromedriver with its
Chromium, the embedded vLLM server when this run started it) leads its own process group and is
stopped by that group at the end, also on failure, Ctrl-C or SIGTERM.

Usage: ``.venv/bin/python bench/app_load_http.py [--sessions 10] [--baseline-sessions N]
[--papers 200] [--json PATH]``
(needs ``../shared/data``, Debian's ``chromium`` and ``chromedriver``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chat_load import REPO, chat_load, p50_p95

sys.path.insert(0, str(REPO / "tests"))
from browser_driver import (  # noqa: E402
    CHROMEDRIVER,
    CHROMIUM,
    ENTER,
    WebDriver,
    start_chromedriver,
    stop_group,
    streamlit_app,
    wait_http,
)

log = logging.getLogger("app_load_http")

# Record when Enter is pressed and when the answer is finished (its caption) or an error shows.
# textContent, not innerText: no layout on every mutation while tokens stream in.
_ARM = """
const r = window.__retest = {t0: null, done: null, how: null};
document.addEventListener('keydown', e => {
  if (e.key === 'Enter' && r.t0 === null) r.t0 = performance.timeOrigin + performance.now();
}, true);
new MutationObserver(() => {
  if (r.t0 === null || r.done !== null) return;
  const error = document.querySelector(
    '[data-testid="stException"], [data-testid="stAlertContentError"]');
  if (error || document.body.textContent.includes('papers retrieved')) {
    r.done = performance.timeOrigin + performance.now();
    r.how = error ? 'error' : 'answer';
  }
}).observe(document.body, {childList: true, subtree: true, characterData: true});
return true;
"""

_READ = """
const q = s => [...document.querySelectorAll(s)];
const role = m => m.querySelector('[data-testid="stChatMessageAvatarUser"]') ? 'user'
  : m.querySelector('[data-testid="stChatMessageAvatarAssistant"]') ? 'assistant' : 'other';
return {
  messages: q('[data-testid="stChatMessage"]').map(m => ({role: role(m),
    text: (m.querySelector('[data-testid="stChatMessageContent"]') || m).innerText})),
  errors: q('[data-testid="stException"], [data-testid="stAlertContentError"]')
    .map(e => e.innerText),
  warnings: q('[data-testid="stAlertContentWarning"]').map(e => e.innerText),
  connection: q('[data-testid="stConnectionStatus"]').map(e => e.innerText).join(' '),
  links: q('[data-testid="stChatMessage"] a').map(a => a.href)
    .filter(h => h.startsWith('https://arxiv.org/abs/')),
  expanders: q('[data-testid="stChatMessage"] [data-testid="stExpander"] summary')
    .map(s => s.innerText),
  body: document.body.innerText,
};
"""
_CITED_EXPANDER = re.compile(r"arXiv:(\S+)\s+—")
_CAPTION = re.compile(r"([\d.]+) s · (\d+) papers retrieved")


@dataclass
class SessionResult:
    """What one browser session saw; filled in as it goes."""

    index: int
    question: str
    page_load_s: float | None = None
    latency_s: float | None = None
    submitted_at: float | None = None  # epoch seconds, from the page's clock
    error: str = ""
    page_errors: list[str] = field(default_factory=list)
    leak: str = ""
    cited: list[str] = field(default_factory=list)
    ungrounded: list[str] = field(default_factory=list)
    retrieved_shown: int | None = None
    app_seconds: float | None = None  # the app's own timing in the answer caption
    own_paper_cited: bool = False
    removed_warnings: int = 0


class Processes:
    """Every process group this run starts, so the end (or a failure) can stop them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all: list[subprocess.Popen] = []

    def add(self, process: subprocess.Popen) -> subprocess.Popen:
        """Remember ``process``; return it."""
        with self._lock:
            self._all.append(process)
        return process

    def stop_all(self) -> None:
        """Stop every remembered process group (a second stop is harmless)."""
        with self._lock:
            processes, self._all = self._all, []
        for process in processes:
            stop_group(process, grace_s=10)


class BrowserSession:
    """One headless Chromium, under its own chromedriver, on the app's chat page."""

    def __init__(self, result: SessionResult, processes: Processes, call_timeout_s: float):
        self.result = result
        self.processes = processes
        self.call_timeout_s = call_timeout_s
        self.driver: subprocess.Popen | None = None
        self.web: WebDriver | None = None

    def open(self, url: str, timeout_s: float) -> None:
        """Start the browser, load the app and wait for the chat input; arm the timers."""
        start = time.monotonic()
        self.driver, port = start_chromedriver()
        self.processes.add(self.driver)
        wait_http(f"http://127.0.0.1:{port}/status", timeout_s, self.driver)
        self.web = WebDriver(port, call_timeout_s=self.call_timeout_s)
        self.web.get(url)
        left = max(1.0, timeout_s - (time.monotonic() - start))
        self.web.wait_for("return !!document.querySelector('textarea')", left)
        self.web.script(_ARM)
        self.result.page_load_s = time.monotonic() - start

    def ask(self, timeout_s: float) -> None:
        """Send the question; wait until its answer (or an error) is drawn; record latency."""
        assert self.web is not None
        start = time.time()
        self.web.type_into("textarea", self.result.question + ENTER)
        timing = self.web.wait_for(
            "const r = window.__retest; return r && r.done !== null ? r : null;", timeout_s)
        t0 = timing["t0"] / 1000 if timing.get("t0") is not None else start
        self.result.submitted_at = t0
        self.result.latency_s = timing["done"] / 1000 - t0
        if timing.get("how") == "error":
            self.result.error = "the page showed an error instead of an answer"

    def read(self) -> dict[str, Any]:
        """Return what the page shows now (history, errors, citations, whole text)."""
        assert self.web is not None
        return self.web.script(_READ)

    def close(self) -> None:
        """Quit Chromium and stop the chromedriver process group."""
        if self.web is not None:
            self.web.quit()
        if self.driver is not None:
            stop_group(self.driver, grace_s=10)


def check_page(result: SessionResult, page: dict[str, Any], all_questions: list[str],
               retrieved: set[str], own_id: str) -> None:
    """Fill ``result`` from a page snapshot: errors, leakage, citation grounding."""
    result.page_errors = list(page["errors"])
    if page["connection"].strip():
        result.page_errors.append(f"connection status: {page['connection'].strip()}")
    messages = page["messages"]
    roles = [m["role"] for m in messages]
    users = [" ".join(m["text"].split()) for m in messages if m["role"] == "user"]
    others = [q for q in all_questions if q != result.question and q in page["body"]]
    if others:
        result.leak = f"other sessions' questions on the page: {others}"
    elif roles != ["user", "assistant"] or users != [result.question]:
        result.leak = f"history is {roles} with user messages {users}"
    cited = [m.group(1) for text in page["expanders"] if (m := _CITED_EXPANDER.search(text))]
    cited += [link.rsplit("/abs/", 1)[1] for link in page["links"]]
    result.cited = sorted(set(cited))
    result.ungrounded = [c for c in result.cited if c not in retrieved]
    result.own_paper_cited = own_id in result.cited
    captions = _CAPTION.findall(page["body"])
    if captions:
        result.app_seconds, result.retrieved_shown = float(captions[-1][0]), int(captions[-1][1])
    result.removed_warnings = sum("Removed" in w for w in page["warnings"])


def run_round(url: str, indices: list[int], questions: list[str], expected: dict[str, set[str]],
              own_ids: list[str], processes: Processes, args: argparse.Namespace
              ) -> tuple[list[SessionResult], float]:
    """Run one browser session per index at once; return their results and the wall time."""
    results = [SessionResult(i, questions[i]) for i in indices]
    ready = [threading.Event() for _ in indices]
    go, finished = threading.Event(), threading.Event()
    done = [threading.Event() for _ in indices]

    def worker(slot: int) -> None:
        result = results[slot]
        session = BrowserSession(result, processes, args.call_timeout)
        try:
            session.open(url, args.page_timeout)
            ready[slot].set()
            if not go.wait(args.page_timeout + 60):
                raise TimeoutError("the other sessions never became ready")
            session.ask(args.answer_timeout)
            log.info("session %d answered in %.1f s", result.index, result.latency_s)
            done[slot].set()
            finished.wait(args.answer_timeout + 60)  # read once every session is done
            check_page(result, session.read(), questions, expected[result.question],
                       own_ids[result.index])
        except Exception as exc:  # a load test reports failures instead of stopping  # noqa: BLE001
            result.error = result.error or f"{type(exc).__name__}: {exc}"
            log.warning("session %d failed: %s", result.index, result.error)
        finally:
            ready[slot].set()
            done[slot].set()
            session.close()

    threads = [threading.Thread(target=worker, args=(slot,), daemon=True)
               for slot in range(len(indices))]
    for thread in threads:
        thread.start()
    _wait_all(ready, args.page_timeout + 120)
    wall = time.monotonic()
    go.set()
    _wait_all(done, args.answer_timeout + 120)
    wall = time.monotonic() - wall
    finished.set()
    for thread in threads:
        thread.join(timeout=args.call_timeout + 60)
    for result, thread in zip(results, threads, strict=True):
        if thread.is_alive():
            result.error = result.error or "the session thread did not finish in time"
    return results, wall


def _wait_all(events: list[threading.Event], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for event in events:
        event.wait(max(0.0, deadline - time.monotonic()))


def expected_retrieved(questions: list[str]) -> dict[str, set[str]]:
    """Return the ids ``agent.ask.retrieve`` finds for each question (what the app retrieves)."""
    from agent.ask import check_question, retrieve
    from core.settings import load_settings
    from tools.paper_store import PaperStore

    settings = load_settings()
    store = PaperStore(settings)
    return {q: {p.arxiv_id for p, _ in retrieve(check_question(q), settings, store=store)}
            for q in questions}


def _latencies(results: list[SessionResult]) -> list[float]:
    return [r.latency_s for r in results if r.latency_s is not None and not r.error]


def _spread(values: list[float]) -> tuple[float | None, float | None]:
    return p50_p95(values) if values else (None, None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(args: argparse.Namespace, warmup: SessionResult, alone: list[SessionResult],
              results: list[SessionResult], wall: float,
              load_before: tuple[float, ...]) -> dict[str, Any]:
    """Return the JSON summary of the run (counts are over the concurrent sessions)."""
    p50, p95 = _spread(_latencies(results))
    base50, base95 = _spread(_latencies(alone))
    submitted = [r.submitted_at for r in results if r.submitted_at is not None]
    loads = [r.page_load_s for r in results if r.page_load_s is not None]
    return {
        "sessions": args.sessions, "papers": args.papers,
        "cold_first_answer_s": warmup.latency_s,
        "alone_sessions": len(alone), "alone_answered": len(_latencies(alone)),
        "alone_p50_s": base50, "alone_p95_s": base95,
        "p50_s": p50, "p95_s": p95,
        "p50_ratio": _ratio(p50, base50), "p95_ratio": _ratio(p95, base95),
        "answered": len(_latencies(results)),
        "errors": sum(bool(r.error or r.page_errors) for r in results),
        "leaks": sum(bool(r.leak) for r in results),
        "ungrounded_citations": sum(len(r.ungrounded) for r in results),
        "own_paper_cited": sum(r.own_paper_cited for r in results),
        "alone_errors": sum(bool(r.error or r.page_errors or r.leak) for r in [warmup, *alone]),
        "wall_s": wall,
        "submit_spread_s": max(submitted) - min(submitted) if submitted else None,
        "page_load_p50_s": _spread(loads)[0],
        "page_load_max_s": max(loads) if loads else None,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "warmup": asdict(warmup),
        "alone": [asdict(r) for r in alone],
        "per_session": [asdict(r) for r in results],
    }


def report(summary: dict[str, Any], results: list[SessionResult]) -> None:
    """Print the figures, then every problem a session met."""
    def s(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} s"

    def x(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}x"

    print(f"sessions: {summary['sessions']} concurrent real browsers, "
          f"{summary['answered']} answered, wall {s(summary['wall_s'])}, "
          f"questions sent within {s(summary['submit_spread_s'])} of each other")
    print(f"errors: {summary['errors']}  cross-session leaks: {summary['leaks']}  "
          f"ungrounded citations: {summary['ungrounded_citations']}  "
          f"(warm-up and alone sessions with a problem: {summary['alone_errors']})")
    print(f"alone ({summary['alone_answered']} sessions one at a time): "
          f"p50 {s(summary['alone_p50_s'])}  p95 {s(summary['alone_p95_s'])}; "
          f"cold first answer {s(summary['cold_first_answer_s'])}")
    print(f"{summary['sessions']} at once: p50 {s(summary['p50_s'])}  p95 {s(summary['p95_s'])}"
          f"  (p50 {x(summary['p50_ratio'])}, p95 {x(summary['p95_ratio'])} of alone)")
    print(f"page load to chat input: p50 {s(summary['page_load_p50_s'])}, "
          f"max {s(summary['page_load_max_s'])}")
    before = ", ".join(f"{v:.2f}" for v in summary["load_average_before"])
    after = ", ".join(f"{v:.2f}" for v in summary["load_average_after"])
    print(f"load average before: {before}; after: {after} ({summary['cpu_count']} CPUs)")
    for r in results:
        for problem in filter(None, [r.error, *r.page_errors, r.leak,
                                     r.ungrounded and f"ungrounded {r.ungrounded}"]):
            print(f"  session {r.index}: {problem}")


def main() -> None:
    """Start the app, measure sessions alone, then N at once; print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--baseline-sessions", type=int, default=None,
                        help="sessions measured alone, one after another (default: --sessions)")
    parser.add_argument("--papers", type=int, default=200)
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--page-timeout", type=float, default=300,
                        help="seconds for a browser to start and show the chat input")
    parser.add_argument("--answer-timeout", type=float, default=900,
                        help="seconds for an answer to finish")
    parser.add_argument("--call-timeout", type=float, default=300,
                        help="seconds for one WebDriver call")
    args = parser.parse_args()
    alone_n = args.sessions if args.baseline_sessions is None else args.baseline_sessions
    if args.sessions < 1 or alone_n < 1:
        parser.error("--sessions and --baseline-sessions must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if CHROMIUM is None or CHROMEDRIVER is None:
        sys.exit("needs Debian's chromium and chromedriver (scripts/ci_deps.sh)")
    # SIGTERM unwinds like Ctrl-C, so every finally below stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_before = os.getloadavg()
    processes = Processes()
    # Question 0 warms the app up; the next alone_n are asked alone; the last N at once.
    with chat_load(args.papers, 1 + alone_n + args.sessions) as load:
        questions = load.questions
        own_ids = [p.arxiv_id for p in load.papers[: len(questions)]]
        expected = expected_retrieved(questions)
        log_path = load.tmp / "streamlit.log"
        try:
            with streamlit_app(dict(os.environ), log_path) as url:
                log.info("app at %s; warm-up question (loads the app's models)", url)
                (warmup,), _ = run_round(url, [0], questions, expected, own_ids, processes,
                                         args)
                alone: list[SessionResult] = []
                for i in range(1, 1 + alone_n):
                    log.info("alone %d/%d", i, alone_n)
                    alone += run_round(url, [i], questions, expected, own_ids, processes,
                                       args)[0]
                log.info("%d sessions at once", args.sessions)
                results, wall = run_round(url, list(range(1 + alone_n, len(questions))),
                                          questions, expected, own_ids, processes, args)
        finally:
            processes.stop_all()
            tail = log_path.read_text(errors="replace").splitlines()[-20:] \
                if log_path.is_file() else []
            if any("Traceback" in line or "Error" in line for line in tail):
                log.warning("streamlit log tail:\n%s", "\n".join(tail))
    summary = summarize(args, warmup, alone, results, wall, load_before)
    report(summary, [warmup, *alone, *results])
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
        log.info("summary written to %s", args.json)


if __name__ == "__main__":
    main()
