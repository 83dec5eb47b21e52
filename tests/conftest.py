"""Shared fixtures: the shared data folder, and the real embedded vLLM servers.

The embedded servers live in the repository's own data directory (``.retest``) so one server per
model serves the whole test session (and is reused across sessions); tests that need an isolated
data directory point ``RETEST_DATA_DIR`` at ``tmp_path`` and reach the server through
``RETEST_LLM_BASE_URL``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SEED_PROMPT = REPO.parent / "shared" / "seed" / "000_0d9a9caece8b12d6.txt"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``../shared/data`` folder; skip the test when it is absent (a user's fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs ../shared/data beside the checkout ({SHARED_DATA} is absent)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def seed_prompt() -> Path:
    """The canonical research prompt; skip when ``../shared`` is absent."""
    if not SEED_PROMPT.is_file():
        pytest.skip(f"needs the seed prompt at {SEED_PROMPT}")
    return SEED_PROMPT


def _embedded_base_url(model_key: str) -> str:
    from core.settings import load_settings
    from tools.vllm_server import EmbeddedServer

    settings = load_settings(data_dir=REPO / ".retest")
    return EmbeddedServer(settings, model_key).ensure_running()


@pytest.fixture(scope="session")
def llm_base_url() -> str:
    """Base URL (``.../v1``) of the real embedded SmolLM2-135M-Instruct vLLM server."""
    return _embedded_base_url("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma_base_url() -> str:
    """Base URL of the real embedded Gemma 3 270M (base model) vLLM server."""
    return _embedded_base_url("gemma3-270m")


@pytest.fixture()
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point RETEST_DATA_DIR at a fresh tmp dir; clear other RETEST_* variables."""
    for name in list(os.environ):
        if name.startswith("RETEST_"):
            monkeypatch.delenv(name)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("RETEST_DATA_DIR", str(data_dir))
    monkeypatch.chdir(tmp_path)
    yield data_dir


@pytest.fixture()
def llm_env(isolated_env: Path, llm_base_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated data dir whose settings talk to the real embedded SmolLM2 server."""
    monkeypatch.setenv("RETEST_LLM_BASE_URL", llm_base_url)
    monkeypatch.setenv("RETEST_LLM_MODEL", "SmolLM2-135M-Instruct")
    return isolated_env


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the reliability counts (tests/tally.py) of the cases that ran."""
    from tally import summary_lines

    lines = summary_lines()
    if lines:
        terminalreporter.section("reliability tally")
        for line in lines:
            terminalreporter.write_line(line)
