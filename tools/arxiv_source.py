"""Search and fetch arXiv papers through the ``arxiv`` package, politely, cached, with retries.

The ``arxiv`` package builds the query URLs, pages through results and parses the Atom feed; this
module adds what it lacks: a timeout on every request, one request at a time spaced by
``settings.arxiv.effective_spacing_s`` (never below 3 s against the real host), bounded retries
with exponential backoff and jitter on HTTP 429/5xx, timeouts, connection errors and the API's
sporadic empty page, and a SQLite cache (:mod:`tools.paper_cache`) so repeats cost nothing.
Clock and sleep are injected so tests can check the spacing.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime

import arxiv
import requests
from arxiv import _feed  # the package's own Atom parser; public API only returns Results
from lxml import etree

from core.errors import BadInputError, ServiceError
from core.settings import Settings
from tools.paper import Paper, is_valid_arxiv_id, normalize_arxiv_id, split_version
from tools.paper_cache import PaperCache, query_key

logger = logging.getLogger(__name__)

# Field prefixes of arXiv's query syntax; a query using one is passed through as written.
_FIELD_PREFIXES = ("ti:", "au:", "abs:", "co:", "jr:", "cat:", "rn:", "id:", "all:")
# Words that only make an AND query stricter without saying anything.
_STOPWORDS = frozenset(
    "a an and are as at be by do does for from has have how in into is it its of on or than that "
    "the their these this to via was were what when which with".split()
)
_ATOM = "{http://www.w3.org/2005/Atom}"
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# Upper bound on one backoff pause, so a misconfigured spacing cannot stall a run for hours.
_MAX_BACKOFF_S = 120.0
# One request at a time per process, whatever the number of ArxivSource objects, and the
# spacing is kept per API URL across all of them (a run builds several sources).
_REQUEST_LOCK = threading.Lock()
_LAST_REQUEST_END: dict[str, float] = {}
# After an API URL failed all its retries, fail fast for a while instead of spending another
# minute of backoff per call (a run resolving many ids with no network would crawl).
UNREACHABLE_HOLD_S = 300.0
_UNREACHABLE_SINCE: dict[str, float] = {}


class ArxivUnavailable(ServiceError):  # noqa: N818 - the name other modules import
    """The arXiv API could not be reached after retries, or the run is offline without a cache.

    The agent catches this to mark the run degraded.
    """


class ArxivBadRequest(BadInputError):  # noqa: N818
    """arXiv rejected the query itself (HTTP 400 with an error feed); retrying cannot help."""


def paper_from_result(result: arxiv.Result, source: str = "arxiv-api") -> Paper:
    """Normalize an ``arxiv.Result`` into a :class:`Paper` (id without version, dates as dates).

    Raise ValueError when the entry is not a paper (e.g. an API error entry).
    """
    short_id = result.entry_id.split("arxiv.org/abs/")[-1]
    if short_id == result.entry_id:
        raise ValueError(f"not an arXiv abstract URL: {result.entry_id!r}")
    arxiv_id, version = split_version(short_id)
    if not is_valid_arxiv_id(arxiv_id):
        raise ValueError(f"malformed arXiv id in feed: {short_id!r}")
    categories = list(dict.fromkeys([result.primary_category, *result.categories]))
    return Paper(
        arxiv_id=arxiv_id,
        version=version,
        title=" ".join(result.title.split()),
        authors=[a.name for a in result.authors],
        abstract=" ".join(result.summary.split()),
        categories=[c for c in categories if c],
        published=result.published.date() if result.published else None,
        updated=result.updated.date() if result.updated else None,
        comment=result.comment or None,
        doi=result.doi or None,
        links=[link.href for link in result.links],
        source=source,
    )


def build_query(
    query: str,
    *,
    since: date | None = None,
    until: date | None = None,
    categories: list[str] | None = None,
) -> str:
    """Turn free text plus filters into arXiv query syntax.

    Plain words (minus stopwords) become ``all:word`` terms joined by AND; a query that already
    uses field prefixes (``ti:``, ``au:``...) is kept as written. Dates become a
    ``submittedDate`` range covering whole days (an open end runs to today); categories become an
    OR of ``cat:`` terms.
    """
    text = " ".join(query.split())
    if not text and not categories:
        raise BadInputError("empty arXiv query")
    if text and not any(prefix in text for prefix in _FIELD_PREFIXES):
        words = [w.strip("\"'?,;:()[]") for w in text.split()]
        content = [w for w in words if w and w.lower() not in _STOPWORDS] or [w for w in words if w]
        text = " AND ".join(f"all:{w}" for w in content)
    parts = [f"({text})" if " " in text else text] if text else []
    if categories:
        parts.append("(" + " OR ".join(f"cat:{c}" for c in categories) + ")")
    if since or until:
        start = since or date(1991, 1, 1)
        end = until or datetime.now(UTC).date()
        if start > end:
            raise BadInputError(f"since {start} is after until {end}")
        parts.append(f"submittedDate:[{start:%Y%m%d}0000 TO {end:%Y%m%d}2359]")
    return " AND ".join(parts)


class _TimedRetryClient(arxiv.Client):
    """An ``arxiv.Client`` whose page fetch has a timeout, spacing, and backoff with jitter.

    Paging, URL building and feed parsing stay the package's own.
    """

    def __init__(self, owner: ArxivSource, base_url: str, page_size: int) -> None:
        super().__init__(page_size=page_size, delay_seconds=0.0, num_retries=0)
        self.query_url_format = base_url.rstrip("?") + "?{}"
        self._owner = owner

    def _parse_feed(
        self, url: str, first_page: bool = True, _try_index: int = 0
    ) -> _feed.ParsedFeed:
        return self._owner._get_feed(url, first_page=first_page)


class ArxivSource:
    """The live arXiv API behind a cache. Construct once per run and reuse (spacing is per object).

    Dependencies are passed in: ``settings`` (``settings.arxiv`` and ``settings.offline``), the
    cache, and a monotonic clock and sleep function (tests pass their own).
    """

    def __init__(
        self,
        settings: Settings,
        cache: PaperCache | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """Bind settings and dependencies; make no request yet."""
        self.settings = settings
        self.cache = cache if cache is not None else PaperCache.from_settings(settings)
        self.clock = clock
        self.sleep = sleep
        self._rng = rng or random.Random()  # jitter only; not security sensitive
        self._retry_after: float | None = None  # from a 429/503's Retry-After header
        self.requests_made = 0
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "retest (arxiv.py client)"

    @property
    def offline(self) -> bool:
        """Whether this source must answer from the cache alone."""
        return bool(self.settings.offline)

    def search(
        self,
        query: str,
        *,
        since: date | None = None,
        until: date | None = None,
        categories: list[str] | None = None,
        max_results: int = 50,
    ) -> list[Paper]:
        """Return up to ``max_results`` papers matching ``query``, newest submission first.

        ``since``/``until`` bound the submission date (inclusive days). Answers come from the
        cache when this exact query (normalized) was asked before. Raise ArxivUnavailable when
        the API cannot be reached after retries or when offline with no cached answer, and
        ArxivBadRequest when arXiv rejects the query.
        """
        if max_results < 1:
            raise BadInputError(f"max_results must be >= 1, got {max_results}")
        key, description = query_key(
            query, since=since, until=until, categories=categories, max_results=max_results
        )
        cached = self.cache.get_query(key)
        if cached is not None:
            logger.info("arXiv cache hit: %s", description)
            return cached
        if self.offline:
            raise ArxivUnavailable(f"offline and no cached answer for arXiv query {query!r}")
        search = arxiv.Search(
            query=build_query(query, since=since, until=until, categories=categories),
            max_results=max_results,
            sort_by=arxiv.SortCriterion.SubmittedDate,
            sort_order=arxiv.SortOrder.Descending,
        )
        papers = self._run(search, page_size=min(self.settings.arxiv.page_size, max_results))
        self.cache.put_query(key, description, papers)
        return papers

    def fetch(self, ids: list[str]) -> dict[str, Paper]:
        """Return the papers with these ids, keyed by version-less id; unknown ids are absent.

        Cached papers cost no request. Raise BadInputError for a malformed id (before any
        request), ArxivUnavailable when the API is unreachable or offline with ids uncached.
        """
        wanted: list[str] = []
        for raw in ids:
            try:
                wanted.append(normalize_arxiv_id(raw))
            except ValueError as exc:
                raise BadInputError(str(exc)) from None
        wanted = list(dict.fromkeys(wanted))
        found = self.cache.get_papers(wanted)
        missing = [i for i in wanted if i not in found]
        if not missing:
            return found
        if self.offline:
            raise ArxivUnavailable(
                f"offline and {len(missing)} id(s) not cached: {', '.join(missing[:5])}"
            )
        page = self.settings.arxiv.page_size
        fetched: list[Paper] = []
        for start in range(0, len(missing), page):
            chunk = missing[start : start + page]
            search = arxiv.Search(id_list=chunk, max_results=len(chunk))
            fetched.extend(self._run(search, page_size=len(chunk)))
        self.cache.put_papers(fetched)
        asked = set(missing)
        found.update({p.arxiv_id: p for p in fetched if p.arxiv_id in asked})
        return found

    def _run(self, search: arxiv.Search, *, page_size: int) -> list[Paper]:
        client = _TimedRetryClient(self, self.settings.arxiv.base_url, page_size)
        papers: list[Paper] = []
        try:
            for result in client.results(search):
                try:
                    papers.append(paper_from_result(result))
                except ValueError as exc:
                    logger.warning("skipping arXiv entry: %s", exc)
        except arxiv.ArxivError as exc:  # raised by the package's paging itself
            raise ArxivUnavailable(f"arXiv API failed: {exc}") from exc
        return list({p.arxiv_id: p for p in papers}.values())

    def _get_feed(self, url: str, *, first_page: bool) -> _feed.ParsedFeed:
        """Fetch and parse one page, retrying transient failures with backoff and jitter."""
        cfg = self.settings.arxiv
        failed_at = _UNREACHABLE_SINCE.get(cfg.base_url)
        if failed_at is not None and self.clock() - failed_at < UNREACHABLE_HOLD_S:
            raise ArxivUnavailable(
                f"arXiv API unreachable (failed {self.clock() - failed_at:.0f} s ago; "
                f"not retrying for {UNREACHABLE_HOLD_S:.0f} s)"
            )
        attempts = cfg.max_retries + 1
        last_problem = ""
        for attempt in range(attempts):
            if attempt:
                self._backoff(attempt, last_problem)
            try:
                response = self._request(url)
            except requests.Timeout:
                last_problem = f"timed out after {cfg.timeout_s:g} s"
                continue
            except requests.ConnectionError as exc:
                last_problem = f"connection failed ({type(exc).__name__})"
                continue
            if response.status_code == 400:
                raise ArxivBadRequest(f"arXiv rejected the query: {_error_text(response)}")
            if response.status_code in _RETRYABLE_STATUS:
                last_problem = f"HTTP {response.status_code}"
                self._retry_after = _retry_after_s(response)
                continue
            if response.status_code != 200:
                raise ArxivUnavailable(f"arXiv API answered HTTP {response.status_code}")
            if not response.content.rstrip().endswith(b"</feed>"):
                # The package parses with recover=True, so a cut-off body would pass as a short
                # (and then cached) answer; treat it as the transient failure it is.
                last_problem = "truncated feed"
                continue
            feed = _feed.parse(response.content)
            if feed.malformed:
                last_problem = f"malformed feed ({feed.error})"
                continue
            if not feed.results and (not first_page or feed.header.total_results > 0):
                # The API's known glitch: a page inside the result set comes back empty.
                last_problem = "unexpectedly empty page"
                continue
            _UNREACHABLE_SINCE.pop(cfg.base_url, None)
            return feed
        _UNREACHABLE_SINCE[cfg.base_url] = self.clock()
        raise ArxivUnavailable(
            f"arXiv API unreachable after {attempts} attempt(s): {last_problem}"
        )

    def _request(self, url: str) -> requests.Response:
        """Send one GET, at least the configured spacing after the previous one ended."""
        base_url = self.settings.arxiv.base_url
        with _REQUEST_LOCK:
            spacing = self.settings.arxiv.effective_spacing_s
            last_end = _LAST_REQUEST_END.get(base_url)
            if last_end is not None:
                wait = last_end + spacing - self.clock()
                if wait > 0:
                    self.sleep(min(wait, spacing))  # min: a foreign clock cannot stall us
            logger.info("arXiv request: %s", url)
            try:
                self.requests_made += 1
                return self._session.get(url, timeout=self.settings.arxiv.timeout_s)
            finally:
                _LAST_REQUEST_END[base_url] = self.clock()

    def _backoff(self, attempt: int, problem: str) -> None:
        """Sleep before retry ``attempt``: base * 2**(attempt-1), plus up to 50% jitter."""
        base = max(self.settings.arxiv.effective_spacing_s, 0.05)
        delay = base * 2 ** (attempt - 1) * (1.0 + 0.5 * self._rng.random())
        if self._retry_after is not None:
            delay = max(delay, self._retry_after)  # the server said how long to wait
            self._retry_after = None
        delay = min(delay, _MAX_BACKOFF_S)
        logger.warning("arXiv %s; retry %d in %.2f s", problem, attempt, delay)
        self.sleep(delay)


def _retry_after_s(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return min(float(value), _MAX_BACKOFF_S) if value else None
    except ValueError:
        return None  # an HTTP-date form; the exponential backoff applies instead


def _error_text(response: requests.Response) -> str:
    """Pull the human message out of arXiv's Atom error feed (its entry's summary)."""
    # The package's parser drops the error entry (it has no dates), so read it directly.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, recover=True)
    try:
        root = etree.fromstring(response.content, parser=parser)
    except etree.XMLSyntaxError:
        root = None
    summary = root.findtext(f"{_ATOM}entry/{_ATOM}summary") if root is not None else None
    return " ".join(summary.split()) if summary else f"HTTP {response.status_code}"
