"""Eval specs: a TOML file that says what to run, validated by pydantic (unknown keys fail).

A spec names a dataset (one file split with a seeded ``test_fraction``, or separate train and
test files), how the test side is split (``dedup``: repeated vs novel by MinHash/Jaccard against
the train side; ``variants``: original items vs their rewritten variants), the two models, the
scoring method, the sample size per split and the seed. See ``evals/specs/*.toml`` for examples.

Model roles say what the comparison is. ``base`` and ``fine_tuned`` claim that the fine-tuned
model IS the base model trained on the train side; only such a controlled spec may set
``decides = true`` (its result may decide a verdict), and it must then say so in ``design``. Two
models that are not related that way (e.g. two unrelated families) take the roles ``model_a`` and
``model_b``: a descriptive evaluation, ``decides = false``. Either way ``design`` is one line that
says what was trained on what and what is compared (a default is written for descriptive specs).

Paths are relative to the spec file; ``${SHARED_DATA}`` expands to ``$RETEST_SHARED_DATA`` or the
``../shared/data`` folder beside the checkout; a relative path missing next to the spec is also
looked up in that shared folder. Every problem is raised as BadInputError with one line.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import BadInputError
from core.settings import split_base_urls
from evals.fingerprint import experiment_sha256
from evals.variants import KINDS
from tools.embedded_models import EMBEDDED_MODELS

REPO = Path(__file__).resolve().parents[1]
SPECS_DIR = Path(__file__).resolve().parent / "specs"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    """Where the items come from."""

    kind: Literal["jsonl", "gsm8k", "bigbench", "openai_evals"]
    path: str | None = None  # one file, split by test_fraction
    train_path: str | None = None
    test_path: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)  # loader field mapping (jsonl)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_layout(self) -> DatasetSpec:
        separate = self.train_path is not None or self.test_path is not None
        if self.path is not None and separate:
            raise ValueError("give either path or train_path+test_path, not both")
        if self.path is None and not (self.train_path and self.test_path):
            raise ValueError("give path, or both train_path and test_path")
        return self


class DedupSpec(_Strict):
    """Near-duplicate parameters (see :func:`evals.dedup.label_test_items`)."""

    threshold: float = Field(default=0.7, gt=0, le=1)
    num_perm: int = Field(default=128, ge=16, le=1024)
    shingle: Literal["word", "char"] = "word"
    n: int = Field(default=3, ge=1, le=20)
    mask_numbers: bool = False


class SplitSpec(_Strict):
    """How test items are divided into a seen and an unseen split."""

    mode: Literal["dedup", "variants"] = "dedup"


class VariantsSpec(_Strict):
    """Which rewrites to make in ``variants`` mode."""

    kinds: list[str] = Field(default_factory=lambda: ["name_swap", "irrelevant_clause"],
                             min_length=1)

    @model_validator(mode="after")
    def _known_kinds(self) -> VariantsSpec:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown variant kind(s) {unknown} (known: {', '.join(KINDS)})")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError("a variant kind is listed twice")
        return self


class SampleSpec(_Strict):
    """How many test items to run per split (the knob that bounds run time)."""

    per_split: int = Field(default=100, ge=1)


class GenerationSpec(_Strict):
    """Generation settings, recorded with every result line."""

    max_tokens: int = Field(default=256, ge=1, le=8192)
    temperature: float = Field(default=0.0, ge=0)
    concurrency: int = Field(default=8, ge=1, le=256)
    timeout_s: float = Field(default=300.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    stop: list[str] = Field(default_factory=lambda: ["\n\nQuestion:", "\nQuestion:"])


class ModelSpec(_Strict):
    """One model under test."""

    role: Literal["base", "fine_tuned", "model_a", "model_b"]
    # "embedded", or an OpenAI-compatible base URL ending in /v1, or several servers of the
    # model (a list, or commas): requests are then spread over them with failover.
    endpoint: str | list[str] = "embedded"
    model: str  # packaged key when embedded, else the served model name
    name: str | None = None  # label in results; default: the served name
    api: Literal["auto", "chat", "completions"] = "auto"
    # The NAME of an environment variable holding the endpoint's key: secrets never sit in spec
    # files (which are shared and copied beside reports).
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    def api_key(self) -> str:
        """Return the key from ``api_key_env``, or "EMPTY" when none is named.

        Raises BadInputError when the named variable is unset.
        """
        if self.api_key_env is None:
            return "EMPTY"
        value = os.environ.get(self.api_key_env)
        if not value:
            raise BadInputError(f"model {self.model}: environment variable {self.api_key_env} "
                                "(api_key_env) is not set")
        return value

    @model_validator(mode="after")
    def _known_embedded(self) -> ModelSpec:
        if self.endpoint == "embedded" and self.model not in EMBEDDED_MODELS:
            known = ", ".join(sorted(EMBEDDED_MODELS))
            raise ValueError(f"unknown embedded model '{self.model}' (known: {known})")
        if self.endpoint != "embedded":
            try:
                urls = split_base_urls(self.endpoint)
            except ValueError as exc:
                raise ValueError(f"endpoint must be 'embedded' or http(s) URLs: {exc}") from None
            if not urls:
                raise ValueError("endpoint must be 'embedded' or http(s) URLs, not empty")
        return self

    @property
    def label(self) -> str:
        """Name used in results and summaries."""
        if self.name:
            return self.name
        if self.endpoint == "embedded":
            return EMBEDDED_MODELS[self.model].served_name
        return self.model


class EvalSpec(_Strict):
    """A whole evaluation."""

    description: str
    claim_kinds: list[str] = Field(min_length=1)
    seed: int = 0
    dataset: DatasetSpec
    split: SplitSpec = SplitSpec()
    dedup: DedupSpec = DedupSpec()
    variants: VariantsSpec = VariantsSpec()
    sample: SampleSpec = SampleSpec()
    scoring: Literal["exact", "numeric", "mc_letter", "mc_loglik"]
    generation: GenerationSpec = GenerationSpec()
    models: list[ModelSpec] = Field(min_length=2, max_length=2)
    # Whether a significant result may decide a verdict: only for a controlled comparison.
    decides: bool = False
    design: str | None = Field(default=None, min_length=10)  # one line; see the module docstring

    @model_validator(mode="after")
    def _one_of_each_role(self) -> EvalSpec:
        roles = sorted(m.role for m in self.models)
        if roles not in (["base", "fine_tuned"], ["model_a", "model_b"]):
            raise ValueError("models need the roles 'base' and 'fine_tuned' (the same model "
                             "trained and untrained) or 'model_a' and 'model_b' (unrelated)")
        if len({m.label for m in self.models}) != 2:
            raise ValueError("the two models need different names (set 'name')")
        if self.decides and roles != ["base", "fine_tuned"]:
            raise ValueError("decides = true needs roles 'base' and 'fine_tuned' (a controlled "
                             "comparison); model_a vs model_b is descriptive")
        if self.decides and not self.design:
            raise ValueError("decides = true needs a 'design' line saying what the fine-tuned "
                             "model was trained on")
        if self.design and "\n" in self.design.strip():
            raise ValueError("design must be one line")
        return self

    @property
    def controlled(self) -> bool:
        """True when the roles claim a controlled pair (``base`` and ``fine_tuned``)."""
        return {m.role for m in self.models} == {"base", "fine_tuned"}

    def model_with_role(self, role: str) -> ModelSpec:
        """Return the model playing ``role``."""
        return next(m for m in self.models if m.role == role)

    def compared(self) -> tuple[ModelSpec, ModelSpec]:
        """Return ``(first, second)``: effects are first minus second.

        First is ``fine_tuned`` (or ``model_a``), second ``base`` (or ``model_b``).
        """
        first, second = ("fine_tuned", "base") if self.controlled else ("model_a", "model_b")
        return self.model_with_role(first), self.model_with_role(second)

    def design_line(self) -> str:
        """Return the one-line design: the spec's own, or a descriptive default."""
        if self.design:
            return self.design.strip()
        first, second = self.compared()
        seen, unseen = ("repeated", "novel") if self.split.mode == "dedup" else \
            ("original", "variant")
        relation = ("the spec declares the fine-tuned model to be the base model trained on the "
                    "train side" if self.controlled else "neither model was trained here on the "
                    "train side: a descriptive comparison")
        return (f"{first.label} vs {second.label} on {seen} vs {unseen} test items; "
                f"{relation}.")


class LoadedSpec(BaseModel):
    """A validated spec with its resolved file paths and fingerprint."""

    spec: EvalSpec
    source: Path
    sha256: str  # evals.fingerprint.experiment_sha256 of the spec
    data_path: Path | None = None
    train_path: Path | None = None
    test_path: Path | None = None


def shared_data_dir() -> Path:
    """Return the shared data folder: ``$RETEST_SHARED_DATA`` or ``../shared/data``."""
    explicit = os.environ.get("RETEST_SHARED_DATA")
    return Path(explicit) if explicit else REPO.parent / "shared" / "data"


def resolve_data_path(raw: str, spec_dir: Path) -> Path:
    """Resolve a dataset path of a spec; raise BadInputError when the file does not exist."""
    expanded = raw.replace("${SHARED_DATA}", str(shared_data_dir()))
    path = Path(os.path.expanduser(expanded))
    candidates = [path] if path.is_absolute() else [spec_dir / path, shared_data_dir() / path]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    raise BadInputError(f"dataset file not found: {raw} (looked at "
                        f"{', '.join(str(c) for c in candidates)})")


def load_spec(path: str | Path) -> LoadedSpec:
    """Read and validate a spec file; raise BadInputError with one line on any problem."""
    source = Path(path)
    if not source.is_file():
        shipped = SPECS_DIR / source.name
        if not source.suffix:
            shipped = SPECS_DIR / f"{source.name}.toml"
        if source.parent == Path(".") and shipped.is_file():
            source = shipped  # a bare name picks a shipped spec
        else:
            raise BadInputError(f"spec file not found: {path}")
    raw_bytes = source.read_bytes()
    try:
        data = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"spec {source}: not valid TOML: {exc}") from None
    try:
        spec = EvalSpec.model_validate(data)
    except ValidationError as exc:
        raise BadInputError(f"spec {source}: {validation_one_line(exc)}") from None
    spec_dir = source.resolve().parent
    ds = spec.dataset
    # The experiment's fingerprint (routing keys left out), as for recipes and work folders.
    loaded = LoadedSpec(spec=spec, source=source.resolve(), sha256=experiment_sha256(data))
    attach_data_paths(loaded, ds, spec_dir)
    return loaded


def attach_data_paths(loaded: Any, dataset: DatasetSpec, spec_dir: Path) -> None:
    """Resolve the dataset's file(s) relative to the spec and set them on ``loaded``."""
    if dataset.path is not None:
        loaded.data_path = resolve_data_path(dataset.path, spec_dir)
    else:
        loaded.train_path = resolve_data_path(str(dataset.train_path), spec_dir)
        loaded.test_path = resolve_data_path(str(dataset.test_path), spec_dir)


def validation_one_line(exc: ValidationError) -> str:
    """Turn a spec validation error into one line naming the key."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "spec"
    if first["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    if first["type"] == "missing":
        return f"missing key '{where}'"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"invalid '{where}': {message}"


def spec_summary(loaded: LoadedSpec) -> dict[str, Any]:
    """Describe the spec for summary.json (what ran, from which file)."""
    return {"path": str(loaded.source), "sha256": loaded.sha256,
            "description": loaded.spec.description, "claim_kinds": loaded.spec.claim_kinds,
            "decides": loaded.spec.decides, "design": loaded.spec.design_line()}


NOT_DECIDING = ("Descriptive only: it does not decide a verdict (the two models are not the same "
                "model trained with and without the items).")


def spec_index_entry(path: Path) -> dict[str, Any]:
    """Describe a shipped evaluation spec for the agent's re-test registry."""
    loaded = load_spec(path)
    spec = loaded.spec
    return {"path": str(path), "name": path.stem, "description": spec.description,
            "claim_kinds": list(spec.claim_kinds), "scoring": spec.scoring,
            "split_mode": spec.split.mode, "decides": spec.decides,
            "design": spec.design_line()}


def list_shipped_specs() -> list[Path]:
    """Return the spec files shipped in ``evals/specs`` (for the agent's re-test registry)."""
    return sorted(SPECS_DIR.glob("*.toml"))
