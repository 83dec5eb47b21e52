"""Pure re-test planning: the recipe registry, which recipe fits a claim, what it costs, the budget.

Everything here is a plain function over plain data (the only I/O is reading spec files), so the
choice of recipe per claim, the cost estimate, the cheap-first budget and the work-folder key are
tested case by case without a model or a server.

Choosing (``rank_recipes``): a recipe *fits* a claim when its claim-kind score (``match_score``)
reaches ``MIN_FIT``. Fitting recipes are ranked controlled first (``decides``: the same base model
with and without the items or the method), then by score, then by name; the model may pick among
the ``candidates`` whose score is within ``CANDIDATE_RATIO`` of the best controlled one (validated:
anything else falls back to the top of the ranking).

Costing (``expected_seconds``): a wall time measured for the same spec and size on this machine
wins; otherwise an estimate from the spec's size (training steps, answered items, served models)
with per-unit costs measured on 2 CPU cores.

Budgeting lives in :mod:`agent.nodes.retest_budget` (light, so the CLI parses ``--retest-budget``
without loading the registry).
"""

from __future__ import annotations

import hashlib
import logging
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.nodes.search import keywords
from evals.fingerprint import experiment_sha256

log = logging.getLogger(__name__)

SPECS_DIR = Path(__file__).resolve().parents[2] / "evals" / "specs"
MIN_FIT = 1.0  # at least one claim kind's worth of terms found in the claim
CANDIDATE_RATIO = 0.8  # the model may pick among controlled recipes scoring >= 80% of the best
DESCRIPTION_WEIGHT = 0.25  # a description term counts a quarter of a claim-kind term

# Per-unit costs on 2 quiet CPU cores (measured; docs/finetune.md). A LoRA SFT step at batch 8,
# model loading included: finetune_dose_response trains 3 models x 60 steps (143 s each) and
# answers 4 x 60 items in 10 min 4 s (estimate: 10.6 min).
TRAIN_STEP_S = 3.0
# A DPO step runs policy and reference on chosen and rejected replies: 278 s for 30 DPO steps vs
# 79 s for 30 SFT steps in finetune_sft_vs_dpo (7 min 51 s in all; estimate: 8.3 min).
DPO_STEP_FACTOR = 3.5
GENERATE_S = 0.1  # one short answer, batched: self_verification_gap, 120 answers + 120 verdicts
LOGLIK_S = 0.05  # one multiple-choice log-likelihood scoring
MODEL_START_S = 20.0  # serving one model (or adapter) for an evaluation
# One of n samples drawn in a single request (``n = samples``) shares the prompt's prefill:
# counted as this fraction of an answer until a measured time replaces the estimate.
SAMPLE_FRACTION = 0.25
DEFAULT_ITEMS = 40  # a size the estimate assumes where a spec declares none
TRAINING_KINDS = frozenset({"dose_response", "sft_vs_dpo", "pass_at_k", "template_transfer"})


@dataclass(frozen=True)
class Recipe:
    """One re-test from the registry (``evals/specs/*.toml`` declaring ``claim_kinds``)."""

    name: str  # the spec's file stem
    path: Path
    description: str
    claim_kinds: tuple[str, ...]
    kind: str  # the recipe kind (``recipe`` key), or "eval" for a dedup/variants evaluation
    decides: bool  # a controlled comparison: its result may decide a verdict
    sha256: str  # of the experiment (:func:`experiment_sha256`): an edited one gets a new folder
    raw: Mapping[str, Any]  # the parsed TOML, for the size-based cost estimate

    @property
    def finetunes(self) -> bool:
        """Tell whether the recipe trains models itself (minutes to hours on CPUs)."""
        return "finetune" in self.raw or self.kind in TRAINING_KINDS


def load_registry(specs_dir: Path = SPECS_DIR) -> list[Recipe]:
    """Read every spec declaring ``claim_kinds``; skip (and log) unreadable ones.

    ``decides`` is the spec's own ``decides`` key when it has one, else true exactly for
    controlled recipes (a top-level ``recipe`` key): a cross-family evaluation describes, it
    does not decide.
    """
    recipes: list[Recipe] = []
    for path in sorted(specs_dir.glob("*.toml")):
        try:
            blob = path.read_bytes()
            data = tomllib.loads(blob.decode("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            log.warning("skipping spec %s: %s", path.name, exc)
            continue
        kinds = data.get("claim_kinds")
        if not (isinstance(kinds, list) and kinds):
            continue
        kind = str(data.get("recipe") or "eval")
        decides = data.get("decides")
        recipes.append(Recipe(
            name=path.stem, path=path, description=str(data.get("description", "")),
            claim_kinds=tuple(str(k) for k in kinds), kind=kind,
            decides=bool(decides) if isinstance(decides, bool) else kind != "eval",
            sha256=experiment_sha256(data), raw=data))
    return recipes


# ------------------------------------------------------------------------------- choosing

def term_weights(recipes: Sequence[Recipe]) -> dict[str, float]:
    """Weigh each term of the registry ``1 / df``: ``df`` recipes use it (kinds or description).

    A term every recipe shares ("memorization", "fine-tuning") says little about which recipe
    fits; a term one recipe owns ("dpo", "verification") says a lot.
    """
    df: dict[str, int] = {}
    for recipe in recipes:
        for term in _vocabulary(recipe):
            df[term] = df.get(term, 0) + 1
    return {t: 1.0 / n for t, n in df.items()}


def _vocabulary(recipe: Recipe) -> set[str]:
    terms = set(keywords(recipe.description))
    for kind in recipe.claim_kinds:
        terms |= set(keywords(kind))
    return terms


def match_score(claim_text: str, recipe: Recipe, weights: Mapping[str, float] | None = None
                ) -> float:
    """Score how well ``recipe``'s claim kinds describe the claim (0 when nothing matches).

    Terms are :func:`agent.nodes.search.keywords` stems, weighed by ``weights``
    (:func:`term_weights` of the registry; 1 each when None). Each claim kind contributes the
    weight of its terms found in the claim times the share of its terms found, so a fully
    matched three-word kind owned by one recipe ("generation-verification gap") weighs 3, one
    word of it 1/3. Description terms found in the claim add ``DESCRIPTION_WEIGHT`` x weight.
    """
    claim_terms = set(keywords(claim_text))

    def w(term: str) -> float:
        return 1.0 if weights is None else weights.get(term, 1.0)

    score = 0.0
    for kind in recipe.claim_kinds:
        terms = set(keywords(kind))
        if terms:
            found = terms & claim_terms
            score += sum(w(t) for t in found) * len(found) / len(terms)
    score += DESCRIPTION_WEIGHT * sum(w(t) for t in set(keywords(recipe.description))
                                      & claim_terms)
    return round(score, 6)


def rank_recipes(claim_text: str, recipes: Sequence[Recipe]) -> list[tuple[Recipe, float]]:
    """Return the fitting recipes (score >= ``MIN_FIT``), controlled first, then by score."""
    weights = term_weights(recipes)
    scored = [(r, match_score(claim_text, r, weights)) for r in recipes]
    fitting = [(r, s) for r, s in scored if s >= MIN_FIT]
    return sorted(fitting, key=lambda rs: (not rs[0].decides, -rs[1], rs[0].name))


def candidates(ranked: Sequence[tuple[Recipe, float]]) -> list[Recipe]:
    """Return the recipes the model may choose among: the top of the ranking's own tier."""
    if not ranked:
        return []
    top, best = ranked[0]
    return [r for r, s in ranked if r.decides == top.decides and s >= CANDIDATE_RATIO * best]


def choose(ranked: Sequence[tuple[Recipe, float]], llm_pick: str | None) -> tuple[Recipe | None,
                                                                                  str]:
    """Return the recipe for a claim and how it was chosen ("llm", "score" or "none").

    The model's pick counts only when it names one of :func:`candidates`; otherwise the top of
    the ranking is used, so a small model can neither attach an unrelated experiment nor prefer
    a descriptive evaluation over a controlled one.
    """
    allowed = {r.name: r for r in candidates(ranked)}
    if llm_pick in allowed:
        return allowed[llm_pick], "llm"  # type: ignore[index]
    if ranked:
        return ranked[0][0], "score"
    return None, "none"


# -------------------------------------------------------------------------------- costing

def _get(raw: Mapping[str, Any], table: str, key: str, default: Any) -> Any:
    section = raw.get(table)
    return section.get(key, default) if isinstance(section, Mapping) else default


def _capped(declared: Any, items: int | None) -> int:
    """Return the size a run uses: the spec's declared size, lowered to ``items`` if given."""
    size = int(declared) if declared is not None else (items or DEFAULT_ITEMS)
    return min(size, items) if items else size


def size_label(items: int | None) -> str:
    """``n<items>`` for a run lowered to ``items`` per split; ``nspec`` for the spec's own sizes."""
    return f"n{items}" if items else "nspec"


def expected_seconds(recipe: Recipe, items: int | None,
                     measured: Mapping[str, float] | None = None) -> float:
    """Return the expected wall time of ``recipe`` in seconds (``items`` None: spec sizes).

    ``items`` lowers every size to at most that many items per split.
    ``measured`` maps :func:`cost_key` to wall times recorded on this machine; one for this spec
    and size wins. Otherwise: training steps x ``TRAIN_STEP_S`` (DPO steps x
    ``DPO_STEP_FACTOR``), answered items x ``GENERATE_S`` (``LOGLIK_S`` for log-likelihood
    scoring), and ``MODEL_START_S`` per served model. Estimates are rough (within about 2x);
    they only order the claims and guard the budget.
    """
    if measured and cost_key(recipe, items) in measured:
        return float(measured[cost_key(recipe, items)])
    raw = recipe.raw
    per_item = LOGLIK_S if raw.get("scoring") == "mc_loglik" else GENERATE_S
    steps = int(_get(raw, "finetune", "max_steps", 0) or 0)
    if recipe.kind == "eval":
        models = max(1, len(raw.get("models") or []))
        n = _capped(_get(raw, "sample", "per_split", None), items)
        variants = 1 + len(_get(raw, "variants", "kinds", []) or [])
        answered = models * n * (variants if _get(raw, "split", "mode", "") == "variants"
                                 else 2)
        return models * MODEL_START_S + answered * per_item
    n = _capped(_get(raw, "contamination", "test_items", None), items)
    if recipe.kind == "dose_response":
        doses = len(_get(raw, "contamination", "doses", [0.0, 0.25, 1.0]))
        train, models, answered = doses * steps, doses + 1, (doses + 1) * n
    elif recipe.kind == "sft_vs_dpo":
        budget = int(_get(raw, "contamination", "budget", n))
        train = steps * (1 + DPO_STEP_FACTOR)
        models = 3
        answered = budget + 3 * n * (1 + len(_get(raw, "compare", "variant_kinds", [1])))
    elif recipe.kind == "self_verification":
        train, models, answered = 0, 1, 2 * n
    elif recipe.kind == "template_transfer":
        n = _capped(_get(raw, "transfer", "items", None), items)
        kinds = len(_get(raw, "transfer", "variant_kinds", [1, 2, 3]))
        train, models, answered = steps, 2, 2 * n * (1 + kinds)
    elif recipe.kind == "pass_at_k":
        train_n = _capped(_get(raw, "passk", "train_items", None), items)
        test_n = _capped(_get(raw, "passk", "test_items", None), items)
        drawn = (train_n * int(_get(raw, "passk", "train_samples", 8))
                 + 2 * test_n * int(_get(raw, "passk", "samples", 64)))
        train, models, answered = steps, 2, drawn * SAMPLE_FRACTION
    else:  # a recipe kind this estimate does not know: one tuned model against its base
        train, models, answered = steps, 2, 4 * n
    return models * MODEL_START_S + train * TRAIN_STEP_S + answered * per_item


def cost_key(recipe: Recipe, items: int | None) -> str:
    """Key of a measured wall time: the spec's name and content, and the size."""
    return f"{recipe.name}@{recipe.sha256[:8]}/{size_label(items)}"


def work_key(recipe: Recipe, claim_text: str, items: int | None) -> str:
    """Name of a claim's re-test folder: ``<spec>-<spec sha>__<claim sha>__<size label>``.

    Two claims sharing a spec get two folders, so one result is never pasted onto several
    claims; the same claim, spec and size get the same folder, so a rerun reuses its result.
    """
    claim = hashlib.sha256(" ".join(claim_text.split()).encode("utf-8")).hexdigest()[:10]
    return f"{recipe.name}-{recipe.sha256[:8]}__{claim}__{size_label(items)}"


def finite_or_none(value: Any) -> float | None:
    """Return ``value`` as a float when it is a finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
