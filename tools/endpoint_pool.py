"""Several OpenAI-compatible servers of one model behind one transport: spread and fail over.

When ``llm.base_url`` lists several URLs (or an eval model's ``endpoint`` does), :func:`connect`
returns an :class:`EndpointPool` instead of a single :class:`tools.transport.Endpoint`. The pool
offers the same :class:`tools.transport.Transport` interface, so :class:`tools.llm.LLMClient` and
:class:`evals.runner.OpenAISampler` work over either unchanged.

Contract of :meth:`EndpointPool.call` (and :meth:`EndpointPool.post_root`):

- each request goes to the answering server with the fewest requests in flight (ties in turn),
  so concurrent callers (the report's judge tasks run in threads) spread over all servers;
- a request that fails transiently (connection refused or reset, timeout, HTTP 5xx or 429: the
  errors :meth:`Endpoint.call` retries) marks its server down for ``cooldown_s`` and is sent again,
  at once, to another server; a request is never sent again once a server answered it;
- a request the server refuses (HTTP 4xx: the request itself is bad) is not failed over: it
  raises as it would from one server;
- when every server is down or has failed this request, the pool waits (doubling backoff) and
  tries them all again, up to ``max_retries`` times, then raises one ServiceError line naming
  each server's last error.

A down server is tried again after its cool-down; if it is still dead that costs one refused
connection per ``cooldown_s``, then the request moves on. The pool never restarts a server: a
restart belongs to the embedded server, which is always alone (one URL).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import openai
from openai import OpenAI

from core.errors import BadInputError, ServiceError
from tools.transport import Endpoint, Transport, backoff_s

log = logging.getLogger(__name__)

T = TypeVar("T")

# Long enough that a dead server costs one refused connection per half minute, short enough
# that a server back from a restart gets work again soon.
DEFAULT_COOLDOWN_S = 30.0


@dataclass
class _Member:
    endpoint: Endpoint
    in_flight: int = 0
    down_until: float = 0.0  # clock time before which the pool sends it nothing new
    last_error: str = ""


class EndpointPool:
    """Several servers of one model; see the module docstring for the contract. Thread-safe."""

    def __init__(self, endpoints: Sequence[Endpoint], *, max_retries: int = 3,
                 backoff_base_s: float = 1.0, cooldown_s: float = DEFAULT_COOLDOWN_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Spread over ``endpoints`` (two or more, each built with ``max_retries=0``, no restart).

        ``max_retries`` is how many times the pool waits and tries every server again once all
        have failed a request. Raise ValueError for fewer than two endpoints or for endpoints
        that retry or restart on their own (their retries would hold a request on a dead server
        instead of moving it).
        """
        if len(endpoints) < 2:
            raise ValueError("a pool needs at least two endpoints; use the Endpoint itself")
        if any(e.max_retries or e.restartable for e in endpoints):
            raise ValueError("pool members must not retry or restart: the pool does")
        self._members = [_Member(e) for e in endpoints]
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._turn = 0  # where the next tie-break starts, so equal servers take turns

    @classmethod
    def of(cls, urls: Sequence[str], *, api_key: str = "EMPTY", timeout_s: float = 60.0,
           max_retries: int = 3, name: str = "LLM server",
           cooldown_s: float = DEFAULT_COOLDOWN_S) -> EndpointPool:
        """Build a pool of one Endpoint per URL in ``urls`` (two or more), all with one key."""
        members = [Endpoint(url, api_key=api_key, timeout_s=timeout_s, max_retries=0, name=name)
                   for url in urls]
        return cls(members, max_retries=max_retries, cooldown_s=cooldown_s)

    @property
    def endpoints(self) -> list[Endpoint]:
        """The member endpoints, in the configured order."""
        return [m.endpoint for m in self._members]

    @property
    def base_url(self) -> str:
        """Every member's base URL, comma-separated (for messages; requests pick one)."""
        return ", ".join(m.endpoint.base_url for m in self._members)

    @property
    def root_url(self) -> str:
        """Every member's server root, comma-separated (for messages)."""
        return ", ".join(m.endpoint.root_url for m in self._members)

    @property
    def restartable(self) -> bool:
        """Always False: the pool moves requests to another server, it restarts none."""
        return False

    @property
    def client(self) -> OpenAI:
        """The client of the server the next request would go to (for streaming, no failover)."""
        with self._lock:
            index = self._choose(set(), probe=True)
        return self._members[index or 0].endpoint.client

    def down(self) -> list[str]:
        """Return the base URLs of the servers now in their cool-down."""
        with self._lock:
            now = self._clock()
            return [m.endpoint.base_url for m in self._members if m.down_until > now]

    def call(self, request: Callable[[OpenAI], T]) -> tuple[T, int]:
        """Run ``request(client)`` on one server, failing over; return the result and attempts.

        ``attempts`` counts every server tried, so 2 means one failover.
        """
        return self._run(lambda endpoint: endpoint.call(request)[0])

    def post_root(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload`` to ``<root><path>`` of one server, failing over; return the JSON."""
        return self._run(lambda endpoint: endpoint.post_root(path, payload))[0]

    def served_model(self) -> str:
        """Return the model the servers serve (each one's first listed model), checked equal.

        A server that does not answer is marked down and skipped (the run starts on the
        others). Raise ServiceError when none answers or one lists no model, and BadInputError
        naming each server's model when they serve different ones.
        """
        found: dict[str, str] = {}
        for index, member in enumerate(self._members):
            url = member.endpoint.base_url
            try:
                models, _ = member.endpoint.call(lambda client: client.models.list().data)
            except ServiceError as exc:
                self._mark_down(index, exc)
                continue
            except openai.OpenAIError as exc:
                raise ServiceError(f"cannot list models at {url}: {exc}") from None
            if not models:
                raise ServiceError(f"{url} serves no model; set RETEST_LLM_MODEL")
            found[url] = models[0].id
        if not found:
            raise ServiceError(self._all_failed(len(self._members)))
        if len(set(found.values())) > 1:
            listed = ", ".join(f"{url} serves {model}" for url, model in found.items())
            raise BadInputError(f"the LLM servers serve different models ({listed}); list "
                                "servers of one model in llm.base_url, or set llm.model")
        return next(iter(found.values()))

    def _run(self, op: Callable[[Endpoint], T]) -> tuple[T, int]:
        tried: set[int] = set()
        attempts = waits = 0
        probe = False  # after a wait, servers in their cool-down are tried too
        while True:
            with self._lock:
                index = self._choose(tried, probe)
                if index is not None:
                    self._members[index].in_flight += 1
                    self._turn = (index + 1) % len(self._members)
            if index is None:
                if waits >= self.max_retries:
                    raise ServiceError(self._all_failed(attempts))
                waits += 1
                time.sleep(backoff_s(waits, self.backoff_base_s))
                tried.clear()
                probe = True
                continue
            attempts += 1
            try:
                return op(self._members[index].endpoint), attempts
            except ServiceError as exc:
                # Endpoint.call turns only transient failures into ServiceError (it has no
                # retries of its own here); a 4xx propagates untouched and is not failed over.
                self._mark_down(index, exc)
                tried.add(index)
            finally:
                with self._lock:
                    self._members[index].in_flight -= 1

    def _choose(self, tried: set[int], probe: bool) -> int | None:
        """Return the index of the server for the next try, or None (call with the lock held).

        Answering servers first, then the fewest requests in flight, then turn order.
        """
        now = self._clock()
        n = len(self._members)
        candidates = [i for i in range(n) if i not in tried
                      and (probe or self._members[i].down_until <= now)]
        if not candidates:
            return None
        return min(candidates, key=lambda i: (self._members[i].down_until > now,
                                              self._members[i].in_flight, (i - self._turn) % n))

    def _mark_down(self, index: int, exc: ServiceError) -> None:
        member = self._members[index]
        with self._lock:
            now = self._clock()
            was_up = member.down_until <= now
            member.down_until = now + self.cooldown_s
            member.last_error = " ".join(str(exc).split())  # one line, whatever the server said
        if was_up:
            log.warning("%s is down (%s); its requests go to the other servers for %.0f s",
                        member.endpoint.base_url, member.last_error, self.cooldown_s)

    def _all_failed(self, attempts: int) -> str:
        with self._lock:
            details = "; ".join(m.last_error or f"{m.endpoint.base_url}: not tried"
                                for m in self._members)
        return (f"all {len(self._members)} LLM servers failed ({attempts} attempts, "
                f"{self.max_retries} retries): {details}")


def connect(urls: Sequence[str], *, api_key: str = "EMPTY", timeout_s: float = 60.0,
            max_retries: int = 3, restart: Callable[[], str] | None = None,
            name: str = "LLM server", cooldown_s: float = DEFAULT_COOLDOWN_S) -> Transport:
    """Return the transport to ``urls``: an Endpoint for one URL, an EndpointPool for several.

    The one place that decides how a client reaches its server(s). ``restart`` (the embedded
    server's) is only allowed with one URL. Raise ValueError for no URL.
    """
    if not urls:
        raise ValueError("no server URL to connect to")
    if len(urls) == 1:
        return Endpoint(urls[0], api_key=api_key, timeout_s=timeout_s, max_retries=max_retries,
                        restart=restart, name=name)
    if restart is not None:
        raise ValueError("only the embedded server (one URL) is restarted")
    return EndpointPool.of(urls, api_key=api_key, timeout_s=timeout_s, max_retries=max_retries,
                           name=name, cooldown_s=cooldown_s)
