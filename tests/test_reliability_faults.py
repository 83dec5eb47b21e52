"""Faults injected for real: arXiv answering 429/503, hanging, truncated Atom XML, empty pages or
refusing connections (a local HTTP server on 127.0.0.1); an LLM server returning garbage or
truncated JSON; a data directory that cannot be written.

``retest report`` must finish with exit 3 and name the degraded source in report.json, never send
requests faster than the configured spacing, and a later run must fill the gap from the cache.
The judging model in the arXiv runs is the deterministic fake (these tests are about the arXiv
side); the LLM faults use the real HTTP client against a real (hostile) server.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from atom_http import send_atom
from pydantic import BaseModel
from report_fakes import FakeLLM
from tally import counter

from agent.cli import main
from core.errors import ServiceError
from core.settings import load_settings

SPACING = 0.1
RECORDED = "q_testing_s0_m10_bc5a6c384fe9.xml"  # a real 10-entry API answer
PROMPT = """Do fine-tuned models lean on repeated items?

- Fine-tuned language models score higher on repeated test items than on novel ones (2019).
"""
TALLY = counter("faults")  # printed at the end of the run (tests/tally.py)


class FaultServer:
    """Answer arXiv API requests with one chosen fault (or the real recording when ``ok``)."""

    def __init__(self, recording: bytes) -> None:
        self.recording = recording
        self.mode = "ok"
        self.arrivals: list[float] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/query"

    def _body(self) -> tuple[int, bytes, dict[str, str]]:
        if self.mode == "429":
            return 429, b"rate limited", {"Retry-After": "0"}
        if self.mode == "503":
            return 503, b"unavailable", {}
        if self.mode == "truncated":
            return 200, self.recording[: len(self.recording) // 2], {}
        if self.mode == "empty":  # the API's glitch: results promised, no entries on the page
            head = self.recording.split(b"<entry>")[0]
            return 200, head + b"</feed>\n", {}
        if self.mode == "timeout":
            time.sleep(1.5)
        return 200, self.recording, {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.arrivals.append(time.monotonic())
                status, body, headers = server._body()
                send_atom(self, status, body, headers)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture()
def fault_server(shared_data: Path) -> Iterator[FaultServer]:
    recording = (shared_data / "arxiv" / "atom" / "api_responses_2026" / RECORDED).read_bytes()
    server = FaultServer(recording)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture()
def fake_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    """Judge with the deterministic fake; forget arXiv URLs remembered as unreachable."""
    import tools.arxiv_source
    import tools.llm

    monkeypatch.setattr(tools.llm, "make_llm", lambda *a, **k: FakeLLM())
    monkeypatch.setattr(tools.arxiv_source, "_UNREACHABLE_SINCE", {})


def _cli(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    return code, err.getvalue()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/query"  # nothing listens there now


def _report(tmp_path: Path, name: str) -> tuple[int, dict, str]:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(PROMPT)
    out = tmp_path / name
    code, err = _cli(["report", str(prompt), "--out", str(out), "--papers-per-claim", "2",
                      "--retest-limit", "0"])
    assert "Traceback" not in err, err
    return code, json.loads((out / "report.json").read_text()), err


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["429", "503", "timeout", "truncated", "empty", "refused"])
def test_arxiv_fault_degrades_then_cache_fills(fault: str, fault_server: FaultServer,
                                                isolated_env: Path, fake_judge: None,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    url = _closed_port_url() if fault == "refused" else fault_server.url
    monkeypatch.setenv("RETEST_ARXIV_URL", url)
    monkeypatch.setenv("RETEST_ARXIV_SPACING", str(SPACING))
    monkeypatch.setenv("RETEST_ARXIV__MAX_RETRIES", "1")
    monkeypatch.setenv("RETEST_ARXIV__TIMEOUT_S", "0.5")
    fault_server.mode = fault
    TALLY["faults injected"] += 1
    code, report, err = _report(tmp_path, "faulty")
    assert code == 3, err
    assert any("arxiv" in d.lower() for d in report["degraded"]), report["degraded"]
    assert "degraded" in err
    gaps = [b - a for a, b in zip(fault_server.arrivals, fault_server.arrivals[1:], strict=False)]
    assert all(g >= SPACING * 0.9 for g in gaps), gaps  # never faster than the spacing
    # arXiv recovers: the next run is complete; the one after answers from the cache alone.
    monkeypatch.setenv("RETEST_ARXIV_URL", fault_server.url)
    import tools.arxiv_source

    monkeypatch.setattr(tools.arxiv_source, "_UNREACHABLE_SINCE", {})
    fault_server.mode = "ok"
    code, healed, _ = _report(tmp_path, "healed")
    assert code == 0 and healed["degraded"] == []
    assert healed["claims"][0]["evidence"], "the recorded answer gave no evidence"
    before = len(fault_server.arrivals)
    monkeypatch.setenv("RETEST_ARXIV_URL", _closed_port_url())
    code, cached, _ = _report(tmp_path, "cached")
    assert code == 0 and cached["degraded"] == []
    assert ([e["arxiv_id"] for e in cached["claims"][0]["evidence"]]
            == [e["arxiv_id"] for e in healed["claims"][0]["evidence"]])
    assert len(fault_server.arrivals) == before
    TALLY["faults survived"] += 1


# ---------------------------------------------------------------- LLM server faults

class _Garbage(BaseModel):
    stance: str
    summary: str


class GarbageLLMServer:
    """Speak the OpenAI chat API but answer with invalid or truncated JSON, or answer late."""

    def __init__(self, content: str, finish_reason: str = "stop", delay_s: float = 0.0) -> None:
        self.content, self.finish_reason, self.delay_s = content, finish_reason, delay_s
        self.calls = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.calls += 1
                time.sleep(server.delay_s)  # a stalled or overloaded server
                body = json.dumps({
                    "id": "x", "object": "chat.completion", "created": 0, "model": "garbage",
                    "choices": [{"index": 0, "finish_reason": server.finish_reason,
                                 "message": {"role": "assistant", "content": server.content}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }).encode()
                # The client of a stalled server has hung up by now: that is the point.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - /v1/models
                body = json.dumps({"object": "list", "data": [{"id": "garbage",
                                                                "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.mark.parametrize(("content", "finish"), [
    ("not json at all", "stop"), ('{"stance": "supports", "summ', "length"),
    ('{"stance": 3}', "stop"), ("", "stop"),
])
def test_llm_garbage_gives_bounded_retries(isolated_env: Path, content: str, finish: str) -> None:
    from tools.llm import make_llm

    server = GarbageLLMServer(content, finish)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        settings = load_settings(llm={"base_url": server.url, "model": "garbage",
                                      "max_retries": 2, "timeout_s": 5})
        llm = make_llm(settings)
        TALLY["faults injected"] += 1
        started = time.monotonic()
        with pytest.raises(ServiceError):
            llm.complete_json([{"role": "user", "content": "judge"}], _Garbage, max_tokens=50)
        assert 1 <= server.calls <= 8, server.calls  # bounded, not forever
        assert time.monotonic() - started < 30
        TALLY["faults survived"] += 1
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def test_slow_llm_server_times_out_with_bounded_retries(isolated_env: Path) -> None:
    """A server slower than the timeout: every attempt times out, the number of attempts and the
    total wait are bounded, and the caller gets a ServiceError; a slow server within the
    timeout still answers."""
    from tools.llm import make_llm

    valid = json.dumps({"stance": "supports", "summary": "ok"})
    stalled, late = GarbageLLMServer(valid, delay_s=4.0), GarbageLLMServer(valid, delay_s=0.8)
    for server in (stalled, late):
        threading.Thread(target=server.httpd.serve_forever, daemon=True).start()
    try:
        TALLY["faults injected"] += 1
        llm = make_llm(load_settings(llm={"base_url": stalled.url, "model": "garbage",
                                          "max_retries": 2, "timeout_s": 1}))
        started = time.monotonic()
        with pytest.raises(ServiceError, match="timed out"):
            llm.complete_json([{"role": "user", "content": "judge"}], _Garbage, max_tokens=50)
        assert stalled.calls == 3  # one call and max_retries retries, no more
        assert time.monotonic() - started < 12  # three 1 s timeouts, not the server's 12 s
        slow_ok = make_llm(load_settings(llm={"base_url": late.url, "model": "garbage",
                                              "max_retries": 2, "timeout_s": 5}))
        reply = slow_ok.complete_json([{"role": "user", "content": "judge"}], _Garbage,
                                      max_tokens=50)
        assert reply.stance == "supports" and late.calls == 1
        TALLY["faults survived"] += 1
    finally:
        for server in (stalled, late):
            server.httpd.shutdown()
            server.httpd.server_close()


@pytest.mark.slow
def test_report_with_garbage_llm_is_degraded(isolated_env: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    server = GarbageLLMServer("<<garbage>>")
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("RETEST_LLM_BASE_URL", server.url)
        monkeypatch.setenv("RETEST_LLM_MODEL", "garbage")
        corpus = Path(__file__).resolve().parent / "hostile" / "poisoned.jsonl"
        prompt = tmp_path / "prompt.txt"
        prompt.write_text(PROMPT)
        TALLY["faults injected"] += 1
        code, err = _cli(["report", str(prompt), "--offline", "--corpus", str(corpus),
                          "--out", str(tmp_path / "out"), "--retest-limit", "0"])
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert code == 3, err
        assert any("model" in d.lower() or "llm" in d.lower() for d in report["degraded"])
        assert server.calls < 60  # fails fast, not a timeout per pair
        TALLY["faults survived"] += 1
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


# ---------------------------------------------------------------- unwritable data directory

def test_unwritable_data_dir_names_the_path(isolated_env: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bad = blocker / "data"
    monkeypatch.setenv("RETEST_DATA_DIR", str(bad))
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(PROMPT)
    corpus = Path(__file__).resolve().parent / "hostile" / "poisoned.jsonl"
    TALLY["faults injected"] += 1
    code, err = _cli(["report", str(prompt), "--offline", "--corpus", str(corpus),
                      "--out", str(tmp_path / "out")])
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[")
             and not ln.startswith("run id")]
    assert code != 0 and "Traceback" not in err
    assert len(lines) == 1 and str(blocker) in lines[0], err
    assert not (tmp_path / "out" / "report.json").exists()
    TALLY["faults survived"] += 1


def test_client_follows_a_restarted_server_to_its_new_port(isolated_env: Path) -> None:
    """The embedded server died and came back on another port: the next retry reaches it. The
    restart is the client's own (as make_llm gives the embedded server's client), not a global."""
    from tools.llm import LLMClient
    from tools.transport import Endpoint

    healthy = GarbageLLMServer('{"stance": "supports", "summary": "fine"}')
    thread = threading.Thread(target=healthy.httpd.serve_forever, daemon=True)
    thread.start()
    restarts: list[str] = []

    def restart() -> str:
        restarts.append(healthy.url)
        return healthy.url

    try:
        dead = _closed_port_url().removesuffix("/api/query") + "/v1"
        llm = LLMClient(Endpoint(dead, max_retries=2, timeout_s=5, backoff_base_s=0.1,
                                 restart=restart), "m")
        TALLY["faults injected"] += 1
        reply = llm.complete_json([{"role": "user", "content": "judge"}], _Garbage)
        assert reply.stance == "supports" and restarts and llm.base_url == healthy.url
        TALLY["faults survived"] += 1
    finally:
        healthy.httpd.shutdown()
        healthy.httpd.server_close()


def test_remote_client_never_moves_to_the_embedded_server(isolated_env: Path) -> None:
    """A client of a configured (remote) URL that fails stays on that URL and fails with one
    ServiceError naming it: make_llm gives it no restart, and tools.llm keeps no global hook
    through which a restart of the embedded server could redirect it."""
    import tools.llm

    dead = _closed_port_url().removesuffix("/api/query") + "/v1"
    llm = tools.llm.make_llm(load_settings(llm={"base_url": dead, "model": "m",
                                                "max_retries": 1, "timeout_s": 2}))
    assert not llm.endpoint.restartable
    assert not [name for name, value in vars(tools.llm).items()
                if name.startswith("_") and callable(value) and "restart" in name]
    with pytest.raises(ServiceError, match=dead.split("//")[1].split("/")[0]):
        llm.complete_json([{"role": "user", "content": "judge"}], _Garbage)
    assert llm.base_url == dead.rstrip("/")
