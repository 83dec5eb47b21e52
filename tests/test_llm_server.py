"""The real embedded vLLM server: chat, JSON-schema output, stop/restart, and no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
import requests
from pydantic import BaseModel, Field

from core.settings import load_settings
from tools.llm import make_llm
from tools.paper import is_valid_arxiv_id, normalize_arxiv_id, split_version
from tools.vllm_server import EmbeddedServer, port_is_free

REPO = Path(__file__).resolve().parents[1]


class Verdict(BaseModel):
    stance: Literal["supports", "relaxes", "overturns", "unrelated"]
    summary: str = Field(max_length=160)


@pytest.mark.slow
def test_chat_and_json_schema(llm_env: Path) -> None:
    llm = make_llm(load_settings())
    reply = llm.chat([{"role": "user", "content": "Name one color."}], max_tokens=16)
    assert reply.strip()
    verdict = llm.complete_json(
        [{"role": "user", "content": "Paper: DPO beats SFT on function calling. Claim: DPO "
          "beats SFT. Give the stance and a one-sentence summary."}], Verdict, max_tokens=96)
    assert isinstance(verdict, Verdict)
    assert llm.usage.calls >= 2 and llm.usage.completion_tokens > 0


@pytest.mark.slow
def test_stop_frees_port_and_restart_detects_stale(tmp_path: Path) -> None:
    """A server of our own (separate data dir): start, stop by pid, restart after a crash."""
    settings = load_settings(data_dir=tmp_path, models_dir=REPO / ".retest" / "models")
    server = EmbeddedServer(settings)
    base_url = server.ensure_running()
    record = server.running()
    assert record is not None
    assert requests.get(f"{base_url}/models", timeout=5).json()["data"][0]["id"] == \
        "SmolLM2-135M-Instruct"
    # Crash: kill the process group behind the manager's back; the record becomes stale.
    os.killpg(record.pid, 9)
    os.waitpid(record.pid, 0)
    assert server.running() is None
    new_url = server.ensure_running()
    new_record = server.running()
    assert new_record is not None and new_record.pid != record.pid
    assert server.stop() is True
    assert port_is_free(new_record.port)
    assert server.stop() is False
    assert new_url.endswith("/v1")


@pytest.mark.slow
def test_serve_llm_detach_prints_base_url_without_network(llm_base_url: str) -> None:
    """`serve-llm --detach` reuses the running server; it must not need any network.

    The process runs in an environment whose proxy points nowhere and with offline hub flags:
    only 127.0.0.1 is reachable, and the command still prints a working base URL.
    """
    env = {**os.environ, "RETEST_DATA_DIR": str(REPO / ".retest"), "HTTPS_PROXY": "http://10.255.255.1:9",
           "HTTP_PROXY": "http://10.255.255.1:9", "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "serve-llm", "--detach"],
                          capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    last_line = proc.stdout.strip().splitlines()[-1]
    assert last_line == llm_base_url and last_line.endswith("/v1")
    body = {"model": "SmolLM2-135M-Instruct", "max_tokens": 8,
            "messages": [{"role": "user", "content": "Hi"}]}
    answer = requests.post(f"{last_line}/chat/completions", json=body, timeout=60).json()
    assert answer["choices"][0]["message"]["content"]
    assert json.dumps(answer)


@pytest.mark.parametrize(
    ("raw", "valid"),
    [("2410.18890", True), ("arXiv:2410.18890v2", True), ("2513.01234", False),
     ("2400.00001", False), ("0704.0001", True), ("0703.0001", False), ("1501.00001", True),
     ("1412.00001", False), ("hep-th/9901001", True), ("abc", False), ("", False)],
)
def test_arxiv_id_validation(raw: str, valid: bool) -> None:
    assert is_valid_arxiv_id(raw) is valid


def test_normalize_and_split() -> None:
    assert split_version("https://arxiv.org/abs/2504.07912v3") == ("2504.07912", 3)
    assert normalize_arxiv_id("arXiv:2504.07912") == "2504.07912"
    with pytest.raises(ValueError, match="malformed"):
        normalize_arxiv_id("2513.01234")
