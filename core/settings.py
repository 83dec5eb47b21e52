"""One Settings object for the whole project.

Sources, highest precedence first: explicit overrides (CLI flags, passed as keyword arguments to
:func:`load_settings`), environment variables (prefix ``RETEST_``, nested with ``__``, e.g.
``RETEST_LLM__MODEL``; a few flat aliases such as ``RETEST_LLM_BASE_URL`` are accepted too), an
optional ``retest.toml`` (path from ``RETEST_CONFIG`` or ``./retest.toml``), then defaults.
Every model forbids unknown keys, so a typo in a config file fails loudly.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core.errors import BadInputError

# arXiv's terms of use ask for at least 3 s between requests to the real host.
ARXIV_MIN_SPACING_S = 3.0
ARXIV_API_URL = "https://export.arxiv.org/api/query"

# Flat environment names a user is likely to type, mapped to nested settings.
_FLAT_ENV_ALIASES = {
    "RETEST_LLM_BASE_URL": ("llm", "base_url"),
    "RETEST_LLM_MODEL": ("llm", "model"),
    "RETEST_LLM_API_KEY": ("llm", "api_key"),
    "RETEST_CHROMA_URL": ("store", "chroma_url"),
    "RETEST_ARXIV_URL": ("arxiv", "base_url"),
    "RETEST_ARXIV_SPACING": ("arxiv", "request_spacing_s"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def split_base_urls(value: str | list[str]) -> list[str]:
    """Return the base URLs in ``value``: one URL, a comma-separated list, or a list of them.

    Each URL is stripped of blanks and a trailing ``/``; empty entries are dropped, so ``""``
    (the embedded server) gives ``[]``. Raise ValueError with one line naming a URL that is not
    ``http(s)://host[:port][/path]`` or one listed twice.
    """
    parts = [value] if isinstance(value, str) else list(value)
    urls: list[str] = []
    for part in parts:
        for raw in str(part).split(","):
            url = raw.strip().rstrip("/")
            if not url:
                continue
            _check_url(url)
            if url in urls:
                raise ValueError(f"LLM endpoint {url} is listed twice")
            urls.append(url)
    return urls


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check: "http://h:x" raises here
    except ValueError as exc:
        raise ValueError(f"malformed LLM endpoint URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(
            c.isspace() for c in url) or parts.query or parts.fragment:
        raise ValueError(f"malformed LLM endpoint URL {url!r} (want http(s)://host[:port]/v1; "
                         "several are separated by commas)")


class LLMSettings(_Strict):
    """Which OpenAI-compatible server(s) judge; an empty base URL starts the embedded vLLM.

    ``base_url`` is one URL, or several (a TOML list, or commas in ``RETEST_LLM_BASE_URL``):
    requests are then spread over them and fail over when one dies (tools/endpoint_pool.py).
    """

    base_url: str | list[str] = ""
    model: str = ""
    # A secret: read from RETEST_LLM_API_KEY only (load_settings refuses it in retest.toml);
    # SecretStr keeps it out of reprs, dumps and logs.
    api_key: SecretStr = SecretStr("EMPTY")
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    temperature: float = Field(default=0.0, ge=0)
    seed: int = 0

    @field_validator("base_url")
    @classmethod
    def _valid_urls(cls, value: str | list[str]) -> str | list[str]:
        split_base_urls(value)  # raises ValueError naming the malformed URL
        return value.strip() if isinstance(value, str) else [u.strip() for u in value]

    def base_urls(self) -> list[str]:
        """Return the configured base URLs (``[]`` means: start the embedded server)."""
        return split_base_urls(self.base_url)


class EmbeddedServerSettings(_Strict):
    """How the project starts its own vLLM server (CPU build here, CUDA build on a GPU)."""

    model: str = "smollm2-135m-instruct"
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)  # 0 picks a free port
    kv_cache_gib: int = Field(default=2, ge=1)
    max_model_len: int = Field(default=4096, ge=256)
    start_timeout_s: float = Field(default=600.0, gt=0)
    enforce_eager: bool = True
    # A server started on purpose (serve-llm --detach, the app) stops after this many seconds
    # without a request or a command using it; 0 keeps it until `serve-llm --stop`.
    idle_stop_s: float = Field(default=900.0, ge=0)


class ArxivSettings(_Strict):
    """The live arXiv API: where it is and how politely we ask."""

    base_url: str = ARXIV_API_URL
    request_spacing_s: float = Field(default=ARXIV_MIN_SPACING_S, ge=0)
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=10)
    page_size: int = Field(default=100, ge=1, le=2000)

    @property
    def effective_spacing_s(self) -> float:
        """Spacing actually used: never below 3 s against the real arXiv host."""
        if "arxiv.org" in self.base_url:
            return max(self.request_spacing_s, ARXIV_MIN_SPACING_S)
        return self.request_spacing_s


class StoreSettings(_Strict):
    """The chromadb paper store: embedded directory, or a server when ``chroma_url`` is set."""

    chroma_url: str = ""
    collection: str = "papers"
    embed_batch_size: int = Field(default=64, ge=1)
    # Tokens of title + abstract embedded per paper (cost grows linearly; see tools/paper_store).
    embed_document_tokens: int = Field(default=64, ge=16, le=256)


class Settings(BaseSettings):
    """All configuration of retest. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="RETEST_",
        env_nested_delimiter="__",
        extra="forbid",
        toml_file=None,
    )

    data_dir: Path = Path(".retest")
    models_dir: Path | None = None  # converted model folders; default <data_dir>/models
    offline: bool = False
    corpus: Path | None = None
    llm: LLMSettings = LLMSettings()
    server: EmbeddedServerSettings = EmbeddedServerSettings()
    arxiv: ArxivSettings = ArxivSettings()
    store: StoreSettings = StoreSettings()
    # postgresql://user@host:port/db: graph checkpoints and the run lock live in that database
    # (several workers, several machines); empty: SQLite and a file lock in data_dir.
    checkpoint_url: str = ""

    @field_validator("corpus", "models_dir", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: Any) -> Any:
        return None if value in ("", "None", "none") else value

    @property
    def resolved_models_dir(self) -> Path:
        """Directory holding the converted embedded models."""
        return self.models_dir or self.data_dir / "models"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: overrides > env > retest.toml > defaults."""
        toml_path = _config_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


def _config_path() -> Path | None:
    explicit = os.environ.get("RETEST_CONFIG")
    if explicit:
        return Path(explicit)
    default = Path("retest.toml")
    return default if default.is_file() else None


def _flat_env_overrides() -> dict[str, dict[str, str]]:
    """Read the flat aliases (``RETEST_LLM_BASE_URL`` ...) into nested dicts."""
    nested: dict[str, dict[str, str]] = {}
    for env_name, (section, key) in _FLAT_ENV_ALIASES.items():
        value = os.environ.get(env_name)
        if value is not None:
            nested.setdefault(section, {})[key] = value
    return nested


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _nested_env_for(section: str) -> dict[str, Any]:
    """Nested env values (``RETEST_LLM__MODEL``) of one section; flat aliases never beat them."""
    prefix = f"RETEST_{section.upper()}__"
    return {k[len(prefix) :].lower(): v for k, v in os.environ.items() if k.startswith(prefix)}


def load_settings(**overrides: Any) -> Settings:
    """Build Settings; ``overrides`` (CLI flags) win over env, env over file, file over defaults.

    Overrides whose value is None are ignored, so a CLI can pass every flag unconditionally.
    Nested sections may be given as dicts (``llm={"model": "x"}``).
    Raises BadInputError with one line naming the offending key on any invalid setting.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    flat = _flat_env_overrides()
    # Flat env aliases sit at env precedence: they must lose to explicit overrides and to the
    # nested env form, so pass them as init values only where nothing stronger is set.
    # (pydantic-settings deep-merges nested dicts across sources, so partial sections are fine.)
    for section, values in flat.items():
        values = {k: v for k, v in values.items() if k not in _nested_env_for(section)}
        given[section] = _merge(values, given.get(section, {}))
    _refuse_secret_in_file(_config_path())
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise BadInputError(_one_line(exc)) from None
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise BadInputError(f"config file {_config_path()}: {exc}") from None


def _refuse_secret_in_file(path: Path | None) -> None:
    """Secrets come from the environment only: an API key in retest.toml is bad input."""
    if path is None or not path.is_file():
        return
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
        return  # Settings() reports it with the file's name
    llm = data.get("llm")
    if isinstance(llm, dict) and "api_key" in llm:
        raise BadInputError(f"config file {path}: llm.api_key is a secret; set RETEST_LLM_API_KEY "
                            "in the environment instead of writing it to a file")


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "settings"
    if first["type"] == "extra_forbidden":
        return f"unknown setting '{where}' (check retest.toml or RETEST_* variables)"
    return f"invalid setting '{where}': {first['msg']}"
