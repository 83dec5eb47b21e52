#!/usr/bin/env bash
# Run the whole test suite, setting up first when needed. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False
set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
# Exit code 5 means no test was collected: never let that pass as green.
if [ "$code" -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
# Stop the embedded servers this run started (they are recorded in .retest/servers).
.venv/bin/retest serve-llm --stop >/dev/null 2>&1 || true
.venv/bin/retest serve-llm --stop --model gemma3-270m >/dev/null 2>&1 || true
exit "$code"
