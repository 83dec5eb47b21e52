"""A deterministic fake chat model for testing the report graph's wiring (not its judgement)."""

from __future__ import annotations

import json
import re
import threading
from typing import Any, get_args

from pydantic import BaseModel


class FakeUsage:
    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.calls += 1

    def as_dict(self) -> dict[str, int]:
        return {"calls": self.calls, "prompt_tokens": 0, "completion_tokens": 0}


class FakeLLM:
    """Answers every schema deterministically from the quoted data it is given.

    Stance: 'overturns' when the abstract says 'contradict', 'supports' when it says 'confirm',
    else 'relaxes'. Summaries echo the first words of the abstract (including any id it plants,
    so the grounding filter is exercised).
    """

    model = "fake-model"

    def __init__(self) -> None:
        self.usage = FakeUsage()
        self.seen: list[list[dict[str, str]]] = []

    def complete_json(self, messages: list[dict[str, str]], schema: type[BaseModel], **_: Any):
        self.usage.add()
        self.seen.append(messages)
        text = messages[-1]["content"]
        blocks = re.findall(r"<data>\n(.*?)\n</data>", text, flags=re.S)
        name = schema.__name__
        if name == "Judgement":
            abstract = blocks[1] if len(blocks) > 1 else ""
            low = abstract.lower()
            stance = ("overturns" if "contradict" in low else
                      "supports" if "confirm" in low else "relaxes")
            return schema(summary=" ".join(abstract.split()[:25])[:290], stance=stance,
                          quote=" ".join(abstract.split()[:12]))
        if name == "PlannedQueries":
            return schema(queries=["fine-tuning memorization novel items"])
        if name == "RecipeChoice":
            options = get_args(schema.model_fields["recipe"].annotation)
            return schema(recipe=options[0])
        if name == "_Questions":
            return schema(first="Which held-out test separates memorization from transfer "
                          "as cited by 9999.99999?",
                          second="Does a smaller base model change the picture after tuning?")
        if name == "_LLMClaims":
            return schema.model_validate(json.loads('{"claims": []}'))
        raise AssertionError(f"unexpected schema {name}")
