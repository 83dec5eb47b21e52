"""Two real vLLM servers behind ``RETEST_LLM_BASE_URL``, one SIGKILLed in the middle of a report.

The test starts two embedded SmolLM2-135M servers exactly as the project starts its own
(:class:`tools.vllm_server.EmbeddedServer`, each in its own tmp data directory, on its own free
port, with a 1 GiB KV cache), runs ``retest report --offline`` on the small hostile fixture
(tests/report_harness.py) with both URLs, and kills the first server's whole process group once
the first judgement is printed. The report must finish (exit 0, nothing degraded) with every
(claim, paper) pair judged exactly once, and the surviving server must have answered requests
after the kill. Both servers are stopped by pid at the end, also when the test fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from report_harness import cli_env, report_args

from core.errors import ServiceError
from core.settings import load_settings
from tools.server_lifecycle import request_count
from tools.vllm_server import EmbeddedServer

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / ".retest" / "models"
JUDGED = re.compile(r"^\[judge\] (C\d+) x (\S+): ")
# Two vLLM servers busy on two cores can take seconds to render /metrics; request_count's 3 s
# default read a busy survivor as unreachable (None) once in three full runs.
METRICS_TIMEOUT_S = 30.0


def served(url: str) -> float | None:
    """The requests ``url``'s server has answered (None only when it truly does not answer)."""
    return request_count(url.removesuffix("/v1"), timeout_s=METRICS_TIMEOUT_S)


@pytest.fixture()
def two_servers(tmp_path: Path) -> Iterator[list[tuple[EmbeddedServer, str]]]:
    """Start two SmolLM2 vLLM servers in parallel; stop both by their recorded pids at the end."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed in this environment")
    if not (MODELS / "smollm2-135m-instruct" / "config.json").is_file():
        pytest.skip("the converted SmolLM2 folder is absent (run `retest prepare-models`)")
    servers = [EmbeddedServer(load_settings(data_dir=tmp_path / f"server-{name}",
                                            models_dir=MODELS, server={"kv_cache_gib": 1}),
                              "smollm2-135m-instruct") for name in ("a", "b")]
    try:
        with ThreadPoolExecutor(max_workers=2) as starting:
            urls = list(starting.map(lambda s: s.ensure_running(), servers))
    except ServiceError as exc:
        for server in servers:
            server.stop()
        pytest.skip(f"two vLLM servers cannot start here: {exc}")
    try:
        yield list(zip(servers, urls, strict=True))
    finally:
        for server in servers:
            server.stop()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_report_finishes_when_one_of_two_servers_is_killed(
        isolated_env: Path, tmp_path: Path, two_servers: list[tuple[EmbeddedServer, str]]) -> None:
    (victim, victim_url), (survivor, survivor_url) = two_servers
    victim_pid = victim.running().pid  # type: ignore[union-attr]
    env = cli_env(isolated_env) | {"PYTHONPATH": str(REPO),
                                   "RETEST_LLM_BASE_URL": f"{victim_url},{survivor_url}"}
    out = tmp_path / "out"
    started = time.monotonic()
    proc = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "agent.cli", *report_args(out)], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    at_kill: dict[str, float | None] = {}
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line.rstrip("\n"))
        if not at_kill and JUDGED.match(line):
            at_kill = {"victim": served(victim_url), "survivor": served(survivor_url)}
            os.killpg(victim_pid, signal.SIGKILL)  # the server and its engine, at once
    code = proc.wait(timeout=60)
    report_s = time.monotonic() - started
    survivor_after = served(survivor_url)
    stderr_tail = "\n".join(lines[-15:])

    assert at_kill, f"no judgement was printed, so the kill was never injected:\n{stderr_tail}"
    assert code == 0, stderr_tail
    assert victim.running() is None  # it stayed dead: nothing restarted it
    report = json.loads((out / "report.json").read_text())
    assert report["degraded"] == [], report["degraded"]
    pairs = [(c["id"], e["arxiv_id"]) for c in report["claims"] for e in c["evidence"]]
    judged = Counter(m.groups() for m in map(JUDGED.match, lines) if m)
    assert len(pairs) >= 4 and set(pairs) == set(judged), (pairs, judged)
    assert len(set(pairs)) == len(pairs) and set(judged.values()) == {1}  # each judged once
    assert not [e for c in report["claims"] for e in c["evidence"]
                if e["summary"].startswith("Not judged")]
    # Both took work before the kill (the pool spread it); requests then found the victim dead,
    # marked it down (tools.endpoint_pool's warning) and the survivor carried on alone.
    assert (at_kill["victim"] or 0) > 0 and at_kill["survivor"] is not None
    assert any(f"{victim_url} is down" in line for line in lines), stderr_tail
    assert survivor_after is not None and survivor_after > at_kill["survivor"]
    print(f"\n{len(pairs)} pairs judged once each; killed vLLM pid {victim_pid} after it "
          f"answered {at_kill['victim']:.0f} requests; the survivor answered "
          f"{at_kill['survivor']:.0f} before and {survivor_after - at_kill['survivor']:.0f} "
          f"after; report {report_s:.0f} s")
