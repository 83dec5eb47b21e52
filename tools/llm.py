"""The one LLM factory and the structured-output helper.

Every node, command and app page gets its chat model from :func:`make_llm`; none builds an
``openai`` client of its own. The client speaks to any OpenAI-compatible server: the embedded
vLLM server (started on demand when ``llm.base_url`` is empty) or the configured endpoint(s).
Every request goes through a :class:`tools.transport.Transport`: one
:class:`tools.transport.Endpoint` (retries, backoff, and a restart that only the embedded server's
client is given), or, when ``llm.base_url`` lists several servers, an
:class:`tools.endpoint_pool.EndpointPool` that spreads requests over them and fails over.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai
import requests
from openai import OpenAI
from pydantic import BaseModel, ValidationError

from core.errors import ServiceError
from core.settings import Settings
from tools.endpoint_pool import EndpointPool
from tools.server_lifecycle import Purpose
from tools.transport import Endpoint, Transport, seed_field

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
Message = dict[str, str]

class StructuredOutputError(ServiceError):
    """The model did not produce JSON matching the schema within the allowed attempts."""


@dataclass
class TokenUsage:
    """Tokens spent by one client, for the report's cost line. Thread-safe."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, usage: Any) -> None:
        """Count one response's ``usage`` block (missing fields count as zero)."""
        with self._lock:
            self.calls += 1
            if usage is not None:
                self.prompt_tokens += getattr(usage, "prompt_tokens", 0) or 0
                self.completion_tokens += getattr(usage, "completion_tokens", 0) or 0

    def as_dict(self) -> dict[str, int]:
        """Plain numbers for report.json."""
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


class LLMClient:
    """A chat model behind an OpenAI-compatible endpoint, with usage counting and JSON helpers."""

    def __init__(self, endpoint: Transport, model: str, *, temperature: float = 0.0,
                 seed: int = 0) -> None:
        """Talk to ``model`` through ``endpoint`` (which owns retries, failover, any restart)."""
        self.endpoint = endpoint
        self.model = model
        self.temperature = temperature
        self.seed = seed
        self.usage = TokenUsage()

    @property
    def client(self) -> OpenAI:
        """The current ``openai`` client (replaced when the embedded server moves)."""
        return self.endpoint.client

    @property
    def base_url(self) -> str:
        """The server's current base URL, ending in ``/v1`` (a pool lists all its servers)."""
        return self.endpoint.base_url

    def chat(self, messages: list[Message], *, max_tokens: int = 512, **extra: Any) -> str:
        """Return the assistant's reply text to ``messages`` (greedy and seeded by default)."""
        response = self._create(messages, max_tokens=max_tokens, **extra)
        return response.choices[0].message.content or ""

    def stream_chat(self, messages: list[Message], *, max_tokens: int = 512) -> Iterator[str]:
        """Yield the reply in pieces as the server produces them."""
        stream = self.client.chat.completions.create(
            model=self.model, messages=messages, max_tokens=max_tokens,  # type: ignore[arg-type]
            temperature=self.temperature, stream=True,
            **seed_field(self.temperature, self.seed),
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if chunk.usage is not None:
                self.usage.add(chunk.usage)
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    def complete_json(self, messages: list[Message], schema: type[ModelT], *,
                      max_tokens: int = 512, attempts: int = 3) -> ModelT:
        """Ask for JSON constrained by ``schema`` (vLLM guided decoding) and validate it.

        Retries up to ``attempts`` times when the reply is not valid JSON for the schema; a reply
        cut off at the token limit is retried with twice the budget (small models ramble inside
        strings; give string fields a ``max_length`` so the grammar bounds them). Raises
        StructuredOutputError naming the schema when every attempt fails.
        """
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema(),
                            "strict": True},
        }
        last_error = ""
        budget = max_tokens
        for attempt in range(1, attempts + 1):
            response = self._create(messages, max_tokens=budget,
                                    response_format=response_format, seed=self.seed + attempt - 1)
            choice = response.choices[0]
            text = choice.message.content or ""
            if choice.finish_reason == "length":
                budget *= 2
            try:
                return schema.model_validate(json.loads(text))
            except (json.JSONDecodeError, ValidationError) as exc:
                last_error = str(exc).splitlines()[0]
                log.warning("attempt %d: %s reply did not validate: %s", attempt,
                            schema.__name__, last_error)
        raise StructuredOutputError(
            f"model {self.model} gave no valid {schema.__name__} in {attempts} attempts: "
            f"{last_error}")

    def tokenize(self, *, messages: list[Message] | None = None, text: str = "",
                 special: bool = False) -> list[int]:
        """Return the server's token ids for chat ``messages`` or for ``text``.

        ``messages`` are rendered by the model's chat template with the assistant turn opened;
        ``text`` gets special tokens (BOS) only when ``special``. Uses vLLM's ``/tokenize``;
        raises ServiceError when the server has none or refuses (no chat template).
        """
        body: dict[str, Any] = {"model": self.model}
        if messages is not None:
            body |= {"messages": messages, "add_generation_prompt": True}
        else:
            body |= {"prompt": text, "add_special_tokens": special}
        try:
            return [int(t) for t in self.endpoint.post_root("/tokenize", body)["tokens"]]
        except (requests.HTTPError, KeyError, TypeError, ValueError) as exc:
            raise ServiceError(f"cannot tokenize at {self.endpoint.root_url}: {exc}") from None

    def next_token_logprobs(self, prompts: list[list[int]], *, top: int = 20,
                            batch: int = 8) -> list[dict[int, float]]:
        """Return, per token-id prompt, the ``top`` most likely next tokens' log-probs by id.

        One forward pass per prompt and no generation beyond one token; ``batch`` prompts go in
        one completions request. (Prompt log-probs would score longer continuations exactly, but
        cost a full-vocabulary softmax at every prompt position: far slower on CPUs.)
        """
        out: list[dict[int, float]] = []
        for first in range(0, len(prompts), batch):
            chunk = prompts[first:first + batch]
            def request(client: OpenAI, chunk: list[list[int]] = chunk) -> Any:
                return client.completions.create(
                    model=self.model, prompt=chunk, max_tokens=1, temperature=0.0,
                    logprobs=top, extra_body={"return_tokens_as_token_ids": True})

            try:
                response, _ = self.endpoint.call(request)
            except openai.BadRequestError as exc:
                raise ServiceError(f"LLM server at {self.base_url} refused: {exc}") from None
            self.usage.add(response.usage)
            for choice in sorted(response.choices, key=lambda c: c.index):
                tops = (choice.logprobs.top_logprobs or [{}])[0] if choice.logprobs else {}
                out.append({int(k.rsplit(":", 1)[-1]): float(v) for k, v in tops.items()})
        return out

    def _create(self, messages: list[Message], *, max_tokens: int, **extra: Any) -> Any:
        extra.setdefault("seed", self.seed)
        if self.temperature > 0:
            extra.pop("seed")  # see tools.transport.seed_field

        def request(client: OpenAI) -> Any:
            return client.chat.completions.create(
                model=self.model, messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens, temperature=self.temperature, **extra)

        response, _ = self.endpoint.call(request)
        self.usage.add(response.usage)
        return response


def make_llm(settings: Settings, *, model: str | None = None,
             server_purpose: Purpose = "implicit") -> LLMClient:
    """Build the project's chat client from settings.

    With ``llm.base_url`` empty, start (or reuse) the embedded vLLM server and talk to it; a
    crashed embedded server is restarted when a call fails. Otherwise use the configured endpoint
    and model as given (never restarted, never redirected); ``model`` overrides the configured
    model name. With several URLs the client spreads its requests over them and fails over when
    one dies (:class:`tools.endpoint_pool.EndpointPool`); without a model name they must all
    serve the same model (BadInputError otherwise). ``server_purpose`` "detached" (the app) keeps
    the embedded server until it idles instead of stopping it when this process exits.
    """
    llm = settings.llm
    urls = llm.base_urls()
    key = llm.api_key.get_secret_value()
    if len(urls) > 1:
        pool = EndpointPool.of(urls, api_key=key, timeout_s=llm.timeout_s,
                               max_retries=llm.max_retries)
        served = model or llm.model or pool.served_model()
        return LLMClient(pool, served, temperature=llm.temperature, seed=llm.seed)
    restart = None
    if urls:
        base_url, served = urls[0], model or llm.model
        if not served:
            served = _first_served_model(base_url, key, llm.timeout_s)
    else:
        from tools.vllm_server import EmbeddedServer

        server = EmbeddedServer(settings, model or settings.server.model)
        base_url = server.ensure_running(server_purpose)
        served = server.served_name
        restart = functools.partial(server.ensure_running, server_purpose)
    endpoint = Endpoint(base_url, api_key=key, timeout_s=llm.timeout_s,
                        max_retries=llm.max_retries, restart=restart,
                        name=f"LLM server ({served})")
    return LLMClient(endpoint, served, temperature=llm.temperature, seed=llm.seed)


def _first_served_model(base_url: str, api_key: str, timeout_s: float) -> str:
    """Ask an endpoint which model it serves (vLLM serves one per server)."""
    client = OpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout_s,
                    max_retries=1)
    try:
        models = client.models.list().data
    except openai.OpenAIError as exc:
        raise ServiceError(f"cannot list models at {base_url}: {exc}") from None
    if not models:
        raise ServiceError(f"{base_url} serves no model; set RETEST_LLM_MODEL")
    return models[0].id
