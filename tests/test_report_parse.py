"""The research-prompt parser and the grounding filter (pure, fast); the verdict rule is
tested in test_synthesis.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.grounding import REMOVED_MARK, find_arxiv_ids, ground_markdown, strip_ungrounded
from agent.parse import parse_date_range, parse_prompt, parse_with_fallback
from core.errors import BadInputError


def test_seed_prompt(seed_prompt):
    brief = parse_prompt(seed_prompt.read_text(encoding="utf-8"))
    assert len(brief["claims"]) == 5
    assert [a["arxiv_id"] for a in brief["anchors"]] == [
        "2410.18890", "2412.02674", "2504.07912", "2603.03415"]
    assert all(a["valid"] for a in brief["anchors"])
    assert brief["anchors"][0]["dated"] == "Oct 2024"
    assert len(brief["tasks"]) == 3
    c1 = brief["claims"][0]
    assert c1["text"].startswith("Fine-tuned models rely on template-matching")
    assert not c1["text"].endswith("(~2024–2025).")
    assert (c1["date_from"], c1["date_to"]) == ("2024-01-01", "2025-12-31")
    assert (brief["claims"][2]["date_from"], brief["claims"][2]["date_to"]) == (
        "2024-01-01", "2024-12-31")
    assert brief["question"].startswith("Why do large language models outperform")


@pytest.mark.parametrize(("text", "expected"), [
    ("~2024–2025", ("2024-01-01", "2025-12-31")),
    ("Oct 2024", ("2024-10-01", "2024-10-31")),
    ("2023-2026", ("2023-01-01", "2026-12-31")),
    ("Feb 2024", ("2024-02-01", "2024-02-29")),
    ("2025-03", ("2025-03-01", "2025-03-31")),
    ("mid-2025", ("2025-01-01", "2025-12-31")),
    ("no date here", None),
])
def test_date_ranges(text, expected):
    assert parse_date_range(text) == expected


VARIANT = """Some preamble that is not a claim.

Claims:
- Chain-of-thought prompting helps only models above 60B parameters (2022).
* Instruction tuning mostly teaches output format rather than new knowledge
   and this continuation line belongs to the bullet (~2023).
– Retrieval augmentation removes hallucination entirely.
• ok

Anchors:
- arXiv:2513.01234 (Jan 2025): impossible month, malformed
- 2201.11903v2: chain of thought
- hep-th/9901001 (Jan 1999): an old-style id

Tasks
1. Re-test each claim.
2. Name tensions.
"""


def test_variant_bullets_dates_and_ids():
    brief = parse_prompt(VARIANT)
    texts = [c["text"] for c in brief["claims"]]
    assert len(texts) == 3, texts  # "ok" is too short to be a claim
    assert brief["claims"][0]["date_from"] == "2022-01-01"
    assert "continuation line belongs" in texts[1]
    assert brief["claims"][1]["date_to"] == "2023-12-31"
    assert brief["claims"][2]["dated"] == "" and brief["claims"][2]["date_from"] is None
    anchors = {a["raw"]: a for a in brief["anchors"]}
    assert anchors["2513.01234"]["valid"] is False
    assert anchors["2201.11903v2"]["valid"] and anchors["2201.11903v2"]["arxiv_id"] == "2201.11903"
    assert anchors["hep-th/9901001"]["valid"]
    assert brief["tasks"] == ["Re-test each claim.", "Name tensions."]


def test_claims_without_heading_or_dates():
    brief = parse_prompt("Does scaling fix reasoning?\n\n- Bigger models memorize more benchmark "
                         "items\n- Small models cannot self-correct\n")
    assert brief["question"] == "Does scaling fix reasoning?"
    assert len(brief["claims"]) == 2 and all(c["date_from"] is None for c in brief["claims"])


@pytest.mark.parametrize("text", ["", "   \n\t  ", "\x00\x01binary"])
def test_empty_or_binary_prompt_is_bad_input(text):
    with pytest.raises(BadInputError):
        parse_prompt(text)


def test_prompt_without_claims_is_bad_input_without_llm():
    with pytest.raises(BadInputError, match="no dated claims"):
        parse_with_fallback("Just a paragraph of prose with no bullets at all.", None)


class _OneClaimLLM:
    """Offers one claim copied from the prompt and one it invented."""

    def complete_json(self, messages, schema, **_):
        return schema.model_validate({"claims": [
            {"text": "language models memorize repeated benchmark items", "dated": "2024"},
            {"text": "quantum gravity explains transformers completely", "dated": "1999"}]})


def test_llm_fallback_keeps_only_claims_found_in_prompt():
    text = "We think language models memorize repeated benchmark items, as of 2024."
    brief, used = parse_with_fallback(text, _OneClaimLLM())
    assert used
    assert [c["text"] for c in brief["claims"]] == [
        "language models memorize repeated benchmark items"]
    assert brief["claims"][0]["date_from"] == "2024-01-01"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_parser_never_crashes(text):
    try:
        brief = parse_prompt(text)
    except BadInputError:
        return
    assert all(c["id"] == f"C{i}" for i, c in enumerate(brief["claims"], 1))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(["- ", "* ", "• ", "1. ", "(2) ", "arXiv:", "2410.18890",
                                 "2513.01234", "(~2024–2025)", "claim about models", "\n",
                                 "Your task:", "Anchor papers", " (Oct 2024): "]), max_size=30))
def test_parser_tolerates_prompt_like_fragments(parts):
    try:
        parse_prompt("".join(parts))
    except BadInputError:
        pass


def test_strip_ungrounded_removes_invented_ids():
    text = ("See arXiv:2501.00001 and 2513.01234v2, plus hep-th/9901001 and 2410.18890; "
            "version 2501.00001v3 is fine.")
    cleaned, removed = strip_ungrounded(text, {"2501.00001"})
    assert removed == ["2513.01234", "hep-th/9901001", "2410.18890"]
    assert find_arxiv_ids(cleaned) == ["2501.00001", "2501.00001"]
    assert cleaned.count(REMOVED_MARK) == 3


def test_ground_markdown_allows_anchor_ids_only_on_anchor_lines():
    md = ("cites 2410.18890 as evidence\n| 2410.18890 | unverifiable | x <!-- anchor --> |\n"
          "and 2502.00002\n")
    out, removed = ground_markdown(md, retrieved={"2502.00002"}, anchor_ids={"2410.18890"})
    lines = out.splitlines()
    assert "2410.18890" not in lines[0] and REMOVED_MARK in lines[0]
    assert "2410.18890" in lines[1]
    assert "2502.00002" in lines[2]
    assert removed == ["2410.18890"]


def test_example_prompt_parses_and_flags_its_malformed_anchor():
    text = (Path(__file__).resolve().parents[1] / "examples" / "contamination_regime.txt"
            ).read_text(encoding="utf-8")
    brief = parse_prompt(text)
    assert len(brief["claims"]) == 4 and len(brief["tasks"]) == 3
    assert all(c["date_from"] for c in brief["claims"])
    assert [a["valid"] for a in brief["anchors"]] == [True, True, True, False]


@pytest.mark.parametrize("form", [
    "https://arxiv.org/abs/2599.99999", "http://arxiv.org/pdf/2599.99999v2.pdf",
    "arXiv2599.99999", "arXiv: 2599.99999", "2599\u200b.99999", "25\u200d99.99999v1",
])
def test_one_grounding_rule_for_reports_and_answers(form: str) -> None:
    """An id that was not retrieved disappears in every disguise, from report text and from an
    `ask` answer alike, and no URL stub is left behind; a retrieved id survives the same forms."""
    from agent.ask import ground_text

    text = f"Memorization was refuted ({form}) in that study."
    cleaned, removed = strip_ungrounded(text, ["2501.00001"])
    assert removed == ["2599.99999"] and "2599" not in cleaned and "arxiv.org" not in cleaned
    answer = ground_text(text, ["2501.00001"])
    assert answer.removed_ids == ["2599.99999"] and answer.cited_ids == []
    assert "2599" not in answer.text and "arxiv.org" not in answer.text.lower()
    real = text.replace("99999", "00001").replace("2599", "2501").replace("25\u200d99", "2501")
    real = real.replace("2599\u200b", "2501\u200b")
    kept = ground_text(real, ["2501.00001"])
    assert kept.cited_ids == ["2501.00001"] and "[arXiv:2501.00001]" in kept.text
