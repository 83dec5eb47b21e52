"""The embedded vLLM server SIGKILLed in the middle of a report: the client restarts it and the
run finishes with every claim judged, nothing lost or duplicated.

The server here is one this test starts in its own tmp data directory (the shared test servers
are never touched); it reuses the repository's converted model folder.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from agent.nodes.context import ReportOptions
from core.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
HOSTILE = Path(__file__).resolve().parent / "hostile"
PROMPT = """Do fine-tuned models lean on repeated items?

- Fine-tuned language models score higher on repeated test items than on novel ones (2024).
- Deduplicating evaluation sets removes most apparent fine-tuning gains (2024).
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two cold vLLM starts on a loaded 2-core machine
def test_embedded_server_killed_mid_run_is_restarted(isolated_env: Path, tmp_path: Path) -> None:
    models = REPO / ".retest" / "models" / "smollm2-135m-instruct"
    if not (models / "config.json").is_file():
        pytest.skip("the converted SmolLM2 folder is absent (run `retest prepare-models`)")
    from agent.run import run_report
    from tools.vllm_server import EmbeddedServer

    settings = load_settings(offline=True, corpus=HOSTILE / "poisoned.jsonl",
                             data_dir=isolated_env, models_dir=REPO / ".retest" / "models",
                             server={"kv_cache_gib": 1})
    server = EmbeddedServer(settings, "smollm2-135m-instruct")
    state = isolated_env / "servers" / "smollm2-135m-instruct.json"
    killed: list[int] = []

    def kill_on_first_judgement(event: dict) -> None:
        if event["stage"] == "judge" and not killed:
            pid = json.loads(state.read_text())["pid"]
            os.killpg(pid, signal.SIGKILL)  # the vLLM server and its engine workers, at once
            killed.append(pid)

    try:
        server.ensure_running()
        outcome = run_report(PROMPT, settings, tmp_path / "out", on_event=kill_on_first_judgement,
                             options=ReportOptions(papers_per_claim=2, retest_limit=0))
        assert killed, "the run never judged, so the kill was never injected"
        restarted = json.loads(state.read_text())["pid"]
        assert restarted != killed[0]
        report = outcome.report
        assert report["degraded"] == [] and outcome.exit_code == 0, report["degraded"]
        pairs = [(c["id"], e["arxiv_id"]) for c in report["claims"] for e in c["evidence"]]
        assert len(pairs) == 4 and len(set(pairs)) == 4  # 2 claims x 2 papers, no duplicate
        print(f"\nkilled vLLM pid {killed[0]}; restarted as {restarted}; "
              f"{report['usage']['calls']} LLM calls")
    finally:
        server.stop()
