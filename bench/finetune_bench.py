"""Training throughput of the fine-tuning recipes: tokens/s of LoRA SFT, full SFT and LoRA DPO.

Runs :func:`evals.recipes.finetune.finetune` on the same synthetic arithmetic items in each mode
(DPO's rejected replies are perturbed answers) and prints training tokens/s of each, with the ratios
LoRA / full SFT and DPO / LoRA SFT measured in the same run. Not a timed test; numbers depend on
the machine (and, on a shared machine, on its load).

    .venv/bin/python bench/finetune_bench.py --steps 6 --batch-size 4 [--modes lora,full,dpo]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from core.settings import load_settings
from evals.items import Item
from evals.recipes import contamination as cont
from evals.recipes.finetune import FinetuneParams, finetune

REPO = Path(__file__).resolve().parents[1]


def _items(n: int) -> list[Item]:
    return [Item(f"b{i}", f"What is {i + 11} times {i % 7 + 3}?", str((i + 11) * (i % 7 + 3)))
            for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--modes", default="lora,full,dpo", help="comma list of lora,full,dpo")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = load_settings(data_dir=REPO / ".retest")
    items = _items(args.items)
    sft_rows = cont.sft_rows(items, "numeric")
    dpo_rows, _ = cont.dpo_rows(items, "numeric", seed=0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            params = FinetuneParams(max_steps=args.steps, batch_size=args.batch_size,
                                    method="dpo" if mode == "dpo" else "sft",
                                    lora=mode != "full", learning_rate=5e-5 if mode == "full"
                                    else 2e-4 if mode == "dpo" else 1e-3, max_length=96)
            rows = dpo_rows if mode == "dpo" else sft_rows
            start = time.perf_counter()
            run = finetune(rows, params, Path(tmp) / mode, settings=settings, progress=False)
            m = run.manifest
            results[mode] = {"tokens": m["train_tokens"], "train_s": m["train_s"],
                             "tokens_per_s": m["train_tokens_per_s"], "device": m["device"],
                             "loss": [m["first_loss"], m["last_loss"]],
                             "total_s_with_merge_and_save": round(time.perf_counter() - start, 1)}
            print(mode, json.dumps(results[mode]), flush=True)
    if "lora" in results and "full" in results:
        ratio = results["lora"]["tokens_per_s"] / results["full"]["tokens_per_s"]
        print(f"LoRA / full-weight training tokens/s: {ratio:.2f}x")
    if "lora" in results and "dpo" in results:
        # DPO's tokens count chosen and rejected replies; each step also runs the reference model.
        ratio = results["dpo"]["tokens_per_s"] / results["lora"]["tokens_per_s"]
        print(f"DPO / SFT (both LoRA) training tokens/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
