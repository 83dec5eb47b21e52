"""The re-test nodes: choose a recipe per claim, then run the chosen ones within the budget.

``plan_retests`` ranks the registry (``evals/specs/*.toml`` declaring ``claim_kinds``) against
each claim by the documented score of :mod:`agent.nodes.retest_plan`: controlled recipes that fit
first, the model choosing only among the close candidates. ``run_retests`` runs the chosen
recipes cheapest first until ``ReportOptions.retest_budget_s`` is spent; a claim whose re-test
would not fit is skipped with the reason. Each claim runs in its own folder
``<data_dir>/retests/<spec>-<sha>__<claim sha>__n<items>``, so a rerun with the same key reuses
the finished result; its outputs are copied to ``<out>/retests/<claim id>/``. With several
re-tests in one report, p-values are corrected with Holm (:mod:`agent.nodes.retest_read`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from langgraph.runtime import Runtime
from pydantic import create_model

from agent.nodes.context import RunContext
from agent.nodes.retest_budget import Planned, human_duration, select_within_budget, skip_reason
from agent.nodes.retest_plan import (
    Recipe,
    cost_key,
    expected_seconds,
    load_registry,
    rank_recipes,
    work_key,
)
from agent.nodes.retest_plan import candidates as close_candidates
from agent.nodes.retest_plan import choose as choose_recipe
from agent.nodes.retest_read import headline, holm_read
from agent.nodes.search import keywords
from agent.prompts import retest_choice_messages
from agent.state import AgentState, Claim, Retest, RetestPlan
from core.errors import RetestError
from core.fsutil import atomic_write_json
from evals.dispatch import run_spec_file
from evals.stats import READING_VERSION

log = logging.getLogger(__name__)

DONE_FILE = "retest.json"  # written last in a claim's folder: its result is finished
LEDGER_FILE = "wall_times.json"  # measured wall time per spec and size, for later estimates


def _needs(claim: Claim) -> str:
    return ("No registered recipe fits. A re-test would need a benchmark whose items can be "
            "split into repeated and novel for the setting this claim names, the models it "
            "compares (e.g. a base and a fine-tuned variant) served by vLLM, and a spec in "
            f"evals/specs declaring claim_kinds for it (claim terms: "
            f"{', '.join(keywords(claim['text'])[:6])}).")


def _retests_dir(ctx: RunContext) -> Path:
    return Path(ctx.settings.data_dir) / "retests"


FolderState = Literal["new", "stale", "finished"]


def _folder_state(folder: Path) -> FolderState:
    """Say what a claim's folder holds: nothing finished, a stale result, or a finished one.

    ``finished``: a result read by today's rules, reused at no cost. ``stale``: a finished run
    summarized under other reading rules (``evals.stats.READING_VERSION``): the recipe runs
    again in the same folder, reusing its trained models and recorded answers, and reads them by
    the current rules. ``new``: no finished run.
    """
    if not (folder / DONE_FILE).is_file():
        return "new"
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "stale"
    current = isinstance(summary, dict) and summary.get("reading_version") == READING_VERSION
    return "finished" if current else "stale"


def _measured(ctx: RunContext) -> dict[str, float]:
    path = _retests_dir(ctx) / LEDGER_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float)}


def plan_retests(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Choose a recipe (or none) per claim and estimate what it costs."""
    ctx = runtime.context
    ctx.check_cancel()
    recipes = load_registry()
    measured = _measured(ctx)
    items = ctx.options.retest_items
    plans: dict[str, RetestPlan] = {}
    degraded: list[str] = []
    for claim in state["brief"]["claims"]:
        ranked = rank_recipes(claim["text"], recipes)
        close = close_candidates(ranked)
        pick = None
        if len(close) > 1:  # the score leaves a real choice: ask the model, validated
            try:
                pick = _llm_choice(ctx, claim, close)
            except RetestError as exc:
                degraded.append(f"model failed while choosing re-tests: {exc}")
        chosen, how = choose_recipe(ranked, pick)
        score = next((s for r, s in ranked if chosen is not None and r.name == chosen.name), 0.0)
        plans[claim["id"]] = RetestPlan(
            claim_id=claim["id"], spec=chosen.name if chosen else None, chosen_by=how,
            needs="" if chosen else _needs(claim),
            status="planned" if chosen else "no recipe",
            candidates=[r.name for r in close], score=score,
            decides=chosen.decides if chosen else False,
            description=chosen.description if chosen else "",
            expected_s=expected_seconds(chosen, items, measured) if chosen else 0.0,
            skipped_reason="")
    ctx.emit("retest", f"recipes chosen for {sum(1 for p in plans.values() if p['spec'])} "
             f"of {len(plans)} claims")
    return {"retest_plans": plans, "degraded": degraded}


def _llm_choice(ctx: RunContext, claim: Claim, recipes: list[Recipe]) -> str | None:
    names = tuple(r.name for r in recipes) + ("none",)
    schema = create_model("RecipeChoice", recipe=(Literal[names], ...))  # type: ignore[valid-type]
    reply = ctx.complete_json(
        retest_choice_messages(claim, [(r.name, f"{r.description} (tests: "
                                       f"{'; '.join(r.claim_kinds)})") for r in recipes]),
        schema,
        max_tokens=40)
    return None if reply.recipe == "none" else str(reply.recipe)


def run_retests(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Run the chosen recipes cheapest first within the budget; attach results, Holm-read."""
    ctx = runtime.context
    opts = ctx.options
    plans = state.get("retest_plans", {})
    done: dict[str, Retest] = dict(state.get("retests", {}))
    recipes = {r.name: r for r in load_registry()}
    claims = {c["id"]: c for c in state["brief"]["claims"]}
    order = {cid: i for i, cid in enumerate(claims)}
    runnable = [p for p in plans.values()
                if p["spec"] in recipes and p["claim_id"] not in done]
    # A claim whose folder holds a finished result costs nothing: it is reused, not rerun.
    folders = {p["claim_id"]: _retests_dir(ctx) / work_key(
        recipes[p["spec"]], claims[p["claim_id"]]["text"], opts.retest_items)  # type: ignore[index]
        for p in runnable}
    planned = [Planned(p["claim_id"], order[p["claim_id"]],
                       0.0 if _folder_state(folders[p["claim_id"]]) == "finished"
                       else p.get("expected_s", 0.0)) for p in runnable]
    limit = opts.retest_limit
    queue, skipped = select_within_budget(planned, opts.retest_budget_s,
                                          None if limit is None else max(0, limit - len(done)))
    updated: dict[str, RetestPlan] = {
        cid: RetestPlan(**{**plans[cid], "status": f"skipped: {why}", "skipped_reason": why})
        for cid, why in skipped.items()}
    retests: dict[str, Retest] = {}
    degraded: list[str] = []
    spent = sum(float(r.get("wall_s", 0.0)) for r in done.values())
    for i, item in enumerate(queue):
        ctx.check_cancel()
        plan = plans[item.claim_id]
        recipe = recipes[plan["spec"]]  # type: ignore[index]
        left = opts.retest_budget_s - spent
        if item.expected_s > left:  # earlier runs took longer than estimated
            why = skip_reason(item.expected_s, left)
            updated[item.claim_id] = RetestPlan(**{**plan, "status": f"skipped: {why}",
                                                   "skipped_reason": why})
            continue
        ctx.emit("retest", f"{item.claim_id}: " + {
            "finished": f"reusing the finished {recipe.name} result",
            "stale": f"reading the finished {recipe.name} answers again by today's rules",
            "new": f"running {recipe.name} (expected ~{human_duration(item.expected_s)})",
        }[_folder_state(folders[item.claim_id])], i, len(queue))
        try:
            record = _run_one(ctx, recipe, claims[item.claim_id], folders[item.claim_id],
                              item.expected_s)
        except RetestError as exc:
            degraded.append(f"re-test {recipe.name} failed: {exc}")
            updated[item.claim_id] = RetestPlan(**{**plan, "status": f"failed: {exc}"})
            continue
        spent += record["wall_s"]
        retests[item.claim_id] = record
        updated[item.claim_id] = RetestPlan(**{**plan, "status": "reused" if record["reused"]
                                               else "reread" if record["reread"] else "ran"})
        ctx.emit("retest", f"{item.claim_id}: {recipe.name} " + (
            "reused" if record["reused"] else
            f"read again in {human_duration(record['wall_s'])}" if record["reread"] else
            f"done in {human_duration(record['wall_s'])}"),
            i + 1, len(queue))
    corrected = holm_read({**done, **retests})
    return {"retests": corrected, "retest_plans": updated, "degraded": degraded}


def _run_one(ctx: RunContext, recipe: Recipe, claim: Claim, folder: Path,
             expected_s: float) -> Retest:
    """Run (or reuse the finished) re-test of one claim in its own folder; copy its outputs."""
    items = ctx.options.retest_items
    state = _folder_state(folder)
    reused = state == "finished"
    # A stale run is read again in place: its wall time is that of a re-read, which must not
    # become the estimate for a fresh run of this spec.
    reread = state == "stale"
    started = time.monotonic()
    if reused:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    else:
        summary = run_spec_file(recipe.path, folder, ctx.settings, limit=items, progress=False)
    wall = 0.0 if reused else time.monotonic() - started
    if not reused:
        atomic_write_json(folder / DONE_FILE, {
            "claim_id": claim["id"], "claim": claim["text"], "spec": recipe.path.name,
            "spec_sha256": recipe.sha256, "items": items, "wall_s": round(wall, 1)})
        if not reread:
            _record_wall_time(ctx, cost_key(recipe, items), wall)
    report_dir = ctx.out_dir / "retests" / claim["id"]
    _copy_outputs(folder, report_dir)
    head = headline(summary)
    supports = summary.get("supports_claim")
    supports = supports if isinstance(supports, bool) else None
    decides = summary.get("decides")
    design = summary.get("design")
    return Retest(
        spec=recipe.path.name, summary=_jsonable(summary), supports_claim=supports,
        supports_claim_raw=supports,
        decides=decides if isinstance(decides, bool) else recipe.decides,
        design=design if isinstance(design, str) and design.strip() else recipe.description,
        n=head["n"], effect=head["effect"], ci=head["ci"], p_value=head["p_value"],
        p_source=head["p_source"], p_holm=None, holm_note="", expected_s=round(expected_s, 1),
        wall_s=round(wall, 1), reused=reused, reread=reread, work_dir=str(folder),
        plots=[f"retests/{claim['id']}/{p.name}" for p in sorted(report_dir.glob("*.png"))])


def _record_wall_time(ctx: RunContext, key: str, wall_s: float) -> None:
    """Remember a measured wall time, so the next estimate for this spec and size is real."""
    ledger = _measured(ctx)
    ledger[key] = round(wall_s, 1)
    try:
        atomic_write_json(_retests_dir(ctx) / LEDGER_FILE, ledger)
    except (OSError, RetestError) as exc:  # an estimate is a convenience, never a failure
        log.warning("wall time not recorded: %s", exc)


def _copy_outputs(work_dir: Path, report_dir: Path) -> None:
    """Copy a re-test's outputs beside the report, so the report folder stands alone."""
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
