"""Load: N concurrent chat sessions of the Streamlit app against the embedded server.

Each session is a separate Streamlit session (``AppTest``: its own session state, the app
process's shared ``st.cache_resource`` objects) asking its own question about its own paper, all
started at once from N threads. Checks: no session raised, every session's history holds exactly
its own question and answer (no cross-session leakage), every cited id was retrieved. Prints
p50/p95 latency, and the single-session latency measured first in the same run as the baseline.

Usage: ``.venv/bin/python bench/app_load.py [--sessions 10] [--papers 200]`` (needs
``../shared/data``; builds a small store in a temporary data directory).
"""

from __future__ import annotations

import argparse
import threading
import time

from chat_load import REPO, chat_load, p50_p95


def _one_session(question: str) -> dict:
    from streamlit.testing.v1 import AppTest

    start = time.perf_counter()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=900)
    at.run()
    at.chat_input[0].set_value(question).run()
    seconds = time.perf_counter() - start
    history = at.session_state["chat_messages"]
    return {"question": question, "seconds": seconds, "history": history,
            "exception": [str(e.value) for e in at.exception]}


def main() -> None:
    """Build the store, measure one session, then N at once; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--papers", type=int, default=200)
    args = parser.parse_args()
    with chat_load(args.papers, args.sessions + 1) as load:
        _run(args, load.questions)


def _run(args: argparse.Namespace, questions: list[str]) -> None:
    baseline = _one_session(questions[-1])["seconds"]
    results: list[dict] = [{} for _ in range(args.sessions)]

    def worker(i: int) -> None:
        try:
            results[i] = _one_session(questions[i])
        except Exception as exc:  # a load test reports failures instead of stopping  # noqa: BLE001
            results[i] = {"question": questions[i], "error": repr(exc)}

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.sessions)]
    wall = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - wall

    errors = [r for r in results if r.get("error") or r.get("exception")]
    leaks = 0
    for r in results:
        history = r.get("history") or []
        users = [m["content"] for m in history if m["role"] == "user"]
        if users != [r["question"]] or len(history) != 2:
            leaks += 1
    ungrounded = sum(1 for r in results for m in r.get("history") or []
                     if m.get("answer") and not {c["arxiv_id"] for c in m["answer"]["cited"]}
                     <= set(m["answer"]["retrieved"]))
    p50, p95 = p50_p95([r["seconds"] for r in results if "seconds" in r])
    print(f"sessions: {args.sessions} concurrent, wall {wall:.1f} s")
    print(f"errors: {len(errors)}  cross-session leaks: {leaks}  "
          f"ungrounded citations: {ungrounded}")
    print(f"latency p50 {p50:.1f} s  p95 {p95:.1f} s  (one session alone: {baseline:.1f} s; "
          f"p50/baseline {p50 / baseline:.2f}x)")
    for r in errors:
        print("  error:", r.get("error") or r.get("exception"))


if __name__ == "__main__":
    main()
