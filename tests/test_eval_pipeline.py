"""End to end: a tiny spec through the real embedded vLLM servers, and a run killed midway.

Both tests reach the shared embedded servers (SmolLM2-135M-Instruct as model_a, Gemma 3 270M as
model_b: unrelated families, so the evaluation is descriptive) by URL, so they never start or stop
a server of their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.settings import load_settings
from evals.pipeline import run_spec

REPO = Path(__file__).resolve().parents[1]


def _spec(folder: Path, smol_url: str, gemma_url: str, *, concurrency: int = 4) -> Path:
    """Write a quartz dedup spec (two-option items, log-likelihood scoring) pointing at URLs."""
    text = f"""
description = "tiny quartz dedup"
claim_kinds = ["memorization"]
seed = 3
scoring = "mc_loglik"
[dataset]
kind = "openai_evals"
path = "${{SHARED_DATA}}/benchmarks/openai_evals/quartz/samples.jsonl"
test_fraction = 0.2
[sample]
per_split = 5
[generation]
concurrency = {concurrency}
[[models]]
role = "model_a"
endpoint = "{smol_url}"
model = "SmolLM2-135M-Instruct"
api = "chat"
[[models]]
role = "model_b"
endpoint = "{gemma_url}"
model = "gemma-3-270m"
api = "completions"
"""
    path = folder / "tiny.toml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_tiny_spec_end_to_end(shared_data: Path, isolated_env: Path, llm_base_url: str,
                              gemma_base_url: str, tmp_path: Path) -> None:
    spec = _spec(tmp_path, llm_base_url, gemma_base_url)
    out = tmp_path / "out"
    summary = run_spec(spec, out, load_settings(), progress=False)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 20  # 5 repeated + 5 novel items, two models
    assert {r["model"] for r in records} == {"SmolLM2-135M-Instruct", "gemma-3-270m"}
    assert {r["split"] for r in records} == {"repeated", "novel"}
    for record in records:
        assert record["prediction"] in ("A", "B") or isinstance(record["prediction"], str)
        assert len(record["option_logprobs"]) == 2
    for model in ("SmolLM2-135M-Instruct", "gemma-3-270m"):
        for split in ("repeated", "novel"):
            cell = summary["accuracy"][model][split]
            assert cell["n"] == 5
            assert cell["accuracy"] == pytest.approx(
                sum(r["correct"] for r in records if r["model"] == model and r["split"] == split)
                / 5)
    assert summary["supports_claim"] in (True, False, None)
    assert summary["power_warnings"]  # five items per split cannot see a 10-point gap
    assert summary["supports_claim"] is None or summary["gap"]["ci"][0] > 0 \
        or summary["gap"]["ci"][1] < 0
    saved = json.loads((out / "summary.json").read_text())
    assert saved["supports_claim"] == summary["supports_claim"]
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "supports_claim" in (out / "summary.md").read_text()
    # Two unrelated families: described, never deciding, and the summary says so in one line.
    assert saved["decides"] is False
    assert saved["model_roles"] == {"SmolLM2-135M-Instruct": "model_a", "gemma-3-270m": "model_b"}
    assert "neither model was trained here" in saved["design"]
    assert "it does not decide a verdict" in (out / "summary.md").read_text()
    head = saved["headline"]
    assert head["effect"] == saved["gap"]["gap"] and head["n"] == 10
    assert head["name"].startswith("difference in differences")
    # A rerun asks the models nothing new and summarizes the same lines.
    again = run_spec(spec, out, load_settings(), progress=False)
    assert again["run"]["completed"] == 0 and again["run"]["skipped_done"] == 20
    assert again["accuracy"] == summary["accuracy"]


@pytest.mark.slow
def test_sigkill_midway_then_rerun_has_no_duplicate_and_no_missing_line(
        shared_data: Path, isolated_env: Path, llm_base_url: str, gemma_base_url: str,
        tmp_path: Path) -> None:
    spec = _spec(tmp_path, llm_base_url, gemma_base_url, concurrency=1)
    out = tmp_path / "out"
    results = out / "results.jsonl"
    cmd = [sys.executable, "-m", "agent.cli", "eval", str(spec), "--out", str(out), "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    lines_at_kill = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if results.exists():
                lines_at_kill = results.read_bytes().count(b"\n")
                if lines_at_kill >= 3:
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # our own child, by pid
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    assert 3 <= lines_at_kill < 20
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    lines = results.read_text().splitlines()
    keys = [(r["item_id"], r["model"], r["variant"]) for r in map(json.loads, lines)]
    assert len(keys) == len(set(keys)) == 20
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["skipped_done"] >= 3
    assert sum(cell["n"] for cells in summary["accuracy"].values()
               for cell in cells.values()) == 20
