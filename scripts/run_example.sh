#!/usr/bin/env bash
# The main job: a re-test report on the project's own example prompt. Uses the shared arXiv
# corpus beside the checkout when present (offline), else the live arXiv API.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=../shared/data/arxiv/arxiv_cs_CL_LG_AI_2025-03_2026-07.jsonl.gz
prompt=${1:-$(ls examples/*.txt | head -n 1)}
if [ -f "$corpus" ]; then
  exec .venv/bin/retest report "$prompt" --corpus "$corpus" --offline --out out/example
else
  exec .venv/bin/retest report "$prompt" --out out/example
fi
