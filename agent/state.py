"""Typed state of the report graph, its reducers, and its input and output schemas.

Everything in the state is plain data (TypedDicts of str/int/list/dict) so the SQLite
checkpointer stores it as JSON-like values and a resumed run reads back exactly what it wrote.
Records that hold facts (ids, titles, dates) are copied from retrieved papers, never from a model.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, TypedDict, get_args

Stance = Literal["supports", "relaxes", "overturns", "unrelated"]
VerdictLabel = Literal["holds", "relaxed", "overturned", "unresolved"]
AnchorStatus = Literal["verified", "not_found", "malformed", "unverifiable"]

# The one list of stance names, in the order prompts and tables show them.
STANCES: tuple[str, ...] = get_args(Stance)


class Claim(TypedDict):
    """One dated claim from the prompt; ``date_from``/``date_to`` are ISO dates or None."""

    id: str  # "C1", "C2", ... in prompt order
    text: str
    dated: str  # the date as written, e.g. "~2024–2025" ("" when the prompt gave none)
    date_from: str | None
    date_to: str | None


class Anchor(TypedDict):
    """An anchor id as the prompt gave it; ``valid`` is the id's well-formedness, not existence."""

    raw: str
    arxiv_id: str  # normalized when valid, else the raw text
    valid: bool
    dated: str
    note: str


class Brief(TypedDict):
    """The parsed research prompt."""

    question: str
    claims: list[Claim]
    anchors: list[Anchor]
    tasks: list[str]


class PaperRecord(TypedDict):
    """A retrieved paper (a ``tools.paper.Paper`` dumped to JSON-able values)."""

    arxiv_id: str
    title: str
    authors: list[str]
    abstract: str
    categories: list[str]
    published: str | None
    source: str


class Evidence(TypedDict):
    """One paper judged against one claim: summary and stance are the model's, the rest facts."""

    claim_id: str
    arxiv_id: str
    title: str
    published: str
    stance: Stance
    summary: str
    score: float  # retrieval rank score, higher is more relevant
    # "newer" (published after the claim's range), "contemporaneous" (inside it) or "undated";
    # see tools.ranking.recency_label.
    recency: str
    # Grounding (agent.judging): a relaxes/overturns stance counts only with a quote that code
    # found verbatim in the abstract; the summary is the model's when it is mostly verbatim,
    # else the abstract's sentence that bears most on the claim (agent.judging.claim_sentence).
    quote: str | None
    stance_counts: bool
    summary_source: Literal["model", "abstract"]


class AnchorResult(TypedDict):
    """An anchor after resolution."""

    arxiv_id: str
    status: AnchorStatus
    title: str | None
    published: str | None
    note: str


class Retest(TypedDict):
    """A re-test attached to a claim (``spec`` is the spec file name).

    ``supports_claim`` is the reading the verdict uses: the recipe's own (``supports_claim_raw``)
    unless several claims were re-tested and its significance vanished at the Holm-adjusted p
    (``p_holm``; agent.nodes.retest_read). Records from older runs may lack the later fields.
    """

    spec: str
    summary: dict[str, Any]
    supports_claim: bool | None
    supports_claim_raw: bool | None
    decides: bool  # a controlled comparison: it may decide the verdict
    design: str  # one line: what was trained on what, what was compared
    n: int | None
    effect: float | None
    ci: list[float] | None
    p_value: float | None
    p_source: str  # "recipe", "normal approximation from the 95% CI", or "none"
    p_holm: float | None
    holm_note: str
    expected_s: float
    wall_s: float  # 0 when a finished result was reused
    reused: bool
    # A finished run's answers read again because its summary predates today's reading rules
    # (evals.stats.READING_VERSION): wall_s is then the re-read's, not an experiment's.
    reread: bool
    work_dir: str
    plots: list[str]  # PNGs relative to the report folder


class RetestPlan(TypedDict):
    """What the agent decided for one claim: a spec to run, or what a re-test would need."""

    claim_id: str
    spec: str | None
    chosen_by: str  # "llm", "keywords" or "none"
    needs: str  # for claims without a recipe: what a re-test would need
    status: str  # "planned", "ran", "reread", "reused", "failed: ...", "skipped: ...", "no recipe"
    candidates: list[str]  # the recipes the model could choose among, best first
    score: float  # the chosen recipe's claim-kind score (agent.nodes.retest_plan)
    decides: bool
    description: str  # the chosen spec's description (the design line when none ran)
    expected_s: float  # expected wall time at this run's size
    skipped_reason: str  # why it did not run ("needs ~10 min, 3 min of budget left")


class Tension(TypedDict):
    """Recent work that relaxes or overturns a claim."""

    text: str
    arxiv_ids: list[str]


def merge_dicts(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Reduce two dict updates into one; the right side wins on equal keys."""
    return {**(left or {}), **(right or {})}


def add_unique(left: list[str] | None, right: list[str] | None) -> list[str]:
    """Concatenate two lists of strings, keeping the first occurrence of each."""
    out: list[str] = []
    for item in [*(left or []), *(right or [])]:
        if item not in out:
            out.append(item)
    return out


class InputState(TypedDict):
    """What a caller hands the graph."""

    prompt_text: str


class OutputState(TypedDict):
    """What a caller gets back."""

    report: dict[str, Any]
    degraded: Annotated[list[str], add_unique]


class AgentState(TypedDict):
    """The whole state; each list/dict channel that several nodes write has a reducer."""

    prompt_text: str
    brief: Brief
    queries: Annotated[dict[str, list[str]], merge_dicts]  # claim id -> search queries
    papers: Annotated[dict[str, PaperRecord], merge_dicts]  # every retrieved paper, by id
    candidates: Annotated[dict[str, list[list[Any]]], merge_dicts]  # claim id -> [[id, score]]
    evidence: Annotated[list[Evidence], operator.add]
    anchors: list[AnchorResult]
    retest_plans: Annotated[dict[str, RetestPlan], merge_dicts]
    retests: Annotated[dict[str, Retest], merge_dicts]
    judge_quality: dict[str, Any] | None  # measured judge agreement (agent.judge_eval), or None
    # The model that judged, kept in the state: a run resumed after judging creates no model
    # client, and its report and verdict rule must still name (and trust) the same judge.
    judge_model: str | None
    verdicts: dict[str, VerdictLabel]
    verdict_reasons: dict[str, str]  # claim id -> why the rule gave that verdict
    tensions: list[Tension]
    research_questions: list[str]
    research_question_fallback: list[bool]  # per question: built from the run, not the model
    degraded: Annotated[list[str], add_unique]
    report: dict[str, Any]


class JudgeTask(TypedDict):
    """The payload a ``Send`` hands one judge task: a claim and one candidate paper."""

    claim: Claim
    paper: PaperRecord
    score: float


class PlanTask(TypedDict):
    """The payload a ``Send`` hands one query-planning task."""

    claim: Claim
