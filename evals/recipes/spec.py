"""Recipe specs: TOML files in ``evals/specs/`` with a top-level ``recipe`` key.

A recipe is a controlled re-test: it fine-tunes models itself (or, for the self-verification gap,
runs one model twice) and evaluates them through the same runner and statistics as any eval spec.
Kinds: ``dose_response`` (contamination at several doses), ``sft_vs_dpo`` (same data budget,
two training methods), ``self_verification`` (the model judges its own answers), ``pass_at_k``
(base vs reward-filtered self-training, pass@1..64) and ``template_transfer`` (tuned vs base on
trained items and their N-1 variants). The dataset,
scoring and generation tables are the eval spec's own (:mod:`evals.spec`). Every problem is
raised as BadInputError with one line.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import BadInputError
from evals.fingerprint import experiment_sha256
from evals.recipes.finetune import FinetuneParams
from evals.spec import (
    SPECS_DIR,
    DatasetSpec,
    GenerationSpec,
    attach_data_paths,
    validation_one_line,
)
from evals.variants import KINDS

RECIPE_KINDS = ("dose_response", "sft_vs_dpo", "self_verification", "pass_at_k",
                "template_transfer")
# The recipes that fine-tune their own models (minutes to hours); self_verification only generates.
TRAINING_RECIPES = frozenset({"dose_response", "sft_vs_dpo", "pass_at_k", "template_transfer"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContaminationSpec(_Strict):
    """How test items are planted into the training data (:mod:`evals.recipes.contamination`)."""

    doses: list[float] = Field(default_factory=lambda: [0.0, 0.25, 1.0], min_length=1)
    test_items: int = Field(default=60, ge=4)  # test items used: control + pool
    control_fraction: float = Field(default=0.5, gt=0, lt=1)
    budget: int = Field(default=120, ge=1)  # training items per model, equal at every dose
    copy_kind: str = "exact"  # "exact" or a variant kind of evals.variants (near-copies)

    @model_validator(mode="after")
    def _valid(self) -> ContaminationSpec:
        if any(not 0.0 <= d <= 1.0 for d in self.doses):
            raise ValueError("every dose must be between 0 and 1")
        if len(set(self.doses)) != len(self.doses):
            raise ValueError("a dose is listed twice")
        if self.copy_kind != "exact" and self.copy_kind not in KINDS:
            raise ValueError(f"copy_kind must be 'exact' or one of {', '.join(KINDS)}")
        return self


class DPOData(_Strict):
    """Where DPO's rejected replies come from, and DPO's own learning rate."""

    rejected: Literal["own_output", "perturbed"] = "own_output"  # own wrong outputs first
    # DPO is usually run at a far lower rate than SFT: at SFT's rate the margin saturates within
    # a few steps and the chosen replies' likelihood falls with the rejected ones. None = SFT's.
    learning_rate: float | None = Field(default=None, gt=0)


class CompareSpec(_Strict):
    """What ``sft_vs_dpo`` evaluates on besides the novel items."""

    variant_kinds: list[str] = Field(default_factory=lambda: ["irrelevant_clause"], min_length=1)


class AnswerModel(_Strict):
    """The model of ``self_verification``: a packaged key or a local model folder."""

    model: str = "smollm2-135m-instruct"


class VerifySpec(_Strict):
    """How ``self_verification`` fixes its threshold and reads the claim (see selfverify)."""

    # Share of the items (seeded hash) that only calibrate the verifier's threshold.
    calibration_fraction: float = Field(default=0.5, gt=0, lt=1)
    threshold: Literal["youden"] = "youden"
    # supports_claim: true when the gap's 95% CI lies below this, false when above it.
    margin: float = Field(default=0.05, ge=0, lt=1)


class PassAtKSpec(_Strict):
    """``pass_at_k``: sizes of the reward-filtered self-training and of the pass@k sampling.

    The tuned model is the base fine-tuned on its own correct samples of ``train_items`` items
    (``train_samples`` each, at most ``keep_per_item`` distinct correct replies kept). Both
    models then draw ``samples`` replies per test item at ``temperature``; pass@k is read at
    every k in ``ks`` (the largest is the k the claim is read at).
    """

    ks: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64], min_length=2)
    samples: int = Field(default=64, ge=2, le=256)
    test_items: int = Field(default=40, ge=2)
    train_items: int = Field(default=80, ge=1)
    train_samples: int = Field(default=8, ge=1, le=256)
    keep_per_item: int = Field(default=2, ge=1)
    temperature: float = Field(default=1.0, gt=0, le=2)
    # supports_claim: the advantage at the largest k counts as gone below +margin.
    margin: float = Field(default=0.05, ge=0, lt=1)

    @model_validator(mode="after")
    def _valid(self) -> PassAtKSpec:
        if sorted(set(self.ks)) != self.ks or self.ks[0] < 1:
            raise ValueError("ks must be increasing positive integers")
        if self.ks[-1] > self.samples:
            raise ValueError(f"the largest k ({self.ks[-1]}) exceeds samples ({self.samples})")
        return self


class TransferSpec(_Strict):
    """``template_transfer``: the trained items and the N-1 variants they are compared on."""

    items: int = Field(default=40, ge=2)  # training-side items tuned on, then asked again
    variant_kinds: list[str] = Field(
        default_factory=lambda: ["numbers", "name_swap", "irrelevant_clause"], min_length=1)
    primary_kind: str = "numbers"  # the variant kind supports_claim reads (recomputed answers)

    @model_validator(mode="after")
    def _valid(self) -> TransferSpec:
        unknown = [k for k in self.variant_kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown variant kind(s) {unknown}; expected some of {list(KINDS)}")
        if self.primary_kind not in self.variant_kinds:
            raise ValueError("primary_kind must be one of variant_kinds")
        return self


class RecipeSpec(_Strict):
    """A whole recipe."""

    description: str
    claim_kinds: list[str] = Field(min_length=1)
    recipe: Literal["dose_response", "sft_vs_dpo", "self_verification", "pass_at_k",
                    "template_transfer"]
    seed: int = 0
    dataset: DatasetSpec
    scoring: Literal["exact", "numeric", "mc_letter"]
    generation: GenerationSpec = GenerationSpec()
    contamination: ContaminationSpec = ContaminationSpec()
    finetune: FinetuneParams = FinetuneParams()
    dpo: DPOData = DPOData()
    compare: CompareSpec = CompareSpec()
    model: AnswerModel = AnswerModel()
    passk: PassAtKSpec = PassAtKSpec()
    transfer: TransferSpec = TransferSpec()
    verify: VerifySpec = VerifySpec()


class LoadedRecipe(BaseModel):
    """A validated recipe with its resolved data paths and fingerprint."""

    spec: RecipeSpec
    source: Path
    sha256: str  # evals.fingerprint.experiment_sha256 of the spec (routing keys left out)
    data_path: Path | None = None
    train_path: Path | None = None
    test_path: Path | None = None


def is_recipe_file(path: str | Path) -> bool:
    """Tell whether ``path`` (or the shipped spec of that name) is a TOML recipe spec."""
    source = _locate(path, must_exist=False)
    if source is None:
        return False
    try:
        return "recipe" in tomllib.loads(source.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError):
        return False


def _locate(path: str | Path, *, must_exist: bool = True) -> Path | None:
    source = Path(path)
    if source.is_file():
        return source
    shipped = SPECS_DIR / (source.name if source.suffix else f"{source.name}.toml")
    if source.parent == Path(".") and shipped.is_file():
        return shipped
    if must_exist:
        raise BadInputError(f"spec file not found: {path}")
    return None


def load_recipe(path: str | Path) -> LoadedRecipe:
    """Read and validate a recipe spec; raise BadInputError with one line on any problem."""
    source = _locate(path)
    assert source is not None  # noqa: S101 - _locate raises when missing
    raw = source.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"spec {source}: not valid TOML: {exc}") from None
    if "recipe" not in data:
        raise BadInputError(f"spec {source}: not a recipe (no top-level 'recipe' key; expected "
                            f"one of {', '.join(RECIPE_KINDS)})")
    try:
        spec = RecipeSpec.model_validate(data)
    except ValidationError as exc:
        raise BadInputError(f"spec {source}: {validation_one_line(exc)}") from None
    # The experiment's fingerprint, not the file's: re-wording claim_kinds keeps a run's folder.
    loaded = LoadedRecipe(spec=spec, source=source.resolve(), sha256=experiment_sha256(data))
    spec_dir = source.resolve().parent
    attach_data_paths(loaded, spec.dataset, spec_dir)
    return loaded


def recipe_index_entry(path: Path) -> dict[str, Any]:
    """Describe a shipped recipe for the agent's re-test registry (like an eval spec's entry)."""
    spec = RecipeSpec.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    return {"path": str(path), "name": path.stem, "description": spec.description,
            "claim_kinds": list(spec.claim_kinds), "scoring": spec.scoring,
            "split_mode": f"recipe:{spec.recipe}"}
