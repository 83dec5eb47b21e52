"""Benchmark loaders: every format becomes a list of :class:`evals.items.Item`.

Formats: JSONL with configurable fields, GSM8K (``#### N`` answers), BIG-bench ``task.json``
(``target`` and ``target_scores``) and OpenAI-evals ``samples.jsonl`` (chat ``input`` + ``ideal``).
Item ids are stable (``<file stem>-<0-based item index>`` unless an id field is named), so a
seeded split and results files keyed by id survive a reload. A file that cannot be read raises
:class:`BadInputError` naming the file and, for JSONL, the 1-based line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from core.errors import BadInputError
from evals.items import Item

_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$")
# Quartz-style options at the end of a question: "\n A: more hair\n B: less hair".
_OPTION_LINE = re.compile(r"^\s*([A-Z])\s*[:.)]\s*(.+?)\s*$")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file")
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read: {exc.strerror}") from exc
    with handle:
        try:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BadInputError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from exc
                if not isinstance(obj, dict):
                    raise BadInputError(f"{path}:{line_no}: expected a JSON object")
                yield line_no, obj
        except UnicodeDecodeError as exc:
            raise BadInputError(f"{path}: not UTF-8 text") from exc


def _text(value: Any, where: str, field: str) -> str:
    if value is None:
        raise BadInputError(f"{where}: missing field {field!r}")
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise BadInputError(f"{where}: field {field!r} is not text")


def _non_empty(items: list[Item], path: Path) -> list[Item]:
    if not items:
        raise BadInputError(f"{path}: no items")
    return items


def load_jsonl(path: Path | str, *, prompt_field: str, answer_field: str,
               choices_field: str | None = None, id_field: str | None = None) -> list[Item]:
    """Load one item per JSONL line from the named fields.

    ``choices_field`` (optional) must hold a list of strings; ``id_field`` (optional) a unique
    id. The other fields of each line go to ``metadata``.
    """
    path = Path(path)
    items: list[Item] = []
    seen: set[str] = set()
    used = {prompt_field, answer_field, choices_field, id_field}
    for line_no, obj in read_jsonl(path):
        where = f"{path}:{line_no}"
        choices: tuple[str, ...] = ()
        if choices_field is not None:
            raw = obj.get(choices_field)
            if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
                raise BadInputError(f"{where}: field {choices_field!r} is not a list of strings")
            choices = tuple(raw)
        item_id = (_text(obj.get(id_field), where, id_field) if id_field
                   else f"{path.stem}-{len(items)}")
        if item_id in seen:
            raise BadInputError(f"{where}: duplicate id {item_id!r}")
        seen.add(item_id)
        items.append(Item(
            id=item_id,
            prompt=_text(obj.get(prompt_field), where, prompt_field),
            answer=_text(obj.get(answer_field), where, answer_field),
            choices=choices,
            metadata={k: v for k, v in obj.items() if k not in used} | {"line": line_no},
        ))
    return _non_empty(items, path)


def gsm8k_final_answer(solution: str) -> str | None:
    """Return the number after ``####`` in a GSM8K solution (thousands commas removed), or None."""
    last = solution.strip().splitlines()[-1] if solution.strip() else ""
    match = _GSM8K_ANSWER.search(last)
    return match.group(1).replace(",", "").strip() if match else None


def load_gsm8k(path: Path | str) -> list[Item]:
    """Load GSM8K JSONL (``question``, ``answer``); the answer is the final ``#### N`` number.

    ``metadata["solution"]`` keeps the full worked solution (with its ``<<a*b=c>>`` annotations).
    """
    path = Path(path)
    items: list[Item] = []
    for line_no, obj in read_jsonl(path):
        where = f"{path}:{line_no}"
        solution = _text(obj.get("answer"), where, "answer")
        final = gsm8k_final_answer(solution)
        if final is None:
            raise BadInputError(f"{where}: answer has no final '#### N' line")
        items.append(Item(id=f"{path.stem}-{len(items)}",
                          prompt=_text(obj.get("question"), where, "question"),
                          answer=final, metadata={"solution": solution, "line": line_no}))
    return _non_empty(items, path)


def load_bigbench(task_json_path: Path | str) -> list[Item]:
    """Load a BIG-bench ``task.json`` (or a folder holding one).

    Items with ``target_scores`` are multiple choice: the options in file order become
    ``choices`` and the best-scored option the ``answer`` (a free-form ``target`` beside them,
    like strategyqa's explanation, stays in ``metadata["target"]``). Other items are free-form:
    ``answer`` is the ``target`` (the first one when it is a list; all in ``metadata["targets"]``).
    A task split into subtasks has no examples of its own: name one subtask's folder.
    """
    path = Path(task_json_path)
    if path.is_dir():
        path = path / "task.json"
    if not path.is_file():
        raise BadInputError(f"{path}: no such file")
    try:
        task = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: not a valid JSON task file ({exc})") from exc
    if not isinstance(task, dict):
        raise BadInputError(f"{path}: expected a JSON object")
    examples = task.get("examples")
    if not examples:
        subtasks = sorted(p.parent.name for p in path.parent.glob("*/task.json"))
        hint = f"; it has subtasks: {', '.join(subtasks)}" if subtasks else ""
        raise BadInputError(f"{path}: task has no examples{hint}")
    name = str(task.get("name") or path.parent.name)
    prefix = {k: task[k] for k in ("task_prefix", "example_input_prefix", "example_output_prefix",
                                   "choice_prefix", "append_choices_to_input") if k in task}
    items = []
    for i, ex in enumerate(examples):
        where = f"{path}: example {i}"
        if not isinstance(ex, dict):
            raise BadInputError(f"{where}: expected an object")
        prompt = _text(ex.get("input"), where, "input")
        metadata: dict[str, Any] = {"task": name, **prefix}
        scores = ex.get("target_scores")
        if scores:
            if not isinstance(scores, dict):
                raise BadInputError(f"{where}: target_scores is not an object")
            choices = tuple(str(k) for k in scores)
            best = max(scores.values())
            answer = next(str(k) for k, v in scores.items() if v == best)
            metadata["target_scores"] = scores
            if ex.get("target") is not None:
                metadata["target"] = ex["target"]
        else:
            target = ex.get("target")
            targets = target if isinstance(target, list) else [target]
            if not targets or targets[0] is None:
                raise BadInputError(f"{where}: neither target_scores nor target")
            choices = ()
            answer = _text(targets[0], where, "target")
            metadata["targets"] = [str(t) for t in targets]
        items.append(Item(id=f"{name}-{i}", prompt=prompt, answer=answer, choices=choices,
                          metadata=metadata))
    return items


def _split_options(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split trailing ``A: ...`` option lines off a question: ``(stem, [(letter, option)])``."""
    lines = text.rstrip().splitlines()
    options: list[tuple[str, str]] = []
    while lines and (match := _OPTION_LINE.match(lines[-1])):
        options.insert(0, (match.group(1), match.group(2)))
        lines.pop()
    letters = [letter for letter, _ in options]
    # Only consecutive letters from A count as options (not a stray "I: ..." sentence).
    if len(options) < 2 or letters != [chr(ord("A") + k) for k in range(len(options))]:
        return text, []
    return "\n".join(lines).strip(), options


def load_openai_evals(samples_jsonl: Path | str) -> list[Item]:
    """Load OpenAI-evals samples: chat-format ``input`` plus ``ideal``.

    ``prompt`` is the last user message; all messages stay in ``metadata["messages"]``. When that
    message ends in lettered option lines (quartz: ``A: ...``/``B: ...``) and ``ideal`` is one of
    the letters, the options become ``choices``, the answer the ideal option's text,
    ``metadata["letters"]``/``["ideal"]`` keep the letters and ``["question"]`` the stem.
    """
    path = Path(samples_jsonl)
    items: list[Item] = []
    for line_no, obj in read_jsonl(path):
        where = f"{path}:{line_no}"
        messages = obj.get("input")
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            raise BadInputError(f"{where}: 'input' is not a list of chat messages")
        if not messages:
            raise BadInputError(f"{where}: 'input' has no messages")
        users = [m["content"] for m in messages if m.get("role") == "user"]
        users = users or [messages[-1]["content"]]
        ideal = obj.get("ideal")
        ideal = ideal[0] if isinstance(ideal, list) and ideal else ideal
        ideal_text = _text(ideal, where, "ideal")
        prompt = users[-1]
        metadata: dict[str, Any] = {"messages": messages, "ideal": ideal_text, "line": line_no}
        choices: tuple[str, ...] = ()
        answer = ideal_text
        stem, options = _split_options(prompt)
        letters = [letter for letter, _ in options]
        if options and ideal_text.strip() in letters:
            choices = tuple(option for _, option in options)
            answer = choices[letters.index(ideal_text.strip())]
            metadata |= {"letters": letters, "question": stem}
        items.append(Item(id=f"{path.parent.name}-{len(items)}", prompt=prompt, answer=answer,
                          choices=choices, metadata=metadata))
    return _non_empty(items, path)


_LOADERS: dict[str, Callable[..., list[Item]]] = {
    "jsonl": load_jsonl,
    "gsm8k": load_gsm8k,
    "bigbench": load_bigbench,
    "openai_evals": load_openai_evals,
}


def load_dataset(kind: str, path: Path | str, **fields: Any) -> list[Item]:
    """Load ``path`` with the loader named ``kind`` (jsonl, gsm8k, bigbench, openai_evals).

    ``fields`` go to the loader (only ``jsonl`` takes any: ``prompt_field`` etc.).
    """
    loader = _LOADERS.get(kind)
    if loader is None:
        raise BadInputError(f"unknown dataset kind {kind!r} (expected one of: "
                            f"{', '.join(sorted(_LOADERS))})")
    if kind != "jsonl" and fields:
        raise BadInputError(f"dataset kind {kind!r} takes no field options "
                            f"(got {', '.join(sorted(fields))})")
    if kind == "jsonl" and not {"prompt_field", "answer_field"} <= fields.keys():
        raise BadInputError("dataset kind 'jsonl' needs prompt_field and answer_field")
    try:
        return loader(path, **fields)
    except TypeError as exc:  # an unknown field option
        raise BadInputError(f"dataset kind {kind!r}: {exc}") from exc


def _split_key(item_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\x00{item_id}".encode()).digest()


def seeded_split(items: list[Item], test_fraction: float,
                 seed: int) -> tuple[list[Item], list[Item]]:
    """Split ``items`` into ``(train, test)`` with ``round(len * test_fraction)`` test items.

    Membership depends only on each item's id and ``seed`` (a hash ranks the items), so the same
    seed gives the same split whatever the input order; each side keeps the input order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise BadInputError(f"test fraction must be between 0 and 1, got {test_fraction}")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise BadInputError("items have duplicate ids; a seeded split needs unique ids")
    n_test = round(len(items) * test_fraction)
    ranked = sorted(range(len(items)), key=lambda k: _split_key(ids[k], seed))
    test_idx = set(ranked[:n_test])
    train = [item for k, item in enumerate(items) if k not in test_idx]
    test = [item for k, item in enumerate(items) if k in test_idx]
    return train, test
