"""Several LLM endpoints (issue #16 item 4): settings, spreading, failover, and the pool's limits.

The servers are real HTTP servers on 127.0.0.1 (``http.server`` threads) that answer the minimal
OpenAI chat-completions, models and ``/tokenize`` JSON; the client is the project's real one
(``openai`` SDK through :class:`tools.transport.Endpoint`). Each reply names the server that gave
it, and each server records the requests it answered, so a test can check that every request was
answered exactly once. The same behaviour against two real vLLM servers, one SIGKILLed in the
middle of a report, is tests/test_llm_endpoints_real.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest

from core.errors import BadInputError, ServiceError
from core.settings import load_settings
from tools.endpoint_pool import EndpointPool, connect
from tools.llm import LLMClient, make_llm
from tools.transport import Endpoint

REPO = Path(__file__).resolve().parents[1]


class ChatServer:
    """A minimal OpenAI-compatible server that records what it answered.

    ``drop`` holds prompts it reads and then hangs up on without answering (a server killed
    with the request in flight); ``refuse`` holds prompts it answers with HTTP 400.
    """

    def __init__(self, name: str, model: str = "m", delay_s: float = 0.0) -> None:
        self.name, self.model, self.delay_s = name, model, delay_s
        self.answered: list[str] = []
        self.received: list[str] = []
        self.drop: set[str] = set()
        self.refuse: set[str] = set()
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        self.alive = True

    def stop(self) -> None:
        """Stop listening: later connections are refused, as to a dead server."""
        if self.alive:
            self.alive = False
            self.httpd.shutdown()
            self.httpd.server_close()

    def _reply(self, path: str, body: dict) -> tuple[int, dict] | None:
        if path == "/tokenize":
            return 200, {"tokens": [len(body.get("prompt", ""))], "count": 1}
        prompt = body["messages"][-1]["content"]
        with self._lock:
            self.received.append(prompt)
        if prompt in self.drop:
            return None
        if prompt in self.refuse:
            return 400, {"object": "error", "message": "bad request", "type": "BadRequestError",
                         "code": 400}
        time.sleep(self.delay_s)
        with self._lock:
            self.answered.append(prompt)
        return 200, {"id": "c", "object": "chat.completion", "created": 0, "model": self.model,
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant",
                                              "content": f"{self.name}:{prompt}"}}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply = server._reply(self.path.removeprefix("/v1"), body)
                if reply is None:
                    self.close_connection = True  # hang up: the client sees no answer
                    return
                self._send(*reply)

            def do_GET(self) -> None:  # noqa: N802 - /v1/models
                self._send(200, {"object": "list",
                                 "data": [{"id": server.model, "object": "model"}]})

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture()
def two() -> Iterator[tuple[ChatServer, ChatServer]]:
    """Two live servers of model "m", stopped at the end."""
    a, b = ChatServer("a"), ChatServer("b")
    yield a, b
    a.stop()
    b.stop()


def _pool(*servers: ChatServer, max_retries: int = 2, cooldown_s: float = 30.0,
          clock=time.monotonic, timeout_s: float = 5.0) -> EndpointPool:
    members = [Endpoint(s.url, max_retries=0, timeout_s=timeout_s) for s in servers]
    return EndpointPool(members, max_retries=max_retries, backoff_base_s=0.0,
                        cooldown_s=cooldown_s, clock=clock)


def _ask(llm: LLMClient, prompt: str) -> str:
    return llm.chat([{"role": "user", "content": prompt}], max_tokens=5)


# ------------------------------------------------------------------------------------ settings

def test_base_url_takes_one_url_a_toml_list_or_commas(isolated_env: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETEST_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    assert load_settings().llm.base_url == "http://127.0.0.1:9/v1"  # unchanged for one URL
    assert load_settings().llm.base_urls() == ["http://127.0.0.1:9/v1"]
    monkeypatch.setenv("RETEST_LLM_BASE_URL", " http://127.0.0.1:9/v1/ , http://h2:8000/v1")
    assert load_settings().llm.base_urls() == ["http://127.0.0.1:9/v1", "http://h2:8000/v1"]
    monkeypatch.delenv("RETEST_LLM_BASE_URL")
    Path("retest.toml").write_text('[llm]\nbase_url = ["http://a:1/v1", "https://b/v1"]\n')
    assert load_settings().llm.base_urls() == ["http://a:1/v1", "https://b/v1"]
    assert load_settings(llm={"base_url": ""}).llm.base_urls() == []  # the embedded server


@pytest.mark.parametrize("bad", ["ftp://h/v1", "http://h:port/v1", "http:///v1",
                                 "http://a:1/v1,http://a:1/v1", "http://a b/v1"])
def test_malformed_base_url_is_one_line_bad_input(isolated_env: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  bad: str) -> None:
    monkeypatch.setenv("RETEST_LLM_BASE_URL", f"http://ok:1/v1,{bad}")
    with pytest.raises(BadInputError) as info:
        load_settings()
    message = str(info.value)
    assert "llm.base_url" in message and "\n" not in message
    assert bad.split(",")[0] in message


def test_cli_with_a_malformed_endpoint_exits_2_with_one_line(isolated_env: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "serve-llm", "--stop"],
        capture_output=True, text=True, cwd=Path.cwd(), timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO),
             "RETEST_LLM_BASE_URL": "http://127.0.0.1:1/v1,127.0.0.1:2/v1"},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "127.0.0.1:2/v1" in proc.stderr


# ------------------------------------------------------------------------- spreading, failover

def test_sequential_requests_take_turns(two: tuple[ChatServer, ChatServer]) -> None:
    a, b = two
    llm = LLMClient(_pool(a, b), "m")
    replies = [_ask(llm, f"q{i}") for i in range(10)]
    assert len(a.answered) == len(b.answered) == 5
    assert {r.split(":")[0] for r in replies} == {"a", "b"}


def test_concurrent_requests_spread_over_both(isolated_env: Path) -> None:
    a, b = ChatServer("a", delay_s=0.05), ChatServer("b", delay_s=0.05)
    try:
        llm = LLMClient(_pool(a, b), "m")
        with ThreadPoolExecutor(max_workers=8) as workers:
            replies = list(workers.map(lambda i: _ask(llm, f"q{i}"), range(32)))
        assert [r.split(":")[1] for r in replies] == [f"q{i}" for i in range(32)]
        assert sorted(a.answered + b.answered) == sorted(f"q{i}" for i in range(32))
        assert min(len(a.answered), len(b.answered)) >= 10  # least-in-flight keeps them even
    finally:
        a.stop()
        b.stop()


def test_a_slow_server_gets_fewer_requests(isolated_env: Path) -> None:
    slow, fast = ChatServer("slow", delay_s=0.5), ChatServer("fast")
    try:
        llm = LLMClient(_pool(slow, fast), "m")
        with ThreadPoolExecutor(max_workers=2) as workers:
            list(workers.map(lambda i: _ask(llm, f"q{i}"), range(24)))
        assert len(slow.answered) + len(fast.answered) == 24
        # Taking turns blindly would give it 12; by requests in flight the fast server takes
        # every request that arrives while the slow one still works on its own.
        assert len(slow.answered) <= 8
    finally:
        slow.stop()
        fast.stop()


def test_server_dying_mid_sequence_loses_no_request_and_answers_none_twice(
        two: tuple[ChatServer, ChatServer]) -> None:
    a, b = two
    pool = _pool(a, b)
    llm = LLMClient(pool, "m")
    replies = []
    for i in range(12):
        if i == 5:
            a.stop()  # after q0, q2, q4; from now on connections to it are refused
        replies.append(_ask(llm, f"q{i}"))
    assert a.answered == ["q0", "q2", "q4"]
    assert replies == [f"{'a' if i in (0, 2, 4) else 'b'}:q{i}" for i in range(12)]
    assert sorted(a.answered + b.answered) == sorted(f"q{i}" for i in range(12))  # once each
    assert pool.down() == [a.url]  # q6 found it dead and moved to b


def test_request_in_flight_on_a_server_that_hangs_up_moves_to_another(
        two: tuple[ChatServer, ChatServer]) -> None:
    a, b = two
    a.drop.add("q0")  # a reads q0 and hangs up without answering, as a killed server would
    pool = _pool(a, b)
    assert _ask(LLMClient(pool, "m"), "q0") == "b:q0"
    assert a.received == ["q0"] and a.answered == [] and b.answered == ["q0"]
    assert pool.down() == [a.url]


def test_a_request_that_times_out_moves_to_another_server(isolated_env: Path) -> None:
    hung, fast = ChatServer("hung", delay_s=3.0), ChatServer("fast")
    try:
        pool = _pool(hung, fast, timeout_s=0.5)
        started = time.monotonic()
        assert _ask(LLMClient(pool, "m"), "q0") == "fast:q0"  # tried on the hung one first
        assert hung.received == ["q0"] and time.monotonic() - started < 2.5
        assert pool.down() == [hung.url]
    finally:
        hung.stop()
        fast.stop()


def test_down_server_gets_work_again_after_its_cool_down(
        two: tuple[ChatServer, ChatServer]) -> None:
    a, b = two
    now = [0.0]
    pool = _pool(a, b, cooldown_s=30.0, clock=lambda: now[0])
    llm = LLMClient(pool, "m")
    a.drop.add("q0")
    assert _ask(llm, "q0") == "b:q0"  # a hung up: marked down, the request moved to b
    for i in range(1, 5):
        assert _ask(llm, f"q{i}") == f"b:q{i}"  # a rests while its cool-down runs
    assert a.received == ["q0"]
    now[0] = 31.0
    replies = {_ask(llm, f"r{i}") for i in range(4)}
    assert {r.split(":")[0] for r in replies} == {"a", "b"} and pool.down() == []


def test_all_servers_down_is_one_service_error_line(two: tuple[ChatServer, ChatServer]) -> None:
    a, b = two
    a.stop()
    b.stop()
    pool = _pool(a, b, max_retries=2)
    started = time.monotonic()
    with pytest.raises(ServiceError) as info:
        LLMClient(pool, "m").chat([{"role": "user", "content": "q"}])
    message = str(info.value)
    assert "\n" not in message and message.startswith("all 2 LLM servers failed")
    assert a.url in message and b.url in message and "6 attempts" in message  # 3 rounds of 2
    assert time.monotonic() - started < 10
    assert sorted(pool.down()) == sorted([a.url, b.url])


def test_a_server_in_its_cool_down_is_not_tried_before_the_pool_waits(
        two: tuple[ChatServer, ChatServer]) -> None:
    a, b = two
    a.drop.add("q0")
    pool = _pool(a, b, max_retries=0)
    assert _ask(LLMClient(pool, "m"), "q0") == "b:q0"  # a hung up: down for 30 s
    b.stop()
    with pytest.raises(ServiceError, match="all 2 LLM servers failed"):
        _ask(LLMClient(pool, "m"), "q1")  # b refused; with no retry left, a is not disturbed
    assert a.received == ["q0"]


def test_a_bad_request_is_not_failed_over(two: tuple[ChatServer, ChatServer]) -> None:
    a, b = two
    a.refuse.add("q0")
    b.refuse.add("q0")
    pool = _pool(a, b)
    with pytest.raises(openai.BadRequestError):
        _ask(LLMClient(pool, "m"), "q0")
    assert len(a.received) + len(b.received) == 1  # sent once, to one server
    assert pool.down() == []  # a 400 says nothing about the server


def test_tokenize_fails_over_too(two: tuple[ChatServer, ChatServer]) -> None:
    a, b = two
    a.stop()
    llm = LLMClient(_pool(a, b), "m")
    assert [llm.tokenize(text="abcd") for _ in range(3)] == [[4]] * 3


def test_pool_members_must_leave_retrying_to_the_pool(two: tuple[ChatServer, ChatServer]) -> None:
    a, b = two
    with pytest.raises(ValueError, match="must not retry"):
        EndpointPool([Endpoint(a.url, max_retries=2), Endpoint(b.url, max_retries=0)])
    with pytest.raises(ValueError, match="at least two"):
        EndpointPool([Endpoint(a.url, max_retries=0)])
    assert isinstance(connect([a.url]), Endpoint)
    with pytest.raises(ValueError, match="embedded"):
        connect([a.url, b.url], restart=lambda: a.url)


# ------------------------------------------------------------------------- make_llm, the model

def test_make_llm_spreads_over_the_configured_list(isolated_env: Path,
                                                   two: tuple[ChatServer, ChatServer],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = two
    monkeypatch.setenv("RETEST_LLM_BASE_URL", f"{a.url},{b.url}")
    llm = make_llm(load_settings())
    assert llm.model == "m" and not llm.endpoint.restartable  # listed by both servers
    assert {_ask(llm, f"q{i}").split(":")[0] for i in range(4)} == {"a", "b"}
    one = make_llm(load_settings(llm={"base_url": a.url}))
    assert isinstance(one.endpoint, Endpoint) and one.base_url == a.url  # as before


def test_servers_of_different_models_are_refused_unless_the_model_is_set(
        isolated_env: Path) -> None:
    a, b = ChatServer("a", model="small"), ChatServer("b", model="large")
    try:
        urls = [a.url, b.url]
        with pytest.raises(BadInputError) as info:
            make_llm(load_settings(llm={"base_url": urls}))
        assert "small" in str(info.value) and "large" in str(info.value)
        assert "\n" not in str(info.value)
        assert make_llm(load_settings(llm={"base_url": urls, "model": "small"})).model == "small"
    finally:
        a.stop()
        b.stop()


def test_a_server_dead_at_start_is_skipped(isolated_env: Path,
                                           two: tuple[ChatServer, ChatServer]) -> None:
    a, b = two
    a.stop()
    llm = make_llm(load_settings(llm={"base_url": [a.url, b.url], "timeout_s": 5}))
    assert llm.model == "m" and llm.endpoint.down() == [a.url]
    assert _ask(llm, "q") == "b:q" and a.received == []


def test_eval_sampler_spreads_over_a_list_of_urls(two: tuple[ChatServer, ChatServer]) -> None:
    from evals.runner import GenerationSettings, OpenAISampler

    a, b = two
    sampler = OpenAISampler("m", [a.url, b.url], "m", api="chat",
                            gen=GenerationSettings(max_tokens=5, timeout_s=5, max_retries=1))
    texts = [sampler.generate(f"q{i}").text for i in range(4)]
    b.stop()
    texts += [sampler.generate(f"q{i}").text for i in range(4, 8)]
    assert [t.split(":")[1] for t in texts] == [f"q{i}" for i in range(8)]
    assert sorted(a.answered + b.answered) == sorted(f"q{i}" for i in range(8))
    assert len(b.answered) == 2 and sampler.base_url == f"{a.url}, {b.url}"
