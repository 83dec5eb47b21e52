"""Measure the judge against hand labels, and keep the measurement so reports can show it.

Stages: load rows -> attach abstracts (inline, the corpus file, or a paper-store look-up) ->
judge every row -> score agreement (:mod:`evals.agreement`) -> persist. A row is a JSON object
with ``claim``, ``stance`` (supports / relaxes / overturns / unrelated) and either ``arxiv_id``
or inline ``title`` + ``abstract``; other keys are ignored.

A measurement lives in ``<data_dir>/judge_eval/<model-slug>__<method>.json`` with exactly the keys
of :data:`QUALITY_KEYS`; :func:`load_judge_quality` reads it back for the report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.judging import Judge, JudgeInput
from agent.prompts import STANCE_LABELS
from core.errors import BadInputError
from core.fsutil import atomic_write_json
from core.settings import Settings
from evals.agreement import summarize
from tools.corpus import iter_corpus
from tools.paper import Paper, is_valid_arxiv_id, normalize_arxiv_id

log = logging.getLogger(__name__)

DEVSET = Path(__file__).resolve().parents[1] / "evals" / "devset" / "claims_papers.jsonl"
QUALITY_KEYS = ("model", "method", "n", "accuracy", "macro_f1", "kappa", "kappa_ci",
                "majority_baseline", "labels_sha256", "measured_at")
# The report measures an unmeasured judge itself only when that is this cheap (2 CPU cores).
AUTO_MEASURE_BUDGET_S = 120.0


def load_rows(path: Path | str) -> list[dict[str, Any]]:
    """Read and validate labelled rows; raise BadInputError naming the first bad line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read labels file {path}: {exc}") from None
    rows = []
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path}:{no}: not JSON ({exc.msg})") from None
        rows.append(_validate(row, f"{path}:{no}"))
    if not rows:
        raise BadInputError(f"{path}: no labelled rows")
    return rows


def _validate(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise BadInputError(f"{where}: a row must be a JSON object")
    for key in ("claim", "stance"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise BadInputError(f"{where}: missing '{key}'")
    if row["stance"] not in STANCE_LABELS:
        raise BadInputError(f"{where}: stance '{row['stance']}' is not one of "
                            f"{', '.join(STANCE_LABELS)}")
    inline = isinstance(row.get("abstract"), str) and row["abstract"].strip()
    if inline:
        if not isinstance(row.get("title"), str):
            raise BadInputError(f"{where}: an inline abstract needs a 'title'")
        return row
    raw = row.get("arxiv_id")
    if not isinstance(raw, str) or not is_valid_arxiv_id(raw):
        raise BadInputError(f"{where}: needs a valid 'arxiv_id' or inline 'title' and 'abstract'")
    return {**row, "arxiv_id": normalize_arxiv_id(raw)}


def attach_abstracts(rows: Sequence[dict[str, Any]], corpus: Path | None,
                     lookup: Callable[[str], Paper | None] | None = None) -> list[JudgeInput]:
    """Return one JudgeInput per row; ids come from ``corpus`` first, then ``lookup``.

    Raise BadInputError naming the ids that neither source knows.
    """
    wanted = {r["arxiv_id"] for r in rows if not (r.get("abstract") or "").strip()}
    found: dict[str, Paper] = {}
    if wanted and corpus is not None:
        for paper in iter_corpus(corpus):
            if paper.arxiv_id in wanted:
                found[paper.arxiv_id] = paper
                if len(found) == len(wanted):
                    break
    if lookup is not None:
        for arxiv_id in sorted(wanted - found.keys()):
            paper = lookup(arxiv_id)
            if paper is not None:
                found[arxiv_id] = paper
    missing = sorted(wanted - found.keys())
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise BadInputError(f"{len(missing)} labelled papers not in the corpus or store: {shown}"
                            " (pass --corpus)")
    out = []
    for r in rows:
        if (r.get("abstract") or "").strip():
            out.append(JudgeInput(r["claim"], r.get("title") or "", r["abstract"]))
        else:
            paper = found[r["arxiv_id"]]
            out.append(JudgeInput(r["claim"], paper.title, paper.abstract))
    return out


def labels_sha256(rows: Iterable[dict[str, Any]]) -> str:
    """Hash what the measurement depends on: each row's claim, paper and gold stance."""
    digest = hashlib.sha256()
    for r in rows:
        part = [r["claim"], r.get("arxiv_id") or "", r.get("abstract") or "", r["stance"]]
        digest.update(json.dumps(part, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def evaluate(judge: Judge, rows: Sequence[dict[str, Any]], inputs: Sequence[JudgeInput],
             progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Judge every input and return the agreement figures plus model, method and timing."""
    started = time.monotonic()
    pred = judge.stances(inputs, progress)
    return _result(judge, rows, pred, time.monotonic() - started)


def evaluate_within(judge: Judge, rows: Sequence[dict[str, Any]], inputs: Sequence[JudgeInput],
                    budget_s: float = AUTO_MEASURE_BUDGET_S,
                    probe: int = 12) -> tuple[dict[str, Any] | None, str]:
    """Evaluate only when the whole run is projected to fit ``budget_s``; return (result, why).

    The first ``probe`` rows are judged and timed; when the projection for all rows exceeds the
    budget the rest is skipped and the result is None, with the projected time as the reason.
    """
    started = time.monotonic()
    head = judge.stances(inputs[:probe])
    elapsed = time.monotonic() - started
    projected = elapsed * len(inputs) / max(1, len(head))
    if projected > budget_s:
        return None, (f"measuring the judge on {len(inputs)} labelled rows would take about "
                      f"{projected:.0f} s (budget {budget_s:.0f} s)")
    tail = judge.stances(inputs[probe:]) if len(inputs) > probe else []
    result = _result(judge, rows, head + tail, time.monotonic() - started)
    return result, f"measured on {len(inputs)} labelled rows in {result['seconds']} s"


def _result(judge: Judge, rows: Sequence[dict[str, Any]], pred: list[str],
            seconds: float) -> dict[str, Any]:
    gold = [r["stance"] for r in rows]
    figures = summarize(gold, pred, STANCE_LABELS)
    majority = figures.pop("majority_baseline")
    # The kept record holds the baseline's accuracy (a number a report prints beside accuracy).
    figures |= {"majority_baseline": majority["accuracy"], "majority_label": majority["label"]}
    return {"model": judge.llm.model, "method": judge.method, **figures,
            "labels_sha256": labels_sha256(rows),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(seconds, 1)}


def model_slug(model: str) -> str:
    """Return a file-name-safe slug of a model name (``org/Model-1B`` -> ``org_model-1b``)."""
    return re.sub(r"[^a-z0-9._-]+", "_", model.strip().lower()).strip("_") or "model"


def quality_path(settings: Settings, model: str, method: str) -> Path:
    """Where the measurement of ``model`` judging by ``method`` is kept."""
    return settings.data_dir / "judge_eval" / f"{model_slug(model)}__{method}.json"


def save_quality(settings: Settings, result: dict[str, Any]) -> Path:
    """Write the persisted subset of an :func:`evaluate` result atomically; return its path."""
    record = {key: result[key] for key in QUALITY_KEYS}
    return atomic_write_json(quality_path(settings, record["model"], record["method"]), record)


def load_judge_quality(settings: Settings, model: str, method: str) -> dict[str, Any] | None:
    """Return the kept measurement of ``model`` judging by ``method``, or None when there is none.

    A file that is unreadable or lacks a key counts as no measurement (and is logged).
    """
    path = quality_path(settings, model, method)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable judge measurement %s: %s", path, exc)
        return None
    if not isinstance(record, dict) or not set(QUALITY_KEYS) <= record.keys():
        log.warning("ignoring incomplete judge measurement %s", path)
        return None
    return {key: record[key] for key in QUALITY_KEYS}
