"""Re-test registry, per-claim recipe choice, and running the chosen evaluations.

The registry is ``evals/specs/*.toml``: each spec declares ``claim_kinds`` (what kind of claim it
tests) and a ``description``. Per claim the LLM picks a recipe, accepted only when the recipe's
claim kinds share a term with the claim, so a small model cannot attach an unrelated experiment;
otherwise the best keyword match is used. Only the cheapest fitting tier is offered (log-likelihood
evals before generation evals before fine-tuning), since that decides the run time on CPUs.
Recipes that fine-tune models are left out unless
``finetune_recipes`` is set. Runs go through ``evals.dispatch.run_spec_file`` (``retest_items`` items
per split) for at most ``retest_limit`` claims, cheap evaluations first and then in prompt order,
since each run costs minutes on 2 CPUs. A claim no recipe fits says what a re-test would need.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tomllib
from pathlib import Path
from typing import Any, Literal

from langgraph.runtime import Runtime
from pydantic import BaseModel, create_model

from agent.nodes.context import RunContext
from agent.nodes.search import keywords
from agent.prompts import retest_choice_messages
from agent.state import AgentState, Claim, Retest, RetestPlan
from core.errors import RetestError
from evals.dispatch import run_spec_file
from evals.recipes.spec import TRAINING_RECIPES

log = logging.getLogger(__name__)

SPECS_DIR = Path(__file__).resolve().parents[2] / "evals" / "specs"


class Recipe(BaseModel):
    """One re-test recipe from the registry."""

    name: str
    path: Path
    description: str
    claim_kinds: list[str]
    finetunes: bool  # a controlled recipe that trains its own models (slow on CPUs)
    cost: int  # 0 log-likelihood scoring (seconds), 1 generation (minutes), 2 fine-tuning


def load_registry(specs_dir: Path = SPECS_DIR) -> list[Recipe]:
    """Read every spec declaring ``claim_kinds``; skip (and log) unreadable ones."""
    recipes: list[Recipe] = []
    for path in sorted(specs_dir.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            log.warning("skipping spec %s: %s", path.name, exc)
            continue
        kinds = data.get("claim_kinds")
        if isinstance(kinds, list) and kinds:
            trains = data.get("recipe") in TRAINING_RECIPES
            recipes.append(Recipe(name=path.stem, path=path,
                                  description=str(data.get("description", "")),
                                  claim_kinds=[str(k) for k in kinds],
                                  finetunes=trains,
                                  cost=2 if trains else
                                  0 if data.get("scoring") == "mc_loglik" else 1))
    return recipes


def match_score(claim_text: str, recipe: Recipe) -> float:
    """Share of the recipe's claim-kind terms found in the claim (kinds count double)."""
    claim_terms = set(keywords(claim_text))
    kind_terms = {t for kind in recipe.claim_kinds for t in keywords(kind)}
    desc_terms = set(keywords(recipe.description))
    if not kind_terms:
        return 0.0
    return (2 * len(claim_terms & kind_terms) + 0.5 * len(claim_terms & desc_terms)) / (
        2 * len(kind_terms))


def _needs(claim: Claim) -> str:
    return ("No registered recipe fits. A re-test would need a benchmark whose items can be "
            "split into repeated and novel for the setting this claim names, the models it "
            "compares (e.g. a base and a fine-tuned variant) served by vLLM, and a spec in "
            f"evals/specs declaring claim_kinds for it (claim terms: "
            f"{', '.join(keywords(claim['text'])[:6])}).")


def plan_retests(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Choose a recipe (or none) per claim."""
    ctx = runtime.context
    ctx.check_cancel()
    recipes = [r for r in load_registry()
               if ctx.options.finetune_recipes or not r.finetunes]
    plans: dict[str, RetestPlan] = {}
    degraded: list[str] = []
    for claim in state["brief"]["claims"]:
        scores = {r.name: match_score(claim["text"], r) for r in recipes}
        fitting = [r for r in recipes if scores[r.name] > 0]
        # The cheapest fitting tier only: on CPUs a log-likelihood eval takes seconds, a
        # generation eval minutes; a bigger machine can run the rest with `retest eval`.
        cheapest = [r for r in fitting if r.cost == min(f.cost for f in fitting)]
        chosen, how = None, "none"
        if cheapest:
            try:
                chosen = _llm_choice(ctx, claim, cheapest)
            except RetestError as exc:
                degraded.append(f"model failed while choosing re-tests: {exc}")
            if chosen is not None and scores.get(chosen, 0.0) > 0:
                how = "llm"
            else:
                chosen = max(cheapest, key=lambda r: (scores[r.name], r.name)).name
                how = "keywords"
        plans[claim["id"]] = RetestPlan(claim_id=claim["id"], spec=chosen, chosen_by=how,
                                        needs="" if chosen else _needs(claim),
                                        status="planned" if chosen else "no recipe")
    ctx.emit("retest", f"recipes chosen for {sum(1 for p in plans.values() if p['spec'])} "
             f"of {len(plans)} claims")
    return {"retest_plans": plans, "degraded": degraded}


def _llm_choice(ctx: RunContext, claim: Claim, recipes: list[Recipe]) -> str | None:
    names = tuple(r.name for r in recipes) + ("none",)
    schema = create_model("RecipeChoice", recipe=(Literal[names], ...))  # type: ignore[valid-type]
    reply = ctx.complete_json(
        retest_choice_messages(claim, [(r.name, r.description) for r in recipes]), schema,
        max_tokens=40)
    return None if reply.recipe == "none" else str(reply.recipe)


def run_retests(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Run the chosen recipes for the best-matching ``retest_limit`` claims; attach summaries."""
    ctx = runtime.context
    plans = state.get("retest_plans", {})
    done = state.get("retests", {})
    recipes = {r.name: r for r in load_registry()}
    claims = {c["id"]: c for c in state["brief"]["claims"]}
    # Cheap evaluations first, then prompt order: the first claim is the one the user leads with.
    order = {cid: i for i, cid in enumerate(claims)}
    queue = sorted((p for p in plans.values() if p["spec"] in recipes),
                   key=lambda p: (recipes[p["spec"]].finetunes, order[p["claim_id"]]))
    updated: dict[str, RetestPlan] = {
        p["claim_id"]: RetestPlan(**{**p, "status": f"skipped: re-test limit "
                                     f"{ctx.options.retest_limit} (--retest-limit)"})
        for p in queue[ctx.options.retest_limit:]}
    queue = queue[:ctx.options.retest_limit]
    retests: dict[str, Retest] = {}
    degraded: list[str] = []
    for i, plan in enumerate(queue):
        ctx.check_cancel()
        if plan["claim_id"] in done:  # finished before an interruption
            continue
        recipe = recipes[plan["spec"]]  # type: ignore[index]
        ctx.emit("retest", f"{plan['claim_id']}: running {recipe.name}", i, len(queue))
        try:
            work_dir = _eval_work_dir(ctx, recipe.path)
            summary = run_spec_file(recipe.path, work_dir, ctx.settings,
                               limit=ctx.options.retest_items, progress=False)
            _copy_outputs(work_dir, ctx.out_dir / "retests" / plan["claim_id"])
        except RetestError as exc:
            degraded.append(f"re-test {recipe.name} failed: {exc}")
            updated[plan["claim_id"]] = RetestPlan(**{**plan, "status": f"failed: {exc}"})
            continue
        updated[plan["claim_id"]] = RetestPlan(**{**plan, "status": "ran"})
        supports = summary.get("supports_claim")
        retests[plan["claim_id"]] = Retest(
            spec=recipe.path.name, summary=_jsonable(summary),
            supports_claim=supports if isinstance(supports, bool) else None)
        ctx.emit("retest", f"{plan['claim_id']}: {recipe.name} done", i + 1, len(queue))
    return {"retests": retests, "retest_plans": updated, "degraded": degraded}


def _eval_work_dir(ctx: RunContext, spec_path: Path) -> Path:
    """Where an evaluation runs: one folder per (spec content, item count) in the data directory.

    The runner skips every (item, model, variant) already in that folder's results.jsonl, so a
    later report that picks the same unchanged spec makes no model call for finished items
    (issue 7: reuse an evaluation whose spec, models and data are unchanged) and a killed one
    resumes.
    """
    digest = hashlib.sha256(spec_path.read_bytes()).hexdigest()[:16]
    name = f"{spec_path.stem}-{digest}-n{ctx.options.retest_items}"
    return ctx.settings.data_dir / "evals" / name


def _copy_outputs(work_dir: Path, report_dir: Path) -> None:
    """Copy an evaluation's outputs beside the report, so the report folder stands alone."""
    report_dir.mkdir(parents=True, exist_ok=True)
    for path in work_dir.iterdir():
        if path.is_file() and path.suffix in {".json", ".jsonl", ".md", ".png"}:
            shutil.copy2(path, report_dir / path.name)


def _jsonable(value: Any) -> Any:
    """Coerce a summary to JSON-able values (paths and dates become strings)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
