"""Settings precedence (CLI > env > file > default) and loud failures on bad config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import BadInputError
from core.settings import ARXIV_MIN_SPACING_S, load_settings

REPO = Path(__file__).resolve().parents[1]


def _write_toml(directory: Path, text: str) -> Path:
    path = directory / "retest.toml"
    path.write_text(text)
    return path


def test_defaults(isolated_env: Path) -> None:
    settings = load_settings()
    assert settings.data_dir == isolated_env  # from RETEST_DATA_DIR set by the fixture
    assert settings.llm.base_url == ""  # empty: start the embedded server
    assert settings.offline is False
    assert settings.arxiv.request_spacing_s == ARXIV_MIN_SPACING_S


@pytest.mark.parametrize(
    ("file_value", "env_value", "cli_value", "expected"),
    [
        (None, None, None, ""),
        ("file-model", None, None, "file-model"),
        ("file-model", "env-model", None, "env-model"),
        ("file-model", "env-model", "cli-model", "cli-model"),
        (None, None, "cli-model", "cli-model"),
    ],
)
def test_precedence_cli_env_file_default(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch,
    file_value: str | None, env_value: str | None, cli_value: str | None, expected: str,
) -> None:
    if file_value is not None:
        _write_toml(Path.cwd(), f'[llm]\nmodel = "{file_value}"\n')
    if env_value is not None:
        monkeypatch.setenv("RETEST_LLM__MODEL", env_value)
    overrides = {"llm": {"model": cli_value}} if cli_value is not None else {}
    assert load_settings(**overrides).llm.model == expected


def test_file_section_keeps_other_keys_under_cli_override(isolated_env: Path) -> None:
    _write_toml(Path.cwd(), '[llm]\nmodel = "m"\nbase_url = "http://127.0.0.1:9/v1"\n')
    settings = load_settings(llm={"model": "cli"})
    assert settings.llm.model == "cli"
    assert settings.llm.base_url == "http://127.0.0.1:9/v1"


def test_flat_env_alias_loses_to_nested_env_and_cli(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETEST_LLM_BASE_URL", "http://flat/v1")
    assert load_settings().llm.base_url == "http://flat/v1"
    monkeypatch.setenv("RETEST_LLM__BASE_URL", "http://nested/v1")
    assert load_settings().llm.base_url == "http://nested/v1"
    assert load_settings(llm={"base_url": "http://cli/v1"}).llm.base_url == "http://cli/v1"


def test_offline_from_env(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETEST_OFFLINE", "1")
    assert load_settings().offline is True


def test_unknown_toml_key_names_the_key(isolated_env: Path) -> None:
    _write_toml(Path.cwd(), "[llm]\nmodle = 'typo'\n")
    with pytest.raises(BadInputError, match=r"unknown setting 'llm\.modle'"):
        load_settings()


def test_invalid_value_is_one_line(isolated_env: Path) -> None:
    _write_toml(Path.cwd(), "[arxiv]\nrequest_spacing_s = 'soon'\n")
    with pytest.raises(BadInputError) as info:
        load_settings()
    assert "arxiv.request_spacing_s" in str(info.value)
    assert "\n" not in str(info.value)


def test_spacing_never_below_three_seconds_against_real_host(isolated_env: Path) -> None:
    settings = load_settings(arxiv={"request_spacing_s": 0.1})
    assert settings.arxiv.effective_spacing_s == ARXIV_MIN_SPACING_S
    local = load_settings(arxiv={"request_spacing_s": 0.1, "base_url": "http://127.0.0.1:1/api"})
    assert local.arxiv.effective_spacing_s == pytest.approx(0.1)


def test_cli_bad_config_exits_2_with_one_line(isolated_env: Path) -> None:
    _write_toml(Path.cwd(), "bogus_key = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "serve-llm", "--stop"],
        capture_output=True, text=True, cwd=Path.cwd(), timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "bogus_key" in proc.stderr
