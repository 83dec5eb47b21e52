"""ArxivSource against an HTTP server on 127.0.0.1 replaying real recorded arXiv API responses.

The replay server serves the bodies in ../shared/data/arxiv/atom/api_responses_2026 by the query
they were recorded for, stamps every request's arrival on its own clock, and injects faults
(HTTP 429/503, a slow answer, the API's empty-page glitch) on chosen request numbers.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from atom_http import send_atom

from core.errors import BadInputError
from core.settings import ArxivSettings, load_settings
from tools.arxiv_source import (
    ArxivBadRequest,
    ArxivSource,
    ArxivUnavailable,
    build_query,
)
from tools.paper_cache import PaperCache

SPACING = 0.2
_NAME = re.compile(r"^(q|id)_(.+)_s(\d+)_m(\d+)_[0-9a-f]{12}\.xml$")
EMPTY = "id_0000.0000_s0_m100_8b51d9633a68.xml"  # a real empty answer (totalResults 0)
ERROR_400 = "id_abc_s0_m100_b79c8dcf6bc3.xml"


class ReplayServer:
    """Serve recorded responses; remember (arrival time, params) of every request."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.index: dict[tuple[str, str, int, int], str] = {}
        for path in folder.glob("*.xml"):
            match = _NAME.match(path.name)
            if match:
                kind, name, start, size = match.groups()
                self.index[(kind, _strip_versions(name), int(start), int(size))] = path.name
        self.aliases: dict[str, str] = {}  # query word or id -> recorded file name
        self.faults: dict[int, str] = {}  # request number (0-based) -> "429", "503", "slow"...
        self.slow_s = 1.5
        self.requests: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/query"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                arrived = time.monotonic()
                params = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                with replay._lock:
                    number = len(replay.requests)
                    replay.requests.append((arrived, params))
                status, body, headers = replay.answer(number, params)
                send_atom(self, status, body, headers)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def answer(self, number: int, params: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        fault = self.faults.get(number, "")
        if fault == "slow":
            time.sleep(self.slow_s)
        elif fault == "429":
            return 429, b"rate limited", {"Retry-After": "1"}
        elif fault == "503":
            return 503, b"unavailable", {}
        elif fault == "empty":
            return 200, (self.folder / EMPTY).read_bytes(), {}
        name = self.lookup(params)
        if name is None:
            return 404, b"no recording", {}
        status = 400 if name == ERROR_400 else 200
        return status, (self.folder / name).read_bytes(), {}

    def lookup(self, params: dict[str, str]) -> str | None:
        start, size = int(params.get("start", 0)), int(params.get("max_results", 10))
        if params.get("id_list"):
            kind, key = "id", params["id_list"].replace(",", "_").replace("/", "_")
        else:
            # The recordings were made without date/category clauses: route by the first word.
            match = re.search(r"all:(\w+)", params.get("search_query", ""))
            kind, key = "q", match.group(1) if match else ""
        if key in self.aliases:
            return self.aliases[key]
        if kind == "id":  # an id list's answer does not depend on the page size asked for
            return next((name for (k, n, s, _), name in self.index.items()
                         if (k, n, s) == (kind, _strip_versions(key), start)), None)
        return self.index.get((kind, _strip_versions(key), start, size))

    def gaps(self) -> list[float]:
        times = [t for t, _ in self.requests]
        return [b - a for a, b in zip(times, times[1:], strict=False)]


def _strip_versions(name: str) -> str:
    return re.sub(r"v\d+(?=_|$)", "", name)


@pytest.fixture(autouse=True)
def _fresh_unreachable_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no API URL remembered as unreachable."""
    import tools.arxiv_source

    monkeypatch.setattr(tools.arxiv_source, "_UNREACHABLE_SINCE", {})


@pytest.fixture()
def replay(shared_data: Path) -> Iterator[ReplayServer]:
    server = ReplayServer(shared_data / "arxiv" / "atom" / "api_responses_2026")
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def _source(isolated_env: Path, url: str, **arxiv: object) -> ArxivSource:
    options = {"base_url": url, "request_spacing_s": SPACING, "timeout_s": 1.0,
               "max_retries": 3, "page_size": 10, **arxiv}
    offline = bool(options.pop("offline", False))
    settings = load_settings(data_dir=isolated_env, arxiv=options, offline=offline or None)
    return ArxivSource(settings, PaperCache.from_settings(settings))


def test_fetch_parses_a_recorded_entry(isolated_env: Path, replay: ReplayServer) -> None:
    papers = _source(isolated_env, replay.url).fetch(["1605.08386"])
    paper = papers["1605.08386"]
    assert paper.title == "Heat-bath random walks with Markov bases"
    assert paper.authors == ["Caprice Stanley", "Tobias Windisch"]
    assert paper.categories == ["math.CO", "math.ST"]
    assert paper.published == date(2016, 5, 26) and paper.version == 1
    assert paper.comment == "20 pages, 3 figures"
    assert paper.abstract.startswith("Graphs on lattice points")
    assert "https://arxiv.org/pdf/1605.08386v1" in paper.links
    assert replay.requests[0][1]["id_list"] == "1605.08386"


def test_fetch_versions_and_old_style_ids(isolated_env: Path, replay: ReplayServer) -> None:
    source = _source(isolated_env, replay.url)
    papers = source.fetch(["2104.12255v1"]) | source.fetch(["arXiv:quant-ph/0201082v1"])
    assert set(papers) == {"2104.12255", "quant-ph/0201082"}
    assert papers["2104.12255"].version == 1
    assert papers["quant-ph/0201082"].published == date(2002, 1, 18)
    with pytest.raises(BadInputError, match="malformed"):
        source.fetch(["2513.01234"])  # rejected before any request
    assert len(replay.requests) == 2


def test_paging_spacing_and_sort(isolated_env: Path, replay: ReplayServer) -> None:
    source = _source(isolated_env, replay.url)
    papers = source.search("testing", max_results=60)
    starts = [int(p["start"]) for _, p in replay.requests]
    assert starts == [0, 10, 20, 30, 40, 50]
    assert {p["max_results"] for _, p in replay.requests} == {"10"}
    assert len(papers) == 60 and len({p.arxiv_id for p in papers}) == 60
    # The same query recorded as one 100-entry page holds the same first 60 papers.
    whole = _source(isolated_env, replay.url, page_size=100)
    first100 = whole.search("testing", max_results=100)
    assert [p.arxiv_id for p in first100[:60]] == [p.arxiv_id for p in papers]
    _, params = replay.requests[0]
    assert params["sortBy"] == "submittedDate" and params["sortOrder"] == "descending"
    # Spacing measured on the server's own clock, across both searches.
    assert min(replay.gaps()) >= SPACING - 0.01


def test_date_and_category_bounds_reach_the_api(isolated_env: Path,
                                                replay: ReplayServer) -> None:
    source = _source(isolated_env, replay.url, page_size=100)
    source.search("testing", since=date(2025, 3, 1), until=date(2025, 3, 31),
                  categories=["cs.LG", "cs.CL"], max_results=15)
    query = replay.requests[0][1]["search_query"]
    assert "submittedDate:[202503010000 TO 202503312359]" in query
    assert "(cat:cs.LG OR cat:cs.CL)" in query
    assert replay.requests[0][1]["max_results"] == "15"


def test_cache_answers_repeats_and_offline(isolated_env: Path, replay: ReplayServer) -> None:
    source = _source(isolated_env, replay.url, page_size=100)
    first = source.search("testing", max_results=15)
    again = source.search("  TESTING ", max_results=15)  # normalized to the same key
    assert [p.arxiv_id for p in again] == [p.arxiv_id for p in first]
    assert len(replay.requests) == 1
    offline = _source(isolated_env, replay.url, page_size=100, offline=True)
    assert [p.arxiv_id for p in offline.search("testing", max_results=15)] == [
        p.arxiv_id for p in first]
    assert offline.fetch([first[0].arxiv_id])[first[0].arxiv_id].title == first[0].title
    with pytest.raises(ArxivUnavailable, match="offline"):
        offline.search("testing", max_results=16)
    with pytest.raises(ArxivUnavailable, match="offline"):
        offline.fetch(["1605.08386"])
    assert len(replay.requests) == 1  # offline never touched the network


def test_empty_results(isolated_env: Path, replay: ReplayServer) -> None:
    replay.aliases.update({"nothingmatches": EMPTY, "2501.99999": EMPTY})
    source = _source(isolated_env, replay.url, page_size=100)
    assert source.search("nothingmatches", max_results=5) == []
    assert source.fetch(["2501.99999"]) == {}
    assert len(replay.requests) == 2  # an empty first page is an answer, not a glitch


def test_error_feed_is_not_retried(isolated_env: Path, replay: ReplayServer) -> None:
    replay.aliases["badquery"] = ERROR_400
    with pytest.raises(ArxivBadRequest, match="incorrect id format for abc"):
        _source(isolated_env, replay.url).search("badquery")
    assert len(replay.requests) == 1


def test_retries_429_and_503_with_backoff(isolated_env: Path, replay: ReplayServer) -> None:
    replay.faults = {0: "503", 1: "429"}
    papers = _source(isolated_env, replay.url, page_size=100).search("testing", max_results=15)
    assert len(papers) == 15 and len(replay.requests) == 3
    first_gap, second_gap = replay.gaps()
    assert SPACING - 0.01 <= first_gap  # backoff starts at the spacing
    assert second_gap >= 1.0  # the 429's Retry-After: 1 was honoured


def test_gives_up_after_bounded_retries(isolated_env: Path, replay: ReplayServer) -> None:
    replay.faults = dict.fromkeys(range(10), "503")
    with pytest.raises(ArxivUnavailable, match=r"after 3 attempt\(s\): HTTP 503"):
        _source(isolated_env, replay.url, max_retries=2).search("testing", max_results=15)
    assert len(replay.requests) == 3
    gaps = replay.gaps()
    assert gaps[1] > gaps[0]  # exponential: the second pause is longer


def test_slow_answer_times_out_and_retries(isolated_env: Path, replay: ReplayServer) -> None:
    replay.faults = {0: "slow"}
    replay.slow_s = 3.0
    started = time.monotonic()
    papers = _source(isolated_env, replay.url, timeout_s=0.5, page_size=100).search(
        "testing", max_results=15)
    assert len(papers) == 15 and len(replay.requests) == 2
    assert time.monotonic() - started < 2.5  # did not wait for the slow answer (margin: load)


def test_empty_page_glitch_is_retried(isolated_env: Path, replay: ReplayServer) -> None:
    replay.faults = {1: "empty"}  # the second page comes back empty once
    papers = _source(isolated_env, replay.url).search("testing", max_results=20)
    assert len(papers) == 20
    assert [int(p["start"]) for _, p in replay.requests] == [0, 10, 10]


def test_unreachable_host_raises_unavailable(isolated_env: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = _source(isolated_env, f"http://127.0.0.1:{port}/api/query", max_retries=1,
                     request_spacing_s=0.0)
    with pytest.raises(ArxivUnavailable, match="unreachable after 2 attempt"):
        source.fetch(["1605.08386"])
    # Another source for the same URL fails fast: no request, no backoff pause.
    pauses: list[float] = []
    again = ArxivSource(source.settings, source.cache, sleep=pauses.append)
    started = time.monotonic()
    with pytest.raises(ArxivUnavailable, match="not retrying"):
        again.search("testing")
    assert pauses == [] and again.requests_made == 0 and time.monotonic() - started < 0.5


def test_spacing_never_below_three_seconds_for_the_real_host() -> None:
    assert ArxivSettings(request_spacing_s=0.2).effective_spacing_s == 3.0
    assert ArxivSettings(base_url="http://127.0.0.1:1/q",
                         request_spacing_s=0.2).effective_spacing_s == 0.2


@pytest.mark.parametrize(
    ("query", "kwargs", "expected"),
    [
        ("testing", {}, "all:testing"),
        ("Does GRPO improve the reasoning?", {"categories": ["cs.CL"]},
         "(all:GRPO AND all:improve AND all:reasoning) AND (cat:cs.CL)"),
        ("ti:checkerboard AND au:del_maestro", {}, "(ti:checkerboard AND au:del_maestro)"),
        ("x", {"since": date(2025, 3, 1), "until": date(2025, 3, 1)},
         "all:x AND submittedDate:[202503010000 TO 202503012359]"),
    ],
)
def test_build_query(query: str, kwargs: dict, expected: str) -> None:
    assert build_query(query, **kwargs) == expected


def test_build_query_rejects_nonsense() -> None:
    with pytest.raises(BadInputError):
        build_query("   ")
    with pytest.raises(BadInputError, match="after"):
        build_query("x", since=date(2025, 2, 1), until=date(2025, 1, 1))
