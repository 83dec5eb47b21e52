"""Throughput of the embedded vLLM server: 32 prompts x 64 tokens, concurrent vs one at a time.

Prints tokens/s for both and their ratio (the baseline is the sequential run, measured in the same
process against the same server). Usage: ``.venv/bin/python bench/llm_throughput.py [--n 32]``.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from core.settings import load_settings
from tools.llm import make_llm

TOPICS = ["memorization", "deduplication", "fine-tuning", "DPO", "GRPO", "retrieval",
          "benchmarks", "contamination"]


def _prompts(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Write a short paragraph about {TOPICS[i % len(TOPICS)]}"
              f" in machine learning (variant {i})."}] for i in range(n)]


def main() -> None:
    """Run both modes and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    llm = make_llm(load_settings())
    prompts = _prompts(args.n)
    # ignore_eos: every request generates exactly --tokens tokens, so both modes do equal work.
    kwargs = {"max_tokens": args.tokens, "extra_body": {"ignore_eos": True}}
    llm.chat(prompts[0], **kwargs)  # warm-up

    before = llm.usage.completion_tokens
    start = time.perf_counter()
    for messages in prompts:
        llm.chat(messages, **kwargs)
    sequential_s = time.perf_counter() - start
    sequential_tokens = llm.usage.completion_tokens - before

    before = llm.usage.completion_tokens
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.n) as pool:
        list(pool.map(lambda m: llm.chat(m, **kwargs), prompts))
    concurrent_s = time.perf_counter() - start
    concurrent_tokens = llm.usage.completion_tokens - before

    seq_rate = sequential_tokens / sequential_s
    con_rate = concurrent_tokens / concurrent_s
    print(f"model: {llm.model} at {llm.base_url}")
    print(f"one at a time: {sequential_tokens} tokens in {sequential_s:.1f} s "
          f"= {seq_rate:.1f} tok/s")
    print(f"concurrent:    {concurrent_tokens} tokens in {concurrent_s:.1f} s "
          f"= {con_rate:.1f} tok/s")
    print(f"ratio concurrent/sequential: {con_rate / seq_rate:.2f}x")


if __name__ == "__main__":
    main()
