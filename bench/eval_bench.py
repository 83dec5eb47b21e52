"""Benchmark the eval runner against raw concurrent OpenAI calls on the same prompts and server.

Both sides send the same GSM8K prompts with the same settings (greedy, seeded, same max_tokens)
and the same concurrency to the embedded SmolLM2 vLLM server. The runner additionally scores each
reply, writes and fsyncs one results line per reply, and tracks resume keys. Rounds alternate
(raw, runner, runner, raw, ...: ABBA) so drift in machine load hits both; the median of each is
compared, and so is the client-side CPU time each spent (a load-independent view of the
runner's own cost, since a busy shared machine makes wall times noisy). Target: overhead under
10%.

    .venv/bin/python bench/eval_bench.py [--n 48] [--max-tokens 48] [--concurrency 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openai import OpenAI

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.settings import load_settings  # noqa: E402
from evals.datasets import load_gsm8k  # noqa: E402
from evals.runner import GenerationSettings, OpenAISampler, Task, run_eval  # noqa: E402
from evals.scoring import format_prompt  # noqa: E402
from evals.spec import shared_data_dir  # noqa: E402
from tools.vllm_server import EmbeddedServer  # noqa: E402

MODEL = "SmolLM2-135M-Instruct"


def raw_round(base_url: str, prompts: list[str], max_tokens: int,
              concurrency: int) -> tuple[float, float]:
    """Send ``prompts`` with plain openai calls in a thread pool; return wall and CPU time."""
    client = OpenAI(base_url=base_url, api_key="EMPTY", timeout=300, max_retries=0)

    def one(prompt: str) -> str:
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
            temperature=0.0, seed=0)
        return reply.choices[0].message.content or ""

    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, prompts))
    return time.perf_counter() - start, time.process_time() - cpu


def runner_round(base_url: str, tasks: list[Task], max_tokens: int,
                 concurrency: int) -> tuple[float, float]:
    """Run ``tasks`` through :func:`evals.runner.run_eval` into a fresh file; wall and CPU time."""
    sampler = OpenAISampler(MODEL, base_url, MODEL, api="chat",
                            gen=GenerationSettings(max_tokens=max_tokens, seed=0))
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        run_eval(tasks, [sampler], "numeric", Path(tmp) / "results.jsonl",
                 concurrency=concurrency, progress=False)
        return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    items = load_gsm8k(shared_data_dir() / "benchmarks" / "gsm8k" / "test.jsonl")[: args.n]
    tasks = [Task(item, item.id, "original", "novel") for item in items]
    prompts = [format_prompt(item, "numeric") for item in items]
    base_url = EmbeddedServer(load_settings(data_dir=REPO / ".retest"),
                              "smollm2-135m-instruct").ensure_running()
    print(f"server {base_url}; {len(prompts)} prompts, max_tokens {args.max_tokens}, "
          f"concurrency {args.concurrency}, {args.rounds} rounds each")
    raw_round(base_url, prompts[: args.concurrency], args.max_tokens, args.concurrency)  # warm
    raw_runs: list[tuple[float, float]] = []
    runner_runs: list[tuple[float, float]] = []
    for k in range(args.rounds):
        order = ("raw", "runner") if k % 2 == 0 else ("runner", "raw")
        for side in order:
            if side == "raw":
                raw_runs.append(raw_round(base_url, prompts, args.max_tokens, args.concurrency))
            else:
                runner_runs.append(runner_round(base_url, tasks, args.max_tokens,
                                                args.concurrency))
        print(f"round {k + 1} ({'/'.join(order)}): raw {raw_runs[-1][0]:.2f} s, "
              f"runner {runner_runs[-1][0]:.2f} s")
    raw = statistics.median(w for w, _ in raw_runs)
    runner = statistics.median(w for w, _ in runner_runs)
    raw_cpu = statistics.median(c for _, c in raw_runs)
    runner_cpu = statistics.median(c for _, c in runner_runs)
    overhead = runner / raw - 1
    print(f"median raw {raw:.2f} s ({len(prompts) / raw:.2f} req/s), median runner {runner:.2f} s"
          f" ({len(prompts) / runner:.2f} req/s)")
    print(f"client CPU per round: raw {raw_cpu:.2f} s, runner {runner_cpu:.2f} s "
          f"(runner's extra CPU = {100 * (runner_cpu - raw_cpu) / raw:+.1f}% of raw wall time)")
    print(f"runner/raw wall ratio {runner / raw:.3f}: overhead {100 * overhead:+.1f}% "
          f"(target < 10%: {'met' if overhead < 0.10 else 'NOT met'})")

if __name__ == "__main__":
    main()
