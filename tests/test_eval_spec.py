"""Eval specs: shipped specs load; bad specs exit 2 with one clear line through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from core.errors import BadInputError
from evals.spec import list_shipped_specs, load_spec, spec_summary

REPO = Path(__file__).resolve().parents[1]

GOOD = """
description = "tiny"
claim_kinds = ["memorization"]
scoring = "exact"
[dataset]
kind = "jsonl"
train_path = "train.jsonl"
test_path = "test.jsonl"
fields = {prompt_field = "q", answer_field = "a"}
[sample]
per_split = 3
[[models]]
role = "fine_tuned"
endpoint = "http://127.0.0.1:9/v1"
model = "ft"
[[models]]
role = "base"
endpoint = "http://127.0.0.1:9/v1"
model = "base"
"""


def _write_data(folder: Path, train: list[str], test: list[str]) -> None:
    for name, rows in (("train", train), ("test", test)):
        lines = [json.dumps({"q": q, "a": "x"}) for q in rows]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


def _retest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                               "RETEST_DATA_DIR": str(cwd / "data"), "HF_HUB_OFFLINE": "1"})


def test_shipped_specs_load_and_name_their_claims(shared_data: Path) -> None:
    # Recipe specs (controlled re-tests, evals.recipes.spec) have their own schema and tests.
    specs = [p for p in list_shipped_specs() if "recipe" not in tomllib.loads(p.read_text())]
    assert {p.stem for p in specs} >= {"elementary_math_qa_dedup", "quartz_dedup",
                                       "gsm8k_variants"}
    for path in specs:
        loaded = load_spec(path)
        assert loaded.spec.claim_kinds and loaded.spec.description
        assert (loaded.data_path or loaded.test_path).exists()  # type: ignore[union-attr]
        # Every shipped evaluation compares two unrelated families: descriptive, never deciding.
        assert {m.role for m in loaded.spec.models} == {"model_a", "model_b"}, path.name
        assert loaded.spec.decides is False
        assert "neither trained here" in loaded.spec.design_line()
        assert spec_summary(loaded)["decides"] is False


@pytest.mark.parametrize(("edit", "decides", "design_has"), [
    (lambda s: s, False, "the spec declares the fine-tuned model"),
    (lambda s: s.replace('role = "fine_tuned"', 'role = "model_a"')
     .replace('role = "base"', 'role = "model_b"'), False, "descriptive comparison"),
    (lambda s: s.replace('scoring = "exact"', 'scoring = "exact"\ndecides = true\n'
                         'design = "ft is base LoRA-tuned on train.jsonl; ft vs base"'),
     True, "LoRA-tuned on train.jsonl"),
])
def test_roles_decide_and_design(tmp_path: Path, edit, decides: bool, design_has: str) -> None:
    _write_data(tmp_path, ["a b c"], ["d e f"])
    (tmp_path / "s.toml").write_text(edit(GOOD))
    spec = load_spec(tmp_path / "s.toml").spec
    assert spec.decides is decides
    assert design_has in spec.design_line()
    first, second = spec.compared()
    assert (first.model, second.model) == ("ft", "base")  # effects are first minus second


def test_relative_paths_resolve_next_to_the_spec(tmp_path: Path) -> None:
    _write_data(tmp_path, ["a b c"], ["d e f"])
    (tmp_path / "s.toml").write_text(GOOD)
    loaded = load_spec(tmp_path / "s.toml")
    assert loaded.train_path == (tmp_path / "train.jsonl").resolve()
    assert len(loaded.sha256) == 64


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.replace('scoring = "exact"', 'scoring = "exact"\nsampel = 3'),
     "unknown key 'sampel'"),
    (lambda s: s.replace('per_split = 3', 'per_split = 3\nper_splt = 4'),
     "unknown key 'sample.per_splt'"),
    (lambda s: s.replace('test_path = "test.jsonl"', 'test_path = "nope.jsonl"'),
     "dataset file not found: nope.jsonl"),
    (lambda s: s.replace('role = "base"', 'role = "fine_tuned"'),
     "models need the roles 'base' and 'fine_tuned'"),
    (lambda s: s.replace('role = "base"', 'role = "model_b"'),
     "models need the roles 'base' and 'fine_tuned'"),
    # A cross-family (model_a/model_b) comparison can never decide a verdict.
    (lambda s: s.replace('role = "fine_tuned"', 'role = "model_a"')
     .replace('role = "base"', 'role = "model_b"')
     .replace('scoring = "exact"',
              'scoring = "exact"\ndecides = true\ndesign = "a vs b, unrelated"'),
     "decides = true needs roles"),
    (lambda s: s.replace('scoring = "exact"', 'scoring = "exact"\ndecides = true'),
     "decides = true needs a 'design' line"),
    (lambda s: s.replace('scoring = "exact"', 'scoring = "bleu"'), "invalid 'scoring'"),
    (lambda s: s.replace('description = "tiny"\n', ''), "missing key 'description'"),
    (lambda s: s.replace('endpoint = "http://127.0.0.1:9/v1"\nmodel = "ft"',
                         'endpoint = "embedded"\nmodel = "gpt-9"'),
     "unknown embedded model 'gpt-9'"),
    (lambda s: s + "[variants]\nkinds = ['shuffle']\n", "unknown variant kind"),
    (lambda s: s.replace("[dataset]", "[dataset"), "not valid TOML"),
])
def test_bad_spec_is_one_line_error(tmp_path: Path, edit, message: str) -> None:
    _write_data(tmp_path, ["a b c"], ["d e f"])
    (tmp_path / "bad.toml").write_text(edit(GOOD))
    with pytest.raises(BadInputError, match=message.replace("(", r"\(")):
        load_spec(tmp_path / "bad.toml")


@pytest.mark.parametrize(("case", "message"), [
    ("unknown_key", "unknown key 'seeed'"),
    ("missing_file", "spec file not found"),
    ("empty_split", "split 'repeated' is empty"),
])
def test_cli_bad_spec_exits_2_with_one_line(tmp_path: Path, case: str, message: str) -> None:
    # Train and test share nothing, so no test item is repeated: the repeated split is empty.
    _write_data(tmp_path, ["alpha beta gamma delta", "one two three four"],
                ["red green blue yellow", "north south east west"])
    spec = GOOD.replace('scoring = "exact"', 'scoring = "exact"\nseeed = 1') \
        if case == "unknown_key" else GOOD
    (tmp_path / "s.toml").write_text(spec)
    target = "missing.toml" if case == "missing_file" else "s.toml"
    result = _retest("eval", target, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_bare_name_picks_a_shipped_spec(shared_data: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = load_spec("gsm8k_variants")
    assert loaded.source.name == "gsm8k_variants.toml"
    assert loaded.spec.split.mode == "variants" and loaded.spec.scoring == "numeric"
    with pytest.raises(BadInputError, match="spec file not found"):
        load_spec("no_such_spec")
