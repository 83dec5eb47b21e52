"""Controlled contamination: plant a dose of test items into a training set, build SFT/DPO data.

Pure functions over :class:`~evals.items.Item` lists; nothing here trains or talks to a model.

The design of a dose-response run: the test items are ranked once by a seeded hash of their ids.
The first ``control_fraction`` of that ranking is the *control* split, never planted at any dose
(the ``novel`` items). The rest is the *pool*; dose ``d`` plants the first ``round(d * |pool|)``
pool items (the ``repeated`` items). Plans are nested: the items planted at 25% are also planted
at 100%, so a dose-response curve compares like with like. The training set has a fixed budget
at every dose: planted copies replace clean train items, so only the contamination changes.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import BadInputError
from evals import scoring
from evals.items import Item
from evals.variants import make_variants

# How a planted item is copied into training data: verbatim, or as a near-copy of one variant kind.
EXACT = "exact"


def planted_count(pool_size: int, dose: float) -> int:
    """Return how many of ``pool_size`` items a ``dose`` in [0, 1] plants (half rounds up)."""
    if not 0.0 <= dose <= 1.0 or math.isnan(dose):
        raise BadInputError(f"contamination dose must be between 0 and 1, got {dose}")
    if pool_size < 0:
        raise ValueError("pool size cannot be negative")
    return min(pool_size, math.floor(dose * pool_size + 0.5))


def rank_ids(ids: Sequence[str], seed: int) -> list[str]:
    """Order ``ids`` by a seeded hash: the same seed gives one order whatever the input order."""
    if len(set(ids)) != len(ids):
        raise BadInputError("items have duplicate ids; planting needs unique ids")
    return sorted(ids, key=lambda i: hashlib.sha256(f"{seed}\x00{i}".encode()).digest())


@dataclass(frozen=True)
class ContaminationPlan:
    """Which test items are planted at one dose, and which stay unseen."""

    dose: float
    seed: int
    control_ids: tuple[str, ...]  # never planted at any dose: the novel split
    pool_ids: tuple[str, ...]  # candidates, in planting order
    planted_ids: tuple[str, ...]  # the first planted_count(|pool|, dose) pool ids

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready record for the manifest."""
        return {"dose": self.dose, "seed": self.seed, "n_control": len(self.control_ids),
                "n_pool": len(self.pool_ids), "n_planted": len(self.planted_ids),
                "planted_ids": list(self.planted_ids), "control_ids": list(self.control_ids)}


def plan_contamination(test_ids: Sequence[str], dose: float, seed: int, *,
                       control_fraction: float = 0.5) -> ContaminationPlan:
    """Split ``test_ids`` into control and pool, and plant ``dose`` of the pool (see module doc).

    Raises BadInputError when either side would be empty, so every dose has unseen items.
    """
    if not 0.0 < control_fraction < 1.0:
        raise BadInputError(f"control_fraction must be between 0 and 1, got {control_fraction}")
    ranked = rank_ids(list(test_ids), seed)
    n_control = math.floor(len(ranked) * control_fraction + 0.5)
    control, pool = ranked[:n_control], ranked[n_control:]
    if not control or not pool:
        raise BadInputError(f"{len(ranked)} test items are too few to split into control and "
                            f"pool at control_fraction {control_fraction}")
    planted = pool[: planted_count(len(pool), dose)]
    return ContaminationPlan(dose, seed, tuple(control), tuple(pool), tuple(planted))


VariantMaker = Callable[[Item, str, int], Item | None]


def variant_copy(item: Item, kind: str, seed: int) -> Item | None:
    """Return the ``kind`` near-copy of ``item`` made by :mod:`evals.variants`, or None."""
    made = make_variants(item, [kind], seed)
    return made[0].item if made else None


@dataclass
class TrainingSet:
    """The training items of one dose and where each came from."""

    items: list[Item]
    plan: ContaminationPlan
    copies: dict[str, str] = field(default_factory=dict)  # planted test id -> how it was copied
    clean_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready record for the manifest (ids, copy kinds and a data hash)."""
        return {**self.plan.as_dict(), "copies": dict(self.copies), "n_items": len(self.items),
                "n_clean": len(self.clean_ids), "data_sha256": items_sha256(self.items)}


def build_training_set(train: Sequence[Item], test: Sequence[Item], plan: ContaminationPlan, *,
                       budget: int, copy: str = EXACT,
                       make_copy: VariantMaker = variant_copy) -> TrainingSet:
    """Return ``budget`` training items: the plan's planted test items plus clean train items.

    Planted items are exact copies, or near-copies of variant kind ``copy`` (an item the kind does
    not apply to is planted verbatim, and the manifest says so). Clean items are the first ones of
    the train side in seeded-hash order, so a smaller dose's clean items include a larger dose's.
    The result is shuffled with the plan's seed. Raises BadInputError when the budget cannot hold
    the planted items or the train side is too small.
    """
    by_id = {item.id: item for item in test}
    missing = [i for i in plan.planted_ids if i not in by_id]
    if missing:
        raise BadInputError(f"planted ids not among the test items: {missing[:3]}")
    if budget < len(plan.planted_ids):
        raise BadInputError(f"training budget {budget} cannot hold {len(plan.planted_ids)} "
                            f"planted items; raise the budget or lower the dose")
    n_clean = budget - len(plan.planted_ids)
    if n_clean > len(train):
        raise BadInputError(f"training budget {budget} needs {n_clean} clean items; the train "
                            f"side has {len(train)}")
    planted: list[Item] = []
    copies: dict[str, str] = {}
    for test_id in plan.planted_ids:
        original = by_id[test_id]
        near = make_copy(original, copy, plan.seed) if copy != EXACT else None
        if near is None:
            planted.append(original)
            copies[test_id] = EXACT if copy == EXACT else f"{EXACT} ({copy} did not apply)"
        else:
            planted.append(near)
            copies[test_id] = copy
    train_by_id = {item.id: item for item in train}
    clean_ids = rank_ids(list(train_by_id), plan.seed)[:n_clean]
    items = planted + [train_by_id[i] for i in clean_ids]
    random.Random(f"shuffle:{plan.seed}:{plan.dose}").shuffle(items)
    return TrainingSet(items=items, plan=plan, copies=copies, clean_ids=clean_ids)


def items_sha256(items: Sequence[Item]) -> str:
    """Hash the ids, prompts and answers of ``items`` in order (the manifest's data hash)."""
    digest = hashlib.sha256()
    for item in items:
        for part in (item.id, item.prompt, item.answer, *item.choices):
            digest.update(part.encode())
            digest.update(b"\x00")
    return digest.hexdigest()


def target_text(item: Item, method: str) -> str:
    """Return the reply a model should learn for ``item``: short, and scored correct by ``method``.

    Free-form numeric answers become "The answer is N."; letter scoring the correct letter;
    exact and log-likelihood scoring the answer text itself.
    """
    if method == "numeric":
        return f"The answer is {item.answer}."
    if method == "mc_letter":
        return scoring.choice_labels(len(item.choices))[scoring.gold_index(item)]
    return item.answer.strip()


def sft_rows(items: Sequence[Item], method: str) -> list[dict[str, Any]]:
    """Return conversational prompt/completion rows: the eval's own prompt, the gold reply."""
    return [{"id": item.id,
             "prompt": [{"role": "user", "content": scoring.format_prompt(item, method)}],
             "completion": [{"role": "assistant", "content": target_text(item, method)}]}
            for item in items]


def perturbed_answer(item: Item, method: str, rng: random.Random,
                     others: Sequence[Item] = ()) -> str | None:
    """Return a wrong reply for ``item``: a nearby wrong number, another option, or another answer.

    None when no wrong reply can be made (e.g. one option only, no other answer to borrow).
    """
    if method == "numeric":
        gold = scoring.extract_final_number(item.answer)
        if gold is None:
            return None
        step = rng.choice([1, 2, 3, 5, 10])
        wrong = gold + step if rng.random() < 0.5 or gold - step < 0 else gold - step
        shown = int(wrong) if float(wrong).is_integer() else round(wrong, 2)
        return f"The answer is {shown}."
    if item.choices:
        gold = scoring.gold_index(item)
        wrong_idx = [i for i in range(len(item.choices)) if i != gold]
        if not wrong_idx:
            return None
        pick = rng.choice(wrong_idx)
        if method == "mc_letter":
            return scoring.choice_labels(len(item.choices))[pick]
        return item.choices[pick].strip()
    candidates = [o.answer.strip() for o in others
                  if not scoring.exact_match(o.answer, item.answer)]
    return rng.choice(candidates) if candidates else None


def dpo_rows(items: Sequence[Item], method: str, seed: int, *,
             own_outputs: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], dict]:
    """Return conversational (prompt, chosen, rejected) rows and counts of rejected sources.

    ``chosen`` is the gold reply. ``rejected`` is the model's own output for the item when given
    and scored wrong by ``method`` (a real mistake of the model), else a perturbed answer. Items
    with no valid wrong reply are dropped and counted. Every row's rejected reply is scored wrong.
    """
    rng = random.Random(f"dpo:{seed}")
    rows, counts = [], {"own_output": 0, "perturbed": 0, "dropped": 0}
    for item in items:
        own = (own_outputs or {}).get(item.id)
        if own is not None and own.strip() and not _scores_correct(method, own, item):
            rejected, source = own.strip(), "own_output"
        else:
            rejected, source = perturbed_answer(item, method, rng, items), "perturbed"
        if rejected is None or _scores_correct(method, rejected, item):
            counts["dropped"] += 1
            continue
        counts[source] += 1
        prompt = [{"role": "user", "content": scoring.format_prompt(item, method)}]
        rows.append({"id": item.id, "prompt": prompt,
                     "chosen": [{"role": "assistant", "content": target_text(item, method)}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    return rows, counts


def _scores_correct(method: str, reply: str, item: Item) -> bool:
    if method == "mc_loglik":  # a generated reply is judged as exact text of the right option
        return scoring.exact_match(reply, item.answer)
    return scoring.score_text(method, reply, item)
