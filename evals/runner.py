"""Run models over eval tasks through OpenAI-compatible servers (vLLM) and append results.

A :class:`Sampler` is as small as simple-evals': it turns one prompt into one completion (or, for
log-likelihood scoring, into one log-probability per option). :class:`OpenAISampler` talks to a
vLLM server: chat models through ``/v1/chat/completions``, base models (no chat template, such as
Gemma 3 270M) through ``/v1/completions``. Decoding is greedy and seeded unless the spec says
otherwise, and every generation setting is written into each result line.

:func:`run_eval` appends one JSON line per (item, model, variant) to ``results.jsonl`` as each
request completes (flushed and fsynced), so a crash or SIGKILL loses at most the requests in
flight; a rerun skips the keys already written. Requests go through the project's one transport
(:func:`tools.endpoint_pool.connect`): retried with backoff, a dead embedded server restarted by
the ``restart`` its creator passes in (``EmbeddedServer.ensure_running``), and a model served by
several servers spread over them with failover (:class:`tools.endpoint_pool.EndpointPool`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import openai
import requests
from openai import OpenAI
from tqdm import tqdm

from core.errors import ServiceError
from core.fsutil import WriteError
from core.settings import split_base_urls
from evals import scoring
from evals.items import Item
from tools.endpoint_pool import connect
from tools.transport import seed_field

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Task:
    """One item to put to every model: ``item`` as shown, keyed by its parent id and variant."""

    item: Item
    item_id: str
    variant: str
    split: str

    @property
    def pair_key(self) -> str:
        """Key that pairs the two models' answers to this task."""
        return f"{self.item_id}::{self.variant}"


@dataclass
class SampleResult:
    """What a sampler returns for one prompt."""

    text: str
    latency_s: float
    attempts: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    option_logprobs: list[float] | None = None


class Sampler(Protocol):
    """Turns prompts into completions; the one interface evals need from a model."""

    name: str

    def generate(self, prompt: str) -> SampleResult:
        """Return the model's completion of ``prompt``."""
        ...

    def option_logprobs(self, prompt: str, options: Sequence[str]) -> SampleResult:
        """Return the summed log-probability of each option as a continuation of ``prompt``."""
        ...

    def settings(self) -> dict[str, Any]:
        """Return every setting that shapes the output, for the results file."""
        ...


@dataclass
class GenerationSettings:
    """Decoding settings of a sampler (greedy and seeded by default)."""

    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    timeout_s: float = 300.0
    max_retries: int = 3


class OpenAISampler:
    """A model behind an OpenAI-compatible server (vLLM), with retries and server recovery."""

    def __init__(self, name: str, base_url: str | Sequence[str], served_model: str, *, api: str,
                 gen: GenerationSettings, api_key: str = "EMPTY",
                 restart: Callable[[], str] | None = None) -> None:
        """Talk to ``served_model`` at ``base_url`` (ending in ``/v1``).

        ``base_url`` may list several servers of the model (a list, or commas): requests are
        then spread over them with failover. ``api`` is ``"chat"`` or ``"completions"``.
        ``restart`` (for the embedded server, one URL) brings a dead server back and returns its
        possibly new base URL.
        """
        if api not in ("chat", "completions"):
            raise ValueError(f"api must be 'chat' or 'completions', not {api!r}")
        self.name = name
        self.served_model = served_model
        self.api = api
        self.gen = gen
        self.api_key = api_key
        # Options repeat across items (numbers, "up"/"down"): tokenize each text once.
        self._token_cache: dict[tuple[str, bool], list[int]] = {}
        urls = split_base_urls(base_url if isinstance(base_url, str) else list(base_url))
        self.endpoint = connect(urls, api_key=api_key, timeout_s=gen.timeout_s,
                                max_retries=gen.max_retries, restart=restart, name=name)

    @property
    def base_url(self) -> str:
        """The server's current base URL; it may move when the embedded server restarts.

        A model on several servers lists them all, comma-separated.
        """
        return self.endpoint.base_url

    def settings(self) -> dict[str, Any]:
        """Return the model, endpoint API and decoding settings."""
        return {"served_model": self.served_model, "api": self.api,
                "max_tokens": self.gen.max_tokens, "temperature": self.gen.temperature,
                "seed": self.gen.seed, "stop": list(self.gen.stop)}

    def generate(self, prompt: str) -> SampleResult:
        """Complete ``prompt`` (as the user's message for chat models)."""
        start = time.perf_counter()
        response, attempts = self.endpoint.call(lambda client: self._generate_once(client, prompt))
        if self.api == "chat":
            text = response.choices[0].message.content or ""
        else:
            text = response.choices[0].text or ""
        usage = response.usage
        return SampleResult(text=text, latency_s=time.perf_counter() - start, attempts=attempts,
                            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                            completion_tokens=getattr(usage, "completion_tokens", 0) or 0)

    def _generate_once(self, client: OpenAI, prompt: str) -> Any:
        common: dict[str, Any] = {"model": self.served_model, "max_tokens": self.gen.max_tokens,
                                  "temperature": self.gen.temperature,
                                  **seed_field(self.gen.temperature, self.gen.seed)}
        if self.gen.stop:
            common["stop"] = self.gen.stop
        if self.api == "chat":
            return client.chat.completions.create(
                messages=[{"role": "user", "content": prompt}], **common)
        return client.completions.create(prompt=prompt, **common)

    def option_logprobs(self, prompt: str, options: Sequence[str]) -> SampleResult:
        """Score each option's tokens after ``prompt`` in one request of token-id prompts."""
        start = time.perf_counter()

        def once(client: OpenAI) -> tuple[list[float], int]:
            context = self._context_ids(client, prompt)
            sep = "" if self.api == "chat" else " "  # a chat reply starts fresh
            option_ids = [self._tokenize(client, sep + opt.strip(), special=False)
                          for opt in options]
            prompts = scoring.loglik_token_prompts(context, option_ids)
            response = client.completions.create(
                model=self.served_model, prompt=prompts, max_tokens=0, echo=True, logprobs=1,
                temperature=0.0, seed=self.gen.seed)
            choices = sorted(response.choices, key=lambda c: c.index)
            scores = [scoring.option_logprob(c.logprobs.token_logprobs, len(ids))
                      for c, ids in zip(choices, option_ids, strict=True)]
            return scores, sum(len(p) for p in prompts)

        (scores, n_tokens), attempts = self.endpoint.call(once)
        picked = scoring.best_option(scores)
        return SampleResult(text=options[picked], latency_s=time.perf_counter() - start,
                            attempts=attempts, prompt_tokens=n_tokens, option_logprobs=scores)

    def _context_ids(self, client: OpenAI, prompt: str) -> list[int]:
        if self.api == "chat":
            payload: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}],
                                       "add_generation_prompt": True}
        else:
            payload = {"prompt": prompt, "add_special_tokens": True}
        return self._post_tokenize(client, payload)

    def _tokenize(self, client: OpenAI, text: str, *, special: bool) -> list[int]:
        key = (text, special)
        cached = self._token_cache.get(key)
        if cached is None:
            cached = self._post_tokenize(client, {"prompt": text, "add_special_tokens": special})
            self._token_cache[key] = cached  # a race only tokenizes twice, never wrongly
        return cached

    def _post_tokenize(self, client: OpenAI, payload: dict[str, Any]) -> list[int]:
        # Called inside a request that the transport already retries: no retry loop of its own.
        # The root comes from the client the request was handed, so tokenizing goes to the same
        # server as the scoring request (a pool may have moved it off a dead one).
        root = str(client.base_url).rstrip("/").removesuffix("/v1")
        reply = requests.post(f"{root}/tokenize",
                              json={"model": self.served_model, **payload},
                              timeout=self.gen.timeout_s)
        if reply.status_code >= 500:
            raise requests.ConnectionError(f"/tokenize answered HTTP {reply.status_code}")
        reply.raise_for_status()
        return list(reply.json()["tokens"])


def result_key(record: dict[str, Any]) -> tuple[str, str, str]:
    """Return the key that identifies a result line: (item_id, model, variant)."""
    return (str(record["item_id"]), str(record["model"]), str(record["variant"]))


def read_results(path: Path) -> list[dict[str, Any]]:
    """Read the complete lines of ``results.jsonl``, repairing a line torn by a kill.

    A process killed mid-write can leave a last line without its newline; it is cut off (and
    logged) so the next append starts on a fresh line. Duplicate keys keep the first line.
    """
    if not path.exists():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        keep = raw.rfind(b"\n") + 1
        log.warning("%s: dropping a torn last line (%d bytes)", path, len(raw) - keep)
        with path.open("r+b") as handle:
            handle.truncate(keep)
        raw = raw[:keep]
    records, seen = [], set()
    for number, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            key = result_key(record)
        except (ValueError, KeyError, TypeError):
            log.warning("%s:%d: skipping an unreadable line", path, number)
            continue
        if key not in seen:
            seen.add(key)
            records.append(record)
    return records


class ResultWriter:
    """Append result lines durably: one write and fsync per line, never a partial line.

    A write the disk cannot take (full, read-only) is cut back to the end of the last whole
    line and raises WriteError naming the file, so a rerun after freeing space resumes from
    intact lines.
    """

    def __init__(self, path: Path) -> None:
        """Open ``path`` for appending (creating its folder)."""
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WriteError(f"cannot write {path}: {exc.strerror}") from exc

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line and make it durable before returning."""
        line = memoryview((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            while line:  # unbuffered: a short write is retried, its error seen here
                line = line[os.write(self._fd, line):]
            os.fsync(self._fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise WriteError(f"cannot write {self.path}: {exc.strerror}; the lines before it "
                             f"are kept, rerun to resume") from exc

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


def run_task(task: Task, sampler: Sampler, method: str) -> dict[str, Any]:
    """Put one task to one model and score it; return the result line."""
    prompt = scoring.format_prompt(task.item, method)
    picked: int | None
    if method == "mc_loglik":
        result = sampler.option_logprobs(prompt, task.item.choices)
        picked = scoring.best_option(result.option_logprobs or [])
        correct = picked == scoring.gold_index(task.item)
    else:
        result = sampler.generate(prompt)
        correct = scoring.score_text(method, result.text, task.item)
        picked = (scoring.extract_choice_letter(result.text, len(task.item.choices))
                  if method == "mc_letter" else None)
    record: dict[str, Any] = {
        "item_id": task.item_id, "model": sampler.name, "variant": task.variant,
        "split": task.split, "prediction": result.text, "correct": bool(correct),
        "gold": task.item.answer, "method": method, "latency_s": round(result.latency_s, 4),
        "attempts": result.attempts, "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens, "generation": sampler.settings(),
        "finished_at": time.time(),
    }
    if picked is not None:
        record["picked"] = picked
    if result.option_logprobs is not None:
        record["option_logprobs"] = [round(x, 5) for x in result.option_logprobs]
    return record


@dataclass
class RunStats:
    """What a :func:`run_eval` call did."""

    done_before: int = 0
    completed: int = 0
    failed: int = 0
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def run_eval(tasks: Sequence[Task], samplers: Iterable[Sampler], method: str,
             results_path: Path, *, concurrency: int = 8,
             progress: bool = True) -> RunStats:
    """Run every task on every sampler, appending one line per (item, model, variant).

    Lines already in ``results_path`` are skipped, so a rerun resumes. Models run one after the
    other (on a small machine two servers only fight for the same cores), each with up to
    ``concurrency`` requests in flight so vLLM can batch them. A task that still fails after its
    retries is left unwritten (a rerun tries it again); when any failed, ServiceError is raised
    after the rest finished.
    """
    stats = RunStats()
    start = time.perf_counter()
    done = {result_key(r) for r in read_results(results_path)}
    writer = ResultWriter(results_path)
    try:
        for sampler in samplers:
            pending = [t for t in tasks if (t.item_id, sampler.name, t.variant) not in done]
            stats.done_before += len(tasks) - len(pending)
            if not pending:
                continue
            _run_one_model(pending, sampler, method, writer, concurrency, progress, stats)
    finally:
        writer.close()
        stats.wall_s = time.perf_counter() - start
    if stats.failed:
        raise ServiceError(f"{stats.failed} requests failed (first: {stats.errors[0]}); "
                           f"rerun the same command to retry them")
    return stats


def _run_one_model(pending: Sequence[Task], sampler: Sampler, method: str,
                   writer: ResultWriter, concurrency: int, progress: bool,
                   stats: RunStats) -> None:
    bar = tqdm(total=len(pending), desc=sampler.name, unit="req", disable=not progress,
               leave=False)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures: dict[Future[dict[str, Any]], Task] = {
            pool.submit(run_task, task, sampler, method): task for task in pending}
        for future in as_completed(futures):
            task = futures[future]
            try:
                record = future.result()
            except (ServiceError, openai.APIError, requests.RequestException, ValueError) as exc:
                # Not transient (retries spent, a 4xx, an unscorable reply): leave it unwritten.
                stats.failed += 1
                stats.errors.append(f"{task.item_id}/{task.variant}: {exc}")
                log.error("%s on %s/%s: %s", sampler.name, task.item_id, task.variant, exc)
            else:
                try:
                    writer.write(record)  # only the main thread writes: lines never interleave
                except WriteError:
                    # Nothing more can be kept: do not spend the model on the requests queued.
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
                stats.completed += 1
            bar.update(1)
    bar.close()
